"""``vlxseek inspect`` for VLX-Seek 1.5 checkpoints: checks without loading weights (spec
vlx-seek-1.5 §1.3-§1.5, §7).

Same report and sections as the VLM-FO1 checks (:mod:`vlxseek_core.inspect_checkpoint`, whose
file and header helpers are reused):

* ``files`` — config, processor, generation and tokenizer files; safetensors headers and index;
* ``config`` — ``model_type``, the ``mm_*``/aux keys of §1.3 (required ones fail when absent; the
  §7.1 unknowns warn, the reference default then applies), :func:`.config.validate_config`;
* ``tokenizer`` — the chat/vision tokens, ``<objfeat>``, ``<ground>``, ``<objects>`` (and their
  closing tags), ``<obj0>``…: present, unique, inside the embedding; ``<|image_pad|>`` =
  ``image_token_id`` = 248056 and ``<objfeat>`` = 248181 (the ids the model splices at, §1.5);
* ``weights`` — every name and shape against the model the config describes (meta device);
* ``spec`` (with ``spec_path`` = ``vlx-seek-1.5-10b-keys.json``) — the language-model, primary-
  and aux-tower keys (which no ``mm_*`` value changes) when the config has the 10B sizes, and the
  region-encoder/connector keys when the config is the file's guessed variant (concat, primary
  SimpleFP at 512 channels, ``identity`` / ``mlp2x_gelu``).
"""
from __future__ import annotations

import os
from typing import Dict, Optional

from ...inspect_report import (FAIL, INFO, OK, SKIP, WARN, InspectReport, _check_files,
                               _read_json, _report_comparison, check_added_tokens,
                               compare_names, load_checked_config, report_config_keys)
from ...tokens import (END_OF_TEXT, GROUNDING_TOKENS, IM_END, IM_START, IMAGE_PAD, THINK_CLOSE,
                       THINK_OPEN, VISION_END, VISION_START)
from .box_order import OBJ_TOKENS
from .config import IMAGE_TOKEN_ID, MM_DEFAULTS, MODEL_TYPE, OBJECT_FEATURE_TOKEN_ID
from .expansion import OBJ_FEATURE_PLACEHOLDER

REQUIRED_CONFIG_KEYS = ("mm_vision_tower", "mm_vision_tower_aux", "vision_aux_config",
                        "mm_object_hidden_size", "image_token_id")
"""Keys the reference reads without a usable default (§1.3)."""
UNKNOWN_CONFIG_KEYS = (
    "mm_projector_type", "mm_projector_aux_type", "mm_object_feature_combination",
    "mm_use_vision_tower_object_feature", "mm_use_simpleFPN_for_vt",
    "mm_use_simpleFPN_for_vt_aux", "mm_simpleFPN_out_channels_for_vt", "mm_roi_output_size",
    "mm_roi_algined", "mm_add_pos_embed", "mm_bbox_order_mode")
"""Keys whose real value only the checkpoint settles (§7.1): absent → WARN."""
CONFIG_KEYS = REQUIRED_CONFIG_KEYS + UNKNOWN_CONFIG_KEYS + (
    "mm_hidden_size", "mm_use_vt_object_feature_only", "mm_use_separate_mlp_for_object")
REQUIRED_TOKENS = (END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD,
                   OBJ_FEATURE_PLACEHOLDER, OBJ_TOKENS.token(0)) + GROUNDING_TOKENS
OPTIONAL_TOKENS = (THINK_OPEN, THINK_CLOSE)
BASE_PREFIXES = ("model.language_model.", "lm_head.", "model.vision_tower.",
                 "model.vision_tower_aux.")
"""Keys that depend on the LLM and tower sizes only, not on any ``mm_*`` value."""


def _check_config(report: InspectReport, directory: str):
    """Config keys and validation; returns the loaded config or ``None``."""
    from .checkpoint import load_config

    try:
        raw = _read_json(os.path.join(directory, "config.json"))
    except (OSError, ValueError) as exc:
        report.add("config", FAIL, f"cannot read config.json: {exc}")
        return None
    report.facts["model_type"] = raw.get("model_type")
    report.add("config", OK, f"model_type = {MODEL_TYPE!r} (VLX-Seek 1.5)")
    report_config_keys(report, raw, CONFIG_KEYS, REQUIRED_CONFIG_KEYS, UNKNOWN_CONFIG_KEYS,
                       MM_DEFAULTS, "spec vlx-seek-1.5 §1.3", "spec §7.1")
    config = load_checked_config(report, directory, load_config)
    if config is None:
        return None
    report.facts.update({key: config.mm(key) for key in UNKNOWN_CONFIG_KEYS})
    report.facts.update({"mm_object_hidden_size": config.mm_object_hidden_size,
                         "vocab_size": config.text_config.vocab_size,
                         "random_weights": bool(config.mm("vlxseek_random_weights"))})
    if report.facts["random_weights"]:
        report.add("config", WARN, "vlxseek_random_weights is set: random test weights")
    return config


def _check_tokenizer(report: InspectReport, directory: str, config) -> None:
    tokens = check_added_tokens(report, directory, REQUIRED_TOKENS, OPTIONAL_TOKENS)
    if tokens is None:
        return
    objects = []
    while OBJ_TOKENS.token(len(objects)) in tokens:
        objects.append(tokens[OBJ_TOKENS.token(len(objects))])
    if objects:
        contiguous = objects == list(range(objects[0], objects[0] + len(objects)))
        report.add("tokenizer", INFO, f"<obj0>…<obj{len(objects) - 1}>: {len(objects)} region "
                   f"tokens, ids {objects[0]}…{objects[-1]}"
                   + ("" if contiguous else " (not contiguous)"))
    ids = report.facts["token_ids"]
    report.facts["num_object_tokens"] = len(objects)
    # the model splices image rows at 248056 and region rows at 248181 whatever the tokenizer
    # says (§1.5), so the tokenizer must expand to exactly those ids
    for token, want in ((IMAGE_PAD, IMAGE_TOKEN_ID),
                        (OBJ_FEATURE_PLACEHOLDER, OBJECT_FEATURE_TOKEN_ID)):
        if token in tokens:
            same = tokens[token] == want
            report.add("tokenizer", OK if same else FAIL, f"{token} = {tokens[token]}"
                       + ("" if same else f", but the model splices at {want} (§1.5)"))
    if config is not None:
        vocab = config.text_config.vocab_size
        outside = [f"{t} = {i}" for t, i in ids.items() if i >= vocab]
        if outside:
            report.add("tokenizer", FAIL, f"token ids beyond the embedding's {vocab} rows",
                       outside)


def _expected_names(config) -> Dict[str, tuple]:
    """Reference key → shape of the model ``config`` describes, built on the meta device."""
    import torch

    from .checkpoint import build_empty_model, model_state_names

    with torch.device("meta"):
        return model_state_names(build_empty_model(config))


def _split(names: Dict[str, tuple]):
    base = {k: v for k, v in names.items() if k.startswith(BASE_PREFIXES)}
    return base, {k: v for k, v in names.items() if k not in base}


def _check_spec(report: InspectReport, spec_path: str, found: Dict[str, tuple],
                expected: Optional[Dict[str, tuple]]) -> None:
    try:
        spec = {k: tuple(v) for k, v in _read_json(spec_path)["keys"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        report.add("spec", FAIL, f"cannot read the spec key file {spec_path}: {exc}")
        return
    if expected is None or not found:
        report.add("spec", SKIP, "needs a usable config and readable weights")
        return
    name = os.path.basename(spec_path)
    (spec_base, spec_rest), (want_base, want_rest) = _split(spec), _split(expected)
    found_base, found_rest = _split(found)
    if want_base != spec_base:
        diff = compare_names(want_base, spec_base)
        report.add("spec", SKIP, f"the config's LLM/tower sizes are not the 10B ones of {name} "
                   f"({sum(map(len, diff.values()))} keys differ)",
                   (diff["missing"] + diff["unexpected"] + diff["mismatched"])[:5])
        return
    _report_comparison(report, "spec", f"{name} (LLM, primary and aux tower keys)",
                       compare_names(found_base, spec_base), len(spec_base))
    if want_rest == spec_rest:
        _report_comparison(report, "spec", f"{name} (region encoder and connectors, the "
                           "file's concat/512 variant)", compare_names(found_rest, spec_rest),
                           len(spec_rest))
    else:
        report.add("spec", INFO, f"the config's region-encoder/connector variant is not the "
                   f"guessed one of {name}; those keys are checked against the config only "
                   "(weights)")


def inspect_checkpoint(directory: str, spec_path: Optional[str] = None) -> InspectReport:
    """Check a VLX-Seek 1.5 ``directory`` without loading weights (see the module docstring).

    Args:
        directory: checkpoint directory (``model_type`` ``vlx_seek_1_5``).
        spec_path: optional ``vlx-seek-1.5-10b-keys.json``.

    Returns:
        :class:`~vlxseek_core.inspect_checkpoint.InspectReport`; never raises for problems of
        the checkpoint itself.
    """
    report = InspectReport(directory)
    if not os.path.isdir(directory):
        report.add("files", FAIL, f"checkpoint directory {directory!r} does not exist")
        return report
    tensors = _check_files(report, directory)
    config = _check_config(report, directory)
    _check_tokenizer(report, directory, config)
    expected = None
    if not tensors:
        report.add("weights", SKIP, "no readable safetensors headers")
    elif config is None:
        report.add("weights", SKIP, "no usable config: expected names unknown")
    else:
        try:
            expected = _expected_names(config)
        except Exception as exc:  # noqa: BLE001 - any construction error is a finding
            report.add("weights", FAIL, f"cannot build the model from config.json: "
                       f"{type(exc).__name__}: {exc}")
        else:
            report.add("weights", INFO, f"{report.facts['num_tensors']} tensors, "
                       f"{report.facts['num_parameters']:,} parameters")
            _report_comparison(report, "weights", "the model built from config.json",
                               compare_names({k: t.shape for k, t in tensors.items()},
                                             expected), len(expected))
    if spec_path:
        _check_spec(report, spec_path, {k: t.shape for k, t in tensors.items()}, expected)
    return report
