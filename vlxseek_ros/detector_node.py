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
  :data:`STATUS_LOG_S` seconds. "Dropped" is defined in :mod:`vlxseek_ros.frame_demand`.
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
"""
from __future__ import annotations

if __name__ == "__main__":  # a node process: record SIGINT/SIGTERM before the imports below
    from vlxseek_ros import stop_signals
    stop_signals.install()

import inspect
import json
import sys
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from vision_msgs.msg import Detection2DArray

from vlxseek_core.errors import InvalidImageError, InvalidRequestError, VLXSeekError
from vlxseek_core.streaming import QueryProgress
from vlxseek_ros import diagnostics
from vlxseek_ros.conversions import (bbox_msgs_to_xyxy, detection_array_to_raw_proposals,
                                     detections_to_msg, fill_response)
from vlxseek_ros.debug_image import draw_result
from vlxseek_ros.frame_demand import FrameDemand
from vlxseek_ros.frame_matching import StampMatcher, format_stamp, stamp_to_ns
from vlxseek_ros.image_conversion import image_msg_to_rgb, rgb_to_compressed_msg, rgb_to_image_msg
from vlxseek_ros.parameters import (BUSY_POLICIES, NODE_NAME, NODE_PARAMETERS, RUNTIME_NAMES,
                                    THRESHOLD_NAMES, TOPIC_SOURCE)
# re-exported: earlier versions defined the process functions and constants here
from vlxseek_ros.node_process import (SHUTDOWN_GRACE_S, limit_malloc_arenas,  # noqa: F401
                                      run_node, spin_until_shutdown)
from vlxseek_ros.service_queue import (EXECUTOR_THREADS, MAX_WAITING_CALLS,  # noqa: F401
                                       ServiceGate, drain_requests, service_qos,
                                       wait_for_lock)
from vlxseek_ros.query_action import QueryAction
from vlxseek_ros.serving_stats import ServingStats
from vlxseek_ros.spatial_outputs import SpatialOutputs, check_depth_params, make_tracker
from vlxseek_ros.srv import QueryRegions
# StartupError and startup_guard are re-exported (the managed node and tests import them here)
from vlxseek_ros.startup import (StartupError, StartupInterrupted,  # noqa: F401
                                 create_unless_stopping, declare_parameters, descriptor,
                                 load_interruptibly, load_pipeline, resolved_device,
                                 run_interruptibly, startup_guard, warm_up)

# Proposal arrays kept for matching (by arrival; enough for a detector a few seconds behind).
PROPOSAL_BUFFER = 64
# Repeated identical problems are logged at most once per this many seconds.
LOG_REPEAT_S = 10.0
# VLM-FO1 accepts at most this many regions; a request with more keeps the first ones.
MAX_REGIONS = 100
# Longest accepted query, characters (longer ones would overflow the model's context).
MAX_QUERY_CHARS = 4096
# The load summary is logged at most once per this many seconds.
STATUS_LOG_S = 60.0


class BusyError(Exception):
    """The model is busy (policy ``reject``, ``busy_timeout_s`` passed, or shutting down)."""


@dataclass(frozen=True)
class _Runtime:
    """Parameters that may change at runtime (one consistent snapshot per use)."""

    standing_query: str
    standing_task: str
    max_rate_hz: float
    max_new_tokens: int
    publish_debug_image: bool
    busy_policy: str
    busy_timeout_s: float
    proposal_stamp_tolerance_s: float
    proposal_wait_s: float
    latency_budget_ms: float
    error_after_failures: int
    stale_frame_s: float


@dataclass
class _Frame:
    """An image of the subscription and its arrival number (1, 2, ...)."""

    msg: Image
    seq: int
    used: bool = False       # a query took it (else replacing it counts as a dropped frame)
    answered: bool = False   # a query about it succeeded


@dataclass(frozen=True)
class _ExternalProposals:
    """One array of the ``proposals`` topic: raw xyxy boxes ``[N, 4]`` and scores ``[N]``."""

    frame_id: str
    boxes: np.ndarray
    scores: np.ndarray


# name -> (default, descriptor), built from the one table of vlxseek_ros.parameters.
PARAMETERS: Dict[str, Tuple[Any, Any]] = {
    name: (spec.default, descriptor(spec)) for name, spec in NODE_PARAMETERS.items()}
_RUNTIME_NAMES = RUNTIME_NAMES
_THRESHOLD_NAMES = THRESHOLD_NAMES
# The loader of earlier versions of this module (tests call it by this name).
_load_pipeline = load_pipeline


def _takes_progress(pipeline: Any) -> bool:
    """Whether ``pipeline.query`` accepts ``progress`` (``VLXSeek`` does; test fakes may not)."""
    try:
        return "progress" in inspect.signature(pipeline.query).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def _seconds_to_ns(seconds: float) -> int:
    return int(round(float(seconds) * 1e9))


def _task_specs() -> Dict[str, Any]:
    """Task name -> spec (``needs_query``, ``needs_regions``) from vlxseek_core."""
    from vlxseek_core.prompts import TASKS as specs
    return dict(specs)


class DetectorServing:
    """The serving logic shared by :class:`DetectorNode` and the managed (lifecycle) node.

    A mixin for a ``rclpy`` ``Node``/``LifecycleNode`` subclass: it declares the parameters,
    keeps the serving state (model lock, newest frame, counters) and creates/destroys the
    interfaces of the module docstring. ``self._pipe`` is the loaded pipeline (``None`` while a
    managed node is unconfigured).
    """

    _pipe: Any = None

    def _init_serving(self, params: Dict[str, Any]) -> None:
        """Set up the serving state from the declared parameters (no interfaces yet).

        Raises:
            StartupError: the runtime parameters are unusable.
        """
        self._params = params
        self._tasks = _task_specs()
        self._state_lock = threading.Lock()   # guards the fields below
        self._model_lock = threading.Lock()   # one inference at a time
        self._runtime = _Runtime(**{n: params[n] for n in _RUNTIME_NAMES})
        self._pending_thresholds: Dict[str, Any] = {}
        # thresholds of proposals from the topic (the pipeline's own detector has its copy)
        self._proposal_filter = {v: params[k] for k, v in _THRESHOLD_NAMES.items()}
        self._topic_proposals = params["proposal_source"] == TOPIC_SOURCE
        # the newest frame, or the last frame_history ones when proposals come from the topic
        self._frames: StampMatcher[_Frame, _ExternalProposals] = StampMatcher(
            frame_capacity=params["frame_history"] if self._topic_proposals else 1,
            proposal_capacity=PROPOSAL_BUFFER,
            tolerance_ns=_seconds_to_ns(params["proposal_stamp_tolerance_s"]))
        self._demand = FrameDemand()  # frame numbers, arrival times, what counts as dropped
        self._standing_seq = 0
        self._last_problem: Tuple[str, float] = ("", 0.0)
        self._stats = ServingStats()
        self._started = time.monotonic()
        self._waiting_calls = threading.BoundedSemaphore(MAX_WAITING_CALLS)
        self._closing = ""  # why new inferences are refused ("" = they are not)
        self._in_flight: set = set()  # QueryProgress of running inferences (shutdown stops them)
        self._last_status_log = time.monotonic()
        self._status_extra = {"node": self.get_fully_qualified_name(),
                              "model_path": params["model_path"], "device": params["device"],
                              "proposal_source": params["proposal_source"],
                              "warmup_ms": None}
        self._diagnostics_pub = None
        self._dropped_reported = 0
        self._timer = None
        self._proposal_sub = None
        self._interfaces: List[Any] = []
        bad = self._check_runtime(self._runtime)
        if bad:
            raise StartupError(bad)
        try:  # before the model loads: a missing tracker library fails start-up at once
            check_depth_params(params)
            self._tracker = make_tracker(params)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        self._spatial: Optional[SpatialOutputs] = None
        self._image_group = MutuallyExclusiveCallbackGroup()
        # reentrant (a call can answer "busy" while another one holds the model) and closable:
        # the service is destroyed only once every request it took has been answered
        self._service_group = ServiceGate()
        self._service = None
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._status_group = MutuallyExclusiveCallbackGroup()
        self._proposal_group = MutuallyExclusiveCallbackGroup()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _warm_up(self) -> None:
        """With parameter ``warmup``: one inference on a synthetic frame, timed and logged.

        Runs before the service exists (the first call then costs what later ones do), in a
        worker thread left behind if shutdown is requested meanwhile.

        Raises:
            StartupError: the inference failed.
            StartupInterrupted: shutdown was requested before it ended.
        """
        if not self._params["warmup"]:
            return

        def locked_warm_up() -> float:
            with self._model_lock:
                return warm_up(self._pipe, self._runtime.max_new_tokens)
        self._log_step("warming up: one inference on a synthetic frame")
        ms = run_interruptibly(locked_warm_up, self._stopping, "warming up")
        self._status_extra["warmup_ms"] = round(ms, 1)
        self.get_logger().info(f"warm-up: one inference on a synthetic frame took {ms:.0f} ms "
                               f"(device {resolved_device(self._pipe, self._params['device'])})")

    def _stopping(self) -> bool:
        """Whether shutdown began (the node's rclpy context was shut down, e.g. by a signal)."""
        return not self.context.ok()

    def _log_step(self, message: str) -> None:
        """Log the start of a slow start-up step (not after shutdown began: no /rosout then)."""
        if not self._stopping():
            self.get_logger().info(message)

    def _create_interfaces(self) -> None:
        """Create the publishers, the image subscription, the service and the timers.

        Raises:
            StartupInterrupted: shutdown began before or while they were created.
        """
        create_unless_stopping(self._make_interfaces, self._stopping, "the interfaces")

    def _make_interfaces(self) -> None:
        params = self._params
        # the device in use (cuda:0, cpu), known once the model is loaded; not "auto"
        self._status_extra["device"] = resolved_device(self._pipe, params["device"])
        image_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1,
            reliability=(ReliabilityPolicy.RELIABLE if params["image_qos_reliable"]
                         else ReliabilityPolicy.BEST_EFFORT),
            durability=DurabilityPolicy.VOLATILE)
        reliable1 = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                               reliability=ReliabilityPolicy.RELIABLE)
        self._detections_pub = self.create_publisher(Detection2DArray, "~/detections", 10)
        self._debug_pub = self.create_publisher(Image, "~/debug_image", reliable1)
        # image_transport's naming, so rqt_image_view / rviz2 offer it as the compressed stream
        self._debug_jpeg_pub = self.create_publisher(CompressedImage,
                                                     "~/debug_image/compressed", reliable1)
        self._status_pub = self.create_publisher(String, "~/status", reliable1)
        self._spatial = SpatialOutputs(self, params, self._tracker, self._proposal_group)
        self._diagnostics_pub = self._create_diagnostics_publisher()
        self._image_sub = self.create_subscription(
            Image, "image", self._on_image, image_qos, callback_group=self._image_group)
        if self._topic_proposals:
            # best effort hears reliable and best-effort detectors alike (REP 2003)
            self._proposal_sub = self.create_subscription(
                Detection2DArray, "proposals", self._on_proposals,
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                           reliability=ReliabilityPolicy.BEST_EFFORT),
                callback_group=self._proposal_group)
        self._service_group.reopen()
        self._service = self.create_service(
            QueryRegions, "~/query_regions", self._on_query,
            qos_profile=service_qos(params["service_queue_depth"]),
            callback_group=self._service_group)
        with self._state_lock:
            period = 1.0 / self._runtime.max_rate_hz
        self._timer = self.create_timer(period, self._on_timer,
                                        callback_group=self._timer_group)
        self._status_timer = self.create_timer(params["status_period_s"], self._on_status,
                                               callback_group=self._status_group)
        self._interfaces = [
            (self.destroy_timer, self._status_timer), (self.destroy_timer, self._timer),
            (self.destroy_service, self._service), (self.destroy_subscription, self._image_sub),
            (self.destroy_publisher, self._status_pub), (self.destroy_publisher, self._debug_pub),
            (self.destroy_publisher, self._debug_jpeg_pub),
            (self.destroy_publisher, self._detections_pub),
            (SpatialOutputs.destroy, self._spatial)]
        # ~/query (its own callback group); destroyed first: stops its generations, waits
        self._interfaces.insert(0, (QueryAction.destroy, QueryAction(self)))
        if self._diagnostics_pub is not None:
            self._interfaces.append((self.destroy_publisher, self._diagnostics_pub))
        if self._proposal_sub is not None:
            self._interfaces.append((self.destroy_subscription, self._proposal_sub))
        self._closing = ""
        proposals = (f"topic '{self._proposal_sub.topic_name}'" if self._proposal_sub
                     else params["proposal_source"])
        self.get_logger().info(
            f"ready: model '{params['model_path']}', proposals {proposals}, "
            f"image topic '{self._image_sub.topic_name}' "
            f"({'reliable' if params['image_qos_reliable'] else 'best effort'}), "
            f"service '{self.resolve_service_name(self._service.srv_name)}'")

    def _destroy_interfaces(self, wait_s: float = 30.0) -> None:
        """Stop serving; the model stays loaded.

        Refuses new inferences and takes no more requests, waits up to ``wait_s`` seconds for
        a running inference and for the calls already taken to be answered, answers the calls
        still queued ``busy``, then destroys the interfaces made by :meth:`_create_interfaces`.
        """
        self._closing = self._closing or "the service is being deactivated"
        deadline = time.monotonic() + wait_s
        if self._model_lock.acquire(timeout=wait_s):
            self._model_lock.release()
        # the calls that waited for the model now answer busy at once (self._closing)
        self._service_group.close(max(deadline - time.monotonic(), 0.0) + 1.0)
        self.answer_queued_calls()
        with self._state_lock:
            interfaces, self._interfaces = self._interfaces, []
            self._timer = None
            self._service = None
        self._frames.clear()
        for destroy, entity in interfaces:
            destroy(entity)

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> Dict[str, Any]:
        """Declare the parameters of :data:`PARAMETERS`; returns their values by name.

        Raises:
            StartupError: a bad value, naming the parameter.
        """
        return declare_parameters(self, NODE_PARAMETERS)

    def _check_runtime(self, rt: _Runtime) -> str:
        """Return why the runtime parameters are unusable, or '' when they are fine."""
        task = rt.standing_task or "detect"
        spec = self._tasks.get(task)
        if spec is None:
            return (f"standing_task {rt.standing_task!r} is unknown; known tasks: "
                    f"{', '.join(self._tasks)}")
        if spec.needs_regions:
            return (f"standing_task {task!r} needs regions, which a standing query cannot give; "
                    f"call ~/query_regions with `regions` instead")
        if rt.busy_policy not in BUSY_POLICIES:
            return f"busy_policy {rt.busy_policy!r} is not one of {BUSY_POLICIES}"
        return ""

    def _on_set_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        """Validate runtime changes; thresholds are applied before the next inference."""
        changes = {p.name: p.value for p in parameters}
        with self._state_lock:
            candidate = replace(self._runtime, **{k: v for k, v in changes.items()
                                                  if k in _RUNTIME_NAMES})
            reason = self._check_runtime(candidate)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            rate_changed = candidate.max_rate_hz != self._runtime.max_rate_hz
            self._runtime = candidate
            thresholds = {_THRESHOLD_NAMES[k]: v for k, v in changes.items()
                          if k in _THRESHOLD_NAMES}
            self._pending_thresholds.update(thresholds)
            self._proposal_filter.update(thresholds)
        self._frames.tolerance_ns = _seconds_to_ns(candidate.proposal_stamp_tolerance_s)
        timer = self._timer
        if rate_changed and timer is not None:
            timer.timer_period_ns = int(1e9 / candidate.max_rate_hz)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks

    def _on_image(self, msg: Image) -> None:
        """Keep the newest frame(s) (no conversion, no inference here)."""
        seq = self._demand.arrived()
        evicted = self._frames.add_frame(stamp_to_ns(msg.header.stamp), _Frame(msg, seq))
        self._stats.count("frames_received")
        if evicted is not None and self._demand.is_drop(evicted.seq, evicted.used):
            self._stats.count("frames_dropped")

    def _on_proposals(self, msg: Detection2DArray) -> None:
        """Keep an external detector's proposals for pairing with their frame by stamp."""
        try:
            boxes, scores = detection_array_to_raw_proposals(msg)
        except Exception as exc:  # a malformed message must not stop the subscription
            self._report(f"ignored a proposals message: {type(exc).__name__}: {exc}")
            return
        self._frames.add_proposals(stamp_to_ns(msg.header.stamp),
                                   _ExternalProposals(msg.header.frame_id, boxes, scores))
        self._stats.count("proposals_received")

    def _on_query(self, request: QueryRegions.Request, response: QueryRegions.Response,
                  progress: Any = None) -> QueryRegions.Response:
        """Answer one service request exactly once; counted as received and answered.

        Nothing raises out of this callback: invalid requests and images, a busy model and
        exceptions inside inference all become ``success=false`` with a message.
        ``progress`` (a ``vlxseek_core.streaming.QueryProgress``): the ``~/query`` action's.
        """
        self._stats.count("requests_received")
        try:
            return self._answer_query(request, response, progress)
        except Exception as exc:  # a bug of ours must still answer the call
            self._stats.count("requests_failed")
            self._report(f"query failed: {type(exc).__name__}: {exc}",
                         detail=traceback.format_exc(), error=True)
            return QueryRegions.Response(
                success=False, message=f"query failed: {type(exc).__name__}: {exc}")
        finally:
            self._stats.count("requests_answered")

    def _answer_query(self, request: QueryRegions.Request, response: QueryRegions.Response,
                      progress: Any = None) -> QueryRegions.Response:
        """The answer to one request; every failure becomes success=false + message."""
        start = time.perf_counter()
        notes: List[str] = []
        frame: Optional[_Frame] = None
        waiting = False
        try:
            task = request.task or "detect"
            indices = [int(i) for i in request.region_indices]
            self._check_request_text(task, request.query, len(request.regions), len(indices))
            # bounds the calls waiting for proposals or the model (executor threads)
            waiting = self._waiting_calls.acquire(blocking=False)
            if not waiting:
                raise BusyError(f"busy: {MAX_WAITING_CALLS} requests are already waiting for "
                                f"the model; retry later")
            with self._stream_demand(request) as holds_model:
                image_msg, source, frame, external = self._request_image(request)
                try:
                    rgb = image_msg_to_rgb(image_msg)
                except InvalidImageError as exc:
                    raise InvalidImageError(f"{source}: {exc}") from exc
                inputs = self._request_inputs(request, rgb, image_msg, external, indices, notes)
                result, ms = self._infer(rgb, request.query, task, inputs, service=True,
                                         on_model=holds_model, progress=progress)
        except BusyError as exc:
            self._stats.count("requests_busy")
            response.success, response.message = False, str(exc)
            return response
        except VLXSeekError as exc:
            self._stats.count("requests_failed")
            return self._fail(response, str(exc))
        except Exception as exc:  # keep serving whatever happens inside the model
            self._stats.count("requests_failed")
            response.success = False
            response.message = f"inference failed: {type(exc).__name__}: {exc}"
            return response
        finally:
            if waiting:
                self._waiting_calls.release()
        filled = False
        try:
            fill_response(response, result, image_msg.header, ms)
            if notes:
                response.message = "; ".join(notes + ([response.message]
                                                      if response.message else []))
            filled = True
            array3d, note3d = self._publish(rgb, result, image_msg.header, response.detections)
            if array3d is not None:
                response.detections_3d = array3d
            if note3d:
                response.message = "; ".join(m for m in (response.message, note3d) if m)
        except Exception as exc:  # a malformed result must not escape the callback either
            if filled and self._stopping():  # topics gone with the context: the answer stands
                return self._succeeded(response, frame, start)
            self._stats.count("requests_failed")
            self._report(f"answer conversion failed: {type(exc).__name__}: {exc}",
                         detail=traceback.format_exc(), error=True)
            fresh = QueryRegions.Response()
            fresh.success = False
            fresh.message = f"answer conversion failed: {type(exc).__name__}: {exc}"
            return fresh
        return self._succeeded(response, frame, start)

    def _succeeded(self, response: QueryRegions.Response, frame: Optional[_Frame],
                   start: float) -> QueryRegions.Response:
        """Count an answered call (and its stream frame) and return its response."""
        self._answered(frame)
        self._stats.count("requests_ok")
        self._stats.latency("end_to_end", (time.perf_counter() - start) * 1e3)
        return response

    def _stream_demand(self, request: QueryRegions.Request):
        """While a call about the stream waits for its frame and the model, frames it misses
        count as dropped (:mod:`vlxseek_ros.frame_demand`); a request image wants none."""
        img = request.image
        if img.width or img.height or len(img.data) or img.encoding:
            return nullcontext(None)
        return self._demand.call_waiting()

    def _request_inputs(self, request: QueryRegions.Request, rgb: np.ndarray, image_msg: Image,
                        external: Optional[_ExternalProposals], indices: List[int],
                        notes: List[str]) -> Dict[str, Any]:
        """The regions of a request for the pipeline: request boxes, else topic proposals."""
        regions = list(request.regions)
        if len(regions) > MAX_REGIONS:
            notes.append(f"{len(regions)} regions given, only the first {MAX_REGIONS} were "
                         f"used (VLM-FO1 accepts at most {MAX_REGIONS})")
            regions = regions[:MAX_REGIONS]
        inputs: Dict[str, Any] = {"region_indices": indices or None}
        if regions:
            inputs["boxes"] = bbox_msgs_to_xyxy(regions, rgb.shape[:2])
        elif external is not None:
            inputs["proposals"] = self._filter_external(external, image_msg.header,
                                                        rgb.shape[:2], notes)
        return inputs

    def _on_timer(self) -> None:
        """Answer the standing query for a frame newer than the last one it answered.

        With ``proposal_source: topic`` that is the newest such frame whose proposals have
        arrived (never waiting: the next tick looks again).
        """
        with self._state_lock:
            rt = self._runtime
        task = rt.standing_task or "detect"
        if not self._standing_active(rt):
            self._demand.standing_behind(False)
            return
        last = self._standing_seq
        external = None
        if self._topic_proposals:
            pair = self._frames.newest_pair(lambda f: f.seq > last)
            if pair is None:
                return
            frame, external = pair
        else:
            frame = self._frames.newest_frame()
            if frame is None or frame.seq <= last:
                return

        def took_model() -> None:  # the frame is used only once the model runs on it
            self._demand.standing_behind(False)
            with self._state_lock:
                frame.used = True

        try:
            rgb = image_msg_to_rgb(frame.msg)
            previous, self._standing_seq = self._standing_seq, frame.seq
            inputs = {} if external is None else {"proposals": self._filter_external(
                external, frame.msg.header, rgb.shape[:2], [])}
            result, _ = self._infer(rgb, rt.standing_query, task, inputs, service=False,
                                    on_model=took_model)
        except BusyError:
            self._standing_seq = previous  # the model is busy: try again next tick
            self._demand.standing_behind(True)  # frames that go by until then are dropped
            return
        except VLXSeekError as exc:
            self._standing_seq = frame.seq
            self._report(f"standing query skipped a frame: {exc}")
            return
        except Exception:  # counted and logged by _infer
            return
        msg = detections_to_msg(result, frame.msg.header)
        if self._spatial is not None:  # track ids instead of region indices
            self._spatial.track(result, frame.msg.header, msg, (rt.standing_query, task))
        self._publish(rgb, result, frame.msg.header, msg)
        self._answered(frame)
        self._stats.count("standing_answered")

    def _standing_active(self, rt: _Runtime) -> bool:
        """Whether the standing query is on (a query, or a standing_task needing no text)."""
        task = rt.standing_task or "detect"
        textless = bool(rt.standing_task) and not self._tasks[task].needs_query
        return bool(rt.standing_query.strip() or textless)

    def _create_diagnostics_publisher(self) -> Any:
        """The ``/diagnostics`` publisher, or None (logged) without ``diagnostic_msgs``."""
        try:
            from diagnostic_msgs.msg import DiagnosticArray
        except ImportError:
            self.get_logger().warning(
                "diagnostic_msgs is not installed: no /diagnostics (~/status still reports); "
                "install ros-$ROS_DISTRO-diagnostic-msgs or the ros-diagnostic-msgs wheel")
            return None
        return self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _publish_diagnostics(self, snapshot: Dict[str, Any], rt: _Runtime) -> None:
        """One ``/diagnostics`` report (:mod:`vlxseek_ros.diagnostics`)."""
        dropped = int(snapshot["frames_dropped"])
        since_last, self._dropped_reported = dropped - self._dropped_reported, dropped
        expected = (self._standing_active(rt) or self._demand.received_any()
                    or self.count_publishers(self._image_sub.topic_name) > 0)
        assessment = diagnostics.assess(
            snapshot, diagnostics.Limits(rt.error_after_failures, rt.latency_budget_ms,
                                         rt.stale_frame_s),
            since_last, self._demand.frame_age_s() if self._demand.received_any()
            else time.monotonic() - self._started, expected)
        extra = {**self._status_extra, "image_topic": self._image_sub.topic_name,
                 "inference_in_flight": self.inference_in_flight()}
        self._diagnostics_pub.publish(diagnostics.to_diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: inference",
            str(self._status_extra["device"]), assessment,
            diagnostics.key_values(snapshot, extra)))

    def _on_status(self) -> None:
        """Publish ``~/status`` and ``/diagnostics``; log a summary at most every STATUS_LOG_S
        seconds."""
        with self._state_lock:
            rt = self._runtime
        snapshot = self._stats.snapshot()
        msg = String()
        msg.data = json.dumps({**self._status_extra, "busy_policy": rt.busy_policy,
                               "inference_in_flight": self.inference_in_flight(), **snapshot},
                              sort_keys=True)
        self._status_pub.publish(msg)
        if self._diagnostics_pub is not None:
            self._publish_diagnostics(snapshot, rt)
        now = time.monotonic()
        if now - self._last_status_log >= STATUS_LOG_S:
            self._last_status_log = now
            self.get_logger().info("load: " + self._stats.summary_line())

    # ------------------------------------------------------------------ public helpers

    def status(self) -> Dict[str, Any]:
        """Return the ``~/status`` payload now (a dict; see :mod:`vlxseek_ros.serving_stats`)."""
        return json.loads(self._stats.to_json(**self._status_extra,
                                              inference_in_flight=self.inference_in_flight()))

    def load_summary(self) -> str:
        """One line of the load counters (frames, requests, latency, errors)."""
        return self._stats.summary_line()

    def inference_in_flight(self) -> bool:
        """Return True while an inference holds the model."""
        return self._model_lock.locked()

    def begin_shutdown(self) -> None:
        """Refuse new inferences (answered busy) and stop the decoding of running ones within
        one step, so their callers get a ``busy`` answer before the node goes (a pipeline
        without ``progress`` support runs to its end)."""
        self._closing = "the node is shutting down"
        with self._state_lock:
            in_flight = list(self._in_flight)
        for progress in in_flight:
            progress.cancel.set()

    def answer_queued_calls(self) -> int:
        """Answer ``busy`` to the calls still queued (no executor taking them); returns count."""
        busy = QueryRegions.Response(
            success=False, message=f"busy: {self._closing or 'the node is shutting down'}")
        service = self._service
        answered = 0 if service is None else drain_requests(service, lambda _: busy)
        for name in ("requests_received", "requests_busy", "requests_answered"):
            self._stats.count(name, answered)
        return answered

    # ------------------------------------------------------------------ helpers

    def _check_request_text(self, task: str, query: str, n_regions: int,
                            n_indices: int = 0) -> None:
        """Reject unknown tasks, empty/overlong/non-UTF-8 queries and missing regions.

        Raises:
            InvalidRequestError: with the reason.
        """
        spec = self._tasks.get(task)
        if spec is None:
            raise InvalidRequestError(
                f"unknown task {task[:100]!r}; known tasks: {', '.join(self._tasks)}")
        try:
            query.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequestError(f"query is not valid UTF-8 text ({exc.reason} at "
                                      f"character {exc.start})") from exc
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequestError(f"query is {len(query)} characters long; at most "
                                      f"{MAX_QUERY_CHARS} are accepted")
        if spec.needs_query and not query.strip():
            raise InvalidRequestError(f"query is empty; task {task!r} needs a query")
        if spec.needs_regions and n_regions == 0 and n_indices == 0:
            raise InvalidRequestError(
                f"task {task!r} needs regions; the request has neither `regions` boxes nor "
                f"`region_indices` into the proposals")
        if n_indices > MAX_REGIONS:
            raise InvalidRequestError(f"{n_indices} region_indices given; at most "
                                      f"{MAX_REGIONS} regions exist")

    def _request_image(self, request: QueryRegions.Request) -> Tuple[
            Image, str, Optional[_Frame], Optional[_ExternalProposals]]:
        """Return the image a request asks about, a name for messages, its stream frame and,
        with ``proposal_source: topic`` and no request ``regions``, its topic proposals.

        The request's own image when any of its fields is set (its proposals are those with
        its header stamp); else the newest frame of ``image`` (with topic proposals: the newest
        frame that has them, waiting up to ``proposal_wait_s``). A stream frame older than
        ``max_frame_age`` seconds by its header stamp is rejected.

        Raises:
            InvalidRequestError: no frame yet, no matching proposals in time, frame too old.
        """
        with self._state_lock:
            wait_s = self._runtime.proposal_wait_s
        need_proposals = self._topic_proposals and not request.regions
        img = request.image
        if img.width or img.height or len(img.data) or img.encoding:
            external = None
            if need_proposals:
                stamp = stamp_to_ns(img.header.stamp)
                external = self._frames.proposals_for(stamp, wait_s)
                if external is None:
                    raise InvalidRequestError(
                        f"no proposals on '{self._proposal_sub.topic_name}' match the request "
                        f"image's stamp {format_stamp(stamp)} (waited {wait_s:g} s; "
                        f"{self._matching_state()}); send `regions` or an image whose "
                        f"proposals were published")
            return img, "request image", None, external
        frame, external = None, None
        if need_proposals:
            pair = self._frames.newest_pair(timeout_s=wait_s)
            if pair is not None:
                frame, external = pair
            elif self._frames.newest_frame() is not None:
                raise InvalidRequestError(
                    f"no recent frame of '{self._image_sub.topic_name}' has proposals on "
                    f"'{self._proposal_sub.topic_name}' (waited {wait_s:g} s; "
                    f"{self._matching_state()})")
        else:
            frame = self._frames.newest_frame()
        if frame is None:
            raise InvalidRequestError(
                f"no image received yet on '{self._image_sub.topic_name}' and the request has "
                f"no image")
        max_age = float(request.max_frame_age)
        if max_age > 0.0:
            age = (self.get_clock().now() - Time.from_msg(frame.msg.header.stamp)).nanoseconds
            age_s = age / 1e9
            if age_s > max_age:
                raise InvalidRequestError(
                    f"newest frame is {age_s:.3f} s old (stamp {frame.msg.header.stamp.sec}."
                    f"{frame.msg.header.stamp.nanosec:09d}), older than max_frame_age "
                    f"{max_age:.3f} s")
        with self._state_lock:
            frame.used = True
        return frame.msg, f"newest frame of '{self._image_sub.topic_name}'", frame, external

    def _matching_state(self) -> str:
        """The newest frame and proposal stamps and the tolerance, for error messages."""
        frame, proposals = self._frames.newest_stamps()
        return (f"newest frame stamp {format_stamp(frame)}, newest proposals stamp "
                f"{format_stamp(proposals)}, tolerance "
                f"{self._frames.tolerance_ns / 1e9:g} s")

    def _filter_external(self, external: _ExternalProposals, header: Any,
                         image_size: Tuple[int, int], notes: List[str]) -> Any:
        """Topic proposals through the shared post-processing (thresholds, NMS, int, top-k).

        Returns:
            :class:`vlxseek_core.types.Proposals` in pixels of the image (possibly empty).
        """
        from vlxseek_core.proposals import postprocess_proposals
        with self._state_lock:
            thresholds = dict(self._proposal_filter)
        if external.frame_id and header.frame_id and external.frame_id != header.frame_id:
            notes.append(f"proposals frame_id '{external.frame_id}' differs from the image's "
                         f"'{header.frame_id}' (paired by stamp)")
        return postprocess_proposals(external.boxes, external.scores, image_size=image_size,
                                     **thresholds)

    def _infer(self, rgb: np.ndarray, query: str, task: str, inputs: Dict[str, Any],
               service: bool, on_model: Optional[Callable[[], None]] = None,
               progress: Any = None):
        """Run one query under the model lock; returns ``(QueryResult, wall ms)``.

        Args:
            inputs: the regions: ``boxes`` (request regions), ``proposals`` (from the topic),
                ``region_indices``; passed to the pipeline's ``query``.
            service: a service call (waits per ``busy_policy``; the caller holds one of the
                MAX_WAITING_CALLS slots); else the standing query (never waits).
            on_model: called once the model is held (the caller stops waiting for frames).
            progress: a ``QueryProgress`` passed to the pipeline (stages, tokens, cancel).

        Raises:
            BusyError: the model was not free in time (message starts with ``busy:``).
            VLXSeekError: the pipeline rejected the request.
            Exception: anything else raised inside inference, after counting and logging it.
        """
        with self._state_lock:
            rt = self._runtime
        if self._closing:
            raise BusyError(f"busy: {self._closing}")
        if not service:
            if not self._model_lock.acquire(blocking=False):
                raise BusyError("busy: an inference is running")
            return self._infer_locked(rgb, query, task, inputs, rt, on_model, progress)
        timeout = rt.busy_timeout_s if rt.busy_policy == "wait" else 0.0
        if not wait_for_lock(self._model_lock, timeout, lambda: bool(self._closing)):
            if self._closing:  # a waiting call answers as soon as the service closes
                raise BusyError(f"busy: {self._closing}")
            raise BusyError(
                "busy: an inference is running (busy_policy reject)" if timeout <= 0.0 else
                f"busy: the model was not free within busy_timeout_s={timeout:g} s")
        return self._infer_locked(rgb, query, task, inputs, rt, on_model, progress)

    def _infer_locked(self, rgb, query, task, inputs: Dict[str, Any], rt: _Runtime,
                      on_model: Optional[Callable[[], None]] = None, progress: Any = None):
        """Run the inference; called with the model lock held, releases it."""
        if progress is None and _takes_progress(self._pipe):
            progress = QueryProgress()  # so that shutdown can stop decoding (begin_shutdown)
        try:
            if on_model is not None:
                on_model()
            with self._state_lock:
                pending, self._pending_thresholds = self._pending_thresholds, {}
                if progress is not None:  # registered before the closing check: no race
                    self._in_flight.add(progress)
            if self._closing:
                raise BusyError(f"busy: {self._closing}")
            if pending:
                self._pipe.set_proposal_thresholds(**pending)
            start = time.perf_counter()
            try:
                if progress is not None:
                    inputs = {**inputs, "progress": progress}
                result = self._pipe.query(rgb, query, task=task, max_new_tokens=rt.max_new_tokens,
                                          **inputs)
            except VLXSeekError:
                raise
            except Exception as exc:
                self._inference_failed(exc)
                raise
            if self._closing and getattr(result, "cancelled", False):
                raise BusyError(f"busy: {self._closing} (decoding was stopped after "
                                f"{result.num_generated_tokens} tokens)")
            ms = (time.perf_counter() - start) * 1e3
            self._stats.inference_ok(getattr(result, "timings_ms", None) or {}, ms)
            return result, ms
        finally:
            if progress is not None:
                with self._state_lock:
                    self._in_flight.discard(progress)
            self._model_lock.release()

    def _inference_failed(self, exc: BaseException) -> None:
        """Count and log an exception raised inside inference; free CUDA memory after an OOM."""
        message = f"inference failed: {type(exc).__name__}: {exc}"
        self._stats.inference_error(message)
        if type(exc).__name__ == "OutOfMemoryError":
            try:
                import torch
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # best effort only
                pass
        self._report(message, detail=traceback.format_exc(), error=True)

    def _answered(self, frame: Optional[_Frame]) -> None:
        """Count a stream frame the first time a query about it succeeds."""
        if frame is None:
            return
        with self._state_lock:
            first, frame.answered = not frame.answered, True
        if first:
            self._stats.count("frames_answered")

    def _publish(self, rgb: np.ndarray, result: Any, header: Any,
                 detections: Detection2DArray) -> Tuple[Any, str]:
        """Publish an answer (detections, debug images, 3D); returns ``(Detection3DArray or
        None, note about missing 3D)`` for the service response."""
        self._detections_pub.publish(detections)
        spatial = (None, "")
        if self._spatial is not None:
            spatial = self._spatial.publish_3d(result, header, detections, rgb.shape[:2])
        with self._state_lock:
            debug = self._runtime.publish_debug_image
        raw = debug and self._debug_pub.get_subscription_count() > 0
        jpeg = debug and self._debug_jpeg_pub.get_subscription_count() > 0
        if raw or jpeg:  # drawn once, only for subscribers
            drawn = draw_result(rgb, result)
            if raw:
                self._debug_pub.publish(rgb_to_image_msg(drawn, header))
            if jpeg:
                self._debug_jpeg_pub.publish(rgb_to_compressed_msg(drawn, header))
        return spatial

    def _fail(self, response: QueryRegions.Response, message: str) -> QueryRegions.Response:
        self._report(f"query rejected: {message}")
        response.success = False
        response.message = message
        return response

    def _report(self, message: str, detail: str = "", error: bool = False) -> None:
        """Log a problem once; identical repeats only every LOG_REPEAT_S seconds."""
        now = time.monotonic()
        with self._state_lock:
            last, when = self._last_problem
            if message == last and now - when < LOG_REPEAT_S:
                return
            self._last_problem = (message, now)
        logger = self.get_logger()
        if error:
            logger.error(message + ("\n" + detail if detail else ""))
        else:
            logger.warning(message)


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
