"""Proposal stage of VLM-FO1: candidate boxes that the model refers to by index.

* :func:`postprocess_proposals` — the one shared post-processing (UPN filter semantics, spec §3.5).
* :func:`validate_user_boxes` — checks/clips caller-supplied boxes (no NMS, order kept).
* :class:`ProposalSource` — detector interface; :class:`ZeroShotDetectorProposals` wraps any
  transformers zero-shot detector class-agnostically; :class:`OmDetTurboProposals` is the default.
* :func:`build_proposal_source` — factory from a kind name (``omdet_turbo`` / ``grounding_dino`` /
  ``owlv2`` / ``none``).
* :func:`write_tiny_omdet_turbo` — tiny random OmDet-Turbo checkpoint for offline tests/demos.

All boxes are float32 xyxy in pixels of the original image; ``image_size`` is ``(height, width)``.
"""
from .postprocess import (DEFAULT_MIN_SCORE, DEFAULT_NMS_IOU, MAX_PROPOSALS,
                          postprocess_proposals, validate_user_boxes)
from .sources import (DEFAULT_MODELS, GENERIC_VOCABULARY, PROPOSAL_KINDS, OmDetTurboProposals,
                      ProposalSource, ZeroShotDetectorProposals, build_proposal_source)
from .tiny import RANDOM_WEIGHTS_KEY, write_tiny_omdet_turbo

__all__ = [
    "DEFAULT_MIN_SCORE", "DEFAULT_NMS_IOU", "MAX_PROPOSALS", "DEFAULT_MODELS",
    "GENERIC_VOCABULARY", "PROPOSAL_KINDS", "RANDOM_WEIGHTS_KEY",
    "postprocess_proposals", "validate_user_boxes",
    "ProposalSource", "ZeroShotDetectorProposals", "OmDetTurboProposals",
    "build_proposal_source", "write_tiny_omdet_turbo",
]
