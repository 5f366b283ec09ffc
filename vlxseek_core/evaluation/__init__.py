"""Benchmark evaluation of a VLM-FO1 pipeline (spec §5): COCO, CountBench, PixMo-Count, RefCOCO.

* :mod:`.common` — records, resumable JSONL results, the loop (:func:`run_eval`), summaries.
* :mod:`.coco` — bbox AP with pycocotools (spec §5.1), answers read as the reference script
  reads them.
* :mod:`.counting` — CountBench / PixMo-Count exact-match accuracy (spec §5.2).
* :mod:`.refcoco` — RefCOCO/+/g Acc@0.5.

Example::

    from vlxseek_core.pipeline import VLXSeek
    from vlxseek_core.evaluation import build_protocol, run_eval

    pipe = VLXSeek.from_pretrained("ckpt", proposal_source="none")
    protocol = build_protocol("countbench", data="countbench.json", images="images/")
    summary = run_eval(protocol, pipe, "out/countbench")

Command line: ``vlxseek eval {coco,countbench,pixmo-count,refcoco} …`` (:mod:`vlxseek_core.cli`).
"""
from __future__ import annotations

from typing import Optional

from .common import EvalError, EvalProtocol, EvalRequest, load_records
from .runner import format_summary, run_eval, summarize

PROTOCOLS = ("coco", "countbench", "pixmo-count", "refcoco")


def build_protocol(name: str, data: Optional[str], images: str,
                   annotations: Optional[str] = None, gt_format: str = "xywh",
                   parse: Optional[str] = None,
                   score_images: Optional[str] = None) -> EvalProtocol:
    """The protocol ``name`` on the given files.

    Args:
        name: one of :data:`PROTOCOLS`.
        data: data file (for ``coco``: proposals JSONL, or ``None`` for detector proposals).
        images: image directory.
        annotations: COCO instances file (``coco`` only, required there).
        gt_format: ``refcoco`` ground-truth ``bbox`` format, ``xywh`` or ``xyxy``.
        parse: ``coco`` only: ``strict`` (the reference script's reading; ``None`` = strict) or
            ``lenient``.
        score_images: ``coco`` only: ``all`` annotated images (``None`` = all) or the evaluated
            ``records``' images.

    Raises:
        EvalError: unknown protocol, missing required files, or a ``coco`` option given to
            another protocol or with an unknown value.
    """
    if name == "coco":
        from .coco import PARSE_MODES, SCORE_IMAGES, CocoProtocol

        if not annotations:
            raise EvalError("coco needs --annotations (a COCO instances JSON file)")
        for option, value, allowed in (("parse", parse, PARSE_MODES),
                                       ("score_images", score_images, SCORE_IMAGES)):
            if value is not None and value not in allowed:
                raise EvalError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
        return CocoProtocol(annotations, images, data, parse=parse or "strict",
                            score_images=score_images or "all")
    for option, value in (("--parse", parse), ("--score-images", score_images)):
        if value is not None:
            raise EvalError(f"{option} applies to coco only, not {name}")
    if data is None:
        raise EvalError(f"{name} needs --data")
    if name in ("countbench", "pixmo-count"):
        from .counting import CountProtocol

        return CountProtocol(data, images, name=name)
    if name == "refcoco":
        from .refcoco import RefCocoProtocol

        return RefCocoProtocol(data, images, gt_format=gt_format)
    raise EvalError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")


__all__ = ["PROTOCOLS", "EvalError", "EvalProtocol", "EvalRequest", "build_protocol",
           "format_summary", "load_records", "run_eval", "summarize"]
