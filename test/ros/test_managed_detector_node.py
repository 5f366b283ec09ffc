"""In-process tests of the managed (lifecycle) vlxseek_detector with a fake pipeline.

Model loaded on configure, interfaces only while active, model kept on deactivate, freed on
cleanup, failed configure stays unconfigured, node-side autostart.
"""
import threading

import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from node_harness import FakePipeline, Harness, frame, wait_for  # noqa: E402
from vlxseek_ros.managed_detector_node import ManagedDetectorNode  # noqa: E402
from vlxseek_ros.srv import QueryRegions  # noqa: E402

NS = "/managed_test"
SERVICE = f"{NS}/vlxseek_detector/query_regions"
OK = TransitionCallbackReturn.SUCCESS


class Managed(Harness):
    """The managed node around a fake pipeline (``close`` as the plain node's harness)."""

    def __init__(self, pipeline, overrides=()):  # not super().__init__: that starts a plain node
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = ManagedDetectorNode(pipeline=pipeline, context=self.context, namespace=NS,
                                        parameter_overrides=list(overrides))
        self.peer = rclpy.create_node("managed_peer", namespace=NS, context=self.context)
        self.client = self.peer.create_client(QueryRegions, SERVICE)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def state(self):
        return self.node._state_machine.current_state[1]

    def serving(self, timeout=3.0):
        return self.client.wait_for_service(timeout_sec=timeout)

    def call(self):
        req = QueryRegions.Request()
        req.query, req.image = "cup", frame()
        future = self.client.call_async(req)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        assert done.wait(20)
        return future.result()


@pytest.fixture
def managed():
    m = Managed(FakePipeline())
    yield m
    m.close()


def test_transitions_and_service_availability_per_state(managed):
    node = managed.node
    fake = node._given_pipeline
    assert managed.state() == "unconfigured" and node._pipe is None
    assert not managed.serving(timeout=0.5)
    assert node.trigger_configure() == OK and managed.state() == "inactive"
    assert node._pipe is fake and not managed.serving(timeout=0.5)
    assert node.trigger_activate() == OK and managed.state() == "active"
    assert managed.serving() and managed.call().success
    assert node.trigger_deactivate() == OK and managed.state() == "inactive"
    assert node._pipe is fake                      # the model stays loaded
    assert not [p for p in node.publishers if p.topic_name.endswith("/detections")]
    assert not [s for s in node.services if s.srv_name.endswith("/query_regions")]
    wait_for(lambda: managed.peer.count_publishers(f"{NS}/vlxseek_detector/detections") == 0)
    assert node.trigger_activate() == OK
    assert managed.serving() and managed.call().success
    assert node.trigger_deactivate() == OK
    assert node.trigger_cleanup() == OK and managed.state() == "unconfigured"
    assert node._pipe is None
    assert node.status()["requests_ok"] == 2


def test_failed_configure_stays_unconfigured():
    m = Managed(None, [Parameter("model_path", value="/nonexistent/vlm-fo1")])
    try:
        assert m.node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert m.state() == "unconfigured" and m.node._pipe is None
        assert not m.serving(timeout=0.5)
    finally:
        m.close()


def test_autostart_configures_and_activates():
    m = Managed(FakePipeline(), [Parameter("autostart", value=True)])
    try:
        assert m.state() == "active"
        assert m.serving() and m.call().success
    finally:
        m.close()
