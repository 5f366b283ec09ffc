"""The checkpoint report and the model-family-independent checks of ``vlxseek inspect``.

:class:`InspectReport` (statuses ``OK``, ``FAIL``, ``WARN``, ``INFO``, ``SKIP`` per section),
the safetensors header reader, the files section (config/tokenizer/processor files, shards,
shard index, truncated downloads) and the added-token reader of the tokenizer files. Split
from :mod:`.inspect_checkpoint` (the VLM-FO1 config/tokenizer/weights/spec checks, which
re-exports these names); the VLX-Seek 1.5 family's inspect uses them too. Only small files and
safetensors *headers* are read.
"""
from __future__ import annotations

import json
import os
import re
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .checkpoint import INDEX_NAME, safetensors_files
from .errors import CheckpointError

OK, FAIL, WARN, INFO, SKIP = "OK", "FAIL", "WARN", "INFO", "SKIP"
SECTIONS = ("files", "config", "tokenizer", "weights", "spec")
MAX_HEADER_BYTES = 100 * 1024 * 1024
_TOKENIZER_HEAD_CHARS = 1 << 20
_ADDED_TOKENS_KEY = re.compile(r'"added_tokens"\s*:\s*\[')
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "added_tokens.json",
                   "special_tokens_map.json", "vocab.json", "merges.txt")
OTHER_FILES = ("preprocessor_config.json", "generation_config.json")


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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
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


def _read_json(path: str) -> dict:
    """A JSON object file; CheckpointError when unreadable, malformed or not an object."""
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return value


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


def report_config_keys(report: InspectReport, raw: Dict[str, Any], keys, required, unknown,
                       defaults: Dict[str, Any], spec: str, unknown_spec: str) -> None:
    """One ``config`` line per key of ``keys``: OK with its value when ``raw`` (the parsed
    ``config.json``) has it; else FAIL if it is ``required`` (citing ``spec``), WARN if the
    reference default is a guess only the real checkpoint settles (``unknown``, citing
    ``unknown_spec``), INFO with the default otherwise."""
    for key in keys:
        if key in raw:
            report.add("config", OK, f"{key} = {raw[key]!r:.200}")
        elif key in required:
            report.add("config", FAIL, f"{key} missing (required, {spec})")
        elif key in unknown:
            report.add("config", WARN, f"{key} missing: the reference default "
                       f"{defaults.get(key)!r} applies ({unknown_spec}: read it from the "
                       "checkpoint)")
        else:
            report.add("config", INFO, f"{key} missing: default {defaults.get(key)!r}")


def load_checked_config(report: InspectReport, directory: str,
                        load_config: Callable[[str], Any]) -> Optional[Any]:
    """Load and validate the config with the family's own ``load_config(directory)``: an OK
    ``config`` line when it loads, the :class:`CheckpointError`'s message as a FAIL line when
    it does not. The loader is passed in so that this module imports no family's checkpoint
    module.

    Returns:
        the loaded config, or ``None`` when it failed.
    """
    try:
        config = load_config(directory)
    except CheckpointError as exc:
        report.add("config", FAIL, str(exc))
        return None
    report.add("config", OK, "config loads and validates")
    return config


def check_added_tokens(report: InspectReport, directory: str, required,
                       optional=()) -> Optional[Dict[str, int]]:
    """The ``tokenizer`` checks every family shares: the tokenizer files are readable and agree
    on ids (FAIL otherwise), every ``required`` added token is present, no two tokens share an
    id; ``facts["token_ids"]`` gets the ids of the required and ``optional`` tokens present.

    Returns:
        added token → id, or ``None`` when the files cannot be read.
    """
    try:
        tokens, conflicts = added_tokens(directory)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError,
            CheckpointError) as exc:
        report.add("tokenizer", FAIL, f"cannot read the tokenizer files: {exc}")
        return None
    if conflicts:
        report.add("tokenizer", FAIL, "tokenizer files disagree on token ids", conflicts)
    missing = [t for t in required if t not in tokens]
    report.add("tokenizer", FAIL if missing else OK,
               f"{len(missing)} required added tokens missing" if missing
               else f"all {len(required)} required tokens present", missing)
    report.facts["token_ids"] = {t: tokens[t] for t in list(required) + list(optional)
                                 if t in tokens}
    by_id: Dict[int, List[str]] = {}
    for content, idx in tokens.items():
        by_id.setdefault(idx, []).append(content)
    shared = [f"id {i}: {', '.join(c)}" for i, c in sorted(by_id.items()) if len(c) > 1]
    if shared:
        report.add("tokenizer", FAIL, "several tokens share one id", shared)
    return tokens


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


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
