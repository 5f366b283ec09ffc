"""3D positions and sizes of 2D detections from a depth image (issue 10 §5; no ROS imports).

Frames and units (the ROS conventions, REP 103/105):

* boxes are ``xyxy`` in pixels of the **colour** image, pixel ``i`` spanning ``[i, i + 1)``;
* the intrinsics ``K`` (``fx, fy, cx, cy``, OpenCV / ``sensor_msgs/CameraInfo.k``) describe the
  colour image, with pixel *centres* at integer coordinates;
* the depth image is **registered** to the colour image (same optical frame and field of view,
  as ``aligned_depth_to_color`` / ``depth_registered`` topics are) and may have another
  resolution: it is sampled at the box scaled by ``depth size / colour size``;
* outputs are metres in the camera's **optical frame**: x right, y down, z forward.

A box's depth is the median of the valid depth pixels whose centres lie inside it (robust to a
background that shows around the object and to holes). Depth ``0``, negative, NaN and inf are
invalid. The 3D size is the box's extent back-projected at that depth (x, y) and the spread of
the valid depths (10th to 90th percentile, z).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .errors import InvalidRequestError

DEPTH_ENCODINGS = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}
"""Depth encodings and their unit in metres (REP 118: 16-bit millimetres or float metres)."""
SPREAD_PERCENTILES = (10.0, 90.0)


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the colour image (pixels).

    Attributes:
        fx, fy: focal lengths in pixels; cx, cy: principal point (pixel-centre coordinates).
        width, height: the image size these intrinsics belong to (pixels).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> "CameraIntrinsics":
        """From a row-major 3×3 ``K`` (``CameraInfo.k``).

        Raises:
            InvalidRequestError: not 9 finite numbers, ``fx``/``fy`` ≤ 0, or a bad size.
        """
        try:
            values = np.asarray(k, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"camera matrix K is not numeric: {exc}") from exc
        if values.shape != (9,) or not np.isfinite(values).all():
            raise InvalidRequestError(f"camera matrix K must be 9 finite numbers, got {k!r}")
        fx, fy, cx, cy = values[0], values[4], values[2], values[5]
        if fx <= 0 or fy <= 0:
            raise InvalidRequestError(
                f"camera matrix K has fx={fx}, fy={fy}: focal lengths must be > 0 (an "
                f"uncalibrated camera publishes zeros)")
        if int(width) <= 0 or int(height) <= 0:
            raise InvalidRequestError(f"camera image size must be positive, got "
                                      f"{width}x{height}")
        return cls(float(fx), float(fy), float(cx), float(cy), int(width), int(height))

    def scaled_to(self, width: int, height: int) -> "CameraIntrinsics":
        """The same camera at another resolution (a resized image of the same field of view)."""
        sx, sy = width / self.width, height / self.height
        # pixel-centre convention: continuous coordinate u + 0.5 scales, then minus 0.5
        return CameraIntrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                                (self.cy + 0.5) * sy - 0.5, int(width), int(height))


@dataclass(frozen=True)
class Box3D:
    """A detection's 3D box in the camera optical frame.

    Attributes:
        center: ``(x, y, z)`` metres, optical frame (x right, y down, z forward).
        size: ``(sx, sy, sz)`` metres: box extent at ``center[2]`` and depth spread.
        valid_pixels: depth pixels the median used.
    """

    center: Tuple[float, float, float]
    size: Tuple[float, float, float]
    valid_pixels: int


def depth_to_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """A depth image in metres, NaN where invalid.

    Args:
        depth: ``[H, W]`` ``uint16`` (``16UC1``/``mono16``, millimetres) or ``float32``
            (``32FC1``, metres).
        encoding: the ``sensor_msgs/Image`` encoding.

    Returns:
        float32 ``[H, W]`` metres; 0, negative, NaN and inf become NaN.

    Raises:
        InvalidRequestError: unknown encoding, or a dtype/shape that does not match it.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise InvalidRequestError(f"depth encoding {encoding!r} is not supported; use one of "
                                  f"{', '.join(DEPTH_ENCODINGS)}")
    depth = np.asarray(depth)
    expected = np.float32 if encoding == "32FC1" else np.uint16
    if depth.dtype != expected or depth.ndim != 2 or depth.size == 0:
        raise InvalidRequestError(f"{encoding} depth must be a non-empty [H, W] "
                                  f"{np.dtype(expected).name} array, got {depth.dtype} "
                                  f"{depth.shape}")
    metres = depth.astype(np.float32) * np.float32(DEPTH_ENCODINGS[encoding])
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


def box_depth_pixels(depth_m: np.ndarray, box: Sequence[float],
                     colour_size: Tuple[int, int]) -> np.ndarray:
    """The valid depths (metres) of the depth pixels whose centres lie inside ``box``.

    Args:
        depth_m: float32 ``[H_d, W_d]`` metres, NaN = invalid (see :func:`depth_to_metres`).
        box: ``(x1, y1, x2, y2)`` pixels of the colour image.
        colour_size: ``(height, width)`` of the colour image.

    Returns:
        float32 ``[M]`` valid depths; a box narrower than one depth pixel samples the pixel
        under its centre.
    """
    hd, wd = depth_m.shape
    sy, sx = hd / colour_size[0], wd / colour_size[1]
    x1, y1, x2, y2 = (float(v) for v in box)
    cols = _centres_inside(x1 * sx, x2 * sx, wd)
    rows = _centres_inside(y1 * sy, y2 * sy, hd)
    patch = depth_m[rows[0]:rows[1], cols[0]:cols[1]]
    return patch[np.isfinite(patch)]


def _centres_inside(lo: float, hi: float, size: int) -> Tuple[int, int]:
    """Index range of pixels ``j`` with centre ``j + 0.5`` in ``[lo, hi)``, clipped, ≥ 1."""
    start = max(0, math.ceil(lo - 0.5))
    stop = min(size, math.ceil(hi - 0.5))
    if stop <= start:  # thinner than a pixel: the pixel under the centre
        j = min(max(int(math.floor((lo + hi) / 2)), 0), size - 1)
        return j, j + 1
    return start, stop


def box_to_3d(depth_m: np.ndarray, box: Sequence[float], intrinsics: CameraIntrinsics,
              min_valid_pixels: int = 1) -> Optional[Box3D]:
    """Back-project one 2D box with its robust depth.

    Args:
        depth_m: float32 ``[H_d, W_d]`` metres, NaN = invalid, registered to the colour image.
        box: ``(x1, y1, x2, y2)`` pixels of the colour image.
        intrinsics: of the colour image (its ``width``/``height`` give the colour size).
        min_valid_pixels: fewer valid depth pixels than this → ``None``.

    Returns:
        :class:`Box3D`, or ``None`` when the box has too few valid depth pixels.
    """
    colour_size = (intrinsics.height, intrinsics.width)
    depths = box_depth_pixels(depth_m, box, colour_size)
    if depths.size < max(1, int(min_valid_pixels)):
        return None
    z = float(np.median(depths))
    lo, hi = np.percentile(depths, SPREAD_PERCENTILES)
    x1, y1, x2, y2 = (float(v) for v in box)
    u, v = (x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5  # edge coordinates → pixel-centre ones
    k = intrinsics
    center = ((u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z)
    size = ((x2 - x1) * z / k.fx, (y2 - y1) * z / k.fy, float(hi - lo))
    return Box3D(center, size, int(depths.size))
