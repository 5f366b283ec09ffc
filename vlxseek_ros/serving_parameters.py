"""The serving node's parameters: declaring them and validating runtime changes.

The table itself is :mod:`vlxseek_ros.parameters` (declared by :mod:`vlxseek_ros.startup`);
this part of :class:`vlxseek_ros.serving.DetectorServing` checks the runtime parameters
(start-up and ``set_parameters``) and applies accepted changes: a new
:class:`~vlxseek_ros.serving_state.Runtime` snapshot, the proposal thresholds (applied to the
pipeline before its next inference), the stamp tolerance and the standing-query rate.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List

from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

from vlxseek_ros.parameters import BUSY_POLICIES, NODE_PARAMETERS, RUNTIME_NAMES, THRESHOLD_NAMES
from vlxseek_ros.serving_state import Runtime, seconds_to_ns
from vlxseek_ros.startup import declare_parameters


class RuntimeParameters:
    """Mixin of :class:`~vlxseek_ros.serving.DetectorServing`: parameter declaration and the
    set-parameters callback (registered by ``_init_serving``)."""

    def _declare_parameters(self) -> Dict[str, Any]:
        """Declare the parameters of :data:`vlxseek_ros.parameters.NODE_PARAMETERS`; returns
        their values by name.

        Raises:
            StartupError: a bad value, naming the parameter.
        """
        return declare_parameters(self, NODE_PARAMETERS)

    def _check_runtime(self, rt: Runtime) -> str:
        """Return why the runtime parameters are unusable, or '' when they are fine."""
        task = rt.standing_task or "detect"
        spec = self._tasks.get(task)
        if spec is None:
            # no model yet (managed node): configure checks the task against its family
            later = (" (no model is loaded yet: configure checks it against the model "
                     "family's tasks)") if self._pipe is None else ""
            return (f"standing_task {rt.standing_task!r} is unknown; known tasks: "
                    f"{', '.join(self._tasks)}{later}")
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
                                                  if k in RUNTIME_NAMES})
            reason = self._check_runtime(candidate)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            rate_changed = candidate.max_rate_hz != self._runtime.max_rate_hz
            self._runtime = candidate
            thresholds = {THRESHOLD_NAMES[k]: v for k, v in changes.items()
                          if k in THRESHOLD_NAMES}
            self._pending_thresholds.update(thresholds)
            self._proposal_filter.update(thresholds)
        self._frames.tolerance_ns = seconds_to_ns(candidate.proposal_stamp_tolerance_s)
        timer = self._timer
        if rate_changed and timer is not None:
            timer.timer_period_ns = int(1e9 / candidate.max_rate_hz)
        return SetParametersResult(successful=True)
