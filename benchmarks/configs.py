"""Model sizes for the latency benchmarks and random-weight models built from them.

* ``tiny``: :func:`vlxseek_core.tiny.tiny_config_dict` (the test checkpoint's shapes).
* ``real3b``: the released VLM-FO1-3B shapes (Qwen2.5-VL-3B LLM and ViT, DaViT-large aux tower,
  SimpleFP, ``mlp2x_gelu`` region connector); the values are
  :data:`vlxseek_core.config.VLM_FO1_3B_CONFIG` (checked in ``test/core/test_checkpoint.py``
  against the reference key list).

Weights are random (timing does not depend on their values). Depth can be truncated to fit a
CPU run: ``layers`` (LLM decoder layers) and ``vision_layers`` (ViT blocks); what was changed
is returned as human-readable notes that every benchmark prints.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch

from vlxseek_core.config import VLM_FO1_3B_CONFIG

REAL_3B: Dict[str, Any] = VLM_FO1_3B_CONFIG

CONFIG_NAMES = ("tiny", "real3b")


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


def build_config(name: str, layers: Optional[int] = None,
                 vision_layers: Optional[int] = None) -> Tuple[Any, List[str]]:
    """``(VLMFO1Config, notes)`` for a named size, optionally with truncated depth.

    Args:
        name: ``tiny`` or ``real3b``.
        layers: keep this many LLM decoder layers (``None`` = all).
        vision_layers: keep this many ViT blocks (``None`` = all).

    Raises:
        ValueError: unknown name or a depth outside ``[1, full depth]``.
    """
    from vlxseek_core.config import VLMFO1Config

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


def build_random_model(name: str, dtype: torch.dtype, device: str, layers: Optional[int] = None,
                       vision_layers: Optional[int] = None, seed: int = 0,
                       attn_implementation: str = "auto"):
    """A random-weight ``VLMFO1ForCausalLM`` of a named size on ``device``, in eval mode.

    Built with the checkpoint loader's own :func:`vlxseek_core.checkpoint.build_empty_model` (so
    buffers and dtypes are what a loaded checkpoint gets), given the attention backend the
    loader would choose, then filled by :func:`randomize_`.

    Returns:
        ``(model, notes)``; ``notes`` lists any truncation and the attention backend.
    """
    from vlxseek_core import checkpoint

    config, notes = build_config(name, layers, vision_layers)
    model = checkpoint.build_empty_model(config, dtype).to(device)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    randomize_(model, seed=seed)
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


def add_model_size_arguments(parser) -> None:
    """``--config`` and ``--layers``, shared by the latency benchmarks."""
    parser.add_argument("--config", choices=CONFIG_NAMES, default="tiny",
                        help="model size: tiny (default) or real3b (random weights)")
    parser.add_argument("--layers", type=int, default=None,
                        help="keep only K LLM decoder layers (for real3b on CPU)")
