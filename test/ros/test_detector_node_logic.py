"""In-process tests of the node logic with a throwaway fake pipeline (no model).

They cover what the tiny-model process test cannot provoke: an exception inside inference,
strictly sequential inferences under concurrent service calls and a standing query, threshold
changes applied between inferences, no inference in the image callback, and the debug image
drawn only for subscribers. The fake pipeline and the harness: ``node_harness.py``; the
``fake``/``harness`` fixtures: ``conftest.py``.
"""
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from node_harness import NS, assert_startup_error, frame, wait_for  # noqa: E402
from vlxseek_core.errors import InvalidRequestError  # noqa: E402
from vlxseek_ros import detector_node, serving_interfaces  # noqa: E402


def test_exception_inside_inference_is_reported_and_node_keeps_serving(harness, fake):
    fake.error = RuntimeError("CUDA out of memory (simulated)")
    res = harness.call(image=frame())
    assert not res.success
    assert res.message == "inference failed: RuntimeError: CUDA out of memory (simulated)"
    fake.error = None
    res = harness.call(image=frame())
    assert res.success and [d.id for d in res.detections.detections] == ["1"]
    assert res.header.frame_id == "cam" and res.header.stamp.sec == 1


def test_core_request_errors_become_failed_responses(harness, fake):
    fake.error = InvalidRequestError("region index 7 out of range")
    res = harness.call(image=frame())
    assert not res.success and res.message == "region index 7 out of range"


def test_frames_do_not_trigger_inference_without_standing_query(harness, fake):
    for k in range(5):
        harness.send_frame(frame(sec=k))
    # depth 1: the node may skip frames, but it ends up holding the newest one
    wait_for(lambda: harness.node._frames.newest_frame() is not None
             and harness.node._frames.newest_frame().msg.header.stamp.sec == 4)
    time.sleep(0.3)
    assert fake.calls == []
    # the newest frame is the one answered
    res = harness.call()
    assert res.success and res.header.stamp.sec == 4


def test_inferences_are_sequential_under_concurrent_calls_and_standing_query(harness, fake):
    fake.delay_s = 0.2
    assert harness.node.set_parameters([Parameter("standing_query", value="person"),
                                        Parameter("max_rate_hz", value=50.0)])[0].successful
    results = []

    def caller():
        results.append(harness.call(image=frame(), timeout=30).success)
    callers = [threading.Thread(target=caller) for _ in range(3)]
    for t in callers:
        t.start()
    for k in range(5):
        harness.send_frame(frame(sec=10 + k))
        time.sleep(0.1)
    for t in callers:
        t.join(timeout=30)
    wait_for(lambda: any(c[1] == "person" for c in fake.calls))
    assert results == [True, True, True]
    assert fake.max_active == 1


def test_threshold_changes_are_applied_between_inferences(harness, fake):
    fake.delay_s = 0.5
    t = threading.Thread(target=harness.call, kwargs={"image": frame()})
    t.start()
    wait_for(lambda: fake.active == 1)
    result = harness.node.set_parameters([Parameter("proposal_min_score", value=0.6),
                                          Parameter("max_proposals", value=7)])
    assert all(r.successful for r in result)
    t.join(timeout=10)
    # not applied during the running inference ...
    assert [e[0] for e in fake.events] == ["query"]
    harness.call(image=frame())
    # ... but before the next one, in one call
    assert fake.events[1:] == [("thresholds", {"min_score": 0.6, "max_proposals": 7}),
                               ("query", "cup")]


def test_parameter_validation(harness, fake):
    node = harness.node
    bad = node.set_parameters([Parameter("standing_task", value="ocr")])[0]
    assert not bad.successful and "needs regions" in bad.reason
    assert not node.set_parameters([Parameter("max_rate_hz", value=0.0)])[0].successful
    assert not node.set_parameters([Parameter("max_proposals", value=101)])[0].successful
    assert not node.set_parameters([Parameter("device", value="cuda")])[0].successful
    ok = node.set_parameters([Parameter("max_new_tokens", value=17)])[0]
    assert ok.successful
    harness.call(image=frame())
    assert fake.calls[-1][3] == 17


def test_standing_task_without_text(harness, fake):
    node = harness.node
    assert node.set_parameters([Parameter("standing_task", value="detect_all"),
                                Parameter("max_rate_hz", value=20.0)])[0].successful
    harness.send_frame(frame(sec=3))
    wait_for(lambda: any(c[2] == "detect_all" for c in fake.calls))


def test_debug_image_drawn_only_for_subscribers(harness, fake, monkeypatch):
    drawn = []
    real_draw = serving_interfaces.draw_result
    monkeypatch.setattr(serving_interfaces, "draw_result",
                        lambda rgb, result: drawn.append(1) or real_draw(rgb, result))
    assert harness.call(image=frame()).success
    assert drawn == []
    got = []
    harness.peer.create_subscription(Image, f"{NS}/vlxseek_detector/debug_image", got.append,
                                     QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    wait_for(lambda: harness.node._debug_pub.get_subscription_count() > 0)
    assert harness.call(image=frame()).success
    wait_for(lambda: len(got) == 1)
    assert drawn == [1] and (got[0].height, got[0].width) == (48, 64)
    harness.node.set_parameters([Parameter("publish_debug_image", value=False)])
    assert harness.call(image=frame()).success
    assert drawn == [1]


def test_detections_published_for_answered_queries_only(harness, fake):
    got = []
    harness.peer.create_subscription(Detection2DArray, f"{NS}/vlxseek_detector/detections",
                                     got.append, 10)
    wait_for(lambda: harness.node._detections_pub.get_subscription_count() > 0)
    assert not harness.call("").success
    assert harness.call(image=frame(sec=9)).success
    wait_for(lambda: len(got) == 1)
    time.sleep(0.2)
    assert len(got) == 1 and got[0].header.stamp.sec == 9


@pytest.mark.parametrize("overrides, needle", [
    ([Parameter("standing_task", value="caption")], "needs regions"),
    ([Parameter("standing_task", value="nope")], "unknown"),
    ([Parameter("max_proposals", value=500)], "invalid parameter 'max_proposals'"),
    ([Parameter("max_rate_hz", value="fast")], "invalid parameter 'max_rate_hz'"),
])
def test_bad_startup_parameters_raise_startup_error(fake, overrides, needle):
    assert_startup_error(fake, overrides, needle)


def test_empty_model_path_is_a_startup_error():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(detector_node.StartupError, match="model_path' is empty"):
            detector_node.DetectorNode(context=context, namespace=NS)
    finally:
        rclpy.try_shutdown(context=context)


def test_limit_malloc_arenas_respects_user_setting(monkeypatch):
    from vlxseek_ros.detector_node import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert limit_malloc_arenas() is True  # glibc on this machine


def test_config_yaml_lists_every_parameter_with_its_default():
    import yaml

    path = Path(__file__).resolve().parents[2] / "config" / "detector.yaml"
    with open(path, encoding="utf-8") as fh:
        listed = yaml.safe_load(fh)["/**"]["ros__parameters"]  # any node name and namespace
    defaults = {name: default for name, (default, _) in detector_node.PARAMETERS.items()}
    assert listed == defaults
    assert all(type(listed[n]) is type(defaults[n]) for n in defaults)  # 1.0, not 1


def _package_imports(module_level_only):
    """vlxseek_ros module name -> the vlxseek_ros modules its source imports (all of them, or
    only those imported at module level: not inside a function or class)."""
    import ast

    package = Path(detector_node.__file__).parent
    names = {path.stem for path in package.glob("*.py")}
    graph = {}
    for path in package.glob("*.py"):
        found = set()
        todo = list(ast.parse(path.read_text(encoding="utf-8")).body)
        while todo:
            node = todo.pop()
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] == "vlxseek_ros":
                    found.update(parts[1:2] if len(parts) > 1 else [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[1] for a in node.names
                             if a.name.startswith("vlxseek_ros."))
            if not (module_level_only and isinstance(
                    node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))):
                todo.extend(ast.iter_child_nodes(node))
        graph[path.stem] = found & names - {path.stem}
    return graph


def test_imports_are_one_way():
    """Node modules -> serving -> its parts; nothing imports a node module (the --managed
    dispatch of detector_node.main imports the managed node inside the function) and the
    module-level import graph of vlxseek_ros has no cycle."""
    nodes = {"detector_node", "managed_detector_node"}
    everywhere = _package_imports(module_level_only=False)
    for name, imported in everywhere.items():
        if name not in nodes:
            assert not imported & nodes, f"{name} imports {imported & nodes}"
    assert "detector_node" not in everywhere["managed_detector_node"], \
        "managed_detector_node imports detector_node (which imports it back in main)"
    graph = _package_imports(module_level_only=True)
    assert not graph["detector_node"] & nodes, "detector_node imports a node module"
    assert "serving" in graph["detector_node"] and "serving" in graph["managed_detector_node"]
    done, path = set(), []

    def visit(name):
        assert name not in path, f"import cycle: {' -> '.join(path[path.index(name):] + [name])}"
        if name in done:
            return
        path.append(name)
        for other in sorted(graph[name]):
            visit(other)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


class _LongDecoder:
    """A pipeline whose decoding runs until its progress is cancelled (as VLXSeek's does)."""

    def __init__(self):
        from node_harness import FakePipeline
        self.inner = FakePipeline()

    def set_proposal_thresholds(self, **kwargs):
        self.inner.set_proposal_thresholds(**kwargs)

    def query(self, image, text, task="detect", boxes=None, max_new_tokens=None,
              region_indices=None, proposals=None, progress=None):
        assert progress is not None  # the node always gives one
        deadline = time.monotonic() + 20
        while not progress.cancel.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        result = self.inner.query(image, text, task, boxes, max_new_tokens, region_indices,
                                  proposals)
        result.cancelled, result.num_generated_tokens = progress.cancel.is_set(), 3
        return result


def test_shutdown_stops_decoding_and_the_running_call_is_answered_busy():
    from node_harness import Harness

    h = Harness(_LongDecoder())
    try:
        answers = []
        caller = threading.Thread(target=lambda: answers.append(h.call(image=frame(),
                                                                       timeout=30)))
        caller.start()
        wait_for(h.node.inference_in_flight)
        start = time.monotonic()
        h.node.begin_shutdown()
        caller.join(10)
        assert answers and not answers[0].success
        assert answers[0].message.startswith("busy: the node is shutting down")
        assert "stopped after 3 tokens" in answers[0].message
        assert time.monotonic() - start < 2.0
        assert not h.node.inference_in_flight()
    finally:
        h.close()
