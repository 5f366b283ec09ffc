"""The node's health reports (in-process, fake pipeline): ~/status's device and dropped frames,
and /diagnostics with its levels (the level logic alone: test_health_logic.py)."""
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")
pytest.importorskip("diagnostic_msgs.msg", reason="pip install ros-diagnostic-msgs")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from node_harness import Harness, frame, wait_for  # noqa: E402


@pytest.fixture
def node(fake):
    fake.device = "cuda:0"  # as VLXSeek.device reports the weights' device
    h = Harness(fake, overrides=[Parameter("status_period_s", value=0.1)])
    yield h
    h.close()


def send(harness, sec):
    harness.send_frame(frame(sec=sec))
    wait_for(lambda: harness.node._frames.newest_frame() is not None
             and harness.node._frames.newest_frame().msg.header.stamp.sec == sec)


def test_status_reports_the_device_in_use_not_auto(node):
    assert node.node.get_parameter("device").value == "auto"
    assert node.node.status()["device"] == "cuda:0"


def test_idle_node_reports_no_dropped_frames(node):
    for sec in range(1, 5):
        send(node, sec)
    status = node.node.status()
    assert status["frames_received"] == 4 and status["frames_dropped"] == 0


def _call_in_thread(harness, **fields):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("res", harness.call(**fields)))
    thread.start()
    return thread, result


def test_frames_going_by_while_a_caller_waits_for_the_model_are_dropped(node, fake):
    fake.delay_s = 2.0
    holder, _ = _call_in_thread(node, image=frame(sec=99))   # holds the model for 2 s
    wait_for(lambda: fake.active == 1)
    send(node, 1)
    waiter, result = _call_in_thread(node)                   # takes frame 1, waits for the model
    wait_for(lambda: node.node._frames.newest_frame().used)
    send(node, 2)
    send(node, 3)                                            # replaces 2 while the call waits
    holder.join(10)
    waiter.join(10)
    assert result["res"].success and result["res"].header.stamp.sec == 1
    assert node.node.status()["frames_dropped"] == 1          # frame 2 (1 was used)


def test_frames_going_by_while_the_standing_query_is_behind_are_dropped(node, fake):
    node.node.set_parameters([Parameter("max_rate_hz", value=50.0)])
    fake.delay_s = 2.0
    holder, _ = _call_in_thread(node, image=frame(sec=99))
    wait_for(lambda: fake.active == 1)
    node.node.set_parameters([Parameter("standing_query", value="cup")])
    send(node, 1)
    wait_for(lambda: node.node._demand._standing_behind)      # its tick found the model busy
    send(node, 2)
    send(node, 3)
    holder.join(10)
    assert node.node.status()["frames_dropped"] == 2


def test_diagnostics_published_with_levels(node, fake):
    got = []
    node.peer.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    wait_for(lambda: any(a.status[0].name == "vlxseek_detector: inference" for a in got))
    status = got[-1].status[0]
    assert status.level == DiagnosticStatus.OK and status.hardware_id == "cuda:0"
    values = {kv.key: kv.value for kv in status.values}
    assert values["device"] == "cuda:0" and values["frames_dropped"] == "0"
    assert "consecutive_failures" in values and "requests_ok" in values
    node.node.set_parameters([Parameter("error_after_failures", value=2)])
    fake.error = RuntimeError("CUDA error: device-side assert")
    for _ in range(2):
        assert not node.call(image=frame()).success
    n = len(got)
    wait_for(lambda: len(got) > n and got[-1].status[0].level == DiagnosticStatus.ERROR)
    assert "2 consecutive inference failures" in got[-1].status[0].message
    fake.error = None
    assert node.call(image=frame()).success
    n = len(got)
    wait_for(lambda: len(got) > n and got[-1].status[0].level == DiagnosticStatus.OK)
    time.sleep(0.05)
