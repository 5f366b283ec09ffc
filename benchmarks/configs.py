"""Model sizes for the latency benchmarks and random-weight models built from them.

* ``tiny``: :func:`vlxseek_core.tiny.tiny_config_dict` (the test checkpoint's shapes).
* ``real3b``: the released VLM-FO1-3B shapes (Qwen2.5-VL-3B LLM and ViT, DaViT-large aux tower,
  SimpleFP, ``mlp2x_gelu`` region connector); the values are
  :data:`vlxseek_core.config.VLM_FO1_3B_CONFIG` (checked in ``test/core/test_checkpoint.py``
  against the reference key list).
* ``vlxseek15-tiny``, ``vlxseek15-10b``, ``vlxseek15-depthcut``: the VLX-Seek 1.5 family, see
  :mod:`benchmarks.configs_vlx15`.

Weights are random (timing does not depend on their values). Depth can be truncated to fit a
CPU run: ``layers`` (LLM decoder layers), ``vision_layers`` (ViT blocks) and, for 1.5,
``aux_layers`` (C-RADIO blocks); what was changed is returned as human-readable notes that
every benchmark prints. Before any weight is allocated, the model is built on the meta device
and refused (:class:`InsufficientMemory`) when its weights alone do not fit the device.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch

from vlxseek_core.config import VLM_FO1_3B_CONFIG

from benchmarks import configs_vlx15

REAL_3B: Dict[str, Any] = VLM_FO1_3B_CONFIG

CONFIG_NAMES = ("tiny", "real3b")
"""VLM-FO1 sizes (every benchmark that builds a model)."""
ALL_CONFIG_NAMES = CONFIG_NAMES + configs_vlx15.CONFIG_NAMES
"""Both families (the benchmarks that support VLX-Seek 1.5: bench_stages, bench_decode)."""
MEMORY_HEADROOM = 0.9
"""Weights may take at most this share of the free memory: activations need the rest."""


class InsufficientMemory(RuntimeError):
    """The model's weights do not fit the device (raised before anything is allocated)."""


def family(name: str) -> str:
    """``"vlm_fo1"`` or ``"vlx_seek_1_5"`` for a config name.

    Raises:
        ValueError: unknown name.
    """
    if name in CONFIG_NAMES:
        return "vlm_fo1"
    if name in configs_vlx15.CONFIG_NAMES:
        return configs_vlx15.FAMILY
    raise ValueError(f"unknown config {name!r}; choose from {', '.join(ALL_CONFIG_NAMES)}")


def config_dict(name: str) -> Dict[str, Any]:
    """The ``config.json`` content of a named size.

    Raises:
        ValueError: unknown name.
    """
    if name == "tiny":
        from vlxseek_core.tiny import tiny_config_dict

        return tiny_config_dict()
    if name == "real3b":
        return copy.deepcopy(REAL_3B)
    raise ValueError(f"unknown config {name!r}; choose from {', '.join(CONFIG_NAMES)}")


def _truncate_vision(vision: Dict[str, Any], depth: int) -> None:
    """Keep the first ``depth`` ViT blocks; the last kept block becomes a full-attention one
    (the HFRE reads the last full-attention block's output)."""
    full = [i for i in vision["fullatt_block_indexes"] if i < depth - 1] + [depth - 1]
    vision["depth"] = depth
    vision["fullatt_block_indexes"] = full


def build_config(name: str, layers: Optional[int] = None, vision_layers: Optional[int] = None,
                 aux_layers: Optional[int] = None) -> Tuple[Any, List[str]]:
    """``(config, notes)`` for a named size, optionally with truncated depth.

    Args:
        name: one of :data:`ALL_CONFIG_NAMES`.
        layers: keep this many LLM decoder layers (``None`` = all).
        vision_layers: keep this many ViT blocks (``None`` = all).
        aux_layers: keep this many C-RADIO blocks (VLX-Seek 1.5 only; DaViT has stages).

    Returns:
        ``VLMFO1Config`` or ``VLXSeek15Config`` and the notes.

    Raises:
        ValueError: unknown name, a depth outside ``[1, full depth]``, or ``aux_layers`` for
            a VLM-FO1 size.
    """
    from vlxseek_core.config import VLMFO1Config

    if family(name) == configs_vlx15.FAMILY:
        return configs_vlx15.build_config(name, layers, vision_layers, aux_layers)
    if aux_layers is not None:
        raise ValueError(f"--aux-layers is for the VLX-Seek 1.5 configs; {name}'s DaViT aux "
                         "tower is not cut")
    cfg = config_dict(name)
    notes: List[str] = []
    full_layers = cfg["num_hidden_layers"]
    if layers is not None and layers != full_layers:
        if not 1 <= layers <= full_layers:
            raise ValueError(f"--layers must be in [1, {full_layers}] for {name}")
        cfg["num_hidden_layers"] = layers
        notes.append(f"LLM TRUNCATED to {layers} of {full_layers} decoder layers")
    full_vit = cfg["vision_config"]["depth"]
    if vision_layers is not None and vision_layers != full_vit:
        if not 1 <= vision_layers <= full_vit:
            raise ValueError(f"--vision-layers must be in [1, {full_vit}] for {name}")
        _truncate_vision(cfg["vision_config"], vision_layers)
        notes.append(f"ViT TRUNCATED to {vision_layers} of {full_vit} blocks (full attention "
                     f"at {cfg['vision_config']['fullatt_block_indexes']})")
    return VLMFO1Config(**cfg), notes


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Give every parameter benchmark-friendly random values in place.

    Matrices and embeddings ~ N(0, std²); biases 0; other vectors (norm scales) 1. Avoids the
    garbage (possibly NaN/denormal) values of uninitialised memory, which would distort timing.
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if param.ndim >= 2:
            param.copy_(torch.randn(param.shape, generator=gen, device=device) * std)
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)


def _empty_model(name: str, config, dtype: torch.dtype):
    """The family loader's empty model (no weight initialisation), embeddings tied as the
    config says. Under ``torch.device("meta")`` nothing is allocated."""
    if family(name) == configs_vlx15.FAMILY:
        return configs_vlx15.build_empty(config, dtype)
    from vlxseek_core import checkpoint

    model = checkpoint.build_empty_model(config, dtype)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


def meta_parameter_bytes(name: str, config, dtype: torch.dtype) -> Dict[str, int]:
    """Weight bytes per top-level component (``model.*`` children, ``lm_head``) and ``total``,
    counted on a meta-device build (nothing allocated; seconds even at 10B).

    Tied weights are counted once, under the first component that holds them.
    """
    with torch.device("meta"):
        model = _empty_model(name, config, dtype)
    seen, out = set(), {}
    parts = list(model.model.named_children()) + [("lm_head", model.lm_head)]
    for part, module in parts:
        size = 0
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                size += p.numel() * p.element_size()
        out[part] = size
    out["total"] = sum(out.values())
    return out


def free_bytes(device: str) -> int:
    """Memory a new model can use on ``device``: free CUDA memory, or the host's available
    memory (psutil; what the kernel can give without swapping)."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)


def require_memory(name: str, config, dtype: torch.dtype, device: str,
                   available: Optional[Dict[str, int]] = None) -> Dict[str, int]:
    """Refuse a model whose weights alone do not fit, before allocating anything.

    The model is built on the host and then moved (as :func:`build_random_model` does), so a
    GPU run needs the weights' size free on the host and on the GPU.

    Args:
        available: bytes per device (``{"cpu": …, "cuda": …}``) instead of asking the system
            (tests).

    Returns:
        :func:`meta_parameter_bytes` of the model.

    Raises:
        InsufficientMemory: weights > :data:`MEMORY_HEADROOM` × free memory on a device the
            build uses; the message gives the sizes and what to run instead.
    """
    sizes = meta_parameter_bytes(name, config, dtype)
    need = sizes["total"]
    for dev in ["cpu"] + ([device] if device != "cpu" else []):
        key = "cuda" if dev.startswith("cuda") else "cpu"
        free = (available or {}).get(key)
        free = free_bytes(dev) if free is None else free
        if need <= MEMORY_HEADROOM * free:
            continue
        parts = ", ".join(f"{k} {v / 2 ** 30:.1f}" for k, v in sizes.items() if k != "total")
        dtype_name = str(dtype).replace("torch.", "")
        hint = ("use --device cuda (bf16 halves fp32), " if dev == "cpu" else "")
        raise InsufficientMemory(
            f"{name} needs {need / 2 ** 30:.1f} GiB for its {dtype_name} weights alone "
            f"(counted on the meta device, GiB: {parts}) but {dev} has "
            f"{free / 2 ** 30:.1f} GiB available (limit {MEMORY_HEADROOM:.0%} of it, the rest "
            f"is for activations); {hint}cut the depth (--layers, --vision-layers"
            + (", --aux-layers" if family(name) == configs_vlx15.FAMILY else "")
            + ")" + (" or use --config vlxseek15-depthcut" if name == configs_vlx15.REAL_10B
                     else ""))
    return sizes


def build_random_model(name: str, dtype: torch.dtype, device: str, layers: Optional[int] = None,
                       vision_layers: Optional[int] = None, seed: int = 0,
                       attn_implementation: str = "auto", aux_layers: Optional[int] = None,
                       check_memory: bool = True):
    """A random-weight model of a named size on ``device``, in eval mode.

    Built with the family checkpoint loader's own empty-model builder (so buffers and dtypes
    are what a loaded checkpoint gets), given the attention backend the loader would choose,
    then filled by :func:`randomize_` (VLX-Seek 1.5: plus
    :func:`benchmarks.configs_vlx15.finish_random`).

    Args:
        check_memory: run :func:`require_memory` first.

    Returns:
        ``(model, notes)``; ``notes`` lists any truncation and the attention backend.

    Raises:
        ValueError: as :func:`build_config`.
        InsufficientMemory: the weights do not fit (``check_memory``).
    """
    config, notes = build_config(name, layers, vision_layers, aux_layers)
    if check_memory:
        require_memory(name, config, dtype, device)
    model = _empty_model(name, config, dtype).to(device)
    randomize_(model, seed=seed)
    if family(name) == configs_vlx15.FAMILY:
        notes += configs_vlx15.finish_random(model, device, dtype, attn_implementation)
        return model.eval(), notes
    from vlxseek_core import checkpoint

    if hasattr(checkpoint, "set_attention"):  # the loader's backend choice, when it has one
        attn = checkpoint.choose_attn_implementation(device, dtype, attn_implementation)
        checkpoint.set_attention(model, attn)
        notes.append(f"attention backend: {attn}")
    return model.eval(), notes


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of the distinct parameters of ``module`` (tied weights counted once)."""
    seen = {}
    for p in module.parameters():
        seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())


def add_model_size_arguments(parser, names: Tuple[str, ...] = CONFIG_NAMES) -> None:
    """``--config`` (one of ``names``) and ``--layers``, shared by the latency benchmarks."""
    parser.add_argument("--config", choices=names, default="tiny",
                        help=f"model size (random weights): {', '.join(names)}; default tiny")
    parser.add_argument("--layers", type=int, default=None,
                        help="keep only K LLM decoder layers (for real3b / vlxseek15-10b on "
                             "CPU)")
