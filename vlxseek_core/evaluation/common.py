"""Shared machinery of the evaluation runners (spec §5): records, resumable results, the loop.

Every protocol (:mod:`.coco`, :mod:`.counting`, :mod:`.refcoco`) is an :class:`EvalProtocol`:
it loads its records, turns one record into an :class:`EvalRequest` (image file, verbatim prompt
text, proposals), turns the model's answer into a JSON prediction, and aggregates predictions
into metrics with *pure* functions. :func:`run_eval` drives any protocol with any object that has
the :meth:`VLXSeek.query <vlxseek_core.pipeline.VLXSeek.query>` signature.

Prompts are sent verbatim through the ``vqa`` task (template ``"{}"``, no constrained decoding):
the reference evaluations use prompt texts that differ from the task templates (spec §5.1, §5.2)
and decode without constraints (spec §4.3). Answers are parsed here, not by the pipeline: by
:func:`~vlxseek_core.parsing.parse_answer` (RefCOCO), the count extraction (counting), or the
reference script's own reading (COCO, :mod:`.coco`).

Output directory layout (``out_dir``):

* ``records.jsonl`` — one JSON object per finished record, appended and flushed as it completes:
  ``{"id", "ok", "answer", "num_boxes", "seconds", "warnings", <protocol fields>}`` or
  ``{"id", "ok": false, "error", "seconds"}``. A re-run skips records whose last line is ``ok``
  and retries failed ones (the last line per id wins).
* ``meta.json`` — the settings the records were produced with (protocol, data, model, …); a
  re-run with different settings is refused unless ``restart`` is set.
* ``summary.json`` — counts, the first errors, the metrics and run statistics.

The loop itself (:func:`~.runner.run_eval`, the summary and its table) is in :mod:`.runner`;
this module keeps the records, the protocol interface and the result store.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import VLXSeekError
from ..json_lines import parse_json_lines

LOGGER = logging.getLogger("vlxseek.eval")

RECORDS_NAME = "records.jsonl"
META_NAME = "meta.json"
SUMMARY_NAME = "summary.json"
RAW_PROMPT_TASK = "vqa"
"""Pipeline task whose template is ``"{}"`` and which decodes without constraints."""
MAX_ERRORS_IN_SUMMARY = 20


class EvalError(VLXSeekError):
    """The evaluation as a whole cannot run (unreadable data, clashing output directory, …).

    Problems with a single record are *not* raised: they are recorded and counted.
    """


@dataclass
class EvalRequest:
    """What the model is asked for one record.

    Attributes:
        image_path: image file to load (RGB).
        prompt: the user text, sent verbatim.
        boxes: float ``[K, 4]`` xyxy proposals in pixels of the image file, or ``None`` to let
            the pipeline's proposal detector propose.
        scores: ``[K]`` proposal scores (``None`` → 1.0 each); ignored when ``boxes`` is ``None``.
    """

    image_path: str
    prompt: str
    boxes: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None


class EvalProtocol:
    """Base class of an evaluation protocol.

    Subclasses set :attr:`name` and implement :meth:`request`, :meth:`predict` and
    :meth:`metrics`; :meth:`load` reads a JSON list or JSONL file by default.

    Args:
        data_path: the protocol's data file (JSON list or JSONL).
        images_dir: directory the records' ``image`` file names are relative to.
    """

    name = ""
    needs_detector = False
    """True when no record carries proposals, so the pipeline must have a detector."""
    template_task: Optional[str] = None
    """The project task that asks this benchmark of a template-asked model family (VLX-Seek
    1.5, :mod:`.templates`); ``None``: no mapping."""

    def __init__(self, data_path: Optional[str], images_dir: str):
        self.data_path = data_path
        self.images_dir = images_dir

    def load(self) -> List[Tuple[str, dict]]:
        """``(record id, raw record)`` pairs in file order; id = ``record["id"]`` or the index.

        Raises:
            EvalError: unreadable data file or duplicate ids.
        """
        records = load_records(self.data_path)
        return unique_ids([(str(r.get("id", i)) if isinstance(r, dict) else str(i), r)
                           for i, r in enumerate(records)])

    def image_path(self, raw: dict) -> str:
        """Path of the record's ``image`` (relative names are joined to ``images_dir``)."""
        return os.path.join(self.images_dir, require(raw, "image"))

    def request(self, raw: dict) -> EvalRequest:
        """The query for one raw record. May raise for a malformed record (counted)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement request()")

    def predict(self, raw: dict, answer: str, boxes: np.ndarray,
                scores: np.ndarray) -> Dict[str, Any]:
        """JSON-serialisable prediction fields for one answered record.

        Args:
            raw: the record.
            answer: the decoded answer text.
            boxes: float ``[K, 4]`` xyxy, pixels of the image file — the boxes the answer's
                region indices refer to (the record's own proposals when it has them).
            scores: ``[K]`` their scores.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement predict()")

    def metrics(self, entries: Sequence[dict], out_dir: Optional[str] = None) -> Dict[str, Any]:
        """Aggregate per-record entries (ok and failed, one per record) into metrics."""
        raise NotImplementedError(f"{type(self).__name__} does not implement metrics()")

    def settings(self) -> Dict[str, Any]:
        """Settings that define the records' results (compared on resume)."""
        return {"protocol": self.name, "data": _abspath(self.data_path)}


def _abspath(path: Optional[str]) -> Optional[str]:
    return os.path.abspath(path) if path else None


def require(raw: dict, *keys: str):
    """The value of the first of ``keys`` present in ``raw``.

    Raises:
        KeyError: none of them is present (message names them all).
    """
    if not isinstance(raw, dict):
        raise TypeError(f"record must be a JSON object, got {type(raw).__name__}")
    for key in keys:
        if key in raw and raw[key] is not None:
            return raw[key]
    raise KeyError(f"record has none of the keys {', '.join(repr(k) for k in keys)}")


def unique_ids(pairs: List[Tuple[str, Any]]) -> List[Tuple[str, Any]]:
    """Check that record ids are unique (resuming keys results by id).

    Raises:
        EvalError: a duplicate id.
    """
    seen = set()
    for rid, _ in pairs:
        if rid in seen:
            raise EvalError(f"duplicate record id {rid!r}: ids must be unique to resume runs")
        seen.add(rid)
    return pairs


def load_records(path: Optional[str]) -> List[Any]:
    """Records of a JSON-list file or a JSONL file (one JSON value per line).

    Raises:
        EvalError: missing file, invalid JSON (with the line number for JSONL), or a JSON
            document that is not a list.
    """
    if not path:
        raise EvalError("no data file given")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"cannot read data file {path!r}: {exc}") from exc
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise EvalError(f"{path}: invalid JSON: {exc}") from exc
    return parse_json_lines(text, path, EvalError, "invalid JSON line")


def as_boxes(value, name: str = "boxes") -> np.ndarray:
    """A float64 ``[K, 4]`` array from a nested list.

    Raises:
        ValueError: not ``[K, 4]`` numbers.
    """
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must be a list of [x1, y1, x2, y2], got shape {arr.shape}")
    return arr


def usable_boxes(boxes: np.ndarray, width: int, height: int) -> Tuple[np.ndarray, int]:
    """Make proposals acceptable to the pipeline without changing their number or order.

    Boxes are clipped to the image and widened to at least 1 px per side (int-truncated UPN
    boxes can be degenerate; the reference's RoIAlign also treats such boxes as 1 bin wide), so
    that region index k still refers to input box k.

    Args:
        boxes: float ``[K, 4]`` xyxy, pixels of a ``width`` × ``height`` image.

    Returns:
        ``(float32 [K, 4] boxes, number of boxes that had to be changed beyond clipping)``.
    """
    out = boxes.astype(np.float64).copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0.0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0.0, height)
    fixed = np.zeros(len(out), dtype=bool)
    for lo, hi, size in ((0, 2, width), (1, 3, height)):
        thin = out[:, hi] - out[:, lo] < 1.0
        out[thin, lo] = np.minimum(out[thin, lo], size - 1.0)
        out[thin, hi] = out[thin, lo] + 1.0
        fixed |= thin
    return out.astype(np.float32), int(fixed.sum())


def load_image(path: str):
    """The image file as a PIL RGB image (no EXIF rotation, as the reference).

    Raises:
        InvalidImageError: unreadable or missing file, not an image, truncated, or a
            decompression bomb (:func:`~vlxseek_core.image_files.read_rgb`).
    """
    from ..image_files import read_rgb

    return read_rgb(path)


# ---------------------------------------------------------------------------- result store


class ResultStore:
    """Append-only JSONL of per-record entries in ``out_dir`` plus the run's ``meta.json``.

    Args:
        out_dir: created if needed.
        settings: JSON-serialisable settings that produced the entries.
        restart: delete previous results instead of resuming.

    Raises:
        EvalError: previous results exist with different settings and ``restart`` is false.
    """

    def __init__(self, out_dir: str, settings: Dict[str, Any], restart: bool = False):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, RECORDS_NAME)
        os.makedirs(out_dir, exist_ok=True)
        meta_path = os.path.join(out_dir, META_NAME)
        settings = json.loads(json.dumps(settings))  # normalise tuples etc.
        if restart:
            for name in (RECORDS_NAME, SUMMARY_NAME):
                if os.path.exists(os.path.join(out_dir, name)):
                    os.remove(os.path.join(out_dir, name))
        elif os.path.isfile(meta_path) and os.path.isfile(self.path):
            with open(meta_path, encoding="utf-8") as fh:
                previous = json.load(fh)
            diff = sorted(k for k in set(previous) | set(settings)
                          if previous.get(k) != settings.get(k))
            if diff:
                shown = "; ".join(f"{k}: {previous.get(k)!r} → {settings.get(k)!r}"
                                  for k in diff)
                raise EvalError(f"{out_dir} holds results made with other settings ({shown}); "
                                "use another output directory or --restart")
        with open(meta_path, "w", encoding="utf-8") as fh:
            json.dump(settings, fh, indent=2)

    def load(self) -> Dict[str, dict]:
        """Entries by record id (the last line per id wins); broken lines are skipped."""
        entries: Dict[str, dict] = {}
        if not os.path.isfile(self.path):
            return entries
        with open(self.path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    entries[str(entry["id"])] = entry
                except (json.JSONDecodeError, RecursionError, KeyError, TypeError):
                    LOGGER.warning("%s:%d: skipping an unreadable line (interrupted write?)",
                                   self.path, lineno)
        return entries

    def append(self, entry: dict) -> None:
        """Write one entry and flush it to disk."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            fh.flush()


_RUNNER_NAMES = ("run_eval", "summarize", "format_summary")


def __getattr__(name: str):
    """``run_eval``, ``summarize`` and ``format_summary`` from :mod:`.runner`, where the loop
    moved; resolved on first use so that :mod:`.runner` imports this module, not the reverse."""
    if name in _RUNNER_NAMES:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
