"""Check a VLM-FO1 checkpoint directory without loading its weights (spec §2.2, §2.9, §3.1, §7.16).

Only small files and safetensors *headers* are read (8-byte little-endian header length + JSON
header per shard), so a 7 GB checkpoint is checked in about a second. Sections:

* ``files`` — config, tokenizer, processor and generation files; safetensors shards, the shard
  index's consistency, truncated shards (incomplete downloads). Pickled-only weights fail.
* ``config`` — ``model_type``, the ``mm_*``/aux keys of spec §2.2 (required ones fail when
  absent, the §7.16 unknowns warn because the code default then applies), validation.
* ``tokenizer`` — added tokens and their ids from ``tokenizer.json``, ``tokenizer_config.json``
  and ``added_tokens.json`` (consistent across files, inside the embedding, ``<|image_pad|>`` =
  ``config.image_token_id``): the Qwen chat/vision tokens, ``<region0>``…``<region99>``,
  ``<ground>``, ``</ground>``, ``<objects>``, ``</objects>``.
* ``weights`` — every tensor name and shape against the model this project builds from the
  checkpoint's own config (constructed on the meta device: no memory, no init).
* ``spec`` (with ``spec_path``) — the keys VLM-FO1 adds beyond Qwen2.5-VL against
  ``vlm-fo1-3b-keys.json`` when the config is the 3B one (likely config or a listed variant).

Statuses: ``OK``, ``FAIL`` (the checkpoint will not load or will misbehave), ``WARN``, ``INFO``,
``SKIP``. The report is ``ok`` when nothing failed. The report class, the ``files`` section and
the tokenizer-file reader are family-independent and live in :mod:`.inspect_report`.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from .checkpoint import TIED_LM_HEAD
from .config import MM_DEFAULTS, MODEL_TYPE
from .errors import CheckpointError
# the family-independent report, file and tokenizer-file checks, re-exported: their import
# path was this module before the split (the VLX-Seek 1.5 inspect and the tests use it)
from .inspect_report import (FAIL, INFO, MAX_HEADER_BYTES, OK, OTHER_FILES,  # noqa: F401
                             SECTIONS, SKIP, TOKENIZER_FILES, WARN, Check, InspectReport,
                             TensorInfo, _check_files, _numel, _read_json, _report_comparison,
                             _shape, added_tokens, check_added_tokens, compare_names,
                             load_checked_config, read_safetensors_header,
                             report_config_keys, tokenizer_json_added_tokens)
from .tokens import (END_OF_TEXT, GROUNDING_TOKENS, IM_END, IM_START, IMAGE_PAD, REGION_TOKENS,
                     THINK_CLOSE, THINK_OPEN, VISION_END, VISION_START)


REQUIRED_CONFIG_KEYS = ("mm_vision_tower", "mm_vision_tower_aux", "mm_region_hidden_size",
                        "mm_use_region_index_token", "aux_image_aspect_ratio")
"""Keys the reference reads without a default (spec §2.2)."""
UNKNOWN_CONFIG_KEYS = ("mm_projector_type", "mm_projector_aux_type", "mm_roi_output_size",
                       "mm_apply_region_layer_norm", "aux_image_size",
                       "tokenizer_model_max_length")
"""Keys whose real value must come from the checkpoint (spec §7.16): absent → WARN."""
MM_CONFIG_KEYS = (
    "mm_vision_tower", "mm_vision_tower_aux", "mm_projector_type", "mm_hidden_size",
    "mm_projector_aux_type", "mm_region_hidden_size", "mm_use_vision_tower_region_feature",
    "mm_use_simpleFPN_for_vt", "mm_region_feature_combination", "mm_apply_position_embedding",
    "mm_pos_embedding_strategy", "mm_apply_region_layer_norm", "mm_roi_output_size",
    "mm_use_vt_region_feature_only", "mm_use_region_index_token", "aux_image_size",
    "aux_image_aspect_ratio", "tokenizer_model_max_length")
"""The config keys of spec §2.2, in its order."""

REQUIRED_TOKENS = ((END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD)
                   + REGION_TOKENS + GROUNDING_TOKENS)
OPTIONAL_TOKENS = (THINK_OPEN, THINK_CLOSE)
LLM_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
"""State-dict prefixes of the stock Qwen2.5 LLM (not listed in the spec key file)."""

# The 3B "likely config" of vlm-fo1-3b-keys.json (spec §2.2, §2.9).
_SPEC_3B_SIZES = {"text hidden_size": 2048, "text num_hidden_layers": 36,
                  "vision depth": 32, "vision hidden_size": 1280,
                  "vision out_hidden_size": 2048, "mm_hidden_size": 2048}


def _check_config(report: InspectReport, directory: str):
    """Config keys and validation; returns the loaded config or ``None``."""
    from .checkpoint import load_config

    path = os.path.join(directory, "config.json")
    try:
        raw = _read_json(path)
    except (OSError, ValueError) as exc:
        report.add("config", FAIL, f"cannot read config.json: {exc}")
        return None
    model_type = raw.get("model_type")
    report.facts["model_type"] = model_type
    report.add("config", OK if model_type == MODEL_TYPE else FAIL,
               f"model_type = {model_type!r}" + ("" if model_type == MODEL_TYPE
                                                 else f" (expected {MODEL_TYPE!r})"))
    report_config_keys(report, raw, MM_CONFIG_KEYS, REQUIRED_CONFIG_KEYS, UNKNOWN_CONFIG_KEYS,
                       MM_DEFAULTS, "spec §2.2", "spec §7.16")
    for key, needle in (("mm_vision_tower", ("qwen2.5-vl", "qwen2_5_vl")),
                        ("mm_vision_tower_aux", ("davit",))):
        value = str(raw.get(key, "")).lower()
        if key in raw and not any(n in value for n in needle):
            report.add("config", WARN, f"{key} does not contain {' or '.join(needle)}: the "
                       "reference loader would refuse it (spec §2.2)")
    config = load_checked_config(report, directory, load_config)
    if config is None:
        return None
    report.facts.update({
        "mm_projector_type": config.mm("mm_projector_type"),
        "mm_projector_aux_type": config.mm("mm_projector_aux_type"),
        "mm_roi_output_size": config.mm("mm_roi_output_size"),
        "aux_image_aspect_ratio": getattr(config, "aux_image_aspect_ratio", None),
        "aux_image_size": config.mm("aux_image_size"),
        "mm_region_hidden_size": getattr(config, "mm_region_hidden_size", None),
        "mm_apply_region_layer_norm": config.mm("mm_apply_region_layer_norm"),
        "vocab_size": _text(config).vocab_size,
        "random_weights": bool(config.mm("vlxseek_random_weights")),
    })
    f = report.facts
    report.add("config", INFO, f"projectors: mm_projector={f['mm_projector_type']}, "
               f"mm_projector_aux={f['mm_projector_aux_type']}; RoI {f['mm_roi_output_size']}"
               f"x{f['mm_roi_output_size']}; aux {f['aux_image_aspect_ratio']} at "
               f"{f['aux_image_size']} px")
    if f["random_weights"]:
        report.add("config", WARN, "vlxseek_random_weights is set: random test weights")
    return config


def _text(config):
    return getattr(config, "text_config", None) or config


def _check_tokenizer(report: InspectReport, directory: str, config) -> None:
    tokens = check_added_tokens(report, directory, REQUIRED_TOKENS, OPTIONAL_TOKENS)
    if tokens is None:
        return
    absent_optional = [t for t in OPTIONAL_TOKENS if t not in tokens]
    if absent_optional:
        report.add("tokenizer", INFO, f"optional tokens absent: {', '.join(absent_optional)}")
    ids = report.facts["token_ids"]
    regions = [tokens[t] for t in REGION_TOKENS if t in tokens]
    if regions:
        contiguous = regions == list(range(regions[0], regions[0] + len(regions)))
        report.add("tokenizer", INFO, f"<region0>…<region{len(regions) - 1}> ids "
                   f"{regions[0]}…{regions[-1]}"
                   + ("" if contiguous and len(regions) == len(REGION_TOKENS)
                      else " (not contiguous)"))
    report.add("tokenizer", INFO, "tag ids: " + ", ".join(
        f"{t}={tokens[t]}" for t in GROUNDING_TOKENS + OPTIONAL_TOKENS if t in tokens))
    if config is None:
        return
    vocab = _text(config).vocab_size
    outside = [f"{t} = {i}" for t, i in ids.items() if i >= vocab]
    if outside:
        report.add("tokenizer", FAIL, f"token ids beyond the embedding's {vocab} rows "
                   "(embedding not resized?)", outside)
    image_token_id = getattr(config, "image_token_id", None)
    if IMAGE_PAD in tokens and image_token_id is not None:
        same = tokens[IMAGE_PAD] == image_token_id
        report.add("tokenizer", OK if same else FAIL,
                   f"{IMAGE_PAD} = {tokens[IMAGE_PAD]}" + (
                       " = config.image_token_id" if same
                       else f" but config.image_token_id = {image_token_id} (M-RoPE, spec §3.3)"))


def expected_state_names(config) -> Dict[str, tuple]:
    """Reference key → shape of the model built from ``config``, on the meta device."""
    import torch

    from .checkpoint import build_empty_model, model_state_names

    with torch.device("meta"):
        model = build_empty_model(config, torch.float32)
    return model_state_names(model)


def _check_weights(report: InspectReport, tensors: Dict[str, TensorInfo], config) -> None:
    if not tensors:
        report.add("weights", SKIP, "no readable safetensors headers")
        return
    report.add("weights", INFO, f"{report.facts['num_tensors']} tensors, "
               f"{report.facts['num_parameters']:,} parameters, dtypes "
               + ", ".join(f"{k}×{v}" for k, v in sorted(report.facts["dtypes"].items())))
    if config is None:
        report.add("weights", SKIP, "no usable config: expected names unknown")
        return
    try:
        expected = expected_state_names(config)
    except Exception as exc:  # noqa: BLE001 - any construction error is a finding
        report.add("weights", FAIL, f"cannot build the model from config.json: "
                   f"{type(exc).__name__}: {exc}")
        return
    found = {k: v.shape for k, v in tensors.items()}
    if TIED_LM_HEAD in found and TIED_LM_HEAD not in expected:
        report.add("weights", INFO, f"{TIED_LM_HEAD} stored although the embeddings are tied "
                   "(the embedding matrix is used)")
        expected = {**expected, TIED_LM_HEAD: found[TIED_LM_HEAD]}
    _report_comparison(report, "weights", "the model built from config.json",
                       compare_names(found, expected), len(expected))


def spec_expected_keys(spec: Dict[str, Any], config) -> Tuple[Optional[Dict[str, tuple]], str]:
    """The added (non-LLM) keys ``vlm-fo1-3b-keys.json`` lists for ``config``.

    Returns:
        ``(keys → shapes, description)``, or ``(None, why not)`` when the config is not the 3B
        likely config or a variant the spec file describes (likely config ± region LayerNorm,
        or without SimpleFP, or with linear projectors; never vt-only region features).
    """
    text, vision = _text(config), config.vision_config
    sizes = {"text hidden_size": text.hidden_size,
             "text num_hidden_layers": text.num_hidden_layers, "vision depth": vision.depth,
             "vision hidden_size": vision.hidden_size,
             "vision out_hidden_size": vision.out_hidden_size,
             "mm_hidden_size": getattr(config, "mm_hidden_size", None)}
    off = [f"{k} = {v} (3B: {_SPEC_3B_SIZES[k]})" for k, v in sizes.items()
           if v != _SPEC_3B_SIZES[k]]
    if getattr(config, "vlxseek_aux_vision_config", None):
        off.append("vlxseek_aux_vision_config overrides DaViT-large")
    if config.mm("vlxseek_simple_fpn_channels") != 512:
        off.append("vlxseek_simple_fpn_channels != 512")
    if not config.mm("mm_use_vision_tower_region_feature"):
        off.append("mm_use_vision_tower_region_feature is false")
    if config.mm("mm_use_vt_region_feature_only"):
        # Not in the spec file: no aux_region_norm, a narrower mm_projector_aux input.
        off.append("mm_use_vt_region_feature_only is true")
    if off:
        return None, "config is not the 3B config of the spec file: " + "; ".join(off)
    keys = {k: tuple(v) for k, v in spec["real_3b_likely_config"]["keys"].items()}
    variant = ["likely config"]
    projectors = (config.mm("mm_projector_type"), config.mm("mm_projector_aux_type"))
    simple_fpn = bool(config.mm("mm_use_simpleFPN_for_vt"))
    if projectors == ("linear", "linear") and simple_fpn:
        keys = {k: v for k, v in keys.items() if not k.startswith("model.mm_projector")}
        keys.update({k: tuple(v) for k, v in
                     spec["real_3b_variant_linear_projectors_keys_that_differ"].items()})
        variant = ["linear projectors variant"]
    elif projectors != ("identity", "mlp2x_gelu"):
        return None, f"projector types {projectors} are not described by the spec file"
    if not simple_fpn:
        keys = {k: v for k, v in keys.items()
                if not k.startswith("model.object_vp_extractor.simple_fpn.")}
        keys.update({k: tuple(v) for k, v in
                     spec["real_3b_variant_no_simpleFPN_keys_that_differ"].items()})
        variant = ["no-SimpleFP variant"]
    if config.mm("mm_apply_region_layer_norm"):
        keys.update({k: tuple(v) for k, v in
                     spec["real_3b_extra_keys_if_mm_apply_region_layer_norm"].items()})
        variant.append("region LayerNorm")
    return keys, " + ".join(variant)


def _check_spec(report: InspectReport, spec_path: str, tensors: Dict[str, TensorInfo],
                config) -> None:
    try:
        spec = _read_json(spec_path)
        spec["real_3b_likely_config"]["keys"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.add("spec", FAIL, f"cannot read the spec key file {spec_path}: {exc}")
        return
    if config is None or not tensors:
        report.add("spec", SKIP, "needs a usable config and readable weights")
        return
    expected, description = spec_expected_keys(spec, config)
    if expected is None:
        report.add("spec", SKIP, description)
        return
    found = {k: v.shape for k, v in tensors.items() if not k.startswith(LLM_PREFIXES)}
    _report_comparison(report, "spec", f"{os.path.basename(spec_path)} ({description})",
                       compare_names(found, expected), len(expected))


def inspect_checkpoint(directory: str, spec_path: Optional[str] = None) -> InspectReport:
    """Check ``directory`` without loading weights, with the checks of its model family.

    ``config.json``'s ``model_type`` selects the family (:mod:`vlxseek_core.families`); a
    directory without a readable one, or with an unknown ``model_type``, gets the VLM-FO1
    checks (which report what is wrong).

    Args:
        directory: checkpoint directory.
        spec_path: optional key file to compare with (``vlm-fo1-3b-keys.json``,
            ``vlx-seek-1.5-10b-keys.json``).

    Returns:
        :class:`InspectReport`; never raises for problems of the checkpoint itself.
    """
    from .families import MODEL_TYPES, family_for_model_type, read_model_type

    try:
        model_type = read_model_type(directory)
    except CheckpointError:
        model_type = None
    if model_type != MODEL_TYPE and isinstance(model_type, str) and model_type in MODEL_TYPES:
        return family_for_model_type(model_type).inspect(directory, spec_path)
    return inspect_fo1_checkpoint(directory, spec_path)


def inspect_fo1_checkpoint(directory: str, spec_path: Optional[str] = None) -> InspectReport:
    """Check a VLM-FO1 ``directory`` without loading weights (see the module docstring).

    Args:
        directory: checkpoint directory.
        spec_path: optional ``vlm-fo1-3b-keys.json`` to compare the added keys with.

    Returns:
        :class:`InspectReport`; never raises for problems of the checkpoint itself.
    """
    report = InspectReport(directory)
    if not os.path.isdir(directory):
        report.add("files", FAIL, f"checkpoint directory {directory!r} does not exist")
        return report
    tensors = _check_files(report, directory)
    config = (_check_config(report, directory)
              if os.path.isfile(os.path.join(directory, "config.json")) else None)
    _check_tokenizer(report, directory, config)
    _check_weights(report, tensors, config)
    if spec_path:
        _check_spec(report, spec_path, tensors, config)
    return report
