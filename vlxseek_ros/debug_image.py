"""Annotated debug image: proposals, detections, labels and region indices (OpenCV, no rclpy).

rviz2 has no display for ``vision_msgs/Detection2DArray``; the node publishes this picture on
``~/debug_image`` instead. Each label gets a stable colour (from a hash of its text, the same in
every run and on every machine); proposals are thin grey boxes with their region index.
"""
from __future__ import annotations

import colorsys
import hashlib
from typing import Tuple

import cv2
import numpy as np

from vlxseek_core.types import QueryResult

__all__ = ["PROPOSAL_COLOUR", "draw_result", "label_colour"]

PROPOSAL_COLOUR: Tuple[int, int, int] = (160, 160, 160)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_colour(label: str) -> Tuple[int, int, int]:
    """Return a bright RGB colour for ``label``, stable across runs (MD5 of it picks the hue)."""
    digest = hashlib.md5(label.encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _scale(image: np.ndarray) -> Tuple[float, int]:
    """Font scale and line thickness that stay readable from 320 px to 4K images."""
    side = max(1, min(image.shape[:2]))
    font_scale = max(0.35, side / 900.0)
    return font_scale, max(1, int(round(side / 400.0)))


def _box_px(box) -> Tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    return x1, y1, x2, y2


def _put_label(image: np.ndarray, text: str, x: int, y: int, colour, font_scale: float,
               thickness: int) -> None:
    """Text on a filled background, above (x, y) when it fits, otherwise below it."""
    (tw, th), baseline = cv2.getTextSize(text, _FONT, font_scale, thickness)
    top = y - th - baseline - 2
    if top < 0:
        top = y + 1
    x = min(max(0, x), max(0, image.shape[1] - tw - 2))
    cv2.rectangle(image, (x, top), (x + tw + 2, top + th + baseline + 2), colour, cv2.FILLED)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(image, text, (x + 1, top + th + 1), _FONT, font_scale, ink, thickness,
                cv2.LINE_AA)


def draw_result(rgb: np.ndarray, result: QueryResult, draw_proposals: bool = True) -> np.ndarray:
    """Draw a query result on a copy of the image.

    Args:
        rgb: ``uint8`` ``(H, W, 3)`` RGB image the result was computed on (boxes are its pixels).
        result: the answer; ``result.proposals`` (grey, index only) and ``result.detections``
            (label colour, ``"<label> #<region> <score>"``) are drawn.
        draw_proposals: also draw the candidate regions that the answer did not refer to.

    Returns:
        A new ``uint8`` ``(H, W, 3)`` RGB array; the input is not modified.
    """
    canvas = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    font_scale, thickness = _scale(canvas)
    referred = {int(d.region_index) for d in result.detections}
    if draw_proposals:
        for i, box in enumerate(result.proposals.boxes):
            if i in referred:
                continue
            x1, y1, x2, y2 = _box_px(box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), PROPOSAL_COLOUR, 1)
            _put_label(canvas, str(i), x1, y1, PROPOSAL_COLOUR, font_scale * 0.6, 1)
    for det in result.detections:
        colour = label_colour(str(det.label))
        x1, y1, x2, y2 = _box_px(det.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness + 1)
        text = f"{det.label} #{int(det.region_index)} {float(det.score):.2f}"
        _put_label(canvas, text, x1, y1, colour, font_scale, thickness)
    return canvas
