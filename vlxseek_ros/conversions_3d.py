"""3D detections as ROS messages: ``vision_msgs/Detection3DArray`` and an rviz2 ``MarkerArray``.

Conventions (issue 10 §5; REP 103/105):

* positions and sizes are metres in the camera's **optical frame** (x right, y down, z
  forward); the header is the answered colour image's header (its ``frame_id`` names that
  optical frame, its stamp is the image's, never the time of the answer);
* ``Detection3D.id`` equals the ``id`` of the 2D detection it belongs to (region index, or
  the track id for the standing query), so the two arrays join on ``id``;
* ``results[0].hypothesis`` is the grounded phrase and score as in 2D, and
  ``results[0].pose.pose.position`` the box centre; orientation is identity (axis-aligned in
  the optical frame);
* detections without valid depth in their box are left out of the 3D array.

The 3D geometry itself is :mod:`vlxseek_core.depth3d` (no ROS there).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from geometry_msgs.msg import Pose
from vision_msgs.msg import (BoundingBox3D, Detection3D, Detection3DArray,
                             ObjectHypothesisWithPose)
from visualization_msgs.msg import Marker, MarkerArray

from vlxseek_core.depth3d import Box3D

__all__ = ["MARKER_NAMESPACE", "detections_3d_to_msg", "markers_msg"]

MARKER_NAMESPACE = "vlxseek"
MIN_MARKER_SIZE = 0.01
"""rviz2 does not draw a zero-thickness cube (a flat face has zero depth spread), metres."""
_COLOUR = (0.1, 0.9, 0.2, 0.45)


def _pose(center: Sequence[float]) -> Pose:
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in center)
    pose.orientation.w = 1.0
    return pose


def detections_3d_to_msg(header: Any,
                         items: Sequence[Tuple[str, str, float, Optional[Box3D]]]
                         ) -> Detection3DArray:
    """``Detection3DArray`` of the detections that have a 3D box.

    Args:
        header: ``std_msgs/Header`` of the answered colour image (optical frame).
        items: per 2D detection ``(id, class_id, score, box3d or None)``.

    Returns:
        the array; one ``Detection3D`` per item with a box, in the given order.
    """
    msg = Detection3DArray()
    msg.header = header
    for det_id, class_id, score, box in items:
        if box is None:
            continue
        det = Detection3D()
        det.header = header
        det.id = str(det_id)
        det.bbox = BoundingBox3D()
        det.bbox.center = _pose(box.center)
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(v) for v in box.size)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = str(class_id)
        hyp.hypothesis.score = float(score)
        hyp.pose.pose = _pose(box.center)
        det.results = [hyp]
        msg.detections.append(det)
    return msg


def markers_msg(array: Detection3DArray) -> MarkerArray:
    """rviz2 markers of a ``Detection3DArray``: one translucent cube and one label per
    detection, after a ``DELETEALL`` so that boxes of the previous answer disappear.

    Args:
        array: from :func:`detections_3d_to_msg`.
    """
    clear = Marker()
    clear.header = array.header
    clear.ns = MARKER_NAMESPACE
    clear.action = Marker.DELETEALL
    markers: List[Marker] = [clear]
    for i, det in enumerate(array.detections):
        cube = Marker()
        cube.header = array.header
        cube.ns = MARKER_NAMESPACE
        cube.id = 2 * i
        cube.type = Marker.CUBE
        cube.action = Marker.ADD
        cube.pose = det.bbox.center
        cube.scale.x = max(det.bbox.size.x, MIN_MARKER_SIZE)
        cube.scale.y = max(det.bbox.size.y, MIN_MARKER_SIZE)
        cube.scale.z = max(det.bbox.size.z, MIN_MARKER_SIZE)
        cube.color.r, cube.color.g, cube.color.b, cube.color.a = _COLOUR
        markers.append(cube)
        label = Marker()
        label.header = array.header
        label.ns = MARKER_NAMESPACE
        label.id = 2 * i + 1
        label.type = Marker.TEXT_VIEW_FACING
        label.action = Marker.ADD
        label.pose = _pose((det.bbox.center.position.x,
                            det.bbox.center.position.y - cube.scale.y / 2 - 0.03,  # above (y down)
                            det.bbox.center.position.z))
        label.scale.z = 0.05
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        hyp = det.results[0].hypothesis if det.results else None
        label.text = (f"{hyp.class_id} [{det.id}] {det.bbox.center.position.z:.2f} m"
                      if hyp else det.id)
        markers.append(label)
    out = MarkerArray()
    out.markers = markers
    return out
