"""3D from depth and track ids in the node (issue 10 §5–6), with the fake pipeline.

The fake answers every query with region 1 = box (5, 5, 30, 40) of a 64×48 frame. A depth
image puts a face at 0.8 m behind exactly that box and a wall at 1.5 m elsewhere; the 3D box
must come back within 1 cm, on the service response, ``~/detections_3d`` and ``~/markers``.
"""
import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
vision_msgs = pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")
if not hasattr(vision_msgs, "Detection3DArray"):
    pytest.skip("vision_msgs without Detection3DArray: rerun scripts/setup_ros.sh",
                allow_module_level=True)
pytest.importorskip("trackers")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from vision_msgs.msg import Detection2DArray, Detection3DArray  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from node_harness import NS, Harness, assert_startup_error, frame, wait_for  # noqa: E402

FX = FY = 50.0
CX, CY = 31.5, 23.5
BOX = (5.0, 5.0, 30.0, 40.0)  # node_harness.BOXES[1], the fake's detection
FACE_Z, WALL_Z = 0.8, 1.5


def _depth_msg(sec, encoding="16UC1", scale=1):
    h, w = 48 * scale, 64 * scale
    depth = np.full((h, w), WALL_Z, np.float32)
    x1, y1, x2, y2 = (int(v * scale) for v in BOX)
    depth[y1:y2, x1:x2] = FACE_Z
    msg = Image()
    msg.header.stamp.sec = sec
    msg.header.frame_id = "cam"
    msg.height, msg.width, msg.encoding = h, w, encoding
    if encoding == "16UC1":
        data = np.round(depth * 1000).astype("<u2")
    else:
        data = depth.astype("<f4")
    msg.step = w * data.itemsize
    msg.data = data.tobytes()
    return msg


def _info():
    msg = CameraInfo()
    msg.width, msg.height = 64, 48
    msg.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    return msg


@pytest.fixture
def depth_harness(fake):
    h = Harness(fake, overrides=[Parameter("depth_topic", value="depth"),
                                 Parameter("camera_info_topic", value="camera_info"),
                                 Parameter("track_standing_query", value=True)])
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    h.depth_pub = h.peer.create_publisher(Image, f"{NS}/depth", qos)
    h.info_pub = h.peer.create_publisher(CameraInfo, f"{NS}/camera_info", qos)
    h.got = {"3d": [], "markers": [], "2d": []}
    lock = threading.Lock()

    def keep(key):
        return lambda msg: (lock.acquire(), h.got[key].append(msg), lock.release())

    base = f"{NS}/vlxseek_detector"
    h.peer.create_subscription(Detection3DArray, f"{base}/detections_3d", keep("3d"), 10)
    h.peer.create_subscription(MarkerArray, f"{base}/markers", keep("markers"), 10)
    h.peer.create_subscription(Detection2DArray, f"{base}/detections", keep("2d"), 10)
    wait_for(lambda: h.depth_pub.get_subscription_count() and h.info_pub.get_subscription_count())
    yield h
    h.close()


def _send_depth(h, sec, **kwargs):
    h.info_pub.publish(_info())
    h.depth_pub.publish(_depth_msg(sec, **kwargs))
    depth = h.node._spatial.depth
    wait_for(lambda: depth._info is not None
             and depth._matcher.proposals_for(sec * 10**9) is not None)


@pytest.mark.parametrize("encoding, scale", [("16UC1", 1), ("32FC1", 2)])
def test_service_response_and_topics_carry_3d_boxes(depth_harness, encoding, scale):
    h = depth_harness
    _send_depth(h, 3, encoding=encoding, scale=scale)
    res = h.call(image=frame(sec=3))
    assert res.success, res.message
    assert len(res.detections_3d.detections) == 1
    det = res.detections_3d.detections[0]
    assert det.id == res.detections.detections[0].id == "1"
    assert res.detections_3d.header.frame_id == "cam" and res.detections_3d.header.stamp.sec == 3
    u, v = (BOX[0] + BOX[2]) / 2 - 0.5, (BOX[1] + BOX[3]) / 2 - 0.5
    expected = ((u - CX) * FACE_Z / FX, (v - CY) * FACE_Z / FY, FACE_Z)
    got = (det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.center.position.z)
    np.testing.assert_allclose(got, expected, atol=0.01)
    assert det.bbox.size.x == pytest.approx((BOX[2] - BOX[0]) * FACE_Z / FX, abs=0.01)
    wait_for(lambda: h.got["3d"] and h.got["markers"])
    center = h.got["3d"][-1].detections[0].bbox.center.position
    assert center.z == pytest.approx(FACE_Z, abs=0.01)
    markers = h.got["markers"][-1].markers
    assert markers[0].action == Marker.DELETEALL and markers[1].type == Marker.CUBE


def test_no_depth_for_the_stamp_is_reported_not_failed(depth_harness):
    h = depth_harness
    _send_depth(h, 3)
    res = h.call(image=frame(sec=9))
    assert res.success
    assert len(res.detections.detections) == 1 and len(res.detections_3d.detections) == 0
    assert "3D: no depth frame" in res.message


def test_standing_query_detections_keep_one_track_id(depth_harness):
    h = depth_harness
    assert h.node.set_parameters([Parameter("standing_query", value="cup"),
                                  Parameter("max_rate_hz", value=50.0)])[0].successful
    for sec in range(10, 16):
        count = len(h.got["2d"])
        h.send_frame(frame(sec=sec))
        wait_for(lambda: len(h.got["2d"]) > count)
    ids = [m.detections[0].id for m in h.got["2d"]]
    assert ids[0] == ""  # confirmed on its second sighting
    assert len(set(ids[1:])) == 1 and ids[1].isdigit()
    # a service answer keeps the region index
    assert h.call(image=frame(sec=30)).detections.detections[0].id == "1"


@pytest.mark.parametrize("overrides, message", [
    ([Parameter("depth_topic", value="depth")], "camera_info_topic"),
    ([Parameter("camera_info_topic", value="info")], "depth_topic")])
def test_depth_parameters_go_together(fake, overrides, message):
    assert_startup_error(fake, [Parameter("warmup", value=False), *overrides], message)
