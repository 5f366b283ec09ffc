"""The ``vlxseek_detector`` parameters as one table, and the launch-argument rules built on it.

No ROS imports: the node (:mod:`vlxseek_ros.startup` turns each :class:`Spec` into a
``ParameterDescriptor``), ``launch/detector.launch.py`` (one launch argument per parameter) and
the tests read the same table, so a parameter cannot exist in one place and be missing in
another. ``config/detector.yaml`` lists the same names (a test checks it).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

NODE_NAME = "vlxseek_detector"
PROPOSAL_SOURCES = ("omdet_turbo", "grounding_dino", "owlv2", "wedetect", "topic", "none")
# proposal_source value that takes proposals from the `proposals` topic.
TOPIC_SOURCE = "topic"
DEVICES = "cpu, cuda, cuda:N or auto"
DTYPES = ("auto", "float32", "bfloat16", "float16")
BUSY_POLICIES = ("wait", "reject")


@dataclass(frozen=True)
class Spec:
    """One parameter: its default (which also fixes its type), description and limits."""

    default: Any
    description: str
    read_only: bool = False
    float_range: Optional[Tuple[float, float]] = None
    int_range: Optional[Tuple[int, int]] = None
    constraints: str = ""


# name -> Spec. Types follow the defaults (YAML and launch values must use 1.0 for doubles).
NODE_PARAMETERS: Dict[str, Spec] = {
    "model_path": Spec("", "VLM-FO1 checkpoint directory (config.json, tokenizer, "
                       "*.safetensors). Required.", read_only=True),
    "device": Spec("auto", "Torch device of the model and the proposal detector.",
                   read_only=True, constraints=DEVICES),
    "dtype": Spec("auto", "Model weights dtype; auto = bfloat16 on GPU, float32 on CPU.",
                  read_only=True, constraints=", ".join(DTYPES)),
    "proposal_source": Spec(
        "omdet_turbo", "Where the candidate regions come from: a built-in detector, topic = "
        "vision_msgs/Detection2DArray on `proposals` matched to frames by header stamp, "
        "none = only request `regions` boxes.",
        read_only=True, constraints=", ".join(PROPOSAL_SOURCES)),
    "proposal_model": Spec("", "Proposal detector directory or hub id; empty = the source's "
                           "default model.", read_only=True),
    "proposal_min_score": Spec(0.3, "Minimum proposal detector confidence of a candidate "
                               "region.", float_range=(0.0, 1.0)),
    "proposal_nms_iou": Spec(0.8, "IoU above which overlapping proposals are suppressed "
                             "(class-agnostic NMS).", float_range=(0.0, 1.0)),
    "max_proposals": Spec(100, "Most candidate regions shown to the model (VLM-FO1 accepts at "
                          "most 100).", int_range=(1, 100)),
    "proposal_stamp_tolerance_s": Spec(
        0.0, "proposal_source topic: largest |frame stamp - proposals stamp| still paired, "
        "seconds (0 = equal stamps, as when the detector copies the image header).",
        float_range=(0.0, 1.0)),
    "proposal_wait_s": Spec(0.5, "proposal_source topic: longest wait of a service call for "
                            "proposals of a frame, seconds.", float_range=(0.0, 10.0)),
    "frame_history": Spec(10, "proposal_source topic: frames kept for pairing with proposals "
                          "arriving later.", read_only=True, int_range=(1, 100)),
    "max_new_tokens": Spec(1024, "Decoding budget of one answer, in tokens.",
                           int_range=(1, 8192)),
    "constrained_decoding": Spec(
        True, "Keep region answers (detect, refer, count, visual_prompt, detect_all) "
        "well-formed while decoding; false = plain greedy decoding, exactly the reference's "
        "output.", read_only=True),
    "standing_query": Spec("", "Query answered for new frames of `image` at most max_rate_hz; "
                           "empty = off (unless standing_task needs no text, e.g. "
                           "detect_all)."),
    "standing_task": Spec("", "Task of the standing query (empty = detect); see "
                          "vlxseek_core.TASKS. Tasks that need regions (caption, ocr, "
                          "visual_prompt...) cannot be standing."),
    "max_rate_hz": Spec(1.0, "Highest rate of standing-query inferences, Hz.",
                        float_range=(0.01, 100.0)),
    "publish_debug_image": Spec(True, "Draw ~/debug_image for answered queries (only while it "
                                "has subscribers)."),
    "depth_topic": Spec("", "Depth image registered to `image` (sensor_msgs/Image 16UC1 mm or "
                        "32FC1 m, any resolution) for 3D detections on ~/detections_3d, "
                        "~/markers and in responses; empty = no 3D. Needs camera_info_topic.",
                        read_only=True),
    "camera_info_topic": Spec("", "sensor_msgs/CameraInfo of the colour camera (its K gives the "
                              "intrinsics of the 3D back-projection).", read_only=True),
    "depth_stamp_tolerance_s": Spec(0.05, "Largest |image stamp - depth stamp| still paired, "
                                    "seconds.", read_only=True, float_range=(0.0, 1.0)),
    "track_standing_query": Spec(True, "Give standing-query detections persistent track ids "
                                 "(Detection2D.id / Detection3D.id; ByteTrack from the "
                                 "`trackers` library); false = region indices.",
                                 read_only=True),
    "track_lost_s": Spec(2.0, "How long a track outlives its last detection, seconds.",
                         read_only=True, float_range=(0.1, 3600.0)),
    "image_qos_reliable": Spec(False, "Subscribe `image` reliable instead of best effort (best "
                               "effort hears both kinds of publisher; reliable misses "
                               "best-effort ones).", read_only=True),
    "busy_policy": Spec("wait", "What a service call does while another inference runs: wait "
                        "(up to busy_timeout_s) or reject (answer success=false, message "
                        "'busy: ...' at once).", constraints=", ".join(BUSY_POLICIES)),
    "busy_timeout_s": Spec(30.0, "Longest wait of a service call for the model under "
                           "busy_policy wait, seconds.", float_range=(0.0, 3600.0)),
    "service_queue_depth": Spec(
        1000, "Depth of ~/query_regions' request queue and response history (QoS KEEP_LAST): "
        "the most calls outstanding at once, across all clients, that DDS never drops (rclpy's "
        "default, 10, silently loses the oldest of a burst). Clients need KEEP_ALL or a depth "
        ">= the calls outstanding on the service.", read_only=True, int_range=(1, 100000)),
    "status_period_s": Spec(1.0, "Period of ~/status (JSON load/health report) and of "
                            "/diagnostics, seconds.", read_only=True,
                            float_range=(0.05, 3600.0)),
    "warmup": Spec(True, "Run one inference on a synthetic frame at start-up (configure for "
                   "the managed node), before the service exists, so that the first call costs "
                   "what later ones do.", read_only=True),
    "latency_budget_ms": Spec(0.0, "/diagnostics: WARN while the p95 end-to-end latency "
                              "(inference latency for the standing query) exceeds this, "
                              "milliseconds; 0 = no budget.", float_range=(0.0, 3.6e6)),
    "error_after_failures": Spec(3, "/diagnostics: ERROR after this many consecutive "
                                 "inference failures.", int_range=(1, 1000000)),
    "stale_frame_s": Spec(5.0, "/diagnostics: WARN when no frame arrived on `image` for this "
                          "long while frames are expected (the topic has publishers, frames "
                          "arrived before, or a standing query is set), seconds; 0 = off.",
                          float_range=(0.0, 3600.0)),
}

# Declared by the managed (lifecycle) node only. Its launch argument is launch-only (see
# LAUNCH_ONLY_ARGUMENTS): under `ros2 launch` the managed node starts active by default.
MANAGED_PARAMETERS: Dict[str, Spec] = {
    "autostart": Spec(False, "Configure and activate at start-up.", read_only=True),
}

# Parameters changeable at runtime that the serving loop reads as one snapshot.
RUNTIME_NAMES = ("standing_query", "standing_task", "max_rate_hz", "max_new_tokens",
                 "publish_debug_image", "busy_policy", "busy_timeout_s",
                 "proposal_stamp_tolerance_s", "proposal_wait_s", "latency_budget_ms",
                 "error_after_failures", "stale_frame_s")
# Node parameter -> keyword of VLXSeek.set_proposal_thresholds.
THRESHOLD_NAMES = {"proposal_min_score": "min_score", "proposal_nms_iou": "nms_iou",
                   "max_proposals": "max_proposals"}

# Launch arguments that are not node parameters: (name, default, description); a default of
# None is filled in by the launch file (the installed config/detector.yaml).
LAUNCH_ONLY_ARGUMENTS: List[Tuple[str, Optional[str], str]] = [
    ("params_file", None, "node parameters (YAML, keyed '/**:' or by node name); launch "
     "arguments given on the command line override it"),
    ("namespace", "", "namespace of the node"),
    ("image_topic", "/camera/image_raw", "sensor_msgs/Image topic remapped to `image`"),
    ("proposals_topic", "/detections",
     "proposal_source topic: vision_msgs/Detection2DArray topic remapped to `proposals`"),
    ("use_sim_time", "false", "use simulated time from /clock (node and rviz2)"),
    ("log_level", "info", "debug, info, warn, error or fatal"),
    ("use_rviz", "false", "start rviz2 showing the debug image"),
    ("managed", "false", "start the managed (lifecycle) node instead of the plain one"),
    ("autostart", "true", "managed node only: configure and activate at start-up (its "
     "parameter autostart; false = drive it with `ros2 lifecycle set`)"),
]

# Launch configurations that launch/launch_ros set themselves (never user arguments):
# PushRosNamespace, SetParameter, SetRemap, `ros2 launch --launch-prefix`, emulate_tty.
LAUNCH_INTERNAL = frozenset({"ros_namespace", "global_params", "ros_remaps", "emulate_tty",
                             "launch-prefix", "launch-prefix-filter"})


def launch_argument_names() -> List[str]:
    """Every launch argument of ``detector.launch.py``, launch-only ones first."""
    return [name for name, _, _ in LAUNCH_ONLY_ARGUMENTS] + list(NODE_PARAMETERS)


def format_default(value: Any) -> str:
    """A parameter default as a launch argument default (``true``, ``0.3``, ``omdet_turbo``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def launch_description(spec: Spec) -> str:
    """The ``--show-args`` text of a parameter: description, limits, read-only."""
    limits = []
    if spec.constraints:
        limits.append(f"one of: {spec.constraints}")
    if spec.float_range is not None:
        limits.append(f"range [{spec.float_range[0]:g}, {spec.float_range[1]:g}]")
    if spec.int_range is not None:
        limits.append(f"range [{spec.int_range[0]}, {spec.int_range[1]}]")
    if spec.read_only:
        limits.append("fixed at start-up")
    return spec.description + (f" ({'; '.join(limits)})" if limits else "")


def parse_launch_value(name: str, text: str, default: Any) -> Any:
    """Convert the text of launch argument ``name`` to the type of ``default``.

    Strings stay as given (``standing_query:=true`` is the text "true"); bools accept
    ``true``/``false`` (any case); doubles accept integers (``max_rate_hz:=2``).

    Raises:
        ValueError: the text is not of that type; the message names the argument.
    """
    kind = type(default)
    try:
        if kind is str:
            return text
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false"):
                raise ValueError("expected true or false")
            return lowered == "true"
        if kind is int:
            return int(text.strip())
        return float(text.strip())
    except ValueError as exc:
        raise ValueError(f"launch argument {name}:={text!r} is not a {kind.__name__} "
                         f"({exc}); default {format_default(default)}") from None


def closest_name(name: str, known: Iterable[str]) -> Optional[str]:
    """The known name most like ``name`` (a likely misspelling), or None."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_arguments_message(given: Iterable[str], known: Iterable[str]) -> str:
    """Why the given launch configurations are not all known arguments ('' when they are).

    Names that launch sets itself (:data:`LAUNCH_INTERNAL`, ``anon*`` of AnonName) are not
    arguments and pass.
    """
    known = list(known)
    unknown = sorted(n for n in given if n not in known and n not in LAUNCH_INTERNAL
                     and not n.startswith("anon"))
    if not unknown:
        return ""
    parts = []
    for name in unknown:
        guess = closest_name(name, known)
        parts.append(f"'{name}'" + (f" (did you mean '{guess}'?)" if guess else ""))
    return (f"unknown launch argument{'s' if len(unknown) > 1 else ''} {', '.join(parts)} for "
            f"detector.launch.py; known arguments: {', '.join(known)} (see `ros2 launch "
            f"vlxseek_ros detector.launch.py --show-args`). If another launch file includes "
            f"this one, put the include in GroupAction(forwarding=False, ...) so that its own "
            f"arguments stay out of this file's scope.")
