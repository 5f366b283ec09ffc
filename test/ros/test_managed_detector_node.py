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


class FamilyPipeline(FakePipeline):
    """A fake pipeline whose model family has only the VLX-Seek 1.5 tasks."""

    def __init__(self):
        super().__init__()
        from vlxseek_core.families.vlx_seek_1_5.family import FAMILY

        self.tasks = dict(FAMILY.tasks)


def _query_request(task):
    req = QueryRegions.Request()
    req.query, req.task, req.image = "cup", task, frame()
    return req


def test_requests_before_configure_are_answered_not_configured():
    """Whatever the task (a made-up one too), a request that reaches the node without a model
    is refused for that reason, not checked against tasks no model has yet; once configured
    the task is checked against the loaded family's, and a valid request is refused as not
    active; after cleanup it is "not configured" again."""
    from vlxseek_core.families.vlx_seek_1_5.family import FAMILY

    m = Managed(FamilyPipeline())
    try:
        node = m.node
        for task in ("detect", "bogus", "ground"):
            res = node._on_query(_query_request(task), QueryRegions.Response())
            assert not res.success
            assert res.message.startswith("busy: the node is not configured"), res.message
        assert node.trigger_configure() == OK
        res = node._on_query(_query_request("ground"), QueryRegions.Response())
        assert res.message == "unknown task 'ground'; known tasks: " + ", ".join(FAMILY.tasks)
        res = node._on_query(_query_request("detect"), QueryRegions.Response())
        assert not res.success and res.message == "busy: the node is not active; activate it"
        assert node.trigger_cleanup() == OK
        res = node._on_query(_query_request("detect"), QueryRegions.Response())
        assert res.message.startswith("busy: the node is not configured")
        # the model only ran the warm-up of configure, never a refused request
        assert [c for c in node._given_pipeline.calls if c[1] == "cup"] == []
    finally:
        m.close()


def test_standing_task_is_checked_against_the_family_once_loaded(monkeypatch):
    """Before configure only vlxseek_core's task names can be checked; configure then refuses
    a standing_task the loaded family has no template for, listing that family's tasks."""
    from vlxseek_core.families.vlx_seek_1_5.family import FAMILY

    m = Managed(FamilyPipeline(), [Parameter("standing_task", value="ground")])
    try:
        node = m.node
        errors = []
        logger = node.get_logger()
        monkeypatch.setattr(logger, "error", errors.append)
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert m.state() == "unconfigured" and node._pipe is None
        (error,) = errors
        assert f"known tasks: {', '.join(FAMILY.tasks)} (model" in error
        assert "standing_task 'ground' is unknown" in error
        # made-up names are refused before configure, saying the family check comes later
        result = node.set_parameters([Parameter("standing_task", value="bogus")])[0]
        assert not result.successful and "configure checks it" in result.reason
        assert node.set_parameters([Parameter("standing_task", value="vqa")])[0].successful
        assert node.trigger_configure() == OK
        result = node.set_parameters([Parameter("standing_task", value="ground")])[0]
        assert not result.successful
        assert result.reason == ("standing_task 'ground' is unknown; known tasks: "
                                 + ", ".join(FAMILY.tasks))
    finally:
        m.close()
