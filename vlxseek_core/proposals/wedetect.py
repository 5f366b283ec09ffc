"""WeDetect-Base-Uni as a proposal source (spec ``vlx-seek-1.5.md`` §5), the detector the
VLX-Seek reference uses when the caller gives no boxes.

Per image (``propose``):

1. :func:`letterbox` — r = min(S/W, S/H) (upscaling allowed), resize to (round(W·r), round(H·r))
   with PIL bilinear, paste on a (114, 114, 114) S×S canvas at (⌊dw/2⌋, ⌊dh/2⌋); RGB / 255, no
   mean/std (S = 640 for the released model).
2. :class:`~vlxseek_core.proposals.wedetect_model.WeDetectUni` — sigmoid scores for every
   (anchor, prompt) pair and one box per anchor, in letterbox pixels.
3. :func:`select_detections` — keep score > ``min_score`` (0), the 30000 best pairs,
   ``torchvision.ops.batched_nms`` at IoU ``nms_iou`` (0.7) with the prompt index as class,
   first ``max_proposals`` (100) in score order. One box may survive under several prompts:
   the rows are (box, prompt) pairs, as in the reference.
4. :func:`letterbox_to_image` — subtract (dw/2, dh/2) as floats (half a pixel off the integer
   paste when dw or dh is odd, as the reference), divide by r, clamp to [0, W] × [0, H].

Output: :class:`~vlxseek_core.types.Proposals`, float32 boxes in pixels of the caller's image
(not rounded), scores in [0, 1], score order; region index = row.

Differences from the reference, none of which changes a well-formed result: the score sorts
are stable (exactly tied scores keep (anchor, prompt) order; the reference leaves their order
to the sort implementation — ties do occur, e.g. anchors that see only the grey padding);
pairs whose box is not finite are dropped before NMS; a side that rounds to 0 pixels is
resized to 1 (the reference crashes there); the device is a parameter (the reference
hard-codes CUDA). On CPU, torchvision's ``batched_nms`` takes its per-class loop above 1000
boxes (the reference on CUDA, the offset trick up to 5000); both give the same boxes up to
float rounding of IoUs at the threshold.
Licence of the released weights: not checked (see README).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torchvision.ops as tvops

from ..types import Proposals
from .sources import ProposalSource, _check_image, _resolve_dtype
from .wedetect_checkpoint import (load_checkpoint_state, read_state_dict,
                                  resolve_wedetect_location)
from .wedetect_model import WeDetectConfig, WeDetectUni

__all__ = ["DEFAULT_WEDETECT_MODEL", "WEDETECT_MIN_SCORE", "WEDETECT_NMS_IOU", "PRE_NMS_TOPK",
           "Letterbox", "letterbox", "letterbox_to_image", "select_detections",
           "WeDetectProposals"]

#: Hub repo of the released ``wedetect_base_uni.pth`` (licence unchecked).
DEFAULT_WEDETECT_MODEL = "fushh7/WeDetect"
#: Reference thresholds: score strictly above 0, NMS IoU 0.7 per prompt (spec §5).
WEDETECT_MIN_SCORE = 0.0
WEDETECT_NMS_IOU = 0.7
#: Best (anchor, prompt) pairs kept before NMS.
PRE_NMS_TOPK = 30000
_PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """A letterboxed image and how to map boxes back.

    Attributes:
        image: uint8 ``[S, S, 3]`` RGB canvas.
        ratio: r = min(S/W, S/H) of the original ``W`` × ``H`` image.
        resized: ``(w, h)`` of the resized image, ``(round(W·r), round(H·r))``.
        offset: ``(left, top)`` integer paste position, ``(⌊dw/2⌋, ⌊dh/2⌋)``.
        pad: ``(dw/2, dh/2)`` as floats, subtracted from boxes (the reference's values).
    """

    image: np.ndarray
    ratio: float
    resized: Tuple[int, int]
    offset: Tuple[int, int]
    pad: Tuple[float, float]


def letterbox(image: np.ndarray, size: int = 640) -> Letterbox:
    """Letterbox an HWC uint8 RGB image to ``size`` × ``size`` (see module docstring, step 1).

    Raises:
        InvalidImageError: not a non-empty HWC uint8 RGB array.
    """
    from PIL import Image

    img = _check_image(image)
    h, w = img.shape[:2]
    r = min(size / w, size / h)
    # Python's round (half to even) on doubles, as the reference; ≥ 1 so PIL accepts it
    nw, nh = max(int(round(w * r)), 1), max(int(round(h * r)), 1)
    resized = Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR)
    dw, dh = size - nw, size - nh
    canvas = Image.new("RGB", (size, size), (_PAD_VALUE,) * 3)
    canvas.paste(resized, (dw // 2, dh // 2))
    return Letterbox(np.array(canvas), r, (nw, nh), (dw // 2, dh // 2), (dw / 2, dh / 2))


def letterbox_to_image(boxes: torch.Tensor, lb: Letterbox,
                       image_hw: Tuple[int, int]) -> torch.Tensor:
    """Map xyxy boxes from letterbox pixels to pixels of the original image.

    Args:
        boxes: float ``[N, 4]`` in the letterbox frame.
        lb: the :class:`Letterbox` the boxes were predicted on.
        image_hw: ``(H, W)`` of the original image.

    Returns:
        New float tensor ``[N, 4]`` (same dtype): ``(box - (dw/2, dh/2)) / r`` clamped to
        ``[0, W]`` × ``[0, H]``.
    """
    px, py = lb.pad
    out = (boxes - boxes.new_tensor([px, py, px, py])) / lb.ratio
    out[:, 0::2] = out[:, 0::2].clamp(0, image_hw[1])
    out[:, 1::2] = out[:, 1::2].clamp(0, image_hw[0])
    return out


def select_detections(scores: torch.Tensor, boxes: torch.Tensor, *,
                      min_score: float = WEDETECT_MIN_SCORE, nms_iou: float = WEDETECT_NMS_IOU,
                      max_detections: int = 100, pre_nms_topk: int = PRE_NMS_TOPK
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's per-prompt selection over (anchor, prompt) pairs of one image.

    Args:
        scores: float ``[A, K]`` sigmoid scores (anchor × prompt).
        boxes: float ``[A, 4]`` xyxy, one per anchor (any frame; NMS only compares them).
        min_score: keep pairs with score **strictly** above it.
        nms_iou: ``batched_nms`` IoU with the prompt index as class.
        max_detections: rows kept after NMS (in score order).
        pre_nms_topk: best pairs kept before NMS.

    Returns:
        ``(boxes [N, 4], scores [N], prompt [N] int64)`` in descending score order, float32
        boxes/scores; ``N <= max_detections``.
    """
    scores, boxes = scores.float(), boxes.float()
    keep = scores > min_score
    anchor, prompt = keep.nonzero(as_tuple=True)   # row-major: (anchor, prompt) order
    vals = scores[anchor, prompt]
    order = torch.sort(vals, descending=True, stable=True).indices[:max(int(pre_nms_topk), 0)]
    anchor, prompt, vals = anchor[order], prompt[order], vals[order]
    cand = boxes[anchor]
    finite = torch.isfinite(cand).all(1)
    if not bool(finite.all()):  # garbage boxes would make NMS meaningless
        anchor, prompt, vals, cand = anchor[finite], prompt[finite], vals[finite], cand[finite]
    kept = tvops.batched_nms(cand, vals, prompt, float(nms_iou))
    # candidates are already in stable score order, so index order = score order with ties
    # kept deterministic (batched_nms's own final sort is not stable)
    kept = kept.sort().values[:max(int(max_detections), 0)]
    return cand[kept], vals[kept], prompt[kept]


class WeDetectProposals(ProposalSource):
    """WeDetect-Base-Uni proposals (spec §5): every box in pixels of the caller's image.

    Args:
        model: weights file (``.pth`` read with ``weights_only=True``, or ``.safetensors``),
            checkpoint directory (``config.json`` + ``model.safetensors`` as written by
            :func:`~vlxseek_core.proposals.wedetect_checkpoint.write_tiny_wedetect`, or a
            directory holding ``wedetect_base_uni.pth``), or a hub repo id (default
            ``fushh7/WeDetect``; fetched once into the HF cache).
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, …).
        dtype: ``None``/``"float32"`` (the reference's), ``"bfloat16"`` or ``"float16"``;
            selection and back-mapping always run in float32.
        min_score: pairs need a score **strictly above** it (reference 0.0).
        nms_iou: per-prompt NMS IoU (reference 0.7).
        max_proposals: rows kept (reference 100).
        pre_nms_topk: best pairs kept before NMS (reference 30000).
        local_files_only: for a hub id, never use the network.
        config: override the architecture (``None``: base, or the directory's ``config.json``).

    Raises:
        CheckpointError: weights missing/unreadable, or not matching the architecture
            (:class:`~vlxseek_core.errors.StateDictMismatchError` lists the keys).
        ValueError: invalid thresholds or dtype.
    """

    kind = "wedetect"

    def __init__(self, model: Union[str, "os.PathLike[str]"] = DEFAULT_WEDETECT_MODEL, *,
                 device: Union[str, torch.device] = "cpu", dtype=None,
                 min_score: float = WEDETECT_MIN_SCORE, nms_iou: float = WEDETECT_NMS_IOU,
                 max_proposals: int = 100, pre_nms_topk: int = PRE_NMS_TOPK,
                 local_files_only: Optional[bool] = None,
                 config: Optional[WeDetectConfig] = None) -> None:
        super().__init__(min_score=min_score, nms_iou=nms_iou, max_proposals=max_proposals)
        if isinstance(pre_nms_topk, bool) or not isinstance(pre_nms_topk, int) \
                or pre_nms_topk < 1:
            raise ValueError(f"pre_nms_topk must be a positive integer, got {pre_nms_topk!r}")
        self.pre_nms_topk = pre_nms_topk
        self.device = torch.device(device)
        dtype = _resolve_dtype(dtype) or torch.float32
        self.model_id = os.fspath(model)
        weights, found_config = resolve_wedetect_location(model, local_files_only)
        self.weights_path = weights
        self.config = config or found_config
        net = WeDetectUni(self.config)
        load_checkpoint_state(net, read_state_dict(weights),
                              source=f"WeDetect weights {weights!r}")
        self.model = net.to(self.device, dtype).eval()
        self._infer_lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.model_id}"

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embeddings.dtype

    def detect(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the detector with the current thresholds.

        Args:
            image: ``[H, W, 3]`` uint8 RGB.

        Returns:
            ``(boxes, scores, prompts)``: float32 ``[N, 4]`` xyxy in pixels of ``image``
            (inside ``[0, W]`` × ``[0, H]``), float32 ``[N]`` descending, int64 ``[N]`` index of
            the learned prompt each row survived under.

        Raises:
            InvalidImageError: ``image`` is not a non-empty HWC uint8 RGB array.
        """
        img = _check_image(image)
        t = self.thresholds
        lb = letterbox(img, self.config.image_size)
        pixels = torch.from_numpy(lb.image).permute(2, 0, 1)[None]
        pixels = pixels.to(self.device).to(self.dtype) / 255.0
        with self._infer_lock, torch.inference_mode():
            scores, boxes = self.model(pixels)
            boxes, scores, prompts = select_detections(
                scores[0], boxes[0], min_score=t["min_score"], nms_iou=t["nms_iou"],
                max_detections=t["max_proposals"], pre_nms_topk=self.pre_nms_topk)
            boxes = letterbox_to_image(boxes, lb, img.shape[:2])
        return (boxes.cpu().numpy().astype(np.float32), scores.cpu().numpy().astype(np.float32),
                prompts.cpu().numpy().astype(np.int64))

    def propose(self, image: np.ndarray) -> Proposals:
        """See :meth:`ProposalSource.propose`; boxes are not rounded, a box may appear once
        per prompt it survived under (reference behaviour)."""
        boxes, scores, _ = self.detect(image)
        return Proposals(boxes, scores)
