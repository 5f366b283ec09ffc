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
indexes.`` For each parsed ``(label, region index)`` whose label equals a category name exactly,
a detection ``{image_id, category_id, bbox: [x1, y1, x2 − x1, y2 − y1], score: proposal
score}`` is emitted; other labels are dropped. All detections go to ``predictions.json``; bbox AP
is computed with pycocotools' ``COCOeval`` over the evaluated images (errored images included,
with no detections, as in a full reference run).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..parsing import parse_answer
from .common import EvalError, EvalProtocol, EvalRequest, LOGGER, require

COCO_QUERY_TEMPLATE = "Please detect {} in the image and return the object indexes."
PREDICTIONS_NAME = "predictions.json"
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                     "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of ``COCOeval.stats`` entries, in order (AP = AP@[.50:.95], area ranges s/m/l)."""


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
        except (OSError, json.JSONDecodeError) as exc:
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


def answer_to_coco_detections(answer: str, boxes: np.ndarray, scores: np.ndarray,
                              image_id: int, category_ids: Mapping[str, int]) -> List[dict]:
    """COCO result entries for one answer (spec §5.1).

    Args:
        answer: decoded answer ``<ground>label</ground><objects><regionK>…</objects>…``.
        boxes: float ``[K, 4]`` xyxy pixels, the proposals the region indices refer to.
        scores: ``[K]`` proposal scores (the detections' confidences).
        image_id: COCO image id.
        category_ids: exact category name → category id.

    Returns:
        ``[{image_id, category_id, bbox: [x, y, w, h], score}]`` (pixels), one per
        (matching label, valid region index); out-of-range indices are dropped.
    """
    parsed = parse_answer(answer, len(boxes))
    detections = []
    for grounding in parsed.groundings:
        category = category_ids.get(grounding.phrase)
        if category is None:
            continue
        for idx in grounding.region_indices:
            x1, y1, x2, y2 = (float(v) for v in boxes[idx])
            detections.append({"image_id": int(image_id), "category_id": int(category),
                               "bbox": [x1, y1, x2 - x1, y2 - y1],
                               "score": float(scores[idx])})
    return detections


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

    Raises:
        EvalError: unreadable annotations.
    """

    name = "coco"

    def __init__(self, annotations: str, images_dir: str, data_path: Optional[str] = None):
        super().__init__(data_path, images_dir)
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
        return {"image_id": int(raw["id"]),
                "detections": answer_to_coco_detections(answer, boxes, scores, int(raw["id"]),
                                                        self.category_ids)}

    def metrics(self, entries, out_dir=None):
        detections = [d for e in entries if e.get("ok") for d in e["detections"]]
        if out_dir is not None:
            with open(os.path.join(out_dir, PREDICTIONS_NAME), "w", encoding="utf-8") as fh:
                json.dump(detections, fh)
        image_ids = []
        for entry in entries:
            try:
                image_ids.append(int(entry["id"]))
            except ValueError:
                continue
        image_ids = [i for i in image_ids if i in self.coco.imgs]
        stats = coco_bbox_metrics(self.coco, detections, image_ids)
        return {**stats, "num_images": len(image_ids), "num_detections": len(detections)}

    def settings(self):
        return {**super().settings(), "annotations": os.path.abspath(self.annotations)}
