"""Held-out accuracy of a model on training-format records (issue 9 §7).

Each record is asked through the real inference path (``VLXSeek.query`` with the record's
candidate boxes as user boxes and its task/query/region indices); the answer is compared with
the record's ground-truth answer, parsed by the same parser:

* ``detect``: every (label, region) pair of the prediction is a true positive if the record
  grounds that label to that region, else a false positive; missed ground-truth pairs are false
  negatives → precision, recall, F1. Labels that the record answers with the rejection form
  count for **rejection accuracy** (right when the prediction grounds no region to them);
  present labels answered with no region count as **false rejections**.
* rejection accuracy is also split by what each absent label shares with the scene, where the
  record's ``meta["near_miss"]`` says (``make-scenes``: ``rejection_acc[colour]``,
  ``[shape]``, ``[colour+shape]``, ``[none]``; hard negatives as in OVDEval).
* ``refer``: Acc@0.5 = the first referred box overlaps the target box with IoU ≥ 0.5;
  expressions of absent objects count for rejection accuracy instead.
* ``count``: exact match of the number.
* ``caption``: exact match of the phrase (case and final period ignored).
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from ..image_files import read_rgb
from ..parsing import extract_count, parse_answer


def _blocks(parsed) -> Dict[str, set]:
    """label → set of region indices; rejected labels map to an empty set."""
    out: Dict[str, set] = {g.phrase: set(g.region_indices) for g in parsed.groundings}
    for label in getattr(parsed, "rejected", ()):
        out.setdefault(label, set())
    return out


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _norm(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


class Tally:
    """Counters of :func:`evaluate_records`, turned into rates by :meth:`metrics`."""

    def __init__(self):
        self.c: Dict[str, float] = defaultdict(float)

    def add(self, key: str, value: float = 1.0) -> None:
        self.c[key] += value

    def metrics(self) -> Dict[str, Optional[float]]:
        """Rates (``None`` where nothing was measured) and the raw counts."""
        c = self.c

        def rate(num, den):
            return c[num] / c[den] if c[den] else None

        tp, fp, fn = c["det_tp"], c["det_fp"], c["det_fn"]
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = (2 * precision * recall / (precision + recall)
              if precision and recall else (0.0 if tp + fp + fn else None))
        out = {"det_precision": precision, "det_recall": recall, "det_f1": f1,
               "rec_acc50": rate("rec_ok", "rec_n"), "count_exact": rate("count_ok", "count_n"),
               "rejection_acc": rate("rej_ok", "rej_n"),
               "false_rejection": rate("false_rej", "present_n"),
               "caption_exact": rate("cap_ok", "cap_n"),
               "format_ok": rate("format_ok", "queries")}
        for key in sorted(c):
            for ok, n, name in (("rec_ok:", "rec_n:", "rec_acc50"),
                                ("rej_ok:", "rej_n:", "rejection_acc")):
                if key.startswith(ok):
                    kind = key[len(ok):]
                    out[f"{name}[{kind}]"] = rate(key, n + kind)
        out["counts"] = dict(c)
        return out


def score_answer(tally: Tally, record: dict, answer: str) -> None:
    """Add one record's predicted ``answer`` to ``tally`` (see the module docstring)."""
    boxes = np.asarray(record["bbox_list"], dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    truth_text = next(t["value"] for t in record["conversations"] if t["from"] == "gpt")
    truth, pred_parsed = parse_answer(truth_text, n), parse_answer(answer, n)
    gt, pred = _blocks(truth), _blocks(pred_parsed)
    task = record.get("task", "detect")
    near = (record.get("meta") or {}).get("near_miss") or {}

    def rejection(label: str, ok: bool) -> None:
        for suffix in ("", f":{near[label]}") if label in near else ("",):
            tally.add("rej_n" + suffix)
            tally.add("rej_ok" + suffix, float(ok))

    tally.add("queries")
    tally.add("format_ok", float(bool(pred) or not gt or task == "caption"))
    if task == "detect":
        for label, want in gt.items():
            got = pred.get(label, set())
            if not want:
                rejection(label, not got)
            else:
                tally.add("present_n")
                tally.add("false_rej", float(not got))
            tally.add("det_tp", len(got & want))
            tally.add("det_fp", len(got - want))
            tally.add("det_fn", len(want - got))
        for label, got in pred.items():
            if label not in gt:
                tally.add("det_fp", len(got))
    elif task == "refer":
        want = set().union(*gt.values()) if gt else set()
        first = next((i for g in pred_parsed.groundings for i in g.region_indices), None)
        if not want:
            rejection(next(iter(gt), ""), first is None)
        else:
            tally.add("present_n")
            tally.add("false_rej", float(first is None))
            kind = (record.get("meta") or {}).get("kind", "all")
            ok = first is not None and _iou(boxes[first], boxes[min(want)]) >= 0.5
            for suffix in ("", f":{kind}"):
                tally.add("rec_n" + suffix)
                tally.add("rec_ok" + suffix, float(ok))
    elif task == "count":
        tally.add("count_n")
        tally.add("count_ok", float(extract_count(answer) == extract_count(truth_text)))
    elif task == "caption":
        tally.add("cap_n")
        tally.add("cap_ok", float(_norm(answer) == _norm(truth_text)))


def evaluate_records(pipe, records: Iterable[dict], images_dir: str, max_new_tokens: int = 64,
                     group: Optional[Callable[[dict], str]] = None) -> Dict[str, object]:
    """Ask ``pipe`` every record and score the answers (see the module docstring).

    Args:
        pipe: a :class:`~vlxseek_core.pipeline.VLXSeek`.
        records: training-format records (JSON objects) with ``task``/``query``.
        images_dir: directory the record ``image`` paths are relative to.
        max_new_tokens: decoding budget per query.
        group: optional ``record -> name``; each record's answer is then also scored in
            its group's tally (each record is asked once).

    Returns:
        the metrics of :meth:`Tally.metrics`; with ``group``, also ``groups``: ``{name:
        metrics of that group's records}``, names sorted.
    """
    tally = Tally()
    groups: Dict[str, Tally] = defaultdict(Tally)
    images: Dict[str, np.ndarray] = {}
    for record in records:
        name = record["image"]
        if name not in images:
            images.clear()  # records of one image are adjacent; keep one decoded image
            images[name] = np.asarray(read_rgb(os.path.join(images_dir, name)))
        regions: Optional[List[int]] = record.get("region_indices") or None
        result = pipe.query(images[name], record.get("query", ""), task=record["task"],
                            boxes=np.asarray(record["bbox_list"], dtype=np.float32),
                            region_indices=regions, max_new_tokens=max_new_tokens)
        score_answer(tally, record, result.answer)
        if group is not None:
            score_answer(groups[group(record)], record, result.answer)
    out: Dict[str, object] = dict(tally.metrics())
    if group is not None:
        out["groups"] = {name: groups[name].metrics() for name in sorted(groups)}
    return out
