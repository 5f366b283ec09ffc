"""Per-frame state of the pipeline: stage timers, the cached frame encoding, and filling a
:class:`~vlxseek_core.types.QueryResult` from a decoded answer."""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .modeling import EncodedFrame
from .parsing import (REGION_INDEX_TOKENS, IndexTokens, extract_reasoning, parse_answer,
                      read_count)
from .types import Detection, Proposals, QueryResult


class StageTimer:
    """Wall time per named stage, in milliseconds (``ms``; repeated stages add up)."""

    def __init__(self):
        self.ms: Dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3


@dataclass
class FrameEncoding:
    """Everything about one frame that does not depend on the question (issue: frame cache).

    Attributes:
        key: content hash of image, boxes and proposal settings.
        image_size: ``(h, w)`` of the original image.
        proposals: the regions shown to the model (region index = row).
        warnings: notes from proposal validation (e.g. dropped user boxes).
        frame: tower/HFRE outputs, ``None`` when there are no regions, or when the query was
            cancelled before the towers ran (then :attr:`complete` is ``False``; such an
            encoding is never cached).
        prefixes: prefix key → ``(prefix ids, KV cache of the prefix)``, filled lazily; the
            key is the model family's (VLM-FO1: the system-turn flag; see
            :class:`vlxseek_core.families.FamilyPrompts`).
        timings_ms: time spent on this frame (proposals, preprocess, encode).
        answered: queries answered on this encoding so far; only the first one reports the
            frame's stage timings (later ones did not pay for them).
    """

    key: str
    image_size: Tuple[int, int]
    proposals: Proposals
    warnings: List[str]
    frame: Optional[EncodedFrame]
    prefixes: Dict[Any, tuple] = field(default_factory=dict)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    answered: int = 0

    @property
    def complete(self) -> bool:
        """Whether the towers and the HFRE ran on the frame's regions (trivially: none)."""
        return self.frame is not None or len(self.proposals) == 0


def frame_key(pil, boxes=None, box_scores=None, proposals: Optional[Proposals] = None,
              thresholds: Optional[dict] = None) -> str:
    """Content hash of a frame and of everything its proposals depend on.

    Args:
        pil: the PIL image.
        boxes, box_scores: user boxes ``[K, 4]`` and scores ``[K]`` or ``None``.
        proposals: given :class:`Proposals` or ``None``.
        thresholds: the detector's filter settings, ``None`` without a detector.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((pil.size, pil.mode)).encode())
    h.update(pil.tobytes())
    given = (None, None) if proposals is None else (proposals.boxes, proposals.scores)
    for arr in (boxes, box_scores, *given):  # length-prefixed: no two inputs hash alike
        data = b"" if arr is None else np.asarray(arr, dtype=np.float64).tobytes()
        h.update(b"-" if arr is None else len(data).to_bytes(8, "little") + data)
    if thresholds is not None:
        h.update(repr(sorted(thresholds.items())).encode())
    return h.hexdigest()


def fill_answer(result: QueryResult, answer: str,
                index_tokens: IndexTokens = REGION_INDEX_TOKENS) -> None:
    """Parse ``answer`` into ``result``: groundings, rejected phrases, detections, count,
    reasoning, and a warning per absent phrase, for an empty answer and for a count answer
    without a number.

    Args:
        result: filled in place; ``result.task`` and ``result.proposals`` are read.
        answer: the decoded answer, end tokens already removed, its index tokens referring to
            rows of ``result.proposals`` (the caller's indices).
        index_tokens: the model family's index token spelling (``<regionK>`` by default,
            ``<objK>`` for VLX-Seek 1.5).
    """
    proposals = result.proposals
    parsed = parse_answer(answer, len(proposals), index_tokens)
    result.answer = answer
    result.groundings = parsed.groundings
    result.rejected = list(parsed.rejected)
    result.warnings.extend(parsed.warnings())
    result.warnings.extend(f"absent: {phrase!r} (the model answered None)"
                           for phrase in parsed.rejected)
    if not answer.strip():
        result.warnings.append("the model found nothing (empty answer)")
    result.detections = [
        Detection(region_index=i, label=g.phrase, box=proposals.boxes[i].copy(),
                  score=float(proposals.scores[i]))
        for g in parsed.groundings for i in g.region_indices]
    if result.task == "count":
        count = read_count(answer, index_tokens)
        only_rejections = parsed.rejected and not parsed.region_indices
        if count is None and not only_rejections:
            result.warnings.append("the answer holds no number; count 0 is not a reading")
        result.count = 0 if count is None else count
    if result.task == "reason":
        result.reasoning, result.final_answer = extract_reasoning(answer)
