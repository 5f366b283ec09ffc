"""The compressed debug image: JPEG on ``~/debug_image/compressed`` (issue 10 §8)."""
import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
cv2 = pytest.importorskip("cv2")

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402

from node_harness import NS, wait_for  # noqa: E402
from vlxseek_ros.image_conversion import JPEG_FORMAT, rgb_to_compressed_msg  # noqa: E402


def test_rgb_to_compressed_msg_round_trip():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30] = (255, 0, 0)  # red left half
    rgb[:, 30:] = (0, 0, 255)  # blue right half
    msg = rgb_to_compressed_msg(rgb, None, quality=95)
    assert msg.format == JPEG_FORMAT
    decoded = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (40, 60, 3)
    back = decoded[..., ::-1].astype(int)  # BGR in the JPEG -> RGB
    assert np.abs(back[20, 10] - [255, 0, 0]).max() < 20
    assert np.abs(back[20, 50] - [0, 0, 255]).max() < 20


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)])
def test_rgb_to_compressed_msg_rejects_bad_arrays(bad):
    with pytest.raises(ValueError):
        rgb_to_compressed_msg(bad)


def test_quality_is_checked():
    with pytest.raises(ValueError, match="quality"):
        rgb_to_compressed_msg(np.zeros((4, 4, 3), np.uint8), quality=0)


def test_node_publishes_jpeg_only_for_subscribers(harness):
    from node_harness import frame

    got, lock = [], threading.Lock()

    def keep(msg):
        with lock:
            got.append(msg)

    sub = harness.peer.create_subscription(
        CompressedImage, f"{NS}/vlxseek_detector/debug_image/compressed", keep,
        QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    wait_for(lambda: harness.node._debug_jpeg_pub.get_subscription_count() > 0)
    image = frame(sec=7)
    res = harness.call("cup", image=image)
    assert res.success, res.message
    wait_for(lambda: len(got) > 0)
    msg = got[0]
    assert msg.format == JPEG_FORMAT
    assert msg.header.stamp.sec == 7 and msg.header.frame_id == "cam"
    decoded = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (48, 64, 3)
    harness.peer.destroy_subscription(sub)
