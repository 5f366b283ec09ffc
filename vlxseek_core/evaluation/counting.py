"""Counting evaluation: CountBench and PixMo-Count (spec §5.2).

Data: a JSON list (or JSONL) of records ``{"question": str, "answer": int, "image": file name,
"bboxes": [[x1, y1, x2, y2], …] (int pixels, ≤ 100), "scores": [...] (optional; PixMo-Count has
none)}``, as in ``countbench_with_upn_score_0.3_0.8.json`` and
``pixmoCount_with_upn_score_0.3_0.8.json``.
Records without ``bboxes`` use the pipeline's detector. The id of a record is its ``id`` key or,
absent that, its position in the file.

The question is sent verbatim (it says "in the image", unlike the ``count`` template). Prediction =
:func:`~vlxseek_core.parsing.extract_count` of the answer (first integer after removing region
tags, 0 when none). Metric: exact-match accuracy over all records; a failed record counts as wrong
(``accuracy_evaluated`` leaves failed records out).
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..parsing import extract_count
from .common import EvalProtocol, EvalRequest, require


def count_accuracy(predicted: Sequence[Optional[int]], expected: Sequence[int]) -> float:
    """Exact-match accuracy; ``None`` predictions (failed records) are wrong.

    Raises:
        ValueError: lengths differ.
    """
    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} predictions for {len(expected)} answers")
    if not expected:
        return 0.0
    hits = sum(p is not None and int(p) == int(e) for p, e in zip(predicted, expected))
    return hits / len(expected)


class CountProtocol(EvalProtocol):
    """CountBench / PixMo-Count exact-match counting accuracy (spec §5.2).

    Args:
        data_path: the data file.
        images_dir: directory of the records' images.
        name: ``countbench`` or ``pixmo-count`` (only the label differs).
    """

    template_task = "count"

    def __init__(self, data_path: str, images_dir: str, name: str = "countbench"):
        super().__init__(data_path, images_dir)
        self.name = name

    def request(self, raw):
        question = require(raw, "question")
        int(require(raw, "answer"))  # a record without a usable answer fails up front
        return EvalRequest(self.image_path(raw), str(question), raw.get("bboxes"),
                           raw.get("scores"))

    def predict(self, raw, answer, boxes, scores):
        return {"pred": extract_count(answer), "gt": int(raw["answer"])}

    def metrics(self, entries, out_dir=None):
        ok = [e for e in entries if e.get("ok")]
        evaluated = count_accuracy([e["pred"] for e in ok], [e["gt"] for e in ok])
        return {"accuracy": evaluated * len(ok) / len(entries) if entries else 0.0,
                "accuracy_evaluated": evaluated,
                "mean_abs_error": (sum(abs(e["pred"] - e["gt"]) for e in ok) / len(ok)
                                   if ok else None)}
