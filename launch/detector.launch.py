r"""Launch the vlxseek_detector node (and optionally rviz2 showing its debug image).

Example::

    ros2 launch vlxseek_ros detector.launch.py model_path:=/models/vlm-fo1 \
        image_topic:=/camera/color/image_raw device:=cuda use_rviz:=true

Proposals from another detector (vision_msgs/Detection2DArray stamped like the images)::

    ros2 launch vlxseek_ros detector.launch.py model_path:=/models/vlm-fo1 \
        proposal_source:=topic proposals_topic:=/detector/detections

Every node parameter is also a launch argument (one table, ``vlxseek_ros.parameters``; list
them with ``--show-args``). Only the arguments given on the command line are passed to the node,
on top of ``params_file``: the others keep the file's value, else the node's default (which is
the argument's default shown by ``--show-args``). An unknown or misspelled argument stops the
launch with an error naming it and the closest known one.

``managed:=true`` starts the managed (lifecycle) variant instead; with ``autostart:=true`` (the
default) the node configures and activates itself (node-side parameter ``autostart``, portable
across distros); with ``autostart:=false`` drive it with ``ros2 lifecycle set`` or a lifecycle
manager.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from vlxseek_ros.parameters import (LAUNCH_ONLY_ARGUMENTS, NODE_NAME, NODE_PARAMETERS,
                                    format_default, launch_argument_names, launch_description,
                                    parse_launch_value, unknown_arguments_message)


def _share(*parts):
    return PathJoinSubstitution([FindPackageShare("vlxseek_ros"), *parts])


def _declare_arguments():
    """One DeclareLaunchArgument per launch-only argument and per node parameter."""
    declared = [DeclareLaunchArgument(
        name, default_value=_share("config", "detector.yaml") if default is None else default,
        description=doc) for name, default, doc in LAUNCH_ONLY_ARGUMENTS]
    declared += [DeclareLaunchArgument(name, default_value=format_default(spec.default),
                                       description=launch_description(spec))
                 for name, spec in NODE_PARAMETERS.items()]
    return declared


def _check_arguments(context, given):
    """Refuse unknown arguments; remember which ones were given (runs before the declarations).

    The launch configurations that exist before the DeclareLaunchArgument actions run are the
    arguments given to this file (plus, unless the including file uses
    GroupAction(forwarding=False), those of a launch file that includes it).
    """
    names = set(context.launch_configurations)
    problem = unknown_arguments_message(names, launch_argument_names())
    if problem:
        raise RuntimeError(problem)
    given.clear()
    given.update(names)
    return []


def _typed(context, name, default):
    try:
        return parse_launch_value(name, context.launch_configurations[name], default)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None


def _node_parameters(context, given, managed):
    """params_file, then the parameters given as arguments, typed like the node's parameters.

    Arguments not given are not passed, so params_file (else the node's default) decides them.
    """
    overrides = {}
    for name, spec in NODE_PARAMETERS.items():
        if name in given:
            value = _typed(context, name, spec.default)
            # a string stays a string ("1", "true"), not YAML-typed by launch_ros
            overrides[name] = (ParameterValue(value, value_type=str) if isinstance(value, str)
                               else value)
    if "use_sim_time" in given:
        overrides["use_sim_time"] = _typed(context, "use_sim_time", False)
    if managed:
        overrides["autostart"] = _typed(context, "autostart", True)
    params_file = context.launch_configurations["params_file"]
    return ([params_file] if params_file else []) + [overrides]


def _nodes(context, given):
    """The plain or the managed node, built from the given arguments."""
    arg = context.launch_configurations
    managed = _typed(context, "managed", False)
    common = dict(
        package="vlxseek_ros",
        executable="vlxseek_detector",
        name=NODE_NAME,
        namespace=arg["namespace"],  # explicit: LifecycleNode on Humble needs it
        output="screen",
        emulate_tty=True,
        parameters=_node_parameters(context, given, managed),
        remappings=[("image", arg["image_topic"]), ("proposals", arg["proposals_topic"])],
    )
    log_args = ["--ros-args", "--log-level", arg["log_level"]]
    if managed:
        return [LifecycleNode(arguments=["--managed"] + log_args, **common)]
    return [Node(arguments=log_args, **common)]


def generate_launch_description():
    given = set()  # filled by the first action, read by _nodes (one set per description)
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="vlxseek_rviz",
        arguments=["-d", _share("rviz", "vlxseek.rviz")],
        parameters=[{"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"),
                                                    value_type=bool)}],
        condition=IfCondition(LaunchConfiguration("use_rviz")),
    )
    return LaunchDescription(
        [OpaqueFunction(function=_check_arguments, args=[given])]
        + _declare_arguments()
        + [OpaqueFunction(function=_nodes, args=[given]), rviz])
