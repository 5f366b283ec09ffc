"""VLX-Seek 1.5 model sizes for the latency benchmarks (vlx-seek-1.5.md §1.4, §2, §3).

* ``vlxseek15-tiny``: :func:`vlxseek_core.families.vlx_seek_1_5.tiny.tiny_config_dict` (the
  tiny test checkpoint: hybrid LLM of 3 gated-delta-net + 1 attention layer, widths 64/32).
* ``vlxseek15-10b``: :data:`~vlxseek_core.families.vlx_seek_1_5.config.VLX_SEEK_15_10B_CONFIG`,
  the released 10B shapes (Qwen3.5-9B text and vision, C-RADIOv4-SO400M, primary SimpleFP at
  512 channels, concat fusion D = 6656, ``mlp2x_gelu`` connector): 10.02 B parameters, about
  40 GB in fp32 and 20 GB in bf16. The ``mm_*`` choices are the spec's guess (§1.4, §7.1).
* ``vlxseek15-depthcut``: the 10B config with **assumed, cut depths** so that it runs on a CPU:
  every width is the 10B's (vocabulary 248320, hidden 4096, MLP 12288, the attention and
  gated-delta-net heads, ViT 1152/4304, C-RADIO 1152/4304, SimpleFP, connector), but the LLM
  keeps 4 decoder layers (one hybrid period: 3 gated-delta-net + 1 attention layer), the
  Qwen3.5 ViT 4 of 27 blocks and C-RADIO 4 of 27 blocks. About 3.3 B parameters (13 GB fp32;
  the untied 248320-row embedding and ``lm_head`` are 2 B of them). Identical to
  ``vlxseek15-10b --layers 4 --vision-layers 4 --aux-layers 4``; figures are **not** 10B
  figures (per-layer cost can be read off them).

The 0.6B and 3B models are announced but their shapes are unpublished, so there is no config
for them (the spec gives only the 10B's).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

FAMILY = "vlx_seek_1_5"
TINY, REAL_10B, DEPTHCUT = "vlxseek15-tiny", "vlxseek15-10b", "vlxseek15-depthcut"
CONFIG_NAMES = (TINY, REAL_10B, DEPTHCUT)
DEPTHCUT_DEPTHS = {"layers": 4, "vision_layers": 4, "aux_layers": 4}
"""Default depths of ``vlxseek15-depthcut`` (explicit ``--layers`` etc. win)."""


def config_dict(name: str) -> Dict[str, Any]:
    """The ``config.json`` content of a named 1.5 size (depthcut: the 10B's, cut later).

    Raises:
        ValueError: unknown name.
    """
    if name == TINY:
        from vlxseek_core.families.vlx_seek_1_5.tiny import tiny_config_dict

        return tiny_config_dict()
    if name in (REAL_10B, DEPTHCUT):
        from vlxseek_core.families.vlx_seek_1_5.config import VLX_SEEK_15_10B_CONFIG

        return copy.deepcopy(VLX_SEEK_15_10B_CONFIG)
    raise ValueError(f"unknown VLX-Seek 1.5 config {name!r}; choose from "
                     f"{', '.join(CONFIG_NAMES)}")


def _check_depth(option: str, value: int, full: int, name: str) -> None:
    if not 1 <= value <= full:
        raise ValueError(f"{option} must be in [1, {full}] for {name}")


def _truncate_llm(text: Dict[str, Any], layers: int) -> str:
    """Keep the first ``layers`` decoder layers; if none of them is a full-attention layer the
    last kept one becomes one, so that both halves of the hybrid cache (gated-delta-net
    state and attention KV) are still exercised. Returns the kept layer types, abbreviated."""
    types = list(text["layer_types"][:layers])
    if "full_attention" not in types:
        types[-1] = "full_attention"
    text["num_hidden_layers"] = layers
    text["layer_types"] = types
    return "".join("A" if t == "full_attention" else "L" for t in types)


def _truncate_aux(cfg: Dict[str, Any], depth: int) -> List[int]:
    """C-RADIO keeps ``depth`` blocks (the ``vlxseek_aux_vision_config`` extension sizes it);
    returns the blocks the four aux maps are then read from (spec §3.3 rule)."""
    from vlxseek_core.families.vlx_seek_1_5.config import RADIO_SO400M, radio_out_indices

    sizes = dict(RADIO_SO400M)
    sizes.update(cfg.get("vlxseek_aux_vision_config") or {})
    sizes["depth"] = depth
    cfg["vlxseek_aux_vision_config"] = sizes
    return radio_out_indices(depth)


def build_config(name: str, layers: Optional[int] = None, vision_layers: Optional[int] = None,
                 aux_layers: Optional[int] = None) -> Tuple[Any, List[str]]:
    """``(VLXSeek15Config, notes)`` for a named 1.5 size, optionally with cut depths.

    Args:
        name: one of :data:`CONFIG_NAMES`.
        layers: LLM decoder layers to keep (``None``: all; depthcut: 4).
        vision_layers: Qwen3.5 ViT blocks to keep (``None``: all; depthcut: 4).
        aux_layers: C-RADIO blocks to keep (``None``: all; depthcut: 4).

    Raises:
        ValueError: unknown name, a depth outside ``[1, full depth]``, or a config the family's
            :func:`~vlxseek_core.families.vlx_seek_1_5.config.validate_config` refuses.
    """
    from vlxseek_core.families.vlx_seek_1_5.config import (RADIO_SO400M, VLXSeek15Config,
                                                           validate_config)

    cfg = config_dict(name)
    if name == DEPTHCUT:
        layers = DEPTHCUT_DEPTHS["layers"] if layers is None else layers
        vision_layers = (DEPTHCUT_DEPTHS["vision_layers"] if vision_layers is None
                         else vision_layers)
        aux_layers = DEPTHCUT_DEPTHS["aux_layers"] if aux_layers is None else aux_layers
    notes: List[str] = []
    text, vision = cfg["text_config"], cfg["vision_config"]
    full_layers = text["num_hidden_layers"]
    if layers is not None and layers != full_layers:
        _check_depth("--layers", layers, full_layers, name)
        kept = _truncate_llm(text, layers)
        notes.append(f"LLM TRUNCATED to {layers} of {full_layers} decoder layers (types {kept}, "
                     "L = gated-delta-net, A = attention)")
    full_vit = vision["depth"]
    if vision_layers is not None and vision_layers != full_vit:
        _check_depth("--vision-layers", vision_layers, full_vit, name)
        vision["depth"] = vision_layers
        notes.append(f"ViT TRUNCATED to {vision_layers} of {full_vit} Qwen3.5 vision blocks")
    full_aux = (cfg.get("vlxseek_aux_vision_config") or RADIO_SO400M)["depth"]
    if aux_layers is not None and aux_layers != full_aux:
        _check_depth("--aux-layers", aux_layers, full_aux, name)
        indices = _truncate_aux(cfg, aux_layers)
        notes.append(f"aux tower TRUNCATED to {aux_layers} of {full_aux} C-RADIO blocks (maps "
                     f"read after blocks {indices})")
    if name != TINY:
        notes.append("VLX-Seek 1.5 mm_* options (concat fusion, SimpleFP 512, mlp2x_gelu) are "
                     "the spec's guess for the 10B checkpoint (§1.4, §7.1)")
    config = VLXSeek15Config(**cfg)
    problems = validate_config(config)
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))
    return config, notes


def build_empty(config, dtype):
    """The family loader's own empty model (no weight initialisation), parameters in
    ``dtype``; works under ``torch.device("meta")``."""
    from vlxseek_core.families.vlx_seek_1_5.checkpoint import build_empty_model

    return build_empty_model(config, dtype)


def finish_random(model, device: str, dtype, attn_implementation: str) -> List[str]:
    """After :func:`benchmarks.configs.randomize_`: Qwen3.5's zero-centred RMSNorm weights to
    0 (scale ``1 + w`` = 1, its own init), and the attention backend the loader would choose.

    Returns:
        notes (the attention backend).
    """
    import torch

    from vlxseek_core.checkpoint import choose_attn_implementation
    from vlxseek_core.families.vlx_seek_1_5.checkpoint import set_attention

    with torch.no_grad():
        for module in model.modules():
            # randomize_ filled every vector with 1: right for LayerNorm/gated RMSNorm, but
            # Qwen3.5's RMSNorm computes x * (1 + w), which would double every scale
            if type(module).__name__ == "Qwen3_5RMSNorm":
                module.weight.zero_()
    attn = choose_attn_implementation(device, dtype, attn_implementation)
    set_attention(model, attn)
    return [f"attention backend: {attn} (Qwen3.5 LLM and ViT; C-RADIO: torch SDPA)",
            f"gated-delta-net kernels: {linear_attention_kernels()}"]


def linear_attention_kernels() -> str:
    """Which implementation transformers' Qwen3.5 linear-attention layers use: the fused
    kernels of ``flash-linear-attention`` / ``causal-conv1d`` when importable (CUDA), else its
    much slower pure-torch reference (which is what a CPU run measures)."""
    import importlib.util

    have = [name for module, name in (("fla", "flash-linear-attention"),
                                      ("causal_conv1d", "causal-conv1d"))
            if importlib.util.find_spec(module) is not None]
    if not have:
        return "torch reference (flash-linear-attention and causal-conv1d not installed)"
    return "installed: " + ", ".join(have) + " (used on CUDA)"
