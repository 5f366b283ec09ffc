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
``SKIP``. The report is ``ok`` when nothing failed.
"""
from __future__ import annotations

import json
import os
import re
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .checkpoint import INDEX_NAME, TIED_LM_HEAD, safetensors_files
from .config import MM_DEFAULTS, MODEL_TYPE
from .errors import CheckpointError
from .tokens import (END_OF_TEXT, GROUNDING_TOKENS, IM_END, IM_START, IMAGE_PAD, REGION_TOKENS,
                     THINK_CLOSE, THINK_OPEN, VISION_END, VISION_START)

OK, FAIL, WARN, INFO, SKIP = "OK", "FAIL", "WARN", "INFO", "SKIP"
SECTIONS = ("files", "config", "tokenizer", "weights", "spec")
MAX_HEADER_BYTES = 100 * 1024 * 1024
_TOKENIZER_HEAD_CHARS = 1 << 20
_ADDED_TOKENS_KEY = re.compile(r'"added_tokens"\s*:\s*\[')

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
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "added_tokens.json",
                   "special_tokens_map.json", "vocab.json", "merges.txt")
OTHER_FILES = ("preprocessor_config.json", "generation_config.json")
LLM_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
"""State-dict prefixes of the stock Qwen2.5 LLM (not listed in the spec key file)."""

# The 3B "likely config" of vlm-fo1-3b-keys.json (spec §2.2, §2.9).
_SPEC_3B_SIZES = {"text hidden_size": 2048, "text num_hidden_layers": 36,
                  "vision depth": 32, "vision hidden_size": 1280,
                  "vision out_hidden_size": 2048, "mm_hidden_size": 2048}


@dataclass
class Check:
    """One line of the report; ``details`` lists the offending items (all of them)."""

    section: str
    status: str
    message: str
    details: List[str] = field(default_factory=list)


@dataclass
class TensorInfo:
    """A safetensors header entry: dtype name (``BF16``…), shape, byte range in the data."""

    dtype: str
    shape: Tuple[int, ...]
    offsets: Tuple[int, int]


@dataclass
class InspectReport:
    """Result of :func:`inspect_checkpoint`.

    Attributes:
        directory: the inspected directory.
        checks: every check in section order.
        facts: what was found (model_type, projector types, RoI size, aux aspect, token ids,
            tensor count, parameter count, dtypes, …) for machine use.
    """

    directory: str
    checks: List[Check] = field(default_factory=list)
    facts: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(c.status == FAIL for c in self.checks)

    def add(self, section: str, status: str, message: str, details=()) -> None:
        self.checks.append(Check(section, status, message, [str(d) for d in details]))

    def counts(self) -> Dict[str, int]:
        return dict(Counter(c.status for c in self.checks))

    def to_dict(self) -> Dict[str, Any]:
        return {"directory": self.directory, "ok": self.ok, "counts": self.counts(),
                "checks": [asdict(c) for c in self.checks], "facts": self.facts}

    def format(self, max_items: int = 10) -> str:
        """Human-readable report: one block per section, first ``max_items`` details each."""
        lines = [f"vlxseek inspect {self.directory}"]
        for section in SECTIONS:
            checks = [c for c in self.checks if c.section == section]
            if not checks:
                continue
            lines.append(f"[{section}]")
            for check in checks:
                lines.append(f"  {check.status:<4}  {check.message}")
                lines += [f"          - {d}" for d in check.details[:max_items]]
                if len(check.details) > max_items:
                    lines.append(f"          … and {len(check.details) - max_items} more")
        counts = self.counts()
        verdict = "OK" if self.ok else "FAIL"
        lines.append(f"RESULT: {verdict} ({counts.get(FAIL, 0)} failed, "
                     f"{counts.get(WARN, 0)} warnings)")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers


def read_safetensors_header(path: str) -> Tuple[Dict[str, TensorInfo], Dict[str, str], int]:
    """Parse a safetensors header without touching the tensor data.

    Returns:
        ``(tensors by name, __metadata__, bytes the file must have = 8 + header + data)``.

    Raises:
        CheckpointError: unreadable file or invalid header.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path} is too short to be a safetensors file")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, os.path.getsize(path) - 8):
                raise CheckpointError(f"{path}: header length {length} is impossible "
                                      "(not safetensors, or truncated)")
            header = json.loads(fh.read(length))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: invalid safetensors header: {exc}") from exc
    metadata = header.pop("__metadata__", None) or {}
    tensors, end = {}, 0
    try:
        for name, info in header.items():
            start, stop = (int(v) for v in info["data_offsets"])
            tensors[name] = TensorInfo(str(info["dtype"]), tuple(int(d) for d in info["shape"]),
                                       (start, stop))
            end = max(end, stop)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid safetensors header entry: {exc}") from exc
    return tensors, metadata, 8 + length + end


def _read_json(path: str):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def compare_names(found: Dict[str, tuple], expected: Dict[str, tuple]) -> Dict[str, list]:
    """Missing, unexpected and shape-mismatched names (sorted) of ``found`` vs ``expected``."""
    return {
        "missing": sorted(k for k in expected if k not in found),
        "unexpected": sorted(k for k in found if k not in expected),
        "mismatched": sorted(f"{k}: checkpoint {_shape(found[k])}, expected "
                             f"{_shape(expected[k])}"
                             for k in expected if k in found
                             and tuple(found[k]) != tuple(expected[k])),
    }


def _report_comparison(report: InspectReport, section: str, what: str,
                       diff: Dict[str, list], total: int) -> None:
    labels = {"missing": f"missing from the checkpoint (expected by {what})",
              "unexpected": f"unexpected (not expected by {what})",
              "mismatched": "with the wrong shape"}
    failed = False
    for kind, label in labels.items():
        if diff[kind]:
            failed = True
            report.add(section, FAIL, f"{len(diff[kind])} tensors {label}", diff[kind])
    if not failed:
        report.add(section, OK, f"all {total} tensor names and shapes match {what}")


# ----------------------------------------------------------------------------- sections


def _check_files(report: InspectReport, directory: str) -> Dict[str, TensorInfo]:
    """Files and safetensors headers; returns all tensors of all shards."""
    for name in ("config.json",) + OTHER_FILES:
        present = os.path.isfile(os.path.join(directory, name))
        status = OK if present else (FAIL if name in ("config.json",
                                                      "preprocessor_config.json") else WARN)
        report.add("files", status, f"{name} {'present' if present else 'missing'}")
    found_tok = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(directory, n))]
    report.add("files", OK if found_tok else FAIL,
               f"tokenizer files: {', '.join(found_tok) if found_tok else 'none'}")
    try:
        shards = safetensors_files(directory)
    except CheckpointError as exc:
        report.add("files", FAIL, str(exc))
        return {}
    tensors: Dict[str, TensorInfo] = {}
    owner: Dict[str, str] = {}
    duplicates = []
    for path in shards:
        name = os.path.basename(path)
        if not os.path.isfile(path):
            report.add("files", FAIL, f"shard {name} listed in {INDEX_NAME} is missing")
            continue
        try:
            header, _, needed = read_safetensors_header(path)
        except CheckpointError as exc:
            report.add("files", FAIL, str(exc))
            continue
        size = os.path.getsize(path)
        if size < needed:
            report.add("files", FAIL, f"{name} is truncated: {size} bytes, its header needs "
                       f"{needed} (incomplete download?)")
        else:
            report.add("files", OK, f"{name}: {len(header)} tensors, {size / 2**20:.1f} MiB")
        for key, info in header.items():
            if key in tensors:
                duplicates.append(f"{key} in {owner[key]} and {name}")
            tensors[key], owner[key] = info, name
    if duplicates:
        report.add("files", FAIL, f"{len(duplicates)} tensors stored twice", duplicates)
    index_path = os.path.join(directory, INDEX_NAME)
    if os.path.isfile(index_path):
        weight_map = _read_json(index_path).get("weight_map", {})
        wrong = sorted(f"{k}: index says {v}, stored in {owner.get(k, 'no shard')}"
                       for k, v in weight_map.items() if owner.get(k) != v)
        unlisted = sorted(k for k in tensors if k not in weight_map)
        if wrong or unlisted:
            report.add("files", FAIL, f"{INDEX_NAME} disagrees with the shards",
                       wrong + [f"{k}: not in the index" for k in unlisted])
        else:
            report.add("files", OK, f"{INDEX_NAME} matches the shards")
    report.facts["num_tensors"] = len(tensors)
    report.facts["num_parameters"] = sum(_numel(t.shape) for t in tensors.values())
    report.facts["dtypes"] = dict(Counter(t.dtype for t in tensors.values()))
    return tensors


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


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
    for key in MM_CONFIG_KEYS:
        if key in raw:
            report.add("config", OK, f"{key} = {raw[key]!r}")
        elif key in REQUIRED_CONFIG_KEYS:
            report.add("config", FAIL, f"{key} missing (required, spec §2.2)")
        elif key in UNKNOWN_CONFIG_KEYS:
            report.add("config", WARN, f"{key} missing: the reference default "
                       f"{MM_DEFAULTS.get(key)!r} applies (spec §7.16: read it from the "
                       "checkpoint)")
        else:
            report.add("config", INFO, f"{key} missing: default {MM_DEFAULTS.get(key)!r}")
    for key, needle in (("mm_vision_tower", ("qwen2.5-vl", "qwen2_5_vl")),
                        ("mm_vision_tower_aux", ("davit",))):
        value = str(raw.get(key, "")).lower()
        if key in raw and not any(n in value for n in needle):
            report.add("config", WARN, f"{key} does not contain {' or '.join(needle)}: the "
                       "reference loader would refuse it (spec §2.2)")
    try:
        config = load_config(directory)
    except CheckpointError as exc:
        report.add("config", FAIL, str(exc))
        return None
    report.add("config", OK, "config loads and validates")
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


def tokenizer_json_added_tokens(path: str) -> List[dict]:
    """The ``added_tokens`` list of a ``tokenizer.json`` without parsing its vocabulary.

    The tokenizers library writes ``added_tokens`` before the (large) ``model`` entry, so only
    the file's beginning is decoded; any other layout falls back to a full parse.
    """
    with open(path, encoding="utf-8") as fh:
        head = fh.read(_TOKENIZER_HEAD_CHARS)
    match = _ADDED_TOKENS_KEY.search(head)
    if match:
        try:
            tokens, _ = json.JSONDecoder().raw_decode(head, match.end() - 1)
            return tokens
        except json.JSONDecodeError:  # the list is longer than the head
            pass
    return _read_json(path).get("added_tokens", [])


def added_tokens(directory: str) -> Tuple[Dict[str, int], List[str]]:
    """Added tokens ``{content: id}`` from the tokenizer files, plus conflicts between files."""
    sources: Dict[str, Dict[str, int]] = {}
    path = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(path):
        sources["tokenizer.json"] = {t["content"]: int(t["id"])
                                     for t in tokenizer_json_added_tokens(path)}
    path = os.path.join(directory, "tokenizer_config.json")
    if os.path.isfile(path):
        decoder = _read_json(path).get("added_tokens_decoder") or {}
        sources["tokenizer_config.json"] = {v["content"]: int(k) for k, v in decoder.items()}
    path = os.path.join(directory, "added_tokens.json")
    if os.path.isfile(path):
        sources["added_tokens.json"] = {k: int(v) for k, v in _read_json(path).items()}
    merged: Dict[str, int] = {}
    where: Dict[str, str] = {}
    conflicts = []
    for source, tokens in sources.items():
        for content, idx in tokens.items():
            if content in merged and merged[content] != idx:
                conflicts.append(f"{content}: id {merged[content]} in {where[content]}, "
                                 f"{idx} in {source}")
            merged.setdefault(content, idx)
            where.setdefault(content, source)
    return merged, conflicts


def _check_tokenizer(report: InspectReport, directory: str, config) -> None:
    try:
        tokens, conflicts = added_tokens(directory)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.add("tokenizer", FAIL, f"cannot read the tokenizer files: {exc}")
        return
    if conflicts:
        report.add("tokenizer", FAIL, "tokenizer files disagree on token ids", conflicts)
    missing = [t for t in REQUIRED_TOKENS if t not in tokens]
    if missing:
        report.add("tokenizer", FAIL, f"{len(missing)} required added tokens missing",
                   missing)
    else:
        report.add("tokenizer", OK, f"all {len(REQUIRED_TOKENS)} required tokens present")
    absent_optional = [t for t in OPTIONAL_TOKENS if t not in tokens]
    if absent_optional:
        report.add("tokenizer", INFO, f"optional tokens absent: {', '.join(absent_optional)}")
    ids = {t: tokens[t] for t in REQUIRED_TOKENS + OPTIONAL_TOKENS if t in tokens}
    report.facts["token_ids"] = ids
    by_id: Dict[int, List[str]] = {}
    for content, idx in tokens.items():
        by_id.setdefault(idx, []).append(content)
    shared = [f"id {i}: {', '.join(c)}" for i, c in sorted(by_id.items()) if len(c) > 1]
    if shared:
        report.add("tokenizer", FAIL, "several tokens share one id", shared)
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
