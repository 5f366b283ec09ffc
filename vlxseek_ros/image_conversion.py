"""``sensor_msgs/Image`` <-> numpy conversion with strict validation (no rclpy import).

:func:`image_msg_to_rgb` accepts a ``sensor_msgs.msg.Image`` or any object with the same fields
(``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``, ``data``) and returns an
``H x W x 3`` ``uint8`` RGB array in the pixel grid of the message (row 0 = top, column 0 = left,
as REP 104/``sensor_msgs/Image`` define it). The common 8-bit encodings (rgb8, bgr8, mono8, rgba8,
bgra8) are converted with numpy; bayer and YUV 4:2:2 encodings are converted with ``cv_bridge``
when it is importable. Every malformed message raises
:class:`vlxseek_core.errors.InvalidImageError` with a message that names the problem.
"""
from __future__ import annotations

import array
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np

from vlxseek_core.errors import InvalidImageError

__all__ = [
    "NUMPY_ENCODINGS",
    "CV_BRIDGE_ENCODINGS",
    "accepted_encodings",
    "MAX_PIXELS",
    "image_msg_to_rgb",
    "rgb_to_image_msg",
    "validate_image_msg",
]

# Refuse images with more pixels than this (a 16k x 16k frame): larger headers are corrupt or
# hostile, and would otherwise make us allocate gigabytes.
MAX_PIXELS = 16384 * 16384


class _Layout(NamedTuple):
    """Memory layout of one encoding: channels per pixel and bytes per channel."""

    channels: int
    bytes_per_channel: int


def _rgb(px: np.ndarray) -> np.ndarray:
    return px


def _bgr(px: np.ndarray) -> np.ndarray:
    return px[..., ::-1]


def _mono(px: np.ndarray) -> np.ndarray:
    return np.repeat(px, 3, axis=2)


def _rgba(px: np.ndarray) -> np.ndarray:
    return px[..., :3]


def _bgra(px: np.ndarray) -> np.ndarray:
    return px[..., 2::-1]


# encoding -> (layout, function taking H x W x C uint8 and returning H x W x 3 RGB view/array)
NUMPY_ENCODINGS: Dict[str, tuple] = {
    "rgb8": (_Layout(3, 1), _rgb),
    "bgr8": (_Layout(3, 1), _bgr),
    "mono8": (_Layout(1, 1), _mono),
    "rgba8": (_Layout(4, 1), _rgba),
    "bgra8": (_Layout(4, 1), _bgra),
}

# Colour encodings that only cv_bridge converts (demosaicing, YUV). Layout as transmitted.
CV_BRIDGE_ENCODINGS: Dict[str, _Layout] = {
    "bayer_rggb8": _Layout(1, 1),
    "bayer_bggr8": _Layout(1, 1),
    "bayer_gbrg8": _Layout(1, 1),
    "bayer_grbg8": _Layout(1, 1),
    "yuv422": _Layout(2, 1),
    "yuv422_yuy2": _Layout(2, 1),
    "uyvy": _Layout(2, 1),
    "yuyv": _Layout(2, 1),
}

# Known but never accepted: depth / 16-bit / float images are not colour photographs.
_NON_COLOUR_PREFIXES = ("mono16", "rgb16", "bgr16", "rgba16", "bgra16", "bayer_", "8S", "16U",
                        "16S", "32S", "32F", "64F", "8UC", "8SC")


def _load_cv_bridge() -> Optional[Callable[[Any], np.ndarray]]:
    """Return a function msg -> RGB array backed by cv_bridge, or None when not importable."""
    try:
        from cv_bridge import CvBridge  # type: ignore[import-not-found]
    except Exception:  # ImportError, or a broken ROS 1 'cv-bridge' from PyPI
        return None
    bridge = CvBridge()

    def convert(msg: Any) -> np.ndarray:
        return np.asarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))

    return convert


# Resolved lazily on first use (and replaceable in tests).
_cv_bridge_convert: Optional[Callable[[Any], np.ndarray]] = None
_cv_bridge_checked = False


def _cv_bridge() -> Optional[Callable[[Any], np.ndarray]]:
    global _cv_bridge_convert, _cv_bridge_checked
    if not _cv_bridge_checked:
        _cv_bridge_convert = _load_cv_bridge()
        _cv_bridge_checked = True
    return _cv_bridge_convert


def _as_bytes(data: Any) -> np.ndarray:
    """View the message payload as a flat uint8 array (no copy for buffer-protocol objects)."""
    if data is None:
        return np.zeros((0,), np.uint8)
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise InvalidImageError(f"image data has dtype {data.dtype}, expected uint8 bytes")
        return data.reshape(-1)
    try:
        view = memoryview(data)
    except TypeError:
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidImageError(f"image data is not a byte sequence: {exc}") from exc
    return np.frombuffer(view.cast("B") if view.format != "B" else view, dtype=np.uint8)


def _layout_of(encoding: str) -> _Layout:
    if encoding in NUMPY_ENCODINGS:
        return NUMPY_ENCODINGS[encoding][0]
    if encoding in CV_BRIDGE_ENCODINGS:
        if _cv_bridge() is None:
            raise InvalidImageError(
                f"image encoding '{encoding}' needs cv_bridge, which is not importable; "
                f"publish one of {sorted(NUMPY_ENCODINGS)} or install cv_bridge")
        return CV_BRIDGE_ENCODINGS[encoding]
    if not encoding:
        raise InvalidImageError("image encoding is empty")
    kind = ("a 16-bit, float or depth encoding, not 8-bit colour"
            if encoding.startswith(_NON_COLOUR_PREFIXES) else "an unknown encoding")
    raise InvalidImageError(
        f"unsupported image encoding '{encoding}' ({kind}); accepted: "
        f"{', '.join(accepted_encodings())}"
        + ("" if _cv_bridge() is not None else
           " (bayer_* and yuv422 need cv_bridge, which is not importable)"))


def accepted_encodings() -> list:
    """The encodings converted here: the numpy ones, plus cv_bridge's when it is importable.

    Error messages list exactly these (a refused encoding is never called supported).
    """
    names = sorted(NUMPY_ENCODINGS)
    if _cv_bridge() is not None:
        names += sorted(CV_BRIDGE_ENCODINGS)
    return names


def validate_image_msg(msg: Any) -> np.ndarray:
    """Check the geometry of an Image message and return its payload as flat uint8.

    Raises:
        InvalidImageError: zero or implausible width/height, unsupported encoding, big-endian
            multi-byte data, ``step`` smaller than one row of pixels, or ``len(data)`` not equal
            to ``step * height``.
    """
    try:
        encoding = str(msg.encoding)
        is_bigendian = bool(msg.is_bigendian)
    except AttributeError as exc:
        raise InvalidImageError(f"not an image message: {exc}") from exc
    _image_size(msg, "image")  # an empty or oversized image is refused before its encoding
    layout = _layout_of(encoding)
    if is_bigendian and layout.bytes_per_channel > 1:
        raise InvalidImageError(
            f"big-endian '{encoding}' data is not supported (is_bigendian=1)")
    return image_payload(msg, layout.channels * layout.bytes_per_channel)


def _image_size(msg: Any, what: str) -> Tuple[int, int]:
    """``(height, width)`` of an Image message, both > 0 and at most :data:`MAX_PIXELS`."""
    try:
        height, width = int(msg.height), int(msg.width)
    except AttributeError as exc:
        raise InvalidImageError(f"not an image message: {exc}") from exc
    if height <= 0 or width <= 0:
        raise InvalidImageError(f"{what} is empty ({width}x{height} pixels)")
    if height * width > MAX_PIXELS:
        raise InvalidImageError(
            f"{what} of {width}x{height} pixels exceeds the limit of {MAX_PIXELS} pixels")
    return height, width


def image_payload(msg: Any, bytes_per_pixel: int, what: str = "image") -> np.ndarray:
    """The geometry checks every Image message gets (colour and depth), and its payload.

    Args:
        msg: a ``sensor_msgs/Image`` (or an object with its fields).
        bytes_per_pixel: of the message's encoding (3 for rgb8, 2 for 16UC1, 4 for 32FC1).
        what: the name used in error messages ("image", "depth image").

    Returns:
        The payload as flat ``uint8`` of ``step * height`` bytes (no copy where possible).

    Raises:
        InvalidImageError: zero width/height, more than :data:`MAX_PIXELS` pixels, ``step``
            smaller than one row, or ``len(data)`` not equal to ``step * height``.
    """
    height, width = _image_size(msg, what)
    try:
        step, encoding = int(msg.step), str(msg.encoding)
    except AttributeError as exc:
        raise InvalidImageError(f"not an image message: {exc}") from exc
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise InvalidImageError(
            f"{what} step {step} is smaller than one row of {width} '{encoding}' pixels "
            f"({row_bytes} bytes)")
    data = _as_bytes(msg.data)
    expected = step * height
    if data.size != expected:
        raise InvalidImageError(
            f"{what} data has {data.size} bytes but step x height = {step} x {height} = "
            f"{expected}")
    return data


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` (or a duck-typed object) to an RGB array.

    Args:
        msg: object with ``height``, ``width`` (pixels), ``encoding`` (ROS encoding string),
            ``is_bigendian``, ``step`` (bytes per row, may include padding) and ``data``
            (bytes-like, ``array.array('B')``, uint8 numpy array or list of ints).

    Returns:
        ``uint8`` array of shape ``(height, width, 3)``, RGB, C-contiguous, owning its memory
        (it does not alias ``msg.data``). Row padding (``step > width * channels``) is dropped,
        alpha is discarded, mono is replicated to three channels.

    Raises:
        InvalidImageError: see :func:`validate_image_msg`; also when cv_bridge fails to convert
            a bayer/YUV image.
    """
    data = validate_image_msg(msg)
    encoding = str(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if encoding in NUMPY_ENCODINGS:
        layout, to_rgb = NUMPY_ENCODINGS[encoding]
        rows = data.reshape(height, step)[:, : width * layout.channels]
        pixels = rows.reshape(height, width, layout.channels)
        return np.array(to_rgb(pixels), dtype=np.uint8, order="C", copy=True)
    convert = _cv_bridge()
    try:
        rgb = convert(msg)  # type: ignore[misc]  # _layout_of checked it is available
    except Exception as exc:
        raise InvalidImageError(f"cv_bridge could not convert '{encoding}': {exc}") from exc
    if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
        raise InvalidImageError(
            f"cv_bridge returned {rgb.shape} {rgb.dtype} for a {width}x{height} '{encoding}' "
            f"image")
    return np.ascontiguousarray(rgb)


def rgb_to_image_msg(rgb: np.ndarray, header: Any = None, encoding: str = "rgb8",
                     msg_type: Any = None) -> Any:
    """Build a ``sensor_msgs/Image`` from an RGB array (used for the debug image).

    Args:
        rgb: ``uint8`` array ``(H, W, 3)`` in RGB order.
        header: ``std_msgs/Header`` to copy into the message (e.g. the source image's), or None.
        encoding: ``'rgb8'`` (as is) or ``'bgr8'`` (channels swapped).
        msg_type: message class to instantiate; default ``sensor_msgs.msg.Image``.

    Returns:
        The message with ``step = 3 * W``, ``is_bigendian = 0`` and ``data`` as
        ``array.array('B')`` (the fast path of the rclpy setter).

    Raises:
        ValueError: wrong shape/dtype or an encoding other than rgb8/bgr8.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[..., ::-1]
    else:
        raise ValueError(f"rgb_to_image_msg supports 'rgb8' and 'bgr8', not '{encoding}'")
    if msg_type is None:
        from sensor_msgs.msg import Image as msg_type  # noqa: N813  (ROS, lazily)
    msg = msg_type()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
    return msg


JPEG_FORMAT = "rgb8; jpeg compressed bgr8"
"""``CompressedImage.format`` that image_transport's compressed plugin writes for an rgb8
source (the JPEG itself holds BGR-ordered samples)."""


def rgb_to_compressed_msg(rgb: np.ndarray, header: Any = None, quality: int = 80,
                          msg_type: Any = None) -> Any:
    """Build a JPEG ``sensor_msgs/CompressedImage`` from an RGB array (compressed debug image).

    Args:
        rgb: ``uint8`` array ``(H, W, 3)`` in RGB order.
        header: ``std_msgs/Header`` to copy into the message, or None.
        quality: JPEG quality, 1–100.
        msg_type: message class to instantiate; default ``sensor_msgs.msg.CompressedImage``.

    Returns:
        The message with ``format`` = :data:`JPEG_FORMAT` and the JPEG bytes in ``data``.

    Raises:
        ValueError: wrong shape/dtype, a quality outside 1–100, or an encoder failure.
    """
    import cv2

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    if msg_type is None:
        from sensor_msgs.msg import CompressedImage as msg_type  # noqa: N813  (ROS, lazily)
    msg = msg_type()
    if header is not None:
        msg.header = header
    msg.format = JPEG_FORMAT
    msg.data = array.array("B", jpeg.tobytes())
    return msg
