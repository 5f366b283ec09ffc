"""Referring-expression comprehension: RefCOCO / RefCOCO+ / RefCOCOg, Acc@0.5.

The spec gives no reference data file for REC, so the record format is this project's (one
record per referring expression; flatten multi-sentence refs first), JSON list or JSONL::

    {"id": "…" (optional; default: position in the file),
     "image": "COCO_train2014_000000581857.jpg",
     "expression": "the lady with the blue shirt"  (or "sent" / "sentence" / "query" / "text"),
     "bbox": [x, y, w, h]                          (ground truth; COCO xywh pixels by default,
                                                   xyxy with gt_format="xyxy"),
     "gt_bbox_xyxy": [x1, y1, x2, y2]              (alternative key, always xyxy; wins over bbox),
     "bbox_list": [[x1, y1, x2, y2], …]            (proposals, xyxy pixels, ≤ 100; or "bboxes";
                                                   absent → the pipeline's detector),
     "score_list": [...]                           (optional; or "scores")}

Prompt: the reference REC template (identical to the detection template, spec §3.4) with the
expression, ``Please detect {expression} in this image. Answer the question with object
indexes.``, sent verbatim without constrained decoding; a record's own
``conversations[0].value`` (reference processed format) replaces it when present. The answer is
read with :func:`~vlxseek_core.parsing.parse_answer`. Prediction = the proposal box of
:func:`~vlxseek_core.parsing.first_region_index`, the first referred box in answer order
(``<region2><region0>`` → region 2; out-of-range indices refer to no box and are skipped); a
hit when its IoU with the ground truth is ≥ 0.5 (``torchvision.ops.box_iou``). No referred
region or a failed record is a miss. Each record keeps its out-of-range indices
(``dropped_indices``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..parsing import first_region_index, parse_answer
from ..prompts import REC_TEMPLATE
from ..tokens import IMAGE_PLACEHOLDER
from .common import EvalProtocol, EvalRequest, as_boxes, require

GT_FORMATS = ("xywh", "xyxy")
EXPRESSION_KEYS = ("expression", "sent", "sentence", "query", "text")
IOU_THRESHOLD = 0.5
_IOU_CHUNK = 512


def box_ious(pred: Sequence[Optional[Sequence[float]]],
             gt: Sequence[Sequence[float]]) -> List[float]:
    """Per-pair IoU of xyxy boxes (pixels); a ``None`` prediction has IoU 0.

    Raises:
        ValueError: lengths differ or a box is not 4 numbers.
    """
    import torch
    from torchvision.ops import box_iou

    if len(pred) != len(gt):
        raise ValueError(f"{len(pred)} predicted boxes for {len(gt)} ground-truth boxes")
    present = [i for i, p in enumerate(pred) if p is not None]
    ious = [0.0] * len(gt)
    for start in range(0, len(present), _IOU_CHUNK):  # box_iou is all-pairs: keep it small
        chunk = present[start:start + _IOU_CHUNK]
        p = torch.as_tensor(as_boxes([pred[i] for i in chunk]), dtype=torch.float64)
        g = torch.as_tensor(as_boxes([gt[i] for i in chunk]), dtype=torch.float64)
        for i, value in zip(chunk, torch.diagonal(box_iou(p, g)).tolist()):
            ious[i] = float(value)
    return ious


def box_accuracy(pred: Sequence[Optional[Sequence[float]]], gt: Sequence[Sequence[float]],
                 iou_threshold: float = IOU_THRESHOLD) -> float:
    """Acc@``iou_threshold``: fraction of pairs with IoU ≥ the threshold (``None`` = miss)."""
    if not gt:
        return 0.0
    return sum(iou >= iou_threshold for iou in box_ious(pred, gt)) / len(gt)


def gt_box_xyxy(raw: dict, gt_format: str = "xywh") -> List[float]:
    """The record's ground-truth box as xyxy pixels (see the module docstring for keys).

    Raises:
        KeyError: no ground-truth key. ValueError: bad ``gt_format`` or box.
    """
    if gt_format not in GT_FORMATS:
        raise ValueError(f"gt_format must be one of {GT_FORMATS}, got {gt_format!r}")
    if raw.get("gt_bbox_xyxy") is not None:
        box = as_boxes([raw["gt_bbox_xyxy"]], "gt_bbox_xyxy")[0]
    else:
        box = as_boxes([require(raw, "bbox", "gt_bbox")], "bbox")[0]
        if gt_format == "xywh":
            box = np.array([box[0], box[1], box[0] + box[2], box[1] + box[3]])
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"ground-truth box {box.tolist()} has no area (gt_format={gt_format})")
    return [float(v) for v in box]


def rec_prompt(raw: dict) -> str:
    """The prompt of one record: its stored conversation text, else the REC template."""
    conversations = raw.get("conversations")
    if conversations:
        return conversations[0]["value"].replace(IMAGE_PLACEHOLDER, "").strip()
    return REC_TEMPLATE.format(str(require(raw, *EXPRESSION_KEYS)).strip())


class RefCocoProtocol(EvalProtocol):
    """RefCOCO/+/g Acc@0.5 with the first referred proposal as the prediction.

    Args:
        data_path: the data file.
        images_dir: directory of the records' images.
        gt_format: format of the ``bbox``/``gt_bbox`` key, ``xywh`` (COCO) or ``xyxy``.
        name: label of the run (``refcoco``, ``refcoco+``, ``refcocog``).
    """

    template_task = "refer"

    def __init__(self, data_path: str, images_dir: str, gt_format: str = "xywh",
                 name: str = "refcoco"):
        super().__init__(data_path, images_dir)
        if gt_format not in GT_FORMATS:
            raise ValueError(f"gt_format must be one of {GT_FORMATS}, got {gt_format!r}")
        self.gt_format = gt_format
        self.name = name

    def request(self, raw):
        gt_box_xyxy(raw, self.gt_format)  # a record without usable ground truth fails up front
        boxes = raw.get("bbox_list", raw.get("bboxes"))
        scores = raw.get("score_list", raw.get("scores"))
        return EvalRequest(self.image_path(raw), rec_prompt(raw), boxes, scores)

    def predict(self, raw, answer, boxes, scores):
        parsed = parse_answer(answer, len(boxes))
        index = first_region_index(parsed)
        pred = None if index is None else [float(v) for v in boxes[index]]
        gt = gt_box_xyxy(raw, self.gt_format)
        return {"region_index": index, "pred_box": pred, "gt_box": gt,
                "iou": box_ious([pred], [gt])[0], "dropped_indices": parsed.dropped_indices}

    def metrics(self, entries, out_dir=None):
        ok = [e for e in entries if e.get("ok")]
        pred = [e["pred_box"] for e in ok]
        gt = [e["gt_box"] for e in ok]
        evaluated = box_accuracy(pred, gt)
        return {"acc@0.5": evaluated * len(ok) / len(entries) if entries else 0.0,
                "acc@0.5_evaluated": evaluated,
                "mean_iou": float(np.mean(box_ious(pred, gt))) if ok else None,
                "no_region": sum(p is None for p in pred),
                "answers_with_dropped_indices": sum(bool(e.get("dropped_indices")) for e in ok)}

    def settings(self):
        return {**super().settings(), "gt_format": self.gt_format,
                "prediction": "first referred box in answer order"}
