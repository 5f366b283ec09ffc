"""Static tests of launch/detector.launch.py and config/detector.yaml against the parameters.

``launch`` and ``launch_ros`` are not on PyPI, so the launch file is loaded with small stand-ins
for the classes it uses (recording their arguments), and its two OpaqueFunctions are run as
``ros2 launch`` would: the argument check before the DeclareLaunchArgument actions, the node
builder after them. The real launch is exercised by test_detector_launch.py where launch_testing
is installed.
"""
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

from vlxseek_ros import parameters as P

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "detector.launch.py"
YAML_FILE = REPO / "config" / "detector.yaml"


class _Recorded:
    """Stand-in for a launch class: keeps its positional and keyword arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class DeclareLaunchArgument(_Recorded):
    def __init__(self, name, default_value=None, description=""):
        super().__init__(name, default_value=default_value, description=description)
        self.name, self.default_value, self.description = name, default_value, description


class OpaqueFunction(_Recorded):
    def __init__(self, function, args=()):
        super().__init__(function=function, args=args)
        self.function, self.fargs = function, list(args)


class LaunchDescription(_Recorded):
    def __init__(self, entities):
        super().__init__(entities)
        self.entities = list(entities)


class Node(_Recorded):
    pass


class LifecycleNode(_Recorded):
    pass


class ParameterValue(_Recorded):
    def __init__(self, value, value_type=None):
        super().__init__(value, value_type=value_type)
        self.value, self.value_type = value, value_type


STUBS = {
    "launch": dict(LaunchDescription=LaunchDescription),
    "launch.actions": dict(DeclareLaunchArgument=DeclareLaunchArgument,
                           OpaqueFunction=OpaqueFunction),
    "launch.conditions": dict(IfCondition=_Recorded),
    "launch.substitutions": dict(LaunchConfiguration=_Recorded,
                                 PathJoinSubstitution=_Recorded),
    "launch_ros.actions": dict(LifecycleNode=LifecycleNode, Node=Node),
    "launch_ros.parameter_descriptions": dict(ParameterValue=ParameterValue),
    "launch_ros.substitutions": dict(FindPackageShare=_Recorded),
}


@pytest.fixture
def description(monkeypatch):
    """The LaunchDescription of detector.launch.py, built with the stand-ins."""
    for name, members in STUBS.items():
        module = types.ModuleType(name)
        module.__dict__.update(members)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "launch_ros", types.ModuleType("launch_ros"))
    spec = importlib.util.spec_from_file_location("detector_launch_under_test", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def declared(description):
    return {e.name: e for e in description.entities if isinstance(e, DeclareLaunchArgument)}


def launch(description, **given):
    """Run the description's actions on a context holding ``given``; returns the new actions.

    Raises:
        RuntimeError: as the launch file raises it (unknown or badly typed argument).
    """
    context = types.SimpleNamespace(launch_configurations=dict(given))
    produced = []
    for entity in description.entities:
        if isinstance(entity, OpaqueFunction):
            produced += entity.function(context, *entity.fargs) or []
        elif isinstance(entity, DeclareLaunchArgument):
            if entity.name not in context.launch_configurations:
                default = entity.default_value
                context.launch_configurations[entity.name] = (
                    default if isinstance(default, str) else str(YAML_FILE))
    return produced


def node_overrides(action):
    """The parameters dict a node action gets after the params file (ParameterValue unwrapped)."""
    parameters = action.kwargs["parameters"]
    assert isinstance(parameters[-1], dict)
    return {k: (v.value if isinstance(v, ParameterValue) else v)
            for k, v in parameters[-1].items()}


# ---------------------------------------------------------------------------- declarations

def test_every_node_parameter_has_an_argument_with_the_nodes_default(description):
    args = declared(description)
    for name, spec in P.NODE_PARAMETERS.items():
        assert name in args, f"node parameter {name} has no launch argument"
        assert args[name].default_value == P.format_default(spec.default), name
        assert spec.description in args[name].description  # shown by --show-args


def test_every_argument_is_documented_and_declared_once(description):
    names = [e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert len(names) == len(set(names))
    assert names == P.launch_argument_names()
    for entity in declared(description).values():
        assert len(entity.description) > 10, entity.name
    assert description.entities[0].function.__name__ == "_check_arguments"  # before the args


def test_launch_arguments_match_what_the_node_declares():
    """The same table as the node's declared parameters (a real node, fake pipeline)."""
    pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
    pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")
    from node_harness import FakePipeline, Harness
    harness = Harness(FakePipeline())
    try:
        node = harness.node
        builtin = {"use_sim_time", "start_type_description_service"}  # rclpy's own
        own = set(node.list_parameters([], 0).names) - builtin
        assert own == set(P.NODE_PARAMETERS)
        for name in own:
            assert node.get_parameter(name).value == P.NODE_PARAMETERS[name].default or \
                name == "warmup"  # the harness turns warm-up off
    finally:
        harness.close()


# ---------------------------------------------------------------------------- unknown arguments

def test_a_misspelled_argument_is_an_error_naming_the_closest_known_one(description):
    with pytest.raises(RuntimeError) as info:
        launch(description, model_path="/m", proposal_modle="/p")
    message = str(info.value)
    assert "'proposal_modle'" in message and "did you mean 'proposal_model'" in message
    assert "--show-args" in message


def test_an_unknown_argument_is_an_error(description):
    with pytest.raises(RuntimeError, match="unknown launch argument 'frobnicate'"):
        launch(description, frobnicate="1")


def test_configurations_that_launch_sets_itself_are_not_arguments(description):
    actions = launch(description, ros_namespace="/robot1", global_params="[]",
                     **{"launch-prefix": "gdb"})
    assert len(actions) == 1


def test_a_badly_typed_argument_is_an_error_naming_it(description):
    with pytest.raises(RuntimeError, match="max_proposals:='many' is not a int"):
        launch(description, max_proposals="many")
    with pytest.raises(RuntimeError, match="warmup:='yes' is not a bool"):
        launch(description, warmup="yes")


# ---------------------------------------------------------------------------- node actions

def test_only_given_arguments_override_the_params_file(description):
    actions = launch(description, model_path="/models/x", proposal_model="/p",
                     image_qos_reliable="true", max_rate_hz="2", max_proposals="50",
                     standing_query="true", namespace="robot1")
    (node,) = actions
    assert isinstance(node, Node) and node.kwargs["namespace"] == "robot1"
    assert node.kwargs["parameters"][0] == str(YAML_FILE)
    assert node_overrides(node) == {
        "model_path": "/models/x", "proposal_model": "/p", "image_qos_reliable": True,
        "max_rate_hz": 2.0, "max_proposals": 50, "standing_query": "true"}
    # strings stay strings: launch_ros must not read "true" as a bool
    assert node.kwargs["parameters"][-1]["standing_query"].value_type is str
    assert ("image", "/camera/image_raw") in node.kwargs["remappings"]


def test_nothing_given_passes_no_parameter(description):
    (node,) = launch(description)
    assert node_overrides(node) == {}
    (node,) = launch(description, params_file="")
    assert node.kwargs["parameters"] == [{}]


def test_managed_node_gets_autostart(description):
    (node,) = launch(description, managed="true", model_path="/m")
    assert isinstance(node, LifecycleNode) and "--managed" in node.kwargs["arguments"]
    assert node_overrides(node) == {"model_path": "/m", "autostart": True}
    (node,) = launch(description, managed="true", autostart="false", use_sim_time="true")
    assert node_overrides(node) == {"autostart": False, "use_sim_time": True}


# ---------------------------------------------------------------------------- YAML

def test_yaml_is_keyed_for_any_namespace_and_holds_only_declared_parameters():
    data = yaml.safe_load(YAML_FILE.read_text(encoding="utf-8"))
    assert list(data) == ["/**"]  # applies under namespace:=robot1 too
    listed = data["/**"]["ros__parameters"]
    unknown = set(listed) - set(P.NODE_PARAMETERS)
    assert not unknown, f"config/detector.yaml lists undeclared parameters {unknown}"
    for name, value in listed.items():
        assert type(value) is type(P.NODE_PARAMETERS[name].default), name  # 1.0, not 1


# ---------------------------------------------------------------------------- helpers

def test_parse_launch_value_types():
    assert P.parse_launch_value("warmup", "TRUE", True) is True
    assert P.parse_launch_value("max_rate_hz", "3", 1.0) == 3.0
    assert P.parse_launch_value("standing_query", " a b ", "") == " a b "
    with pytest.raises(ValueError, match="max_new_tokens:='1.5' is not a int"):
        P.parse_launch_value("max_new_tokens", "1.5", 1024)


def test_launch_description_text_shows_limits():
    text = P.launch_description(P.NODE_PARAMETERS["max_proposals"])
    assert "range [1, 100]" in text
    assert "fixed at start-up" in P.launch_description(P.NODE_PARAMETERS["model_path"])
