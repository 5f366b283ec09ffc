"""LoRA on the LLM of a ``VLMFO1ForCausalLM`` (issue 9 §3; ``vlxseek train --lora R``).

:func:`add_lora` injects ``peft`` LoRA adapters into the LLM's linear layers only —
``model.layers.N.self_attn.{q,k,v,o}_proj`` and ``model.layers.N.mlp.{gate,up,down}_proj`` —
in place: the model keeps its class and module tree (the adapted ``nn.Linear`` become
``peft`` ``lora.Linear`` wrappers around them), so :class:`~.model.TrainingModel`, the frozen
towers and the stage plan of every other module work unchanged. The primary ViT's blocks also
have ``gate_proj``/``up_proj``/``down_proj``; they are never adapted, nor are DaViT, the HFRE or
the connectors.

:func:`merged_model` gives a model with the adapters merged into the base weights whose
``state_dict`` has exactly the reference key names, without touching the model being trained:
only the adapted weights are new tensors; every other parameter and buffer is shared.

LoRA parameters need no special handling by the engine: they are ordinary trainable
parameters (DDP averages their gradients like any other). Exporting from FSDP or DeepSpeed
ZeRO-3 shards is not supported with LoRA (the adapted weights would have to be gathered first);
use DDP or ZeRO-2 for LoRA runs.
"""
from __future__ import annotations

import copy
import itertools
from typing import Dict, List, Optional

import torch
from torch import nn

ADAPTER_NAME = "default"
LLM_LINEAR_PATTERN = (r"model\.layers\.\d+\."
                      r"(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)")
"""Module names (full match) that get adapters: the LLM decoder's linear layers only."""


def _lora_layers(model: nn.Module) -> Dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: mod for name, mod in model.named_modules() if isinstance(mod, LoraLayer)}


def has_lora(model: nn.Module) -> bool:
    """Whether ``model`` carries LoRA adapters (added by :func:`add_lora`)."""
    return bool(_lora_layers(model))


def add_lora(vlm: nn.Module, rank: int, alpha: Optional[float] = None,
             dropout: float = 0.0) -> nn.Module:
    """Add LoRA adapters to the LLM's linear layers of ``vlm``, in place.

    Call it after :func:`~.freezing.apply_stage` (with ``lora=True``, which keeps the embedding,
    final norm and ``lm_head`` frozen). Afterwards the adapters train, the adapted layers' base
    weights (and biases) are frozen, and every other parameter keeps the ``requires_grad``
    flag the stage plan gave it (stage 2: DaViT, HFRE and connector still train).

    Adapter parameters are created in the dtype and on the device of the layer they adapt;
    ``lora_B`` starts at zero, so the model's output is unchanged until the first update.

    Args:
        vlm: a ``VLMFO1ForCausalLM`` (not yet adapted).
        rank: LoRA rank ``r`` (≥ 1).
        alpha: LoRA alpha (scaling ``alpha / rank``); ``None`` = ``2 * rank``.
        dropout: dropout on the adapter input (0 keeps training deterministic).

    Returns:
        ``vlm`` itself (same object and class), with adapters.

    Raises:
        ValueError: ``rank < 1``, a model that already has adapters, or no LLM linear layer
            matched (not a VLM-FO1 model).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if int(rank) < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if has_lora(vlm):
        raise ValueError("the model already carries LoRA adapters")
    flags = {name: p.requires_grad for name, p in vlm.named_parameters()}
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha) if alpha else 2.0 * int(rank),
                        lora_dropout=float(dropout), target_modules=LLM_LINEAR_PATTERN,
                        bias="none")
    try:
        inject_adapter_in_model(config, vlm, adapter_name=ADAPTER_NAME)
    except ValueError as exc:  # peft: "Target modules ... not found in the base model"
        raise ValueError(f"no LLM linear layer to adapt: {exc}") from exc
    # peft freezes everything but the adapters; restore the stage plan outside the LLM.
    for name, param in vlm.named_parameters():
        if ".lora_" in name:
            param.requires_grad_(True)
        elif ".base_layer." in name:
            param.requires_grad_(False)
        else:
            param.requires_grad_(flags[name])
    return vlm


def lora_settings(vlm: nn.Module) -> Dict[str, float]:
    """``{"rank", "alpha", "dropout"}`` of the adapters :func:`add_lora` gave ``vlm``
    (keyword arguments of :func:`add_lora` that re-create them on another copy).

    Raises:
        ValueError: ``vlm`` has no adapters.
    """
    config = (getattr(vlm, "peft_config", None) or {}).get(ADAPTER_NAME)
    if config is None or not has_lora(vlm):
        raise ValueError("the model carries no LoRA adapters")
    return {"rank": int(config.r), "alpha": float(config.lora_alpha),
            "dropout": float(config.lora_dropout)}


def lora_parameter_names(vlm: nn.Module) -> List[str]:
    """Names of the adapter parameters of ``vlm`` (``...lora_A.default.weight`` etc.)."""
    return [name for name, _ in vlm.named_parameters() if ".lora_" in name]


def merged_model(vlm: nn.Module) -> nn.Module:
    """A copy of ``vlm`` with the LoRA adapters merged into the base weights.

    ``vlm`` (the model being trained) is not modified: the returned model shares every
    parameter and buffer with it except the adapted linear weights, which are new tensors
    ``W + (alpha / r) · B @ A`` in ``W``'s dtype and device (extra memory: one copy of the LLM's
    linear weights). Its ``state_dict`` keys are exactly those of the model before
    :func:`add_lora` (no ``base_layer`` / ``lora_`` keys), so it saves as a reference-format
    checkpoint. It is in eval mode, with ``requires_grad`` off on the merged weights; treat it
    as read-only (writing a shared tensor would write the live model's).

    Args:
        vlm: a model adapted by :func:`add_lora` (unwrapped from DDP).

    Returns:
        the merged model (same class as ``vlm``).

    Raises:
        ValueError: ``vlm`` has no adapters, or its adapters were merged in place already.
    """
    layers = _lora_layers(vlm)
    if not layers:
        raise ValueError("the model carries no LoRA adapters")
    for name, layer in layers.items():
        if getattr(layer, "merged", False):
            raise ValueError(f"{name}: adapters already merged in place")
    memo = {id(t): t for t in itertools.chain(vlm.parameters(), vlm.buffers())}
    clone = copy.deepcopy(vlm, memo)  # module objects only: tensors are shared via memo
    with torch.no_grad():
        for name in layers:
            live = vlm.get_submodule(name)
            layer = clone.get_submodule(name)
            base = layer.get_base_layer()
            delta = live.get_delta_weight(ADAPTER_NAME)
            weight = base.weight.detach() + delta.to(base.weight.dtype)
            base.weight = nn.Parameter(weight, requires_grad=False)
            parent_name, _, child = name.rpartition(".")
            setattr(clone.get_submodule(parent_name) if parent_name else clone, child, base)
    if "peft_config" in vars(clone):
        del clone.peft_config
    return clone.eval()
