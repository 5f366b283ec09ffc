"""Training records (JSONL, the reference's LLaVA-style format) and the helpers all sources share.

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
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..answer_format import format_answer
from ..errors import InvalidRequestError
from ..parsing import parse_answer
from ..prompts import TASKS, parts_to_text, task_parts
from ..tokens import IMAGE_PLACEHOLDER, MAX_REGIONS

IMAGE_PREFIX = IMAGE_PLACEHOLDER + "\n"
"""The human turn starts with the image placeholder and a newline (reference data format)."""
_REGION_REF = re.compile(r"<region(\d+)>")
_REQUIRED = ("id", "image", "conversations", "bbox_list", "task")


@dataclass
class TrainingRecord:
    """One training sample; constructing it validates it.

    Attributes:
        id: unique record id.
        image: image path relative to the images directory.
        task: a key of :data:`vlxseek_core.prompts.TASKS`.
        query: the text filling the template ("" for tasks without a query).
        answer: the target string (built with :mod:`vlxseek_core.answer_format`).
        bbox_list: candidate boxes, float xyxy pixels of the image (rounded to 1/1000 px).
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
    bbox_list: List[List[float]]
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
                image path; no boxes, more than 100, a box that is not 4 finite numbers or has
                ``x2 <= x1`` / ``y2 <= y1``; ``region_indices`` outside ``bbox_list``; a
                ``score_list`` of another length or with non-finite values; an empty answer,
                an answer referring to ``<regionK>`` with ``K >= len(bbox_list)``, or a
                region-answer task whose answer has no well-formed grounded block.
        """
        if self.task not in TASKS:
            raise self._error("task", f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if not isinstance(self.image, str) or not self.image:
            raise self._error("image", "must be a non-empty path")
        n = len(self.bbox_list)
        if not 1 <= n <= MAX_REGIONS:
            raise self._error("bbox_list", f"needs 1 to {MAX_REGIONS} boxes, got {n}")
        for k, box in enumerate(self.bbox_list):
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise self._error("bbox_list", f"box {k} {box} is not 4 finite numbers")
            if box[2] <= box[0] or box[3] <= box[1]:
                raise self._error("bbox_list", f"box {k} {box} has x2 <= x1 or y2 <= y1")
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
        refs = [int(k) for k in _REGION_REF.findall(self.answer)]
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
                that need one, ``region_indices`` for region tasks), conversations that are
                not one human turn ``"<image>\\n" + TASK_TEXT`` and one gpt turn, or as
                :meth:`validate`.
        """
        if isinstance(obj, str):
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as exc:
                raise InvalidRequestError(f"invalid JSON record: {exc}") from None
        if not isinstance(obj, Mapping):
            raise InvalidRequestError(f"a record must be a JSON object, got {type(obj).__name__}")
        rid = obj.get("id", "<no id>")
        missing = [k for k in _REQUIRED if k not in obj]
        spec = TASKS.get(obj.get("task"))
        if spec is not None and spec.needs_query and "query" not in obj:
            missing.append("query")
        if spec is not None and spec.needs_regions and "region_indices" not in obj:
            missing.append("region_indices")
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
                  answer=conv[1].get("value", ""), bbox_list=obj["bbox_list"],
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


# ---------------------------------------------------------------------------------- boxes

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` ``[N, 4]`` and ``b`` ``[M, 4]`` → float64 ``[N, M]``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def build_candidates(gt_boxes, distractor_boxes, rng: np.random.Generator,
                     max_boxes: int = MAX_REGIONS) -> Tuple[np.ndarray, List[int]]:
    """Candidate regions = ground truth + distractors, shuffled, at most ``max_boxes``.

    Distractors are dropped at random when there are too many; ground-truth boxes never are.

    Args:
        gt_boxes: ``[G, 4]`` xyxy pixels. distractor_boxes: ``[D, 4]`` xyxy pixels.
        rng: the random generator (shuffle and the choice of kept distractors).
        max_boxes: at most this many candidates (≤ 100, the region tokens that exist).

    Returns:
        ``(boxes float32 [N, 4], gt_to_candidate)`` where ``boxes[gt_to_candidate[i]]`` is
        ground-truth box ``i``: remap the answer's region indices with it.

    Raises:
        InvalidRequestError: ``max_boxes`` outside ``[1, 100]`` or ``G > max_boxes``.
    """
    if not 1 <= max_boxes <= MAX_REGIONS:
        raise InvalidRequestError(f"max_boxes must be in [1, {MAX_REGIONS}], got {max_boxes}")
    gt = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    dis = np.asarray(distractor_boxes, np.float32).reshape(-1, 4)
    if len(gt) > max_boxes:
        raise InvalidRequestError(f"{len(gt)} ground-truth boxes exceed max_boxes={max_boxes}")
    dis = dis[rng.permutation(len(dis))[:max_boxes - len(gt)]]
    allb = np.concatenate([gt, dis])
    perm = rng.permutation(len(allb))  # candidate j is allb[perm[j]]
    position = np.empty(len(allb), np.int64)
    position[perm] = np.arange(len(allb))
    return allb[perm], [int(p) for p in position[:len(gt)]]


def jitter_distractors(gt_boxes, image_size: Tuple[int, int], rng: np.random.Generator,
                       n: int, max_iou: float = 0.5, min_size: float = 4.0) -> np.ndarray:
    """Up to ``n`` distractor boxes: shifted/scaled ground-truth boxes and random boxes.

    Every box lies inside the image (clipped), is at least ``min_size`` px wide and high and
    has IoU < ``max_iou`` with every ground-truth box (so it is never a correct answer).

    Args:
        gt_boxes: ``[G, 4]`` xyxy pixels (may be empty: random boxes only).
        image_size: ``(width, height)`` of the image in pixels.
        rng: the random generator.

    Returns:
        float32 ``[M, 4]``, ``M <= n`` (fewer only when the image leaves no room), coordinates
        rounded to 0.1 px.
    """
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    width, height = float(image_size[0]), float(image_size[1])
    out = np.zeros((0, 4))
    for _ in range(4):  # vectorised rejection sampling, a few rounds at most
        if len(out) >= n or n <= 0:
            break
        m = 4 * (n - len(out)) + 8
        side = np.array([width, height, width, height])
        rand_wh = rng.uniform(0.05, 0.6, (m, 2)) * side[:2]
        rand_xy = rng.uniform(0, 1, (m, 2)) * (side[:2] - rand_wh)
        cand = np.concatenate([rand_xy, rand_xy + rand_wh], 1)
        if len(gt):  # half of them: a GT box moved by 30-100 % of its size and rescaled
            src = gt[rng.integers(0, len(gt), m // 2)]
            wh = (src[:, 2:] - src[:, :2]) * rng.uniform(0.5, 1.8, (m // 2, 2))
            shift = (src[:, 2:] - src[:, :2]) * rng.uniform(0.3, 1.0, (m // 2, 2))
            centre = (src[:, :2] + src[:, 2:]) / 2 + shift * rng.choice([-1, 1], (m // 2, 2))
            cand[:m // 2] = np.concatenate([centre - wh / 2, centre + wh / 2], 1)
        cand = np.round(np.clip(cand, 0, side), 1)
        ok = (cand[:, 2] - cand[:, 0] >= min_size) & (cand[:, 3] - cand[:, 1] >= min_size)
        if len(gt):
            ok &= box_iou(cand, gt).max(1) < max_iou
        cand = cand[ok]
        out = np.concatenate([out, cand[rng.permutation(len(cand))]])[:n]
    return out.astype(np.float32)


# ------------------------------------------------------------------------- answer builders

_PLURAL_IRREGULAR = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep",
                     "skis": "skis", "scissors": "scissors", "glasses": "glasses",
                     "skateboard": "skateboards", "child": "children", "man": "men",
                     "woman": "women", "leaf": "leaves", "shelf": "shelves"}


def plural(phrase: str) -> str:
    """English plural of a noun phrase's last word (``"red circle"`` → ``"red circles"``)."""
    head, _, word = phrase.strip().rpartition(" ")
    low = word.lower()
    if low in _PLURAL_IRREGULAR:
        word = _PLURAL_IRREGULAR[low]
    elif low.endswith(("s", "x", "z", "ch", "sh")):
        word += "es"
    elif low.endswith("y") and low[-2:-1] not in ("a", "e", "i", "o", "u"):
        word = word[:-1] + "ies"
    else:
        word += "s"
    return f"{head} {word}" if head else word


def with_article(phrase: str) -> str:
    """The short caption of a category: ``"a dog"``, ``"an astronaut"``."""
    phrase = phrase.strip()
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def detect_sample(present: Mapping[str, Sequence[int]], absent: Sequence[str],
                  rng: np.random.Generator, rejection_rate: float = 0.2, max_names: int = 3,
                  extra_absent_prob: float = 0.5) -> Tuple[str, str, Dict[str, Any]]:
    """Query, answer and meta of one ``detect`` sample.

    With probability ``rejection_rate`` the query names 1..``max_names`` absent categories and
    every block is the rejection form; otherwise it names 1..``max_names`` present ones and,
    with probability ``extra_absent_prob`` (room permitting), one absent category whose block
    is the rejection form. Falls back to the other kind when one side is empty.

    Args:
        present: category name → candidate indices of its instances (non-empty lists).
        absent: category names not in the image.

    Raises:
        InvalidRequestError: both ``present`` and ``absent`` are empty.
    """
    names_p, names_a = list(present), list(absent)
    if not names_p and not names_a:
        raise InvalidRequestError("detect sample needs a present or an absent category")
    reject = (rng.random() < rejection_rate or not names_p) and bool(names_a)
    if reject:
        k = int(rng.integers(1, min(max_names, len(names_a)) + 1))
        names = [names_a[i] for i in rng.choice(len(names_a), k, replace=False)]
    else:
        k = int(rng.integers(1, min(max_names, len(names_p)) + 1))
        names = [names_p[i] for i in rng.choice(len(names_p), k, replace=False)]
        if names_a and k < max_names and rng.random() < extra_absent_prob:
            names.append(names_a[int(rng.integers(len(names_a)))])
            names = [names[i] for i in rng.permutation(len(names))]
    blocks = [(n, sorted(present.get(n, ()))) for n in names]
    return "; ".join(names), format_answer(blocks), {"rejection": reject}


def count_sample(present: Mapping[str, Sequence[int]], absent: Sequence[str],
                 rng: np.random.Generator, rejection_rate: float = 0.2
                 ) -> Tuple[str, str, Dict[str, Any]]:
    """Query (plural category), answer (its block, then the number) and meta of ``count``.

    An absent category (probability ``rejection_rate``, or when nothing is present) gives the
    rejection block and ``0``.

    Raises:
        InvalidRequestError: both ``present`` and ``absent`` are empty.
    """
    names_p, names_a = list(present), list(absent)
    if not names_p and not names_a:
        raise InvalidRequestError("count sample needs a present or an absent category")
    reject = (rng.random() < rejection_rate or not names_p) and bool(names_a)
    pool = names_a if reject else names_p
    name = pool[int(rng.integers(len(pool)))]
    idx = sorted(present.get(name, ()))
    query = plural(name)
    return query, format_answer([(query, idx)], count=len(idx)), {"rejection": reject}
