"""The serving logic of the detector nodes, assembled from its parts: :class:`DetectorServing`.

What the node offers (topics, service, action, parameters, threads, busy policy) is documented
in :mod:`vlxseek_ros.detector_node`. Each concern has its module, all mixins of
:class:`DetectorServing` that share the state set up by ``_init_serving`` here:

* :mod:`vlxseek_ros.serving_state`: the state's types and limits (no node code);
* :mod:`vlxseek_ros.serving_parameters`: declaring the parameters, validating runtime changes;
* :mod:`vlxseek_ros.serving_core`: the model lock, busy policy, frame store, proposal matching;
* :mod:`vlxseek_ros.serving_queries`: the service handler and the standing query;
* :mod:`vlxseek_ros.serving_interfaces`: creating/destroying the ROS entities, publishing;
* :mod:`vlxseek_ros.serving_health`: ``~/status`` and ``/diagnostics``.

Imports go one way: the node modules (:mod:`~vlxseek_ros.detector_node`,
:mod:`~vlxseek_ros.managed_detector_node`) import this module, this module imports the parts,
the parts import :mod:`~vlxseek_ros.serving_state` and the helpers, and none of them imports a
node module. Start-up (loading, warm-up helpers) is :mod:`vlxseek_ros.startup`; the node
process (spinning, signals, shutdown grace) is :mod:`vlxseek_ros.node_process`.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from vlxseek_ros.frame_demand import FrameDemand
from vlxseek_ros.frame_matching import StampMatcher
from vlxseek_ros.parameters import RUNTIME_NAMES, THRESHOLD_NAMES, TOPIC_SOURCE
from vlxseek_ros.service_queue import MAX_WAITING_CALLS, ServiceGate
from vlxseek_ros.serving_core import ServingCore
from vlxseek_ros.serving_health import ServingHealth
from vlxseek_ros.serving_interfaces import ServingInterfaces
from vlxseek_ros.serving_parameters import RuntimeParameters
from vlxseek_ros.serving_queries import QueryAnswering
from vlxseek_ros.serving_state import (PROPOSAL_BUFFER, ExternalProposals, Frame, Runtime,
                                       seconds_to_ns, task_specs)
from vlxseek_ros.serving_stats import ServingStats
from vlxseek_ros.spatial_outputs import SpatialOutputs, check_depth_params, make_tracker
from vlxseek_ros.startup import StartupError, resolved_device, run_interruptibly, warm_up


class DetectorServing(RuntimeParameters, ServingCore, QueryAnswering, ServingInterfaces,
                      ServingHealth):
    """The serving logic shared by :class:`~vlxseek_ros.detector_node.DetectorNode` and the
    managed (lifecycle) node.

    A mixin for a ``rclpy`` ``Node``/``LifecycleNode`` subclass: it declares the parameters,
    keeps the serving state (model lock, newest frame, counters) and creates/destroys the
    interfaces of the :mod:`vlxseek_ros.detector_node` docstring. ``self._pipe`` is the loaded
    pipeline (``None`` while a managed node is unconfigured).
    """

    _pipe: Any = None

    def _init_serving(self, params: Dict[str, Any]) -> None:
        """Set up the serving state from the declared parameters (no interfaces yet).

        Raises:
            StartupError: the runtime parameters are unusable.
        """
        self._params = params
        self._state_lock = threading.Lock()   # guards the fields below
        self._model_lock = threading.Lock()   # one inference at a time
        self._runtime = Runtime(**{n: params[n] for n in RUNTIME_NAMES})
        self._pending_thresholds: Dict[str, Any] = {}
        # thresholds of proposals from the topic (the pipeline's own detector has its copy)
        self._proposal_filter = {v: params[k] for k, v in THRESHOLD_NAMES.items()}
        self._topic_proposals = params["proposal_source"] == TOPIC_SOURCE
        # the newest frame, or the last frame_history ones when proposals come from the topic
        self._frames: StampMatcher[Frame, ExternalProposals] = StampMatcher(
            frame_capacity=params["frame_history"] if self._topic_proposals else 1,
            proposal_capacity=PROPOSAL_BUFFER,
            tolerance_ns=seconds_to_ns(params["proposal_stamp_tolerance_s"]))
        self._demand = FrameDemand()  # frame numbers, arrival times, what counts as dropped
        self._standing_seq = 0
        self._last_problem: Tuple[str, float] = ("", 0.0)
        self._stats = ServingStats()
        self._started = time.monotonic()
        self._waiting_calls = threading.BoundedSemaphore(MAX_WAITING_CALLS)
        self._closing = ""  # why new inferences are refused ("" = they are not)
        self._in_flight: set = set()  # QueryProgress of running inferences (shutdown stops them)
        self._abandon = threading.Event()  # set by abandon_inference: callers stop waiting
        self._inference_callers = 0  # callbacks waiting for their inference's result
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

    @property
    def _tasks(self) -> Dict[str, Any]:
        """The tasks the loaded model's family supports (all of them before it loads)."""
        return task_specs(self._pipe)

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
