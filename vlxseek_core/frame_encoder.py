"""The vision half of :class:`~vlxseek_core.pipeline.VLXSeek`: proposals, preprocessing, both
towers and the HFRE of one frame, and the frame cache (spec §4.1).

:class:`FrameEncoder` knows nothing of prompts or decoding; ``VLXSeek`` derives from it and adds
the language half (prompt prefix, generation, parsing). Nothing here imports the pipeline.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Optional

import numpy as np
import torch

from . import validation as check
from .errors import InvalidRequestError
from .frames import FrameEncoding, StageTimer, frame_key
from .modeling import EncodedFrame
from .proposals import ProposalSource, validate_user_boxes
from .streaming import QueryProgress
from .tokens import MAX_REGIONS
from .types import Proposals


class FrameEncoder:
    """Encodes frames for the model and keeps the newest encodings (the frame cache).

    Not thread-safe by itself: the frame cache and the detector's settings are guarded by
    ``self._lock`` (an ``RLock`` the subclass shares for its own work).

    Args:
        model: a loaded model of a registered family (:mod:`vlxseek_core.families`), with
            ``encode_frame`` as :class:`~vlxseek_core.modeling.VLMFO1ForCausalLM`'s.
        preprocessor: the family's ``(image, boxes) → PreparedImage`` (VLM-FO1:
            :class:`~vlxseek_core.preprocessing.ImagePreprocessor`); its box tensors are in
            the order the model sees the regions.
        proposal_source: detector for queries without user boxes, or ``None``.
        frame_cache_size: frames whose encoding (proposals, towers, HFRE, prompt-prefix KV
            cache) is kept for further questions, already checked to be in ``[0, 1024]``;
            0 disables reuse.
    """

    def __init__(self, model, preprocessor,
                 proposal_source: Optional[ProposalSource], frame_cache_size: int):
        self.model = model
        self.preprocessor = preprocessor
        self.proposal_source = proposal_source
        self.frame_cache_size = frame_cache_size
        self._frames: "OrderedDict[str, FrameEncoding]" = OrderedDict()
        self._lock = threading.RLock()

    @property
    def device(self) -> torch.device:
        return self.model.model.embed_tokens.weight.device

    def set_proposal_thresholds(self, min_score: Optional[float] = None,
                                nms_iou: Optional[float] = None,
                                max_proposals: Optional[int] = None) -> None:
        """Change the detector's filter at runtime (no-op without a detector).

        Args:
            min_score, nms_iou: finite numbers, ``None`` = unchanged.
            max_proposals: int in ``[1, 100]``, ``None`` = unchanged.

        Raises:
            InvalidRequestError: invalid values (also without a detector).
        """
        check.thresholds(min_score, nms_iou, max_proposals)
        if self.proposal_source is not None:
            with self._lock:
                self._frames.clear()
                self.proposal_source.set_thresholds(min_score=min_score, nms_iou=nms_iou,
                                                    max_proposals=max_proposals)

    def propose(self, image, boxes=None, box_scores=None,
                proposals: Optional[Proposals] = None):
        """Proposals for ``image``: validated user boxes, given proposals, else the detector's.

        Args:
            image: HWC uint8 RGB numpy array or PIL image.
            boxes: user boxes, numeric ``[K, 4]`` xyxy pixels of ``image``, ``K >= 1`` (an
                empty array is refused: ``None`` means "use the detector"); kept in their
                order, clipped, no NMS.
            box_scores: optional finite ``[K]`` scores of ``boxes`` (default 1.0).
            proposals: candidate regions found elsewhere (an external detector, a ROS topic),
                normally filtered with :func:`~vlxseek_core.proposals.postprocess_proposals`
                already; kept in their order, clipped to the image. May be empty (only
                ``vqa`` then runs, on the image alone). Mutually exclusive with ``boxes``.

        Returns:
            ``(Proposals, warnings)``, both new objects.

        Raises:
            InvalidImageError: unusable image.
            InvalidRequestError: bad user boxes or proposals, both given, or none of them and
                no detector configured.
        """
        return self._propose(check.frame_args(image, boxes, box_scores, proposals))

    def _check_region_source(self, args: "check.FrameArgs", image_only: bool) -> None:
        """Regions come from user boxes, given proposals or the detector, unless every
        question about the frame runs without regions (``image_only``).

        Raises:
            InvalidRequestError: none of them, and not ``image_only``.
        """
        if (args.proposals is None and args.boxes is None and self.proposal_source is None
                and not image_only):
            raise InvalidRequestError(
                "boxes: no regions given and no proposal detector configured "
                "(proposal_source=none)")

    def _propose(self, args: "check.FrameArgs", image_only: bool = False):
        """:meth:`propose` of checked arguments; with ``image_only`` no boxes and no detector
        give no regions instead of an error (see :meth:`_check_region_source`)."""
        self._check_region_source(args, image_only)
        if args.proposals is not None:
            if len(args.proposals) == 0:
                return Proposals.empty(), []
            # given proposals get the user-box checks: order kept, clipped, at most 100
            try:
                return validate_user_boxes(args.proposals.boxes, args.image.size[::-1],
                                           scores=args.proposals.scores, max_boxes=MAX_REGIONS)
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"proposals: {exc}") from None
        if args.boxes is not None:
            try:
                return validate_user_boxes(args.boxes, args.image.size[::-1],
                                           scores=args.box_scores, max_boxes=MAX_REGIONS)
            except InvalidRequestError as exc:
                text = str(exc)
                raise InvalidRequestError(text if text.startswith("boxes") else
                                          f"boxes: {text}") from None
        if self.proposal_source is None:
            return Proposals.empty(), []
        return self.proposal_source.propose(np.asarray(args.image)), []

    def frame_key(self, pil, boxes=None, box_scores=None,
                  proposals: Optional[Proposals] = None) -> str:
        """Content hash of the frame and of everything proposals depend on."""
        source = self.proposal_source
        return frame_key(pil, boxes, box_scores, proposals,
                         None if source is None else source.thresholds)

    def encode(self, image, boxes=None, box_scores=None, reuse_frame: bool = True,
               proposals: Optional[Proposals] = None) -> FrameEncoding:
        """Proposals, preprocessing, both towers and the HFRE for one frame (cached).

        A frame without regions (a detector that finds nothing, empty ``proposals``) is still
        encoded, image only, so that questions that run without regions (``vqa``) can be
        answered on it.

        Returns:
            The frame's :class:`FrameEncoding`, shared with the cache (its proposal arrays
            are read-only); :meth:`~vlxseek_core.pipeline.VLXSeek.answer` gives results with
            their own copies.

        Raises:
            InvalidImageError, InvalidRequestError: as
            :meth:`~vlxseek_core.pipeline.VLXSeek.query`.
        """
        return self._encode(check.frame_args(image, boxes, box_scores, proposals, reuse_frame),
                            need_image=True)

    def _encode(self, args: "check.FrameArgs",
                check_regions: Optional[Callable[[int], None]] = None,
                progress: Optional[QueryProgress] = None, need_image: bool = False,
                image_only: bool = False) -> FrameEncoding:
        """:meth:`encode` of checked arguments; ``check_regions(number of regions)`` runs
        after the proposals and before the towers of a frame that is not cached.

        ``need_image``: a question may run without regions, so a frame without regions gets
        its image encoded too (otherwise its towers do not run and ``frame`` is ``None``); a
        cached encoding without the image is then computed again. ``image_only``: every
        question runs without regions (see :meth:`_propose`).

        ``progress`` gets the stages; once its cancel is set after the proposals, the towers
        are skipped and the encoding returned is incomplete (``frame=None`` despite its
        regions, see :attr:`FrameEncoding.complete`) and is not cached.
        """
        self._check_region_source(args, image_only)
        with self._lock:
            key = self.frame_key(args.image, args.boxes, args.box_scores, args.proposals)
            cached = self._frames.get(key) if args.reuse_frame else None
            if cached is not None and (cached.frame is not None or not need_image):
                self._frames.move_to_end(key)
                return cached
            timer = StageTimer()
            if progress is not None:
                progress.stage("proposals")
            with timer.stage("proposals"):
                regions, warnings = self._propose(args, image_only)
            if check_regions is not None:
                check_regions(len(regions))
            regions = regions.copy(writeable=False)  # the cache's own, read-only arrays
            frame = None
            if (len(regions) or need_image) and not (progress is not None
                                                     and progress.cancelled):
                if progress is not None:
                    progress.stage("encode")
                frame = self._encode_frame(args.image, regions, timer)
            enc = FrameEncoding(key, (args.image.height, args.image.width), regions,
                                list(warnings), frame, timings_ms=timer.ms)
            if enc.complete and args.reuse_frame and self.frame_cache_size > 0:
                self._frames[key] = enc
                while len(self._frames) > self.frame_cache_size:
                    self._frames.popitem(last=False)
            return enc

    @torch.inference_mode()
    def _encode_frame(self, pil, proposals: Proposals, timer: StageTimer) -> EncodedFrame:
        dev = self.device
        with timer.stage("preprocess"):
            prepared = self.preprocessor(pil, proposals.boxes)
        with timer.stage("encode"):
            return self.model.encode_frame(
                prepared.pixel_values.to(dev), prepared.image_grid_thw.to(dev),
                prepared.aux_pixel_values.to(dev), prepared.aux_boxes.to(dev),
                prepared.vt_boxes.to(dev))
