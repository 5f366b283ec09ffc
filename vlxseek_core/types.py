"""Plain result types shared by the pipeline, the CLI and the ROS node.

All boxes are float32 ``xyxy`` in pixels of the *original* image the caller passed
(not the 2048-capped, Qwen-resized or auxiliary frames used inside the model).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


@dataclass
class Proposals:
    """Candidate regions, in the order that defines the region indices.

    The proposals of a :class:`QueryResult` are the result's own writable copies. The frame
    cache keeps its own read-only copy (``FrameEncoding.proposals`` from ``VLXSeek.encode``),
    so writing into it raises ``ValueError: assignment destination is read-only``; use
    :meth:`copy` for an editable one.

    Attributes:
        boxes: float32 ``[N, 4]`` xyxy, pixels of the original image.
        scores: float32 ``[N]`` confidences in [0, 1]; user boxes get 1.0.
    """

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.boxes) != len(self.scores):
            raise ValueError(
                f"proposals: {len(self.boxes)} boxes but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.boxes)

    def copy(self, writeable: bool = True) -> "Proposals":
        """A copy with its own arrays (``writeable=False``: read-only arrays)."""
        boxes, scores = self.boxes.copy(), self.scores.copy()
        if not writeable:
            boxes.setflags(write=False)
            scores.setflags(write=False)
        return Proposals(boxes, scores)

    @classmethod
    def empty(cls) -> "Proposals":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


@dataclass
class Grounding:
    """One grounded phrase of the answer: ``<ground>phrase</ground><objects>…</objects>``.

    ``region_indices`` are valid indices into the proposals (out-of-range ones are dropped
    by the parser and reported), sorted ascending, without duplicates.
    """

    phrase: str
    region_indices: List[int]


@dataclass
class Detection:
    """A referred region mapped back to its proposal box.

    Attributes:
        region_index: index of the ``<regionK>`` token (= row in ``QueryResult.proposals``).
        label: the grounded phrase (or ``<regionK>`` for a bare reference).
        box: float32 ``[4]`` xyxy, pixels of the original image.
        score: the proposal score of that region (the reference's COCO confidence).
    """

    region_index: int
    label: str
    box: np.ndarray
    score: float


@dataclass
class QueryResult:
    """Everything one query produced.

    A result owns all of its data: ``proposals`` (writable copies), detection boxes,
    groundings, ``warnings`` and ``timings_ms`` are never shared with the pipeline's frame
    cache or with another result (also of the same frame or the same ``query_many`` call), so
    editing them in place changes no later answer.

    Attributes:
        task: the task name that built the prompt.
        query: the user's text.
        prompt_text: the task text put after the region line (spec §3.4).
        answer: the decoded answer with ``<|im_end|>`` removed.
        groundings: parsed ``(phrase, region indices)`` pairs (spec §4.4).
        rejected: phrases the model answered absent (``<objects>None</objects>``), in answer
            order; they have no groundings or detections.
        detections: one per (grounding, region index) pair, boxes in original pixels.
        proposals: all candidate regions shown to the model (at most 100).
        image_size: ``(height, width)`` of the original image in pixels.
        count: for ``count`` tasks, the number read from the answer (spec §5.2).
        reasoning: for ``reason`` tasks, the text inside ``<think>…</think>``.
        final_answer: for ``reason`` tasks, the text inside ``<answer>…</answer>``; the
            evidence regions are in ``groundings``/``detections``.
        warnings: human-readable notes (dropped indices, truncated proposals, cut-off answer,
            absent phrases, an empty answer, a count answer without a number).
        timings_ms: per-stage wall time in milliseconds.
        num_generated_tokens: tokens decoded for the answer.
        cancelled: decoding was stopped by a cancel request (``QueryProgress.cancel``); the
            answer, groundings and detections are those of the partial answer.
    """

    task: str
    query: str
    prompt_text: str
    answer: str
    groundings: List[Grounding]
    detections: List[Detection]
    proposals: Proposals
    image_size: tuple
    count: Optional[int] = None
    reasoning: Optional[str] = None
    final_answer: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    num_generated_tokens: int = 0
    rejected: List[str] = field(default_factory=list)
    cancelled: bool = False

    def to_dict(self) -> dict:
        """JSON-serialisable view (lists instead of arrays)."""
        return {
            "task": self.task,
            "query": self.query,
            "prompt_text": self.prompt_text,
            "answer": self.answer,
            "groundings": [{"phrase": g.phrase, "region_indices": list(g.region_indices)}
                           for g in self.groundings],
            "rejected": list(self.rejected),
            "detections": [{"region_index": d.region_index, "label": d.label,
                            "box_xyxy": [float(v) for v in d.box], "score": float(d.score)}
                           for d in self.detections],
            "proposals": {"boxes_xyxy": self.proposals.boxes.tolist(),
                          "scores": self.proposals.scores.tolist()},
            "image_size": list(self.image_size),
            "count": self.count,
            "reasoning": self.reasoning,
            "final_answer": self.final_answer,
            "warnings": list(self.warnings),
            "timings_ms": dict(self.timings_ms),
            "num_generated_tokens": self.num_generated_tokens,
            "cancelled": self.cancelled,
        }
