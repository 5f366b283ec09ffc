"""The committed trained scene model behind the real node process (issue 9 §8).

A held-out scene (never seen in training) is published on the node's image topic; the
``~/query_regions`` service is asked for "the red circle" with the scene's candidate boxes as
``regions``; the returned detection must overlap the ground-truth box with IoU ≥ 0.5. An absent
category must come back as ``success=true``, no detections and ``absent: …`` in ``message``.
"""
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from node_harness import node_process_client  # noqa: E402
from vlxseek_core.errors import CheckpointError  # noqa: E402
from vlxseek_core.models import held_out_example, small_scene_model_dir  # noqa: E402
from vlxseek_ros.conversions import xyxy_to_bbox  # noqa: E402
from vlxseek_ros.image_conversion import rgb_to_image_msg  # noqa: E402
from vlxseek_ros.srv import QueryRegions  # noqa: E402

try:
    small_scene_model_dir()
except CheckpointError as exc:  # issue 9 is open until a trained model meets its targets
    pytest.skip(f"{exc}; the trained scene model is not committed yet", allow_module_level=True)

NS = "/vlxseek_trained"
NODE = f"{NS}/vlxseek_detector"
IMAGE_TOPIC = f"{NS}/camera/image_raw"


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    model = small_scene_model_dir()
    log_path = tmp_path_factory.mktemp("trained_node") / "node.log"
    ros_args = ["-r", f"__ns:={NS}", "-r", f"image:={IMAGE_TOPIC}",
                "-p", f"model_path:={model}", "-p", "proposal_source:=none",
                "-p", "device:=cpu", "-p", "max_new_tokens:=48"]
    with node_process_client(ros_args, log_path, f"{NODE}/query_regions",
                             "vlxseek_trained_client", 150) as (client_node, service, _):
        publisher = client_node.create_publisher(
            Image, IMAGE_TOPIC, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        yield service, publisher


def _call(service, query, task, boxes):
    req = QueryRegions.Request()
    req.query, req.task = query, task
    req.regions = [xyxy_to_bbox([float(v) for v in b]) for b in boxes]
    future = service.call_async(req)
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    assert done.wait(90), "no answer within 90 s"
    return future.result()


def _publish(publisher, scene):
    header = Header()
    header.stamp.sec, header.frame_id = 1_700_000_000, "camera_optical"
    msg = rgb_to_image_msg(scene.image, header)
    deadline = time.monotonic() + 30
    while publisher.get_subscription_count() == 0:
        assert time.monotonic() < deadline, "the node never subscribed to the image topic"
        time.sleep(0.05)
    for _ in range(3):
        publisher.publish(msg)
        time.sleep(0.2)


def test_refer_the_red_circle_in_a_published_held_out_scene(node):
    service, publisher = node
    scene, boxes, target = held_out_example("red circle")
    _publish(publisher, scene)
    res = _call(service, "the red circle", "refer", boxes)
    assert res.success, res.message
    dets = res.detections.detections
    assert len(dets) >= 1, (res.answer, res.message)
    d = dets[0]
    got = [d.bbox.center.position.x - d.bbox.size_x / 2, d.bbox.center.position.y
           - d.bbox.size_y / 2, d.bbox.center.position.x + d.bbox.size_x / 2,
           d.bbox.center.position.y + d.bbox.size_y / 2]
    assert _iou(got, boxes[target]) >= 0.5, (res.answer, got, boxes[target])


def test_absent_category_is_answered_absent(node):
    service, publisher = node
    scene, boxes, _ = held_out_example("red circle")
    _publish(publisher, scene)
    absent = scene.absent_categories[0]
    res = _call(service, absent, "detect", boxes)
    assert res.success, res.message
    assert len(res.detections.detections) == 0, res.answer
    assert "absent" in res.message and absent in res.message, res.message
