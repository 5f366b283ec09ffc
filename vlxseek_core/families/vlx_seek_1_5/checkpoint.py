"""Load and save VLX-Seek 1.5 checkpoints under the reference's state_dict names (§1.2, §3.6).

On disk every key is the reference's (``model.language_model.*``, ``lm_head.weight``,
``model.vision_tower.visual.*``, ``model.vision_tower_aux.image_tower.radio_model.*``,
``model.object_vp_extractor.*``, ``model.mm_projector_aux.*``); only the aux tower's keys differ
inside this project (timm layout, :func:`.towers.radio_from_reference` /
:func:`.towers.radio_to_reference`). Loading is strict: the reference key set and every shape
must match, checked before any weight is converted. Safetensors only; shard handling, the shard
index checks and the refusal of pickled weights are :mod:`vlxseek_core.checkpoint`'s.
"""
from __future__ import annotations

import os
from typing import Dict, Tuple

import torch

from ...checkpoint import (WEIGHTS_NAME, LoadReport, _default_dtype, choose_attn_implementation,
                           iter_reference_tensors, read_checked_config, read_json)
from ...errors import CheckpointError
from .config import MODEL_TYPE, VLXSeek15Config, validate_config
from .towers import (RADIO_INTERNAL_PREFIX, RADIO_REFERENCE_PREFIX, radio_from_reference,
                     radio_to_reference)


def load_config(directory: str) -> VLXSeek15Config:
    """Read and validate ``config.json`` (``model_type`` ``vlx_seek_1_5``).

    Raises:
        CheckpointError: missing/malformed file, another model type, or a configuration
            :func:`.config.validate_config` refuses (the message lists every reason).
    """
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"no config.json in {directory!r}")
    raw = read_json(path)
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        kind = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{path}: model_type {kind!r} is not {MODEL_TYPE!r}")
    return read_checked_config(directory, path, VLXSeek15Config, validate_config)


def build_empty_model(config: VLXSeek15Config, dtype: torch.dtype = torch.float32):
    """The model without weight initialisation (fast at 10B), parameters in ``dtype``."""
    from transformers.initialization import no_init_weights

    from .modeling import VLXSeek15ForCausalLM

    with no_init_weights(), _default_dtype(dtype):
        return VLXSeek15ForCausalLM(config)


def reference_state_dict(model, check_bias: bool = True) -> Dict[str, torch.Tensor]:
    """The model's tensors under reference names (what :func:`save_model` writes).

    Raises:
        CheckpointError: ``check_bias`` and the aux patch projection has a non-zero bias
            (not storable).
    """
    state = model.state_dict()
    aux = {k[len(RADIO_INTERNAL_PREFIX):]: v for k, v in state.items()
           if k.startswith(RADIO_INTERNAL_PREFIX)}
    out = {k: v for k, v in state.items() if not k.startswith(RADIO_INTERNAL_PREFIX)}
    aux = radio_to_reference(aux, check_bias)
    out.update({RADIO_REFERENCE_PREFIX + k: v for k, v in aux.items()})
    return out


def model_state_names(model) -> Dict[str, tuple]:
    """Reference key → shape of every tensor the model reads (works on the meta device)."""
    return {k: tuple(v.shape) for k, v in reference_state_dict(model, False).items()}


def set_attention(model, implementation: str) -> None:
    """Use ``implementation`` for the Qwen3.5 LLM and vision tower (the timm aux tower always
    uses torch's scaled-dot-product attention)."""
    model.model.language_model.set_attn_implementation(implementation)
    model.model.vision_tower.visual.set_attn_implementation(implementation)


def load_model(directory: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
               allow_key_mismatch: bool = False,
               attn_implementation: str = "auto") -> Tuple[object, LoadReport]:
    """Load a VLX-Seek 1.5 checkpoint directory (strict by default).

    Args:
        directory: ``config.json`` + safetensors with reference key names.
        dtype: parameter dtype (the int64 ``summary_idxs`` stays int64).
        device: torch device string.
        allow_key_mismatch: load what matches, leave the rest as built (random/zero).
        attn_implementation: see :func:`vlxseek_core.checkpoint.choose_attn_implementation`.

    Returns:
        ``(VLXSeek15ForCausalLM in eval mode, LoadReport)`` (report keys: reference names).

    Raises:
        CheckpointError: unreadable checkpoint, a refused config, or any missing,
            unexpected or shape-mismatched key unless ``allow_key_mismatch``.
    """
    config = load_config(directory)
    try:
        model = build_empty_model(config, dtype)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config the checks let through, torch errors
        raise CheckpointError(f"cannot build the model from {directory}/config.json: "
                              f"{type(exc).__name__}: {exc}") from exc
    expected = model_state_names(model)
    found: Dict[str, torch.Tensor] = {}
    report = LoadReport()
    for key, tensor in iter_reference_tensors(directory):
        if key not in expected:
            report.unexpected.append(key)
        elif tuple(tensor.shape) != expected[key]:
            report.mismatched.append((key, tuple(tensor.shape), expected[key]))
        else:
            found[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    report.missing = sorted(k for k in expected if k not in found)
    if not report.clean and not allow_key_mismatch:
        raise CheckpointError(f"checkpoint {directory} does not match the model: "
                              f"{report.summary()}")
    aux = {k[len(RADIO_REFERENCE_PREFIX):]: found.pop(k) for k in list(found)
           if k.startswith(RADIO_REFERENCE_PREFIX)}
    aux_state, _ = radio_from_reference(aux, model.model.vision_tower_aux.vit)
    found.update({RADIO_INTERNAL_PREFIX + k: v for k, v in aux_state.items()})
    missing, unexpected = model.load_state_dict(found, strict=False, assign=True)
    if (missing or unexpected) and not allow_key_mismatch:
        raise CheckpointError(f"internal key mapping left {len(missing)} missing and "
                              f"{len(unexpected)} unexpected keys: {(missing + unexpected)[:5]}")
    set_attention(model, choose_attn_implementation(device, dtype, attn_implementation))
    return model.to(device).eval(), report


def save_model(model, directory: str) -> None:
    """Write ``config.json`` and ``model.safetensors`` with reference key names.

    Raises:
        CheckpointError: as :func:`reference_state_dict`.
    """
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in reference_state_dict(model).items()}
    model.config.save_pretrained(directory)
    save_file(tensors, os.path.join(directory, WEIGHTS_NAME), metadata={"format": "pt"})
