"""Box post-processing shared by every proposal source, and validation of user boxes.

Frames: every box here is ``xyxy`` (``x1, y1, x2, y2``) in pixels of the image the caller
passed (the *original* image, see :mod:`vlxseek_core.types`); ``image_size`` is always
``(height, width)``.

Reference semantics (spec §3.5, ``UPNWrapper.filter(min_score=0.3, nms_value=0.8)`` then
``[:100]``):

1. keep ``score >= min_score`` (float32 comparison);
2. torchvision NMS at IoU ``nms_iou`` (skipped when ``nms_iou <= 0``, as in the reference);
3. boxes cast to int32 (truncation toward zero);
4. re-sorted by score, descending;
5. scores rounded to 2 decimals;
6. the first ``max_proposals`` kept.

Additions that never change the result for well-formed detector output (finite boxes of
positive size): rows with a non-finite coordinate or score, or a coordinate beyond ``±2**30``,
are dropped; boxes with zero or negative width/height are dropped (also after truncation, so
sub-pixel boxes that truncate to zero size are removed — the reference keeps those). With
``image_size`` the boxes are clipped to the image *after* NMS and truncation (NMS sees the same
boxes as in the reference; the reference itself does not clip, FO1 clips later). Ties in the
re-sort keep the NMS order (stable sort); the reference's ``argsort`` leaves it unspecified.

IoU is computed by torchvision in float32 and compared with ``nms_iou`` as a double, so an IoU
that equals the threshold only up to float32 rounding (e.g. 0.8) may be suppressed — exactly
as in the reference, which uses the same call.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.ops as tvops

from ..errors import InvalidRequestError
from ..types import Proposals

__all__ = [
    "DEFAULT_MIN_SCORE",
    "DEFAULT_NMS_IOU",
    "MAX_PROPOSALS",
    "postprocess_proposals",
    "validate_user_boxes",
]

#: Reference UPN score threshold (spec §3.5).
DEFAULT_MIN_SCORE = 0.3
#: Reference UPN NMS IoU (spec §3.5).
DEFAULT_NMS_IOU = 0.8
#: FO1 uses features for at most this many regions (spec §3.5, §7.4).
MAX_PROPOSALS = 100

# Coordinates beyond this magnitude are treated as garbage and dropped: 2**30 is exact in
# float32 and truncates to int32 without overflow.
_COORD_LIMIT = float(2**30)


def _check_image_size(image_size, error=ValueError) -> Tuple[int, int]:
    """Validate ``(height, width)``; returns ints. Raises ``error`` when invalid."""
    try:
        h, w = image_size
        h_i, w_i = int(h), int(w)
    except (TypeError, ValueError):
        raise error(f"image_size must be (height, width), got {image_size!r}") from None
    if h_i != h or w_i != w or h_i <= 0 or w_i <= 0:
        raise error("image_size must be two positive integers (height, width), got "
                    f"{image_size!r}")
    return h_i, w_i


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _as_float_array(x, name: str, error=ValueError) -> np.ndarray:
    """Array-like / torch tensor → float64 numpy array (no shape check)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be numeric, got {type(x).__name__}: {exc}") from None


def postprocess_proposals(
    boxes,
    scores,
    *,
    min_score: float = DEFAULT_MIN_SCORE,
    nms_iou: float = DEFAULT_NMS_IOU,
    max_proposals: int = MAX_PROPOSALS,
    image_size: Optional[Tuple[int, int]] = None,
    truncate_to_int: bool = True,
    round_scores: bool = True,
) -> Proposals:
    """Turn raw detector boxes into the ordered proposal list FO1 refers to by index.

    Args:
        boxes: ``[N, 4]`` xyxy pixels of the original image (numpy array, torch tensor or nested
            sequence; any float/int dtype). ``[N*4]`` flat input is accepted when N*4 elements.
        scores: ``[N]`` confidences (normally in [0, 1]; not clamped).
        min_score: keep rows with ``score >= min_score`` (compared in float32, like the reference).
        nms_iou: torchvision NMS IoU threshold: of two boxes with IoU ``> nms_iou`` the
            lower-scored one is removed. ``<= 0`` disables NMS (reference behaviour);
            ``>= 1`` removes nothing.
        max_proposals: keep at most this many (highest scores), ``0`` → empty result.
        image_size: optional ``(height, width)``; after NMS and truncation boxes are clipped
            to ``[0, w] x [0, h]`` and boxes left without area (entirely outside) are dropped.
        truncate_to_int: cast coordinates to int32 by truncation toward zero (reference).
        round_scores: round scores to 2 decimals (reference), after thresholding and NMS.

    Returns:
        :class:`Proposals` with float32 ``boxes [M, 4]`` (integral values when
        ``truncate_to_int``) and float32 ``scores [M]``, sorted by score descending,
        ``M <= max_proposals``. Every box has ``x2 > x1`` and ``y2 > y1``.

    Raises:
        ValueError: ``boxes`` is not ``[N, 4]``, ``scores`` has not ``N`` elements, an input is
            not numeric, or a parameter is invalid (NaN threshold, negative count, bad size).
            Non-finite values and coordinates with ``|v| > 2**30`` never raise: those rows are
            dropped.
    """
    if min_score is None or not isinstance(min_score, (int, float, np.floating, np.integer)) \
            or math.isnan(float(min_score)):
        raise ValueError(f"min_score must be a number, got {min_score!r}")
    if nms_iou is None or not isinstance(nms_iou, (int, float, np.floating, np.integer)) \
            or math.isnan(float(nms_iou)):
        raise ValueError(f"nms_iou must be a number, got {nms_iou!r}")
    max_proposals = _check_count(max_proposals, "max_proposals")
    size = None if image_size is None else _check_image_size(image_size)

    b = _as_float_array(boxes, "boxes")
    s = _as_float_array(scores, "scores")
    if b.size % 4 != 0 or (b.ndim == 2 and b.shape[1] != 4) or b.ndim > 2:
        raise ValueError(f"boxes must have shape [N, 4], got {b.shape}")
    b = b.reshape(-1, 4)
    s = s.reshape(-1)
    if len(s) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")

    # 0. drop rows that cannot be represented: non-finite values, absurd coordinates.
    ok = np.isfinite(b).all(axis=1) & np.isfinite(s)
    ok &= (np.abs(np.where(np.isfinite(b), b, 0.0)) <= _COORD_LIMIT).all(axis=1)
    b, s = b[ok], s[ok]

    # 1. score threshold, in float32 like the reference (numpy float32 array >= python float).
    with np.errstate(over="ignore"):
        s32 = s.astype(np.float32)
    keep = np.isfinite(s32) & (s32 >= np.float32(min_score))
    b, s32 = b[keep], s32[keep]

    # boxes without area can neither suppress nor be suppressed by NMS: drop them now.
    tb = torch.from_numpy(b.astype(np.float32))
    ts = torch.from_numpy(s32)
    area_ok = (tb[:, 2] > tb[:, 0]) & (tb[:, 3] > tb[:, 1])
    tb, ts = tb[area_ok], ts[area_ok]

    # 2. NMS on the unclipped float32 boxes, like the reference (result ordered by score).
    if len(tb) and nms_iou > 0:
        order = tvops.nms(tb, ts, float(nms_iou))
        tb, ts = tb[order], ts[order]

    # 3. int32 truncation toward zero; optional clip to the image; drop boxes left without area.
    if truncate_to_int:
        tb = tb.to(torch.int32).to(torch.float32)
    if size is not None:
        tb = tvops.clip_boxes_to_image(tb, size)
    area_ok = (tb[:, 2] > tb[:, 0]) & (tb[:, 3] > tb[:, 1])
    out_b, out_s = tb[area_ok].numpy(), ts[area_ok].numpy()
    # 4. re-sort by score descending (stable: ties keep the NMS order).
    order = np.argsort(-out_s, kind="stable")
    out_b, out_s = out_b[order], out_s[order]
    # 5. round to 2 decimals (float32 like the reference's np.float32 round()).
    # float32 with |s| >= 2**24 is already integral; skipping it avoids overflow in s * 100.
    if round_scores:
        out_s = out_s.astype(np.float32)
        small = np.abs(out_s) < 2.0**24
        out_s[small] = np.round(out_s[small], 2)
    # 6. top-k.
    return Proposals(out_b[:max_proposals], out_s[:max_proposals])


def validate_user_boxes(
    boxes,
    image_size: Tuple[int, int],
    scores=None,
    max_boxes: int = MAX_PROPOSALS,
) -> Tuple[Proposals, List[str]]:
    """Check caller-supplied regions and make them safe for FO1.

    User boxes are *not* NMS-filtered, truncated or re-sorted: region index = position in
    ``boxes`` (after dropping the surplus, see below).

    Args:
        boxes: float ``[K, 4]`` xyxy pixels of the original image, ``K >= 1``.
        image_size: ``(height, width)`` of that image.
        scores: optional ``[K]`` finite scores; default 1.0 each.
        max_boxes: at most this many are kept (FO1 limit 100). When ``K > max_boxes`` the
            ``max_boxes`` highest-scored boxes are kept (ties → earlier first, so with default
            scores: the first ``max_boxes``), in their original relative order.

    Returns:
        ``(proposals, warnings)``: float32 boxes ``[K', 4]`` clipped to ``[0, w] x [0, h]`` and
        float32 scores ``[K']``; ``warnings`` are human-readable strings (boxes clipped, boxes
        dropped because of ``max_boxes``).

    Raises:
        InvalidRequestError: wrong shape (not ``[K, 4]``) or no box, non-numeric values,
            NaN/inf coordinates or scores, ``x2 <= x1`` or ``y2 <= y1``, a box entirely outside
            the image (no area left after clipping), invalid ``image_size`` / ``scores`` /
            ``max_boxes``.
    """
    h, w = _check_image_size(image_size, InvalidRequestError)
    if (isinstance(max_boxes, bool) or not isinstance(max_boxes, (int, np.integer))
            or max_boxes < 1):
        raise InvalidRequestError(f"max_boxes must be a positive integer, got {max_boxes!r}")

    b = _as_float_array(boxes, "boxes", InvalidRequestError)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InvalidRequestError(
            f"boxes must have shape [K, 4] (x1, y1, x2, y2 in pixels), got shape {b.shape}")
    k = len(b)
    if k == 0:
        raise InvalidRequestError("boxes is empty: at least one box is required")
    # checked in float32, the dtype returned: a size > 0 in float64 can be 0 in float32
    with np.errstate(over="ignore"):
        b32 = b.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(b32).all(axis=1))
    if len(bad):
        raise InvalidRequestError(
            f"boxes contain NaN/inf coordinates (or beyond the float32 range) at index "
            f"{_fmt_idx(bad)}: {b[bad[0]].tolist()}")
    b = b32.astype(np.float64)
    bad = np.flatnonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
    if len(bad):
        raise InvalidRequestError(
            f"boxes must satisfy x2 > x1 and y2 > y1 (xyxy pixels); zero or negative width/height "
            f"at index {_fmt_idx(bad)}: {b[bad[0]].tolist()}")

    if scores is None:
        s = np.ones(k, np.float64)
    else:
        s = _as_float_array(scores, "scores", InvalidRequestError).reshape(-1)
        if len(s) != k:
            raise InvalidRequestError(f"{k} boxes but {len(s)} scores")
        bad = np.flatnonzero(~np.isfinite(s))
        if len(bad):
            raise InvalidRequestError(f"scores contain NaN/inf at index {_fmt_idx(bad)}")

    clipped = b.copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0.0, float(w))
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0.0, float(h))
    bad = np.flatnonzero((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    if len(bad):
        raise InvalidRequestError(
            f"box at index {_fmt_idx(bad)} lies entirely outside the {w}x{h} (width x height) "
            f"image: {b[bad[0]].tolist()}")

    warnings: List[str] = []
    n_clipped = int((clipped != b).any(axis=1).sum())
    if n_clipped:
        warnings.append(f"{n_clipped} of {k} user boxes extended beyond the {w}x{h} image "
                        f"and were clipped to it")
    if k > max_boxes:
        top = np.argsort(-s, kind="stable")[:max_boxes]
        keep = np.sort(top)
        how = "the first" if scores is None else "the highest-scored"
        warnings.append(f"{k - int(max_boxes)} of {k} user boxes were dropped: at most "
                        f"{int(max_boxes)} regions are supported, kept {how} {int(max_boxes)}")
        clipped, s = clipped[keep], s[keep]
    return Proposals(clipped.astype(np.float32), s.astype(np.float32)), warnings


def _fmt_idx(idx: Sequence[int]) -> str:
    idx = [int(i) for i in idx]
    shown = ", ".join(str(i) for i in idx[:5])
    return shown + (f" (and {len(idx) - 5} more)" if len(idx) > 5 else "")
