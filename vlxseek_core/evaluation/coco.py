"""COCO detection evaluation (spec §5.1): one query per image with all categories, bbox AP.

Inputs:

* ``annotations``: a COCO-format instances file (``instances_val2017.json``): images,
  categories (names matched exactly), ground-truth boxes (``bbox`` xywh pixels).
* proposals, either
  - ``data``: the reference's processed JSONL (``cocoVal2017_with_upn_score_0.3_0.8.jsonl``), one
    record per image: ``id`` (COCO image id), ``image`` (file name), ``bbox_list`` (int xyxy
    pixels, ≤ 100, sorted by score), ``score_list``; the stored ``conversations`` query is not
    used — the query is rebuilt from the annotation file's categories (same text); or
  - no data file: every image of the annotation file, proposals from the pipeline's detector.

Query (verbatim, spec §5.1; differs from the ``detect`` template):
``Please detect {names in category-id order joined by "; "} in the image and return the object
indexes.``

Answers are read as the reference's ``evaluation/eval_coco.py`` reads them (``parse="strict"``,
the default; the published 44.4/44.6 mAP come from it):

* blocks: ``re.findall`` of ``<ground>(.*?)</ground><objects>(.*?)</objects>`` without flags,
  so nothing may stand between ``</ground>`` and ``<objects>``, a block never spans a newline,
  ``<object>`` is not read, and a label runs from the first ``<ground>`` to the first
  ``</ground><objects>`` (``<ground>a</ground><ground>b</ground><objects>…`` gives the label
  ``a</ground><ground>b``, which is no category). An answer without a block gives nothing.
* per block: the label stripped; the indices of its ``<region\\d+>`` tags put into a Python
  ``set``; a repeated label gets the union (``old | new``) of its sets; labels in order of first
  appearance.
* detections: per label, per index *in the set's iteration order* (CPython: ascending modulo the
  hash table's size, e.g. ``{2, 9}`` iterates 9, 2), the proposal's box and score when the label
  equals a category name exactly. Scores have two decimals and pycocotools breaks ties by input
  order, so this order changes AP; it is reproduced by building the same sets.

``parse="lenient"`` takes the blocks :func:`~vlxseek_core.parsing.parse_answer` reads
(whitespace or newlines between the tags, ``<object>…</object>``, a label never spanning another
``<ground>``) and treats them the same way; the summary then also gives the strict AP.

Indices ≥ the number of proposals are dropped and listed in the record's ``dropped_indices``
(the reference script stops with an ``IndexError`` there). Detections become
``{image_id, category_id, bbox: [x1, y1, x2 − x1, y2 − y1], score}``, all go to
``predictions.json``, and bbox AP is computed with pycocotools' ``COCOeval`` over *every image of
the annotation file* (``score_images="all"``, the standard recipe): images without an answer —
missing from the proposals file, failed, or not run yet — count with all their objects missed;
``coverage`` = answered images / annotated images. ``score_images="records"`` scores only the
images of the evaluated records (e.g. a ``--limit`` subset).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..parsing import grounded_blocks
from .common import EvalError, EvalProtocol, EvalRequest, LOGGER, require

COCO_QUERY_TEMPLATE = "Please detect {} in the image and return the object indexes."
PREDICTIONS_NAME = "predictions.json"
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                     "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of ``COCOeval.stats`` entries, in order (AP = AP@[.50:.95], area ranges s/m/l)."""
PARSE_MODES = ("strict", "lenient")
"""Answer readings: the reference script's (default) and this project's parser's blocks."""
SCORE_IMAGES = ("all", "records")
"""Images COCOeval scores: every annotated image (default) or those of the evaluated records."""
REFERENCE_BLOCK = re.compile(r"<ground>(.*?)</ground><objects>(.*?)</objects>")
"""The reference evaluation's block pattern (no flags: ``.`` stops at a newline)."""
REFERENCE_REGION = re.compile(r"<region\d+>")
"""The reference's region tag pattern inside a block (``\\d``: any Unicode decimal digit)."""
_MAX_DIGITS = 4000


def load_coco(annotations: Union[str, Mapping[str, Any]]):
    """A pycocotools ``COCO`` from a file path or an in-memory dataset dict (quietly).

    Raises:
        EvalError: unreadable file.
    """
    from pycocotools.coco import COCO

    if isinstance(annotations, str):
        try:
            with open(annotations, encoding="utf-8") as fh:
                dataset = json.load(fh)
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8
            raise EvalError(f"cannot read COCO annotations {annotations!r}: {exc}") from exc
    else:
        dataset = copy.deepcopy(dict(annotations))
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def category_names(coco) -> List[str]:
    """Category names in category-id order."""
    return [coco.cats[c]["name"] for c in sorted(coco.cats)]


def coco_query(names: Sequence[str]) -> str:
    """The reference COCO query for ``names`` (spec §5.1)."""
    return COCO_QUERY_TEMPLATE.format("; ".join(names))


def answer_blocks(answer: str, parse: str = "strict") -> List[Tuple[str, str]]:
    """``(label, objects part)`` of each block of ``answer``, unstripped, in answer order.

    Args:
        answer: the decoded answer.
        parse: ``strict`` — the reference's ``re.findall`` of :data:`REFERENCE_BLOCK`;
            ``lenient`` — :func:`~vlxseek_core.parsing.grounded_blocks`.

    Raises:
        ValueError: unknown ``parse``.
    """
    if parse == "strict":
        if "</ground><objects>" not in answer:  # no match possible: skip the regex scan
            return []
        return REFERENCE_BLOCK.findall(answer)
    if parse == "lenient":
        return grounded_blocks(answer)
    raise ValueError(f"parse must be one of {PARSE_MODES}, got {parse!r}")


def _region_index(tag: str) -> int:
    """The number of a ``<regionN>`` tag (``int`` of its digits; huge numbers capped)."""
    digits = tag[len("<region"):-1].lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10 ** _MAX_DIGITS


def label_region_sets(answer: str, parse: str = "strict") -> Dict[str, set]:
    """Label → ``set`` of region indices, built the way the reference evaluation builds them.

    Each block's stripped label gets ``set(<indices of its region tags>)``; a label seen again
    gets ``previous | new``. The sets are real Python sets built by the same operations, so
    iterating them gives the reference's detection order.

    Args:
        answer: the decoded answer.
        parse: see :func:`answer_blocks`.

    Returns:
        Dict in order of first appearance of each label (out-of-range indices included).
    """
    sets: Dict[str, set] = {}
    for label, inner in answer_blocks(answer, parse):
        label = label.strip()
        indices = set([_region_index(tag) for tag in REFERENCE_REGION.findall(inner)])
        sets[label] = sets[label] | indices if label in sets else indices
    return sets


def coco_detections(answer: str, boxes: np.ndarray, scores: np.ndarray, image_id: int,
                    category_ids: Mapping[str, int],
                    parse: str = "strict") -> Tuple[List[dict], List[int]]:
    """COCO result entries for one answer, in the reference's order (spec §5.1).

    Args:
        answer: decoded answer ``<ground>label</ground><objects><regionK>…</objects>…``.
        boxes: float ``[K, 4]`` xyxy pixels, the proposals the region indices refer to.
        scores: ``[K]`` proposal scores (the detections' confidences).
        image_id: COCO image id.
        category_ids: exact category name → category id.
        parse: ``strict`` (the reference's reading) or ``lenient``, see :func:`answer_blocks`.

    Returns:
        ``(detections, dropped)``: ``[{image_id, category_id, bbox: [x, y, w, h], score}]``
        (pixels), one per (label equal to a category name, valid index), labels in order of
        first appearance and each label's indices in its set's iteration order; ``dropped``:
        the out-of-range indices of all labels, in the same order (the reference raises
        ``IndexError`` on them).
    """
    detections: List[dict] = []
    dropped: List[int] = []
    for label, indices in label_region_sets(answer, parse).items():
        category = category_ids.get(label)
        for idx in indices:
            if idx >= len(boxes):
                dropped.append(idx)
                continue
            if category is None:
                continue
            x1, y1, x2, y2 = (float(v) for v in boxes[idx])
            detections.append({"image_id": int(image_id), "category_id": int(category),
                               "bbox": [x1, y1, x2 - x1, y2 - y1],
                               "score": float(scores[idx])})
    return detections, dropped


def answer_to_coco_detections(answer: str, boxes: np.ndarray, scores: np.ndarray,
                              image_id: int, category_ids: Mapping[str, int],
                              parse: str = "strict") -> List[dict]:
    """The detections of :func:`coco_detections` (without the dropped indices)."""
    return coco_detections(answer, boxes, scores, image_id, category_ids, parse)[0]


def coco_bbox_metrics(annotations, detections: Sequence[Mapping[str, Any]],
                      image_ids: Optional[Sequence[int]] = None) -> Dict[str, Optional[float]]:
    """Bbox AP/AR with pycocotools ``COCOeval`` (10 IoU thresholds .50:.05:.95, 101 recall points).

    Args:
        annotations: COCO instances file path, dataset dict or ``COCO`` object (ground truth).
        detections: COCO result entries ``{image_id, category_id, bbox [x, y, w, h], score}``.
        image_ids: images to evaluate (default: all images of ``annotations``); images without
            detections count with all their ground truth missed.

    Returns:
        :data:`COCO_METRIC_NAMES` → value in [0, 1], or ``None`` where pycocotools reports −1
        (no ground truth in that category/area range).

    Raises:
        EvalError: a detection refers to an image that is not in the annotations.
    """
    from pycocotools.cocoeval import COCOeval

    coco_gt = annotations if hasattr(annotations, "loadRes") else load_coco(annotations)
    wanted = coco_gt.getImgIds() if image_ids is None else image_ids
    img_ids = sorted(set(int(i) for i in wanted))
    unknown = {int(d["image_id"]) for d in detections} - set(coco_gt.getImgIds())
    if unknown:
        raise EvalError(f"detections for images not in the annotations: {sorted(unknown)[:5]}")
    with contextlib.redirect_stdout(io.StringIO()) as log:
        if detections:
            coco_dt = coco_gt.loadRes(copy.deepcopy(list(detections)))
        else:  # loadRes cannot take an empty list
            coco_dt = load_coco({"images": coco_gt.dataset.get("images", []),
                                 "categories": coco_gt.dataset.get("categories", []),
                                 "annotations": []})
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = img_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    LOGGER.debug("COCOeval:\n%s", log.getvalue())
    return {name: (None if value < 0 else float(value))
            for name, value in zip(COCO_METRIC_NAMES, evaluator.stats)}


class CocoProtocol(EvalProtocol):
    """COCO bbox AP with all categories in one query per image (spec §5.1).

    Args:
        annotations: COCO instances JSON file.
        images_dir: directory of the images' ``file_name``/``image``.
        data_path: reference proposals JSONL, or ``None`` for detector proposals.
        parse: ``strict`` (the reference's reading, default) or ``lenient`` (see the module
            docstring); stored in ``meta.json``, a run is resumed only with the same one.
        score_images: ``all`` (every annotated image, default) or ``records``.

    Records (``records.jsonl``) hold ``image_id``, ``detections`` (under ``parse``),
    ``dropped_indices`` (out-of-range indices), ``parse_differs`` (the other parse gives other
    detections) and, with ``lenient``, ``strict_detections`` where they differ.

    Raises:
        EvalError: unreadable annotations. ValueError: unknown ``parse`` or ``score_images``.
    """

    name = "coco"
    template_task = "detect"

    def __init__(self, annotations: str, images_dir: str, data_path: Optional[str] = None,
                 parse: str = "strict", score_images: str = "all"):
        super().__init__(data_path, images_dir)
        if parse not in PARSE_MODES:
            raise ValueError(f"parse must be one of {PARSE_MODES}, got {parse!r}")
        if score_images not in SCORE_IMAGES:
            raise ValueError(f"score_images must be one of {SCORE_IMAGES}, got {score_images!r}")
        self.parse = parse
        self.score_images = score_images
        self.annotations = annotations
        self.coco = load_coco(annotations)
        self.names = category_names(self.coco)
        self.category_ids = {self.coco.cats[c]["name"]: c for c in sorted(self.coco.cats)}
        self.query = coco_query(self.names)
        self.needs_detector = data_path is None

    def load(self):
        if self.data_path is not None:
            return super().load()
        return [(str(img_id), {"id": img_id, "image": self.coco.imgs[img_id]["file_name"]})
                for img_id in sorted(self.coco.imgs)]

    def request(self, raw: dict) -> EvalRequest:
        image_id = int(require(raw, "id"))
        if image_id not in self.coco.imgs:
            raise KeyError(f"image id {image_id} is not in {self.annotations}")
        if self.data_path is None:
            return EvalRequest(self.image_path(raw), self.query)
        boxes = require(raw, "bbox_list", "bboxes")
        scores = raw.get("score_list", raw.get("scores"))
        return EvalRequest(self.image_path(raw), self.query, boxes, scores)

    def predict(self, raw, answer, boxes, scores):
        image_id = int(raw["id"])
        detections, dropped = coco_detections(answer, boxes, scores, image_id,
                                              self.category_ids, self.parse)
        other = "lenient" if self.parse == "strict" else "strict"
        other_detections = coco_detections(answer, boxes, scores, image_id, self.category_ids,
                                           other)[0]
        entry = {"image_id": image_id, "detections": detections, "dropped_indices": dropped,
                 "parse_differs": other_detections != detections}
        if self.parse == "lenient" and entry["parse_differs"]:
            entry["strict_detections"] = other_detections
        return entry

    def scored_image_ids(self, entries: Sequence[dict]) -> List[int]:
        """The image ids COCOeval scores: all of the annotation file (``score_images="all"``)
        or those of ``entries`` that are in it (``records``), sorted."""
        if self.score_images == "all":
            return sorted(self.coco.imgs)
        ids = set()
        for entry in entries:
            try:
                ids.add(int(entry["id"]))
            except (TypeError, ValueError):
                continue
        return sorted(i for i in ids if i in self.coco.imgs)

    def metrics(self, entries, out_dir=None):
        """AP/AR (:data:`COCO_METRIC_NAMES`) over :meth:`scored_image_ids`, plus ``parse``,
        ``images_annotated``, ``images_answered`` (ok records of annotated images),
        ``coverage`` (their ratio), ``images_scored``, ``num_detections``,
        ``answers_parse_differs`` (answers the other parse reads otherwise),
        ``answers_with_dropped_indices``; with ``lenient`` also ``AP_strict``, ``AP50_strict``
        and ``num_detections_strict`` (the same answers read strictly)."""
        ok = [e for e in entries if e.get("ok")]
        detections = [d for e in ok for d in e["detections"]]
        if out_dir is not None:
            with open(os.path.join(out_dir, PREDICTIONS_NAME), "w", encoding="utf-8") as fh:
                json.dump(detections, fh)
        image_ids = self.scored_image_ids(entries)
        answered = {int(e["image_id"]) for e in ok} & set(self.coco.imgs)
        annotated = len(self.coco.imgs)
        metrics: Dict[str, Any] = dict(coco_bbox_metrics(self.coco, detections, image_ids))
        metrics.update({
            "parse": self.parse, "images_annotated": annotated,
            "images_answered": len(answered),
            "coverage": len(answered) / annotated if annotated else None,
            "images_scored": len(image_ids), "num_detections": len(detections),
            "answers_parse_differs": sum(bool(e.get("parse_differs")) for e in ok),
            "answers_with_dropped_indices": sum(bool(e.get("dropped_indices")) for e in ok)})
        if self.parse == "lenient":
            strict = [d for e in ok for d in e.get("strict_detections", e["detections"])]
            strict_stats = coco_bbox_metrics(self.coco, strict, image_ids)
            metrics.update({"AP_strict": strict_stats["AP"], "AP50_strict": strict_stats["AP50"],
                            "num_detections_strict": len(strict)})
        return metrics

    def settings(self):
        return {**super().settings(), "annotations": os.path.abspath(self.annotations),
                "parse": self.parse}
