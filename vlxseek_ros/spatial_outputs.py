"""The node's 3D and tracking outputs (issue 10 §5–6): one object the node calls per answer.

* **Tracking** (parameter ``track_standing_query``, default true): the standing query's
  detections get persistent ids from :class:`vlxseek_core.tracking.RegionTracker` (ByteTrack);
  ``Detection2D.id`` (and ``Detection3D.id``) is then the track id as a decimal string, or
  ``""`` for a detection whose track is not confirmed yet (its first sighting). Service answers
  keep region indices as ids (a caller refers back to regions by index). A new standing query
  or task starts new tracks; ids are never reused.
* **3D** (parameters ``depth_topic`` and ``camera_info_topic``): every answer's detections are
  back-projected with :class:`vlxseek_ros.depth_input.DepthInput` and published as
  ``vision_msgs/Detection3DArray`` on ``~/detections_3d`` and as ``MarkerArray`` on
  ``~/markers`` (both reliable, depth 10), and returned in the service response.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from vision_msgs.msg import Detection2DArray, Detection3DArray

from vlxseek_core.errors import VLXSeekError

__all__ = ["SpatialOutputs", "check_depth_params", "make_tracker"]


def check_depth_params(params: Dict[str, Any]) -> None:
    """``depth_topic`` and ``camera_info_topic`` are both set or both empty.

    Raises:
        ValueError: naming both parameters.
    """
    depth_topic, info_topic = params["depth_topic"], params["camera_info_topic"]
    if bool(depth_topic) != bool(info_topic):
        raise ValueError("parameters 'depth_topic' and 'camera_info_topic' go together: got "
                         f"depth_topic={depth_topic!r}, camera_info_topic={info_topic!r}")


def make_tracker(params: Dict[str, Any]):
    """The standing query's tracker, or ``None`` with ``track_standing_query`` false.

    Raises:
        ValueError: the ``trackers`` library is missing (the message names the parameter and
            how to install it) or a setting is unusable.
    """
    if not params["track_standing_query"]:
        return None
    from vlxseek_core.tracking import RegionTracker

    try:
        return RegionTracker(lost_track_seconds=params["track_lost_s"],
                             frame_rate=params["max_rate_hz"])
    except VLXSeekError as exc:
        raise ValueError(f"parameter 'track_standing_query': {exc}; or set "
                         f"track_standing_query:=false") from exc


class SpatialOutputs:
    """3D publishers and depth input of a node, and its standing-query tracker.

    Args:
        node: the node (creates the publishers and subscriptions).
        params: the node's declared parameters.
        tracker: from :func:`make_tracker` (created before the model loads, so a missing
            library fails start-up at once).
        callback_group: of the depth subscriptions.

    Raises:
        ValueError: see :func:`check_depth_params`.
    """

    def __init__(self, node: Any, params: Dict[str, Any], tracker: Any = None,
                 callback_group: Any = None):
        self._node = node
        self.tracker = tracker
        self._track_key: Optional[Tuple[str, str]] = None
        self.depth = None
        self._pub3d = self._markers_pub = None
        check_depth_params(params)
        depth_topic, info_topic = params["depth_topic"], params["camera_info_topic"]
        if depth_topic:
            from visualization_msgs.msg import MarkerArray

            from .depth_input import DepthInput

            self.depth = DepthInput(node, depth_topic, info_topic,
                                    params["depth_stamp_tolerance_s"], callback_group)
            self._pub3d = node.create_publisher(Detection3DArray, "~/detections_3d", 10)
            self._markers_pub = node.create_publisher(MarkerArray, "~/markers", 10)

    def destroy(self) -> None:
        """Destroy the depth subscriptions and the 3D publishers."""
        if self.depth is not None:
            self.depth.destroy()
            self._node.destroy_publisher(self._pub3d)
            self._node.destroy_publisher(self._markers_pub)
            self.depth = None

    def track(self, result: Any, header: Any, msg: Detection2DArray,
              query_key: Tuple[str, str]) -> None:
        """Replace the ids of a standing-query answer's detections by track ids (in place).

        Args:
            result: the ``QueryResult`` (its detections are ``msg``'s, in order).
            header: the answered image's header (its stamp drives the tracker).
            msg: from ``detections_to_msg(result, header)``.
            query_key: ``(standing query, task)``; a change starts new tracks.
        """
        if self.tracker is None:
            return
        if query_key != self._track_key:
            self.tracker.reset()
            self._track_key = query_key
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        boxes = [d.box for d in result.detections]
        labels = [d.label for d in result.detections]
        try:
            ids = self.tracker.update(boxes, labels, stamp)
        except VLXSeekError:  # time went backwards (a bag restarted): start over
            self.tracker.reset()
            ids = self.tracker.update(boxes, labels, stamp)
        for det, tid in zip(msg.detections, ids):
            det.id = "" if tid is None else str(tid)

    def publish_3d(self, result: Any, header: Any, msg: Detection2DArray,
                   colour_size: Tuple[int, int]) -> Tuple[Optional[Detection3DArray], str]:
        """3D boxes of an answer, published on ``~/detections_3d`` and ``~/markers``.

        Args:
            result: the ``QueryResult``; msg: its ``Detection2DArray`` (ids as published).
            header: the answered image's header; colour_size: ``(height, width)`` pixels.

        Returns:
            ``(array, note)``: ``(None, "")`` without depth; else the array (detections
            without valid depth left out) and a note when no 3D could be made at all.
        """
        if self.depth is None:
            return None, ""
        from .conversions_3d import detections_3d_to_msg, markers_msg

        boxes3d, note = self.depth.boxes_3d(header, [d.box for d in result.detections],
                                            colour_size)
        items: List[tuple] = [(d2.id, d.label, d.score, b)
                              for d, d2, b in zip(result.detections, msg.detections, boxes3d)]
        array = detections_3d_to_msg(header, items)
        self._pub3d.publish(array)
        self._markers_pub.publish(markers_msg(array))
        return array, note
