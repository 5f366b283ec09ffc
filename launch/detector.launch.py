r"""Launch the vlxseek_detector node (and optionally rviz2 showing its debug image).

Example::

    ros2 launch vlxseek_ros detector.launch.py model_path:=/models/vlm-fo1 \
        image_topic:=/camera/color/image_raw device:=cuda use_rviz:=true

Proposals from another detector (vision_msgs/Detection2DArray stamped like the images)::

    ros2 launch vlxseek_ros detector.launch.py model_path:=/models/vlm-fo1 \
        proposal_source:=topic proposals_topic:=/detector/detections

Launch arguments override the same parameters of ``params_file``.

``managed:=true`` starts the managed (lifecycle) variant instead; with ``autostart:=true`` (the
default) the node configures and activates itself (node-side parameter ``autostart``, portable
across distros); with ``autostart:=false`` drive it with ``ros2 lifecycle set`` or a lifecycle
manager.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = [
    ("model_path", None, "VLM-FO1 checkpoint directory (required)"),
    ("device", "auto", "cpu, cuda, cuda:N or auto"),
    ("dtype", "auto", "auto, float32, bfloat16 or float16"),
    ("image_topic", "/camera/image_raw", "sensor_msgs/Image topic remapped to `image`"),
    ("proposal_source", "omdet_turbo", "omdet_turbo, grounding_dino, owlv2, topic or none"),
    ("proposals_topic", "/detections",
     "proposal_source topic: vision_msgs/Detection2DArray topic remapped to `proposals`"),
    ("params_file", PathJoinSubstitution([FindPackageShare("vlxseek_ros"), "config",
                                          "detector.yaml"]), "node parameters (YAML)"),
    ("namespace", "", "namespace of the node"),
    ("use_sim_time", "false", "use /clock"),
    ("log_level", "info", "debug, info, warn, error or fatal"),
    ("publish_debug_image", "true", "publish ~/debug_image while it has subscribers"),
    ("use_rviz", "false", "start rviz2 showing the debug image"),
    ("managed", "false", "start the managed (lifecycle) node instead of the plain one"),
    ("autostart", "true", "managed node only: configure and activate at start-up"),
]


def _arg(name):
    return LaunchConfiguration(name)


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, description=doc,
                                      **({} if default is None else {"default_value": default}))
                for name, default, doc in ARGUMENTS]
    common = dict(
        package="vlxseek_ros",
        executable="vlxseek_detector",
        name="vlxseek_detector",
        namespace=_arg("namespace"),  # explicit: LifecycleNode on Humble needs it
        output="screen",
        emulate_tty=True,
        remappings=[("image", _arg("image_topic")), ("proposals", _arg("proposals_topic"))],
    )
    parameters = [
        _arg("params_file"),
        {
            "model_path": ParameterValue(_arg("model_path"), value_type=str),
            "device": ParameterValue(_arg("device"), value_type=str),
            "dtype": ParameterValue(_arg("dtype"), value_type=str),
            "proposal_source": ParameterValue(_arg("proposal_source"), value_type=str),
            "publish_debug_image": ParameterValue(_arg("publish_debug_image"),
                                                  value_type=bool),
            "use_sim_time": ParameterValue(_arg("use_sim_time"), value_type=bool),
        },
    ]
    log_args = ["--ros-args", "--log-level", _arg("log_level")]
    detector = Node(parameters=parameters, arguments=log_args,
                    condition=UnlessCondition(_arg("managed")), **common)
    managed = LifecycleNode(
        parameters=parameters + [{"autostart": ParameterValue(_arg("autostart"),
                                                              value_type=bool)}],
        arguments=["--managed"] + log_args,
        condition=IfCondition(_arg("managed")), **common)
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="vlxseek_rviz",
        arguments=["-d", PathJoinSubstitution([FindPackageShare("vlxseek_ros"), "rviz",
                                               "vlxseek.rviz"])],
        parameters=[{"use_sim_time": ParameterValue(_arg("use_sim_time"), value_type=bool)}],
        condition=IfCondition(_arg("use_rviz")),
    )
    return LaunchDescription(declared + [detector, managed, rviz])
