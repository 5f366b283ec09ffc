"""The ``vlxseek_detector`` node: VLM-FO1 open-vocabulary grounding as a ROS 2 service.

Interfaces (names relative to the node; remap ``image`` to your camera topic):

* subscribes ``image`` (``sensor_msgs/Image``): best effort, depth 1 (REP 2003 sensor data);
  parameter ``image_qos_reliable`` switches to reliable. Only the newest frame is kept; no
  inference ever runs in this callback.
* subscribes ``proposals`` (``vision_msgs/Detection2DArray``, best effort, depth 10) only when
  ``proposal_source`` is ``topic``: candidate boxes of an external detector, each array with the
  header of the image it was computed on. Frames and proposals are paired by header stamp
  (exactly, or within ``proposal_stamp_tolerance_s``); the last ``frame_history`` frames are kept
  because proposals arrive after their frame. Boxes go through the same post-processing as the
  built-in detectors' (``proposal_min_score``, ``proposal_nms_iou``, ``max_proposals``).
* service ``~/query_regions`` (``vlxseek_ros/srv/QueryRegions``): answer one query about the
  request's image or the newest frame (with ``proposal_source: topic``: the newest frame that
  has proposals, waiting up to ``proposal_wait_s`` for them). Reliable, KEEP_LAST
  ``service_queue_depth`` (default 1000, not rclpy's 10; :mod:`vlxseek_ros.service_queue`):
  that many calls may be outstanding at once, across all clients, without DDS dropping any.
* publishes ``~/detections`` (``vision_msgs/Detection2DArray``, reliable) for every answered query
  (service calls and the standing query), with the answered image's header;
* publishes ``~/debug_image`` (``sensor_msgs/Image``, rgb8) with boxes, labels and region indices,
  drawn only when ``publish_debug_image`` is true and someone subscribes; the same picture as
  JPEG on ``~/debug_image/compressed`` (``sensor_msgs/CompressedImage``, image_transport naming).
* standing query: when ``standing_query`` (or a ``standing_task`` that needs no text) is set, new
  frames are answered at most ``max_rate_hz`` times per second and published as above.

* publishes ``~/status`` (``std_msgs/String``, reliable, depth 1) every ``status_period_s``: one
  JSON object with the load and health counters of :mod:`vlxseek_ros.serving_stats` (frames
  received / dropped / answered, requests received / answered = ok + failed + busy, inference
  errors, consecutive failures, last error, per-stage and end-to-end latency in ms) plus
  ``node``, ``model_path``, ``device`` (the one in use: ``cpu``, ``cuda:0``), ``warmup_ms``,
  ``busy_policy`` and ``inference_in_flight``; a summary line is also logged at most every
  :data:`~vlxseek_ros.serving_state.STATUS_LOG_S` seconds. "Dropped" is defined in
  :mod:`vlxseek_ros.frame_demand`.
* publishes ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``) at the same period: one
  status ``<node name>: inference``, level per :mod:`vlxseek_ros.diagnostics` (skipped, with a
  warning, where ``diagnostic_msgs`` is not installed).

Start-up (:mod:`vlxseek_ros.startup`): parameters are declared from the table of
:mod:`vlxseek_ros.parameters`, the models are loaded, and with ``warmup`` (default) one inference
on a synthetic frame runs before the service is created. Loading and warm-up are interruptible:
once shutdown is requested the node stops waiting for them and creates no interface.

Threads: the image subscription, the service, the standing-query timer and the status timer have
separate callback groups under a ``MultiThreadedExecutor`` of
:data:`~vlxseek_ros.service_queue.EXECUTOR_THREADS` threads; one lock around the model makes
inferences (and threshold changes, applied between inferences) strictly sequential.

Busy policy (parameter ``busy_policy``): service calls run concurrently up to the model lock.
``wait`` (default) waits up to ``busy_timeout_s`` seconds for the model, ``reject`` does not wait;
either way a call that cannot get the model answers ``success=false, message="busy: ..."``. At
most :data:`MAX_WAITING_CALLS` calls wait or run at once (more are answered busy at once), so
waiting calls never starve the image subscription. The standing query never waits: it skips a
tick while the model is busy.

Robustness: every request taken gets exactly one response (``requests_received`` =
``requests_answered``), also the calls still held when the service goes (deactivate, shutdown:
``busy: ...``); an exception inside inference (CUDA OOM...) fails only that request
(``message="inference failed: <type>: <text>"``), counted as ``inference_errors``,
``consecutive_failures``, ``last_error``. SIGINT/SIGTERM at any moment: exit status 0
(:mod:`vlxseek_ros.node_process`; an inference still running after :data:`SHUTDOWN_GRACE_S`
seconds is abandoned).

Code: this module holds the plain node class and the entry point; the serving logic shared with
the managed node is :class:`vlxseek_ros.serving.DetectorServing` (one module per concern, listed
in :mod:`vlxseek_ros.serving`).
"""
from __future__ import annotations

if __name__ == "__main__":  # a node process: record SIGINT/SIGTERM before the imports below
    from vlxseek_ros import stop_signals
    stop_signals.install(exit_at_once=True)  # until run_node: nothing to clean up

import sys
from typing import Any, Dict, List, Optional, Tuple

from rclpy.node import Node

from vlxseek_ros.parameters import NODE_NAME, NODE_PARAMETERS
# re-exported: earlier versions defined the process functions and constants here
from vlxseek_ros.node_process import (SHUTDOWN_GRACE_S, limit_malloc_arenas,  # noqa: F401
                                      run_node, spin_until_shutdown)
from vlxseek_ros.service_queue import EXECUTOR_THREADS, MAX_WAITING_CALLS  # noqa: F401
# re-exported: the serving logic used to be defined here
from vlxseek_ros.serving import DetectorServing
# StartupError and startup_guard are re-exported (tests and scripts import them here)
from vlxseek_ros.startup import (StartupError, StartupInterrupted,  # noqa: F401
                                 descriptor, load_interruptibly, load_pipeline, startup_guard)

# name -> (default, descriptor), built from the one table of vlxseek_ros.parameters.
PARAMETERS: Dict[str, Tuple[Any, Any]] = {
    name: (spec.default, descriptor(spec)) for name, spec in NODE_PARAMETERS.items()}
# The loader of earlier versions of this module (tests call it by this name).
_load_pipeline = load_pipeline


class DetectorNode(DetectorServing, Node):
    """ROS 2 node serving VLM-FO1 queries; see the module docstring for its interfaces.

    Args:
        pipeline: an already loaded pipeline (an object with ``query`` and
            ``set_proposal_thresholds`` like :class:`vlxseek_core.VLXSeek`); ``None`` loads one
            from the parameters.
        **kwargs: passed to :class:`rclpy.node.Node` (``parameter_overrides``, ``namespace``…).

    Raises:
        StartupError: invalid parameters or the model failed to load (the node is destroyed).
        StartupInterrupted: shutdown was requested while it started (the node is destroyed;
            no interface was created after that).
    """

    def __init__(self, pipeline: Any = None, **kwargs: Any) -> None:
        Node.__init__(self, NODE_NAME, **kwargs)
        with startup_guard(self):
            params = self._declare_parameters()
            self._pipe = pipeline if pipeline is not None else load_interruptibly(
                params, self._stopping, self._log_step)
            self._init_serving(params)
            self._warm_up()
            self._create_interfaces()


def main(args: Optional[List[str]] = None) -> int:
    """Run the node until shutdown; returns the process exit status (1 = failed to start).

    SIGINT and SIGTERM both trigger rclpy shutdown (rclpy's handlers, installed explicitly).
    ``--managed`` (before ``--ros-args``) runs the lifecycle node of
    :mod:`vlxseek_ros.managed_detector_node` instead.
    """
    argv = list(sys.argv if args is None else args)
    ros_start = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    if "--managed" in argv[:ros_start]:
        argv.remove("--managed")
        from vlxseek_ros.managed_detector_node import main as managed_main
        return managed_main(argv)
    return run_node(DetectorNode, args)


if __name__ == "__main__":
    sys.exit(main())
