"""Proposal stage of VLM-FO1 / VLX-Seek: candidate boxes that the model refers to by index.

* :func:`postprocess_proposals` — the one shared post-processing (UPN filter semantics, spec §3.5).
* :func:`validate_user_boxes` — checks/clips caller-supplied boxes (no NMS, order kept).
* :class:`ProposalSource` — detector interface; :class:`ZeroShotDetectorProposals` wraps any
  transformers zero-shot detector class-agnostically; :class:`OmDetTurboProposals` is the default.
* :class:`WeDetectProposals` — WeDetect-Base-Uni, VLX-Seek 1.5's detector (``vlx-seek-1.5.md``
  §5; its own thresholds: score > 0, per-prompt NMS 0.7, top 100; weights' licence unchecked).
* :func:`build_proposal_source` — factory from a kind name (``omdet_turbo`` / ``grounding_dino`` /
  ``owlv2`` / ``wedetect`` / ``none``); :func:`reference_thresholds` per kind.
* :func:`write_tiny_omdet_turbo`, :func:`write_tiny_wedetect` — tiny random checkpoints for
  offline tests/demos.

All boxes are float32 xyxy in pixels of the original image; ``image_size`` is ``(height, width)``.
The WeDetect modules (and timm) are imported on first use.
"""
from .factory import PROPOSAL_KINDS, build_proposal_source, reference_thresholds
from .postprocess import (DEFAULT_MIN_SCORE, DEFAULT_NMS_IOU, MAX_PROPOSALS,
                          postprocess_proposals, validate_user_boxes)
from .sources import (DEFAULT_MODELS, GENERIC_VOCABULARY, OmDetTurboProposals, ProposalSource,
                      ZeroShotDetectorProposals)
from .tiny import RANDOM_WEIGHTS_KEY, write_tiny_omdet_turbo

__all__ = [
    "DEFAULT_MIN_SCORE", "DEFAULT_NMS_IOU", "MAX_PROPOSALS", "DEFAULT_MODELS",
    "GENERIC_VOCABULARY", "PROPOSAL_KINDS", "RANDOM_WEIGHTS_KEY",
    "postprocess_proposals", "validate_user_boxes",
    "ProposalSource", "ZeroShotDetectorProposals", "OmDetTurboProposals", "WeDetectProposals",
    "build_proposal_source", "reference_thresholds", "write_tiny_omdet_turbo",
    "write_tiny_wedetect",
]


def __getattr__(name):
    # lazy: importing the WeDetect modules pulls in timm, which most users never need
    if name == "WeDetectProposals":
        from .wedetect import WeDetectProposals

        return WeDetectProposals
    if name == "write_tiny_wedetect":
        from .wedetect_checkpoint import write_tiny_wedetect

        return write_tiny_wedetect
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
