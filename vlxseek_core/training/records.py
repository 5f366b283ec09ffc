"""Training records (JSONL, the reference's LLaVA-style format): the record, reading, writing.

One record per line::

    {"id": "scene_0000012:refer:1", "image": "scene_0000012.png",
     "conversations": [{"from": "human", "value": "<image>\\n" + TASK_TEXT},
                       {"from": "gpt", "value": ANSWER}],
     "bbox_list": [[x1, y1, x2, y2], ...],          # float pixels of the image, xyxy, <= 100
     "score_list": [...],                            # optional, one per box
     "task": "refer", "query": "the leftmost cat",   # vlxseek extensions
     "region_indices": [3],                          # region tasks only
     "meta": {...}}                                  # optional, free-form (e.g. "rejection")

``TASK_TEXT`` is exactly ``parts_to_text(task_parts(task, query, region_indices))``, so the
training prompt is the one :class:`~vlxseek_core.pipeline.VLXSeek` builds at inference, and
``ANSWER`` is always made with :mod:`vlxseek_core.answer_format` (never hand-written markup).
Region ``K`` of the answer is ``bbox_list[K]``.

**Records without boxes** (general VQA, which training stage 2 mixes in against forgetting):
a task that runs on the image alone (:attr:`~vlxseek_core.prompts.TaskSpec.runs_without_regions`,
i.e. ``vqa``) may have an empty or absent ``bbox_list`` when its answer refers to no region;
its prompt then has no region line (spec §3.2). :meth:`TrainingRecord.to_json` writes
``"bbox_list": []`` for it; :meth:`TrainingRecord.from_json` also reads the reference's general
VQA lines, which have no ``bbox_list`` key. Every other task needs 1..100 boxes.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import numpy as np

from ..answer_format import label_ok
from ..errors import InvalidRequestError
from ..parsing import parse_answer
from ..prompts import TASKS, parts_to_text, task_parts
from ..tokens import GROUND_CLOSE, GROUND_OPEN, IMAGE_PLACEHOLDER, MAX_REGIONS
from .record_helpers import (box_iou, build_candidates, check_int, count_sample,
                             detect_sample, jitter_distractors, plural, with_article)

__all__ = ["TrainingRecord", "read_records", "write_records", "IMAGE_PREFIX", "REGION_REF",
           # shared helpers of the record sources, re-exported from .record_helpers
           "box_iou", "build_candidates", "jitter_distractors", "plural", "with_article",
           "detect_sample", "count_sample", "check_int"]

IMAGE_PREFIX = IMAGE_PLACEHOLDER + "\n"
"""The human turn starts with the image placeholder and a newline (reference data format)."""
REGION_REF = re.compile(r"<region(\d+)>")
"""A region reference in a text; group 1 is the index."""
_REQUIRED = ("id", "image", "conversations", "task")


_LABELS = re.compile(re.escape(GROUND_OPEN) + "(.*?)" + re.escape(GROUND_CLOSE), re.S)
_FOREIGN_TOKEN = re.compile(r"<\|[^<>|]+\|>|</?tool_call>")  # Qwen2's, not VLM-FO1's


def check_answer_markup(answer: str, rid=None) -> None:
    """An answer's text may hold markup only as markup: no ``<|…|>`` chat-template token or
    ``<tool_call>`` anywhere (it would end or restart the turn inside the answer), and every
    ``<ground>…</ground>`` label :func:`~vlxseek_core.answer_format.label_ok` (a category named
    ``"a <region1>"`` would train a region choice inside the label).

    Raises:
        InvalidRequestError: naming the record id and the offending text.
    """
    foreign = _FOREIGN_TOKEN.search(answer)
    if foreign:
        raise InvalidRequestError(f"record {rid!r}: the answer holds the special token "
                                  f"{foreign.group(0)!r}, which no answer writes")
    for label in _LABELS.findall(answer):
        if not label_ok(label):
            raise InvalidRequestError(f"record {rid!r}: the grounded label {label!r} holds "
                                      "markup; labels are plain text")


def box_problem(box: Any) -> Optional[str]:
    """What is wrong with one candidate box (xyxy pixels), or ``None`` when it is usable:
    ``"is not 4 finite numbers"`` or ``"has x2 <= x1 or y2 <= y1"``."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        return "is not 4 finite numbers"
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return "is not 4 finite numbers"
    if values[2] <= values[0] or values[3] <= values[1]:
        return "has x2 <= x1 or y2 <= y1"
    return None


@dataclass
class TrainingRecord:
    """One training sample; constructing it validates it.

    Attributes:
        id: unique record id.
        image: image path relative to the images directory.
        task: a key of :data:`vlxseek_core.prompts.TASKS`.
        query: the text filling the template ("" for tasks without a query).
        answer: the target string (built with :mod:`vlxseek_core.answer_format`).
        bbox_list: candidate boxes, float xyxy pixels of the image (rounded to 1/1000 px);
            empty only for a task that runs without regions (``vqa``).
        region_indices: regions the prompt refers to (region tasks).
        score_list: optional proposal scores, one per box.
        meta: optional free-form JSON metadata (e.g. ``{"rejection": true}``).

    Raises:
        InvalidRequestError: naming the record id and the field (see :meth:`validate`).
    """

    id: str
    image: str
    task: str
    query: str
    answer: str
    bbox_list: List[List[float]] = field(default_factory=list)
    region_indices: List[int] = field(default_factory=list)
    score_list: Optional[List[float]] = None
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.id = str(self.id)
        try:  # plain floats so records compare equal after a JSON round trip
            self.bbox_list = [[round(float(v), 3) for v in box] for box in self.bbox_list]
            self.region_indices = [int(i) for i in self.region_indices]
            if self.score_list is not None:
                self.score_list = [float(s) for s in self.score_list]
        except (TypeError, ValueError) as exc:
            raise self._error("bbox_list/region_indices/score_list", f"not numbers: {exc}")
        self.validate()

    def _error(self, name: str, message: str) -> InvalidRequestError:
        return InvalidRequestError(f"record {self.id!r}: field {name!r}: {message}")

    @property
    def task_text(self) -> str:
        """The prompt text after ``<image>\\n`` (the reference template, filled)."""
        return parts_to_text(task_parts(self.task, self.query, self.region_indices))

    @property
    def boxes(self) -> np.ndarray:
        """float32 ``[N, 4]`` xyxy candidate boxes."""
        return np.asarray(self.bbox_list, dtype=np.float32).reshape(-1, 4)

    def validate(self) -> None:
        """Check every field.

        Raises:
            InvalidRequestError: unknown task; a query/regions the template rejects; an empty
                image path; no boxes for a task that needs them (all but ``vqa``), more than
                100, a box that is not 4 finite numbers or has
                ``x2 <= x1`` / ``y2 <= y1``; ``region_indices`` outside ``bbox_list``; a
                ``score_list`` of another length or with non-finite values; an empty answer,
                an answer with markup where it may not be (:func:`check_answer_markup`), an
                answer referring to ``<regionK>`` with ``K >= len(bbox_list)``, or a
                region-answer task whose answer has no well-formed grounded block.
        """
        if self.task not in TASKS:
            raise self._error("task", f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if not isinstance(self.image, str) or not self.image:
            raise self._error("image", "must be a non-empty path")
        n = len(self.bbox_list)
        if n > MAX_REGIONS or (n == 0 and not TASKS[self.task].runs_without_regions):
            boxless = [t for t, spec in TASKS.items() if spec.runs_without_regions]
            raise self._error("bbox_list", f"task {self.task!r} needs 1 to {MAX_REGIONS} "
                              f"boxes, got {n} (only {', '.join(boxless)} may have none)")
        for k, box in enumerate(self.bbox_list):
            problem = box_problem(box)
            if problem:
                raise self._error("bbox_list", f"box {k} {box} {problem}")
        bad = [i for i in self.region_indices if not 0 <= i < n]
        if bad:
            raise self._error("region_indices", f"{bad} outside the {n} boxes")
        if self.score_list is not None and (
                len(self.score_list) != n or not all(map(math.isfinite, self.score_list))):
            raise self._error("score_list", f"needs {n} finite scores")
        try:
            self.task_text
        except InvalidRequestError as exc:
            raise self._error("query" if TASKS[self.task].needs_query else "region_indices",
                              str(exc)) from None
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise self._error("answer", "is empty")
        check_answer_markup(self.answer, self.id)
        refs = [int(k) for k in REGION_REF.findall(self.answer)]
        if any(k >= n for k in refs):
            raise self._error("answer", f"refers to <region{max(refs)}> but there are {n} boxes")
        if TASKS[self.task].region_answer:
            parsed = parse_answer(self.answer, n)
            # ``rejected``: the rejection form ``<objects>None</objects>`` (newer parsers)
            if not (parsed.groundings or getattr(parsed, "rejected", None)) or parsed.malformed:
                raise self._error("answer", f"not a well-formed grounded answer: {self.answer!r}")

    def to_json(self) -> Dict[str, Any]:
        """The JSON object of this record (a dict ready for ``json.dumps``)."""
        obj: Dict[str, Any] = {
            "id": self.id, "image": self.image,
            "conversations": [{"from": "human", "value": IMAGE_PREFIX + self.task_text},
                              {"from": "gpt", "value": self.answer}],
            "bbox_list": self.bbox_list}
        if self.score_list is not None:
            obj["score_list"] = self.score_list
        obj["task"] = self.task
        obj["query"] = self.query
        if self.region_indices:
            obj["region_indices"] = self.region_indices
        if self.meta:
            obj["meta"] = self.meta
        return obj

    @classmethod
    def from_json(cls, obj: Union[str, Mapping[str, Any]]) -> "TrainingRecord":
        """Parse and validate a record (a dict or its JSON string).

        Raises:
            InvalidRequestError: invalid JSON, missing keys (``query`` is required for tasks
                that need one, ``region_indices`` for region tasks, ``bbox_list`` for tasks
                that do not run without regions), conversations that are
                not one human turn ``"<image>\\n" + TASK_TEXT`` and one gpt turn, or as
                :meth:`validate`.
        """
        if isinstance(obj, str):
            try:
                obj = json.loads(obj)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise InvalidRequestError(f"invalid JSON record: {exc}") from None
        if not isinstance(obj, Mapping):
            raise InvalidRequestError(f"a record must be a JSON object, got {type(obj).__name__}")
        rid = obj.get("id", "<no id>")
        missing = [k for k in _REQUIRED if k not in obj]
        if not isinstance(obj.get("task", ""), str):
            raise InvalidRequestError(f"record {rid!r}: field 'task': must be a task name, got "
                                      f"{type(obj['task']).__name__}")
        spec = TASKS.get(obj.get("task"))
        if spec is not None and spec.needs_query and "query" not in obj:
            missing.append("query")
        if spec is not None and spec.needs_regions and "region_indices" not in obj:
            missing.append("region_indices")
        if "bbox_list" not in obj and not (spec is not None and spec.runs_without_regions):
            missing.append("bbox_list")
        if missing:
            raise InvalidRequestError(f"record {rid!r}: missing field(s) {missing}")
        if not isinstance(obj.get("meta", {}), Mapping):
            raise InvalidRequestError(f"record {rid!r}: field 'meta': must be a JSON object")
        conv = obj["conversations"]
        if (not isinstance(conv, list) or len(conv) != 2 or not all(isinstance(t, Mapping)
                                                                    for t in conv)
                or [t.get("from") for t in conv] != ["human", "gpt"]):
            raise InvalidRequestError(
                f"record {rid!r}: field 'conversations': needs one human and one gpt turn")
        rec = cls(id=rid, image=obj["image"], task=obj["task"], query=obj.get("query", ""),
                  answer=conv[1].get("value", ""), bbox_list=obj.get("bbox_list", []),
                  region_indices=obj.get("region_indices", []),
                  score_list=obj.get("score_list"), meta=dict(obj.get("meta") or {}))
        if conv[0].get("value") != IMAGE_PREFIX + rec.task_text:
            raise rec._error("conversations", "human turn is not '<image>\\n' + the task "
                             f"template filled with the query: {conv[0].get('value')!r}")
        return rec


def read_records(path: str) -> List[TrainingRecord]:
    """Read and validate a JSONL file of records (blank lines are skipped).

    Raises:
        InvalidRequestError: unreadable file, or ``path:line: <problem>`` for the first bad line.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except OSError as exc:
        raise InvalidRequestError(f"cannot read records {path!r}: {exc}") from None
    out = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(TrainingRecord.from_json(line))
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"{path}:{lineno}: {exc}") from None
    return out


def write_records(path: str, records: Iterable[Union[TrainingRecord, Mapping[str, Any]]],
                  append: bool = False) -> int:
    """Write records as JSONL (dicts are validated first); returns the number written."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    count = 0
    with open(path, "a" if append else "w", encoding="utf-8") as fh:
        for rec in records:
            if not isinstance(rec, TrainingRecord):
                rec = TrainingRecord.from_json(rec)
            fh.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
            count += 1
    return count
