"""Proposal sources by name: the one place that maps a kind (CLI ``--proposal-source``,
``VLXSeek.from_pretrained(proposal_source=…)``, the ROS ``proposal_source`` parameter) to a
:class:`~vlxseek_core.proposals.sources.ProposalSource`.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple, Union

from .postprocess import DEFAULT_MIN_SCORE, DEFAULT_NMS_IOU, MAX_PROPOSALS
from .sources import DEFAULT_MODELS, OmDetTurboProposals, ProposalSource, ZeroShotDetectorProposals

__all__ = ["PROPOSAL_KINDS", "reference_thresholds", "build_proposal_source"]

#: Kinds understood by :func:`build_proposal_source` (``"none"`` → no detector).
PROPOSAL_KINDS: Tuple[str, ...] = ("omdet_turbo", "grounding_dino", "owlv2", "wedetect", "none")


def _normalise(kind) -> str:
    return str(kind).strip().lower().replace("-", "_")


def reference_thresholds(kind) -> Tuple[float, float]:
    """``(min_score, nms_iou)`` the reference uses with ``kind``.

    ``wedetect``: (0.0, 0.7) — VLX-Seek 1.5's WeDetect-Uni (spec ``vlx-seek-1.5.md`` §5; the
    score test is *strictly* greater). Every other kind: (0.3, 0.8) — VLM-FO1's UPN filter
    (spec §3.5). Unknown kinds get the latter (the caller refuses them elsewhere).
    """
    if _normalise(kind) == "wedetect":
        from .wedetect import WEDETECT_MIN_SCORE, WEDETECT_NMS_IOU

        return WEDETECT_MIN_SCORE, WEDETECT_NMS_IOU
    return DEFAULT_MIN_SCORE, DEFAULT_NMS_IOU


def build_proposal_source(kind: str, model: Optional[Union[str, "os.PathLike[str]"]] = None,
                          device="cpu", dtype=None, min_score: Optional[float] = None,
                          nms_iou: Optional[float] = None, max_proposals: int = MAX_PROPOSALS,
                          *, local_files_only: Optional[bool] = None
                          ) -> Optional[ProposalSource]:
    """Build the proposal source named by ``kind``.

    Args:
        kind: ``"omdet_turbo"`` (default detector), ``"grounding_dino"``, ``"owlv2"``,
            ``"wedetect"`` (WeDetect-Base-Uni, :class:`~vlxseek_core.proposals.wedetect.
            WeDetectProposals`) or ``"none"`` (no detector: callers must supply boxes).
            Case-insensitive, ``-`` = ``_``.
        model: checkpoint directory or hub id (``wedetect``: also a weights file);
            ``None`` → :data:`~vlxseek_core.proposals.sources.DEFAULT_MODELS` ``[kind]``.
        min_score, nms_iou: ``None`` → :func:`reference_thresholds` of ``kind``.
        device, dtype, max_proposals, local_files_only: see
            :class:`~vlxseek_core.proposals.sources.ZeroShotDetectorProposals`.

    Returns:
        A loaded :class:`ProposalSource`, or ``None`` for ``"none"``.

    Raises:
        ValueError: unknown ``kind`` (the message lists the valid kinds), invalid arguments.
        CheckpointError: the model cannot be loaded.
    """
    k = _normalise(kind)
    if k not in PROPOSAL_KINDS:
        raise ValueError(f"unknown proposal kind {kind!r}; "
                         f"expected one of {', '.join(PROPOSAL_KINDS)}")
    if k == "none":
        return None
    if model is None or (isinstance(model, str) and not model.strip()):
        model = DEFAULT_MODELS[k]
    ref_score, ref_iou = reference_thresholds(k)
    common = dict(device=device, dtype=dtype,
                  min_score=ref_score if min_score is None else min_score,
                  nms_iou=ref_iou if nms_iou is None else nms_iou,
                  max_proposals=max_proposals, local_files_only=local_files_only)
    if k == "wedetect":
        from .wedetect import WeDetectProposals

        return WeDetectProposals(model, **common)
    if k == "omdet_turbo":
        return OmDetTurboProposals(model, **common)
    return ZeroShotDetectorProposals(model, model_class=k, **common)
