"""3D detections as Detection3DArray and rviz2 markers; depth images (issue 10 §5)."""
import numpy as np
import pytest

pytest.importorskip("rclpy")
vision_msgs = pytest.importorskip("vision_msgs.msg")
if not hasattr(vision_msgs, "Detection3DArray"):
    pytest.skip("vision_msgs without Detection3DArray: rerun scripts/setup_ros.sh",
                allow_module_level=True)
pytest.importorskip("visualization_msgs.msg")

from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from vlxseek_core.depth3d import Box3D  # noqa: E402
from vlxseek_ros.conversions_3d import (MARKER_NAMESPACE, MIN_MARKER_SIZE,  # noqa: E402
                                        detections_3d_to_msg, markers_msg)


def _header():
    h = Header()
    h.frame_id = "camera_color_optical_frame"
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return h


def test_detection_3d_fields_and_missing_depth():
    items = [("3", "red cup", 0.9, Box3D((0.1, -0.2, 1.5), (0.08, 0.12, 0.0), 400)),
             ("5", "red cup", 0.7, None),  # no valid depth: left out
             ("7", "knife", 0.4, Box3D((-0.3, 0.05, 0.8), (0.2, 0.03, 0.02), 90))]
    msg = detections_3d_to_msg(_header(), items)
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert [d.id for d in msg.detections] == ["3", "7"]
    first = msg.detections[0]
    assert first.header.stamp.sec == 12 and first.header.stamp.nanosec == 345
    assert (first.bbox.center.position.x, first.bbox.center.position.y,
            first.bbox.center.position.z) == pytest.approx((0.1, -0.2, 1.5))
    assert first.bbox.center.orientation.w == 1.0
    assert (first.bbox.size.x, first.bbox.size.y, first.bbox.size.z) == pytest.approx(
        (0.08, 0.12, 0.0))
    assert first.results[0].hypothesis.class_id == "red cup"
    assert first.results[0].hypothesis.score == pytest.approx(0.9)
    assert first.results[0].pose.pose.position.z == pytest.approx(1.5)


def test_markers_clear_then_cube_and_label_per_detection():
    items = [("3", "red cup", 0.9, Box3D((0.1, -0.2, 1.5), (0.08, 0.12, 0.0), 400)),
             ("7", "knife", 0.4, Box3D((-0.3, 0.05, 0.8), (0.2, 0.03, 0.02), 90))]
    markers = markers_msg(detections_3d_to_msg(_header(), items)).markers
    assert markers[0].action == Marker.DELETEALL
    assert len(markers) == 1 + 2 * len(items)
    cubes = [m for m in markers if m.type == Marker.CUBE]
    labels = [m for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert len(cubes) == len(labels) == 2
    assert len({(m.ns, m.id) for m in markers[1:]}) == 4  # unique ids
    assert all(m.ns == MARKER_NAMESPACE and m.header.frame_id == "camera_color_optical_frame"
               for m in markers)
    assert cubes[0].scale.z == MIN_MARKER_SIZE  # a flat face is still drawn
    assert cubes[1].pose.position.x == pytest.approx(-0.3)
    assert labels[0].text == "red cup [3] 1.50 m"
    assert labels[0].pose.position.y < cubes[0].pose.position.y  # above the box (y down)


def test_empty_answer_still_clears_the_markers():
    markers = markers_msg(detections_3d_to_msg(_header(), [])).markers
    assert [m.action for m in markers] == [Marker.DELETEALL]


def _depth_msg(array, encoding, bigendian=False, pad=0):
    from sensor_msgs.msg import Image
    h, w = array.shape
    dtype = array.dtype.newbyteorder(">" if bigendian else "<")
    rows = array.astype(dtype).view("u1").reshape(h, -1)
    rows = np.pad(rows, ((0, 0), (0, pad)))
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("encoding, dtype", [("16UC1", "uint16"), ("32FC1", "float32")])
@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_msg_to_array_reads_both_byte_orders_and_row_padding(encoding, dtype, bigendian):
    from vlxseek_ros.depth_input import depth_msg_to_array
    depth = (np.arange(12).reshape(3, 4) * 250 + 500).astype(dtype)
    got = depth_msg_to_array(_depth_msg(depth, encoding, bigendian, pad=3))
    assert got.dtype == np.dtype(dtype) and got.shape == (3, 4)
    np.testing.assert_array_equal(got, depth)


def test_depth_msg_geometry_is_checked_like_colour_images():
    """The colour path's checks: size limit, step, exact data length (no silent truncation)."""
    from vlxseek_core.errors import InvalidImageError
    from vlxseek_ros.depth_input import depth_msg_to_array
    from vlxseek_ros.image_conversion import MAX_PIXELS
    msg = _depth_msg(np.ones((2, 3), np.uint16), "16UC1")
    msg.height = MAX_PIXELS  # 3 x MAX_PIXELS pixels, with a payload that does not match
    with pytest.raises(InvalidImageError, match="exceeds the limit"):
        depth_msg_to_array(msg)
    msg = _depth_msg(np.ones((2, 3), np.uint16), "16UC1")
    msg.step = 4  # shorter than one row of 3 x 2 bytes
    with pytest.raises(InvalidImageError, match="smaller than one row"):
        depth_msg_to_array(msg)
    msg = _depth_msg(np.ones((2, 3), np.uint16), "16UC1")
    msg.data = bytes(msg.data) + b"\0\0"  # longer than step x height
    with pytest.raises(InvalidImageError, match="depth image data has 14 bytes"):
        depth_msg_to_array(msg)
    msg.width = 0
    with pytest.raises(InvalidImageError, match="depth image is empty"):
        depth_msg_to_array(msg)
