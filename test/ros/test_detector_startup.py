"""Start-up of the detector: params files under a namespace, errors naming what failed, warm-up.

In-process with the fake pipeline of ``node_harness`` (rcl parses ``--params-file`` and the
``__ns`` remap exactly as for a node process); the model-loading errors use paths that do not
exist, so no model is loaded.
"""
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")

from rclpy.parameter import Parameter  # noqa: E402

from node_harness import FakePipeline, Harness  # noqa: E402
from vlxseek_ros import detector_node, startup  # noqa: E402
from vlxseek_ros.parameters import NODE_PARAMETERS  # noqa: E402

YAML_FILE = Path(__file__).resolve().parents[2] / "config" / "detector.yaml"


def _node_with_args(tmp_path, args, **kwargs):
    """A plain node (fake pipeline) in a context initialised with ``--ros-args args``."""
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", *args])
    try:
        node = detector_node.DetectorNode(pipeline=FakePipeline(), context=context, **kwargs)
    except Exception:
        rclpy.try_shutdown(context=context)
        raise
    return context, node


def _close(context, node):
    node.destroy_node()
    rclpy.try_shutdown(context=context)


# ------------------------------------------------------------------ params file, any namespace

def test_shipped_yaml_applies_to_a_node_in_a_namespace():
    """rcl hands every key of config/detector.yaml to /robot1/vlxseek_detector (key /**)."""
    listed = yaml.safe_load(YAML_FILE.read_text())["/**"]["ros__parameters"]
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-r", "__ns:=/robot1",
                                      "--params-file", str(YAML_FILE)])
    try:
        probe = rclpy.create_node("vlxseek_detector", context=context,
                                  automatically_declare_parameters_from_overrides=True)
        assert probe.get_fully_qualified_name() == "/robot1/vlxseek_detector"
        got = {name: probe.get_parameter(name).value for name in listed}
        assert got == listed
        probe.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("key, applies", [("/**", True), ("vlxseek_detector", False)])
def test_detector_in_a_namespace_gets_the_yaml_values(tmp_path, key, applies):
    """The node under -r __ns:=/robot1 gets a /**-keyed file's values; a name-keyed file (the
    old layout) silently does not apply there, which is why the shipped file uses /**."""
    values = {"max_rate_hz": 2.5, "busy_policy": "reject", "max_new_tokens": 77,
              "standing_query": "person", "warmup": False, "stale_frame_s": 9.0}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({key: {"ros__parameters": values}}))
    context, node = _node_with_args(
        tmp_path, ["-r", "__ns:=/robot1", "--params-file", str(path)],
        parameter_overrides=[Parameter("warmup", value=False)])
    try:
        assert node.get_fully_qualified_name() == "/robot1/vlxseek_detector"
        got = {name: node.get_parameter(name).value for name in values}
        expected = values if applies else {n: NODE_PARAMETERS[n].default for n in values}
        assert got == {**expected, "warmup": False}
    finally:
        _close(context, node)


# ------------------------------------------------------------------ errors name the component

def _params(**overrides):
    params = {name: spec.default for name, spec in NODE_PARAMETERS.items()}
    params.update({"device": "cpu", **overrides})
    return params


def test_failing_proposal_model_is_named(tmp_path):
    missing = tmp_path / "no_detector_here"
    with pytest.raises(startup.StartupError) as info:
        startup.load_pipeline(_params(model_path=str(tmp_path / "model"),
                                      proposal_model=str(missing)))
    message = str(info.value)
    assert f"proposal model proposal_model='{missing}'" in message
    assert "model_path" not in message  # the VLM was not what failed


def test_failing_vlm_checkpoint_is_named(tmp_path):
    missing = tmp_path / "no_model_here"
    with pytest.raises(startup.StartupError) as info:
        startup.load_pipeline(_params(model_path=str(missing), proposal_source="none"))
    assert f"VLM-FO1 checkpoint model_path='{missing}'" in str(info.value)
    assert "proposal_model" not in str(info.value)


@pytest.mark.parametrize("overrides, needle", [
    (dict(model_path=""), "parameter 'model_path' is empty"),
    (dict(model_path="/m", dtype="float8"), "parameter dtype='float8'"),
    (dict(model_path="/m", proposal_source="yolo"), "parameter proposal_source='yolo'"),
    (dict(model_path="/m", device="tpu"), "parameter device='tpu'"),
])
def test_bad_parameters_are_named_before_any_model_loads(overrides, needle):
    with pytest.raises(startup.StartupError, match=needle):
        startup.load_pipeline(_params(**overrides))


def test_node_start_up_error_names_the_parameter(tmp_path):
    with pytest.raises(startup.StartupError, match="invalid parameter 'busy_timeout_s'"):
        _node_with_args(tmp_path, ["-p", "busy_timeout_s:=-1.0"])


# ------------------------------------------------------------------ warm-up

def test_warmup_runs_one_inference_before_serving(fake):
    harness = Harness(fake, overrides=[Parameter("warmup", value=True)])
    try:
        assert len(fake.calls) == 1  # before any call: the synthetic frame
        shape, text, task, max_new_tokens = fake.calls[0]
        assert shape == (*startup.WARMUP_SIZE, 3) and task == "detect"
        assert max_new_tokens == startup.WARMUP_TOKENS
        assert fake.inputs[0]["boxes"].shape == (1, 4)  # the VLM runs whatever the proposals
        warmup_ms = harness.node.status()["warmup_ms"]
        assert isinstance(warmup_ms, float) and warmup_ms >= 0.0
        assert harness.call().success is False  # no frame yet: the warm-up frame is not one
        assert harness.node.status()["frames_received"] == 0
    finally:
        harness.close()


def test_without_warmup_nothing_runs(harness, fake):
    assert fake.calls == []
    assert harness.node.status()["warmup_ms"] is None


def test_failing_warmup_is_a_startup_error(tmp_path):
    fake = FakePipeline()
    fake.error = RuntimeError("no kernel image is available")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(startup.StartupError, match="warm-up inference failed.*no kernel"):
            detector_node.DetectorNode(pipeline=fake, context=context)
    finally:
        rclpy.try_shutdown(context=context)


def test_warm_up_runs_the_builtin_detector_too():
    class WithDetector(FakePipeline):
        proposal_source = object()

        def __init__(self):
            super().__init__()
            self.proposed = []

        def propose(self, image):
            self.proposed.append(image.shape)

    pipe = WithDetector()
    assert startup.warm_up(pipe, max_new_tokens=1024) >= 0.0
    assert pipe.proposed == [(*startup.WARMUP_SIZE, 3)] and len(pipe.calls) == 1
