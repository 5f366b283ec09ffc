"""Depth and camera intrinsics for 3D detections (issue 10 §5).

With the parameters ``depth_topic`` and ``camera_info_topic`` set, the node subscribes a
depth image **registered to the colour image** (same optical frame and field of view, e.g.
``/camera/aligned_depth_to_color/image_raw``; any resolution) and the colour camera's
``sensor_msgs/CameraInfo``. Each answer is paired with the depth frame whose stamp is nearest
to the colour frame's, within ``depth_stamp_tolerance_s`` (the matcher of
:mod:`vlxseek_ros.frame_matching`), and each detection gets a 3D box from
:func:`vlxseek_core.depth3d.box_to_3d`: the median valid depth in its box, back-projected with
the intrinsics, metres in the optical frame of the colour image's header.

Both subscriptions are best effort (they hear best-effort and reliable drivers, REP 2003).
"""
from __future__ import annotations

import threading
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from vlxseek_core.depth3d import (DEPTH_ENCODINGS, Box3D, CameraIntrinsics, box_to_3d,
                                  depth_to_metres)
from vlxseek_core.errors import InvalidImageError, InvalidRequestError

from .frame_matching import StampMatcher, stamp_to_ns
from .image_conversion import image_payload

__all__ = ["DEPTH_HISTORY", "DepthInput", "depth_msg_to_array"]

DEPTH_HISTORY = 30
"""Depth frames kept for pairing (a depth camera at 30 Hz: one second)."""
_DTYPES = {"16UC1": np.uint16, "mono16": np.uint16, "32FC1": np.float32}


def depth_msg_to_array(msg: Image) -> np.ndarray:
    """A depth ``sensor_msgs/Image`` as ``[H, W]`` numpy (``uint16`` mm or ``float32`` m).

    Big-endian data (``is_bigendian=1``) is byte-swapped to native order.

    Raises:
        InvalidRequestError: an encoding other than 16UC1/mono16/32FC1.
        InvalidImageError: the geometry checks of colour images
            (:func:`~vlxseek_ros.image_conversion.image_payload`): zero size, more than
            ``MAX_PIXELS`` pixels, a step shorter than a row, data not ``step x height`` bytes.
    """
    if msg.encoding not in _DTYPES:
        raise InvalidRequestError(f"depth encoding {msg.encoding!r} is not supported; use one "
                                  f"of {', '.join(DEPTH_ENCODINGS)}")
    dtype = np.dtype(_DTYPES[msg.encoding])
    payload = image_payload(msg, dtype.itemsize, "depth image")  # no copy
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    rows = payload.reshape(h, step)
    order = ">" if msg.is_bigendian else "<"
    array = rows[:, :w * dtype.itemsize].copy().view(dtype.newbyteorder(order)).reshape(h, w)
    return array.astype(dtype.newbyteorder("="), copy=False)


class DepthInput:
    """The depth and camera-info subscriptions and the 3D boxes of one answer.

    Args:
        node: the rclpy node that owns the subscriptions.
        depth_topic, info_topic: topic names (resolved like any topic of the node).
        tolerance_s: largest stamp difference of a colour/depth pair, seconds.
        callback_group: of both subscriptions.
    """

    def __init__(self, node: Any, depth_topic: str, info_topic: str, tolerance_s: float,
                 callback_group: Any = None):
        self._node = node
        self._lock = threading.Lock()
        self._matcher: StampMatcher = StampMatcher(
            frame_capacity=1, proposal_capacity=DEPTH_HISTORY,
            tolerance_ns=int(round(tolerance_s * 1e9)))
        self._info: Optional[CameraInfo] = None
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
        self.depth_sub = node.create_subscription(Image, depth_topic, self._on_depth, qos,
                                                  callback_group=callback_group)
        self.info_sub = node.create_subscription(CameraInfo, info_topic, self._on_info, qos,
                                                 callback_group=callback_group)

    def destroy(self) -> None:
        """Destroy both subscriptions."""
        self._node.destroy_subscription(self.depth_sub)
        self._node.destroy_subscription(self.info_sub)

    def _on_depth(self, msg: Image) -> None:
        self._matcher.add_proposals(stamp_to_ns(msg.header.stamp), msg)

    def _on_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._info = msg

    def boxes_3d(self, header: Any, boxes: Sequence[Sequence[float]],
                 colour_size: Tuple[int, int]) -> Tuple[List[Optional[Box3D]], str]:
        """3D boxes of ``boxes`` (xyxy pixels of the colour image of ``header``).

        Args:
            header: the colour image's header (its stamp selects the depth frame).
            boxes: ``N`` boxes, xyxy pixels of the colour image.
            colour_size: ``(height, width)`` of the colour image.

        Returns:
            ``(N boxes or None, note)``: ``None`` per box without valid depth; all ``None``
            and a note saying why when no intrinsics or no depth frame of that stamp exist.
        """
        none: List[Optional[Box3D]] = [None] * len(boxes)
        if not len(boxes):
            return none, ""
        with self._lock:
            info = self._info
        if info is None:
            return none, "3D: no camera_info received yet"
        depth_msg = self._matcher.proposals_for(stamp_to_ns(header.stamp))
        if depth_msg is None:
            return none, "3D: no depth frame within depth_stamp_tolerance_s of the image"
        try:
            intrinsics = CameraIntrinsics.from_k(info.k, info.width, info.height)
            h, w = colour_size
            if (intrinsics.width, intrinsics.height) != (w, h):
                intrinsics = intrinsics.scaled_to(w, h)
            depth = depth_to_metres(depth_msg_to_array(depth_msg), depth_msg.encoding)
        except (InvalidRequestError, InvalidImageError) as exc:
            return none, f"3D: {exc}"
        return [box_to_3d(depth, box, intrinsics) for box in boxes], ""
