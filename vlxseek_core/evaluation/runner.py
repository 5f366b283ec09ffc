"""The evaluation loop (spec §5): one record after another through the pipeline, resumable,
then the summary (counts, first errors, the protocol's metrics) and its text table.

Split from :mod:`.common` (records, :class:`~.common.EvalProtocol`, the result store), which
still answers ``common.run_eval`` & co.; see its docstring for the output directory layout.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, TextIO

import numpy as np

from ..tokens import MAX_REGIONS
from .common import (LOGGER, MAX_ERRORS_IN_SUMMARY, RAW_PROMPT_TASK, SUMMARY_NAME, EvalError,
                     EvalProtocol, ResultStore, as_boxes, load_image, usable_boxes)


def _query(pipeline, protocol: EvalProtocol, raw: dict,
           max_new_tokens: Optional[int]) -> Dict[str, Any]:
    """Run one record through the pipeline; returns the entry's ok-fields (raises on error)."""
    from .templates import region_spelling, template_query, uses_templates

    req = protocol.request(raw)
    templated = uses_templates(pipeline)
    task, text = template_query(protocol, raw) if templated else (RAW_PROMPT_TASK, req.prompt)
    image = load_image(req.image_path)
    warnings: List[str] = []
    boxes = scores = None
    if req.boxes is not None:
        boxes = as_boxes(req.boxes)
        scores = (np.ones(len(boxes)) if req.scores is None
                  else np.asarray(req.scores, dtype=np.float64).reshape(-1))
        if len(scores) != len(boxes):
            raise ValueError(f"{len(boxes)} proposals but {len(scores)} scores")
        if len(boxes) > MAX_REGIONS:
            warnings.append(f"{len(boxes)} proposals; only the first {MAX_REGIONS} were used")
            boxes, scores = boxes[:MAX_REGIONS], scores[:MAX_REGIONS]
        model_boxes, fixed = usable_boxes(boxes, image.width, image.height)
        if fixed:
            warnings.append(f"{fixed} degenerate proposals widened to 1 px")
    else:
        model_boxes = None
    result = pipeline.query(image, text, task=task, boxes=model_boxes,
                            box_scores=None if scores is None else scores.astype(np.float32),
                            max_new_tokens=max_new_tokens)
    if boxes is None:  # the pipeline's detector proposed: indices refer to its proposals
        boxes = np.asarray(result.proposals.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(result.proposals.scores, dtype=np.float64).reshape(-1)
    answer = result.answer
    warnings.extend(getattr(result, "warnings", None) or [])
    entry = {"answer": answer, "num_boxes": int(len(boxes)), "warnings": warnings}
    # a template-asked family's <objK> are read as <regionK> (same caller indices)
    read = region_spelling(answer, pipeline.family.index_tokens) if templated else answer
    entry.update(protocol.predict(raw, read, boxes, scores))
    return entry


def run_eval(protocol: EvalProtocol, pipeline, out_dir: str, *, limit: Optional[int] = None,
             max_new_tokens: Optional[int] = None, model_id: Optional[str] = None,
             restart: bool = False, progress: bool = True, print_table: bool = True,
             stream: Optional[TextIO] = None) -> Dict[str, Any]:
    """Evaluate ``pipeline`` on ``protocol``'s records, resumably.

    Args:
        protocol: the benchmark.
        pipeline: an object with ``query(image, text, task=, boxes=, box_scores=,
            max_new_tokens=)`` returning something with ``.answer`` (str), ``.proposals``
            (``.boxes`` ``[K, 4]`` xyxy pixels, ``.scores`` ``[K]``) and optionally
            ``.warnings`` — a :class:`~vlxseek_core.pipeline.VLXSeek` or a test double.
        out_dir: output directory (see the module docstring for its files).
        limit: evaluate only the first ``limit`` records.
        max_new_tokens: decoding budget per record (``None`` = the pipeline's default).
        model_id: model identity stored in ``meta.json`` (resuming with another is refused).
        restart: discard previous results in ``out_dir``.
        progress: show a tqdm progress bar (stderr).
        print_table: print the summary table (:func:`format_summary`) at the end.
        stream: where to print it (default: the current ``sys.stdout``).

    Returns:
        The summary dict also written to ``out_dir/summary.json``: ``protocol``,
        ``num_records``, ``num_ok``, ``num_errors``, ``errors`` (first 20 ``{id, error}``),
        ``metrics`` (protocol-specific), ``run`` (``resumed``, ``processed``, ``seconds``,
        ``mean_seconds_per_record``), ``out_dir``.

    Raises:
        EvalError: unreadable data, a detector is required but missing, or ``out_dir`` holds
            results of other settings.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .templates import check_protocol

    check_protocol(protocol, pipeline)
    records = protocol.load()
    if limit is not None:
        records = records[:max(0, int(limit))]
    if protocol.needs_detector and getattr(pipeline, "proposal_source", None) is None:
        raise EvalError(f"{protocol.name}: the records carry no proposals, so the pipeline needs "
                        "a proposal detector (--proposal-source)")
    settings = {**protocol.settings(), "model": model_id, "max_new_tokens": max_new_tokens}
    store = ResultStore(out_dir, settings, restart=restart)
    entries = store.load()
    todo = [(rid, raw) for rid, raw in records if not entries.get(rid, {}).get("ok")]
    resumed = len(records) - len(todo)
    if resumed:
        LOGGER.info("%s: resuming, %d of %d records already done", protocol.name, resumed,
                    len(records))
    start = time.perf_counter()
    with logging_redirect_tqdm(), tqdm(total=len(records), initial=resumed, desc=protocol.name,
                                       unit="rec", disable=not progress) as bar:
        for rid, raw in todo:
            t0 = time.perf_counter()
            try:
                entry = {"id": rid, "ok": True,
                         **_query(pipeline, protocol, raw, max_new_tokens)}
            except Exception as exc:  # noqa: BLE001 - every record failure is kept and counted
                LOGGER.warning("%s record %s failed: %s: %s", protocol.name, rid,
                               type(exc).__name__, exc)
                entry = {"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            entry["seconds"] = round(time.perf_counter() - t0, 4)
            store.append(entry)
            entries[rid] = entry
            bar.update(1)
    elapsed = time.perf_counter() - start
    ordered = [entries[rid] for rid, _ in records]
    summary = summarize(protocol, ordered, out_dir)
    summary["run"] = {"resumed": resumed, "processed": len(todo), "seconds": round(elapsed, 3),
                      "mean_seconds_per_record": round(elapsed / len(todo), 4) if todo else None}
    with open(os.path.join(out_dir, SUMMARY_NAME), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    if print_table:
        (stream or sys.stdout).write(format_summary(summary) + "\n")
    return summary


def summarize(protocol: EvalProtocol, entries: Sequence[dict],
              out_dir: Optional[str] = None) -> Dict[str, Any]:
    """Counts, first errors and metrics of one entry per record (pure except for files the
    protocol writes into ``out_dir``, e.g. COCO's ``predictions.json``)."""
    errors = [{"id": e["id"], "error": e.get("error", "")} for e in entries if not e.get("ok")]
    return {"protocol": protocol.name, "num_records": len(entries),
            "num_ok": len(entries) - len(errors), "num_errors": len(errors),
            "errors": errors[:MAX_ERRORS_IN_SUMMARY],
            "metrics": protocol.metrics(entries, out_dir), "out_dir": out_dir}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def format_summary(summary: Dict[str, Any]) -> str:
    """The summary as a small text table (metric / value), with the error count on top."""
    rows = [("records", summary["num_records"]), ("evaluated", summary["num_ok"]),
            ("errors", summary["num_errors"])]
    rows += list(summary["metrics"].items())
    width = max(len(str(k)) for k, _ in rows)
    lines = [f"== vlxseek eval {summary['protocol']} ==",
             *(f"{str(k).ljust(width)}  {_fmt(v)}" for k, v in rows)]
    if summary["num_errors"]:
        first = summary["errors"][0]
        lines.append(f"{summary['num_errors']} record(s) failed (first: {first['id']}: "
                     f"{first['error']}); re-run the same command to retry them")
    return "\n".join(lines)
