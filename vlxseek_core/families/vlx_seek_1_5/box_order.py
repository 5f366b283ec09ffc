"""VLX-Seek 1.5 caller boxes: validation, ``mm_bbox_order_mode`` order and index remapping
(spec vlx-seek-1.5 §4.4).

The model sees the boxes in a *model-side* order; callers always talk in their own order. A
:class:`BoxOrder` holds the permutation and translates ``<objN>`` tokens both ways:

* question (caller → model): ``<objC>`` becomes ``<objM>`` where model box ``M`` is caller box
  ``C``; an index that names no box stays as written;
* answer (model → caller): ``<objM>`` becomes ``<objC>``; indices ``≥ N`` stay unchanged,

so every index that leaves this package (answers, parsed results) refers to the caller's boxes.
Frame of every box: ``[x1, y1, x2, y2]`` in pixels of the original image (the caller's frame).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...errors import InvalidRequestError
from ...parsing import IndexTokens
from ... import validation

OBJ_TOKENS = IndexTokens("obj")
"""VLX-Seek 1.5's region index tokens ``<obj0>``, ``<obj1>``, … (spec §1.5)."""

ORDER_MODES = ("none", "raster", "area_asc", "area_desc")
"""Values of the config key ``mm_bbox_order_mode`` (spec §1.3, §4.4)."""

_MAX_INDEX_DIGITS = 9
"""Longer digit runs name no box; ``int()`` is skipped for them (it is slow on huge runs)."""


def remap_index_tokens(text: str, mapping: Mapping[int, int],
                       index_tokens: IndexTokens = OBJ_TOKENS) -> str:
    """Rewrite every index token whose index is a key of ``mapping`` (spec §4.4).

    Args:
        text: any string (question or answer).
        mapping: old index → new index; tokens with other indices are left exactly as written.
        index_tokens: the token spelling (``<objK>`` by default).

    Returns:
        The rewritten text; a token is written canonically (``<obj01>`` → ``<obj5>`` when
        ``mapping[1] == 5``, as the reference's ``int()`` reading does). Never raises for a
        ``str``.
    """
    def replace(match) -> str:
        digits = match.group(1)
        if len(digits.lstrip("0")) > _MAX_INDEX_DIGITS:
            return match.group(0)
        new = mapping.get(int(digits))
        return match.group(0) if new is None else index_tokens.token(new)

    return index_tokens.pattern.sub(replace, text)


@dataclass(frozen=True)
class BoxOrder:
    """Caller boxes after validation, and the order in which the model sees them.

    Attributes:
        caller_boxes: float64 ``[N, 4]`` xyxy pixels, clipped to the image, each pair sorted,
            in the caller's order (the boxes results report).
        order: ``order[m]`` is the caller index of model-side box ``m`` (a permutation of
            ``range(N)``).
        index_tokens: the index token spelling used by the remap methods.
    """

    caller_boxes: np.ndarray
    order: Tuple[int, ...]
    index_tokens: IndexTokens = OBJ_TOKENS

    def __len__(self) -> int:
        return len(self.order)

    @property
    def model_boxes(self) -> np.ndarray:
        """float64 ``[N, 4]``: the boxes in model order (row ``m`` goes with ``<objm>``)."""
        return self.caller_boxes[list(self.order)].reshape(-1, 4)

    @property
    def caller_to_model(self) -> Dict[int, int]:
        """Caller index → model-side index."""
        return {caller: model for model, caller in enumerate(self.order)}

    @property
    def model_to_caller(self) -> Dict[int, int]:
        """Model-side index → caller index."""
        return dict(enumerate(self.order))

    def question_to_model(self, text: str) -> str:
        """``<objC>`` written by the caller → the model's ``<objM>`` (unknown indices kept)."""
        return remap_index_tokens(text, self.caller_to_model, self.index_tokens)

    def answer_to_caller(self, text: str) -> str:
        """The model's ``<objM>`` → the caller's ``<objC>`` (indices ``≥ N`` kept)."""
        return remap_index_tokens(text, self.model_to_caller, self.index_tokens)


def validate_boxes(boxes: Any, image_size: Sequence[float], name: str = "boxes") -> np.ndarray:
    """Caller boxes checked, clipped and pair-sorted as the reference does (spec §4.4).

    Args:
        boxes: ``None``, an empty sequence or an array-like ``[N, 4]`` of
            ``[x1, y1, x2, y2]`` numbers in pixels of the original image.
        image_size: ``(W, H)`` of the original image in pixels (both > 0).
        name: the argument name used in error messages.

    Returns:
        float64 ``[N, 4]`` (``[0, 4]`` for no boxes): x clipped to ``[0, W]``, y to ``[0, H]``,
        then ``x1 ≤ x2`` and ``y1 ≤ y2``.

    Raises:
        InvalidRequestError: a box without exactly 4 numbers, a non-finite number (named by
            its index, ``boxes[i]``), a bad ``image_size``, or a box with zero width or height
            after clipping (the whole request fails, as in the reference).
    """
    width, height = _image_size(image_size)
    if boxes is None or (not isinstance(boxes, (str, bytes)) and hasattr(boxes, "__len__")
                         and len(boxes) == 0):
        return np.zeros((0, 4), dtype=np.float64)
    arr = validation.boxes(boxes, name)
    for i, row in enumerate(arr):
        if not np.all(np.isfinite(row)):
            raise InvalidRequestError(f"{name}[{i}] has a non-finite coordinate: {row.tolist()}")
    out = arr.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0.0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0.0, height)
    out[:, [0, 2]] = np.sort(out[:, [0, 2]], axis=1)
    out[:, [1, 3]] = np.sort(out[:, [1, 3]], axis=1)
    for i, (x1, y1, x2, y2) in enumerate(out):
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            raise InvalidRequestError(
                f"{name}[{i}] {arr[i].tolist()} has zero width or height after clipping to "
                f"the {width:g}x{height:g} image: {[float(v) for v in (x1, y1, x2, y2)]}")
    return out


def _image_size(image_size: Sequence[float]) -> Tuple[float, float]:
    """``(W, H)`` as positive floats."""
    try:
        width, height = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise InvalidRequestError(
            f"image_size must be (width, height), got {image_size!r}") from None
    if not (np.isfinite(width) and np.isfinite(height) and width > 0 and height > 0):
        raise InvalidRequestError(f"image_size must be positive, got {image_size!r}")
    return width, height


def box_order(boxes: np.ndarray, mode: str = "none") -> Tuple[int, ...]:
    """The model-side order of validated boxes (spec §4.4): ``order[m]`` = caller index.

    Args:
        boxes: float ``[N, 4]`` xyxy (from :func:`validate_boxes`).
        mode: ``none`` (caller order), ``raster`` (by x1, then y1, then caller index: x first),
            ``area_asc`` / ``area_desc`` (by area, ties by caller index ascending).

    Raises:
        InvalidRequestError: an unknown mode.
    """
    if mode not in ORDER_MODES:
        raise InvalidRequestError(
            f"mm_bbox_order_mode must be one of {', '.join(ORDER_MODES)}, got {mode!r}")
    n = len(boxes)
    if mode == "none":
        return tuple(range(n))
    if mode == "raster":
        keys = [(float(boxes[i, 0]), float(boxes[i, 1]), i) for i in range(n)]
    else:
        sign = 1.0 if mode == "area_asc" else -1.0
        # the tie-break stays "caller index ascending" in both directions (spec §4.4)
        keys = [(sign * float((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])), i)
                for i in range(n)]
    return tuple(key[-1] for key in sorted(keys))


def prepare_boxes(boxes: Any, image_size: Sequence[float], mode: str = "none",
                  name: str = "boxes", max_boxes: Optional[int] = None) -> BoxOrder:
    """Validate caller boxes and order them for the model (spec §4.4).

    Args:
        boxes: as :func:`validate_boxes` (``None`` / empty: no boxes, the VQA form).
        image_size: ``(W, H)`` pixels of the original image.
        mode: the checkpoint's ``mm_bbox_order_mode``.
        name: the argument name used in error messages.
        max_boxes: at most this many boxes (the tokenizer's ``<objK>`` count); ``None`` = no
            cap (the reference has none; its docs say ≤ 100).

    Returns:
        :class:`BoxOrder` over the clipped caller boxes.

    Raises:
        InvalidRequestError: as :func:`validate_boxes` and :func:`box_order`, or more than
            ``max_boxes`` boxes.
    """
    clipped = validate_boxes(boxes, image_size, name)
    if max_boxes is not None and len(clipped) > max_boxes:
        raise InvalidRequestError(f"{name} has {len(clipped)} boxes; at most {max_boxes} "
                                  f"(the tokenizer has {OBJ_TOKENS.token(0)}…"
                                  f"{OBJ_TOKENS.token(max_boxes - 1)})")
    return BoxOrder(clipped, box_order(clipped, mode))
