"""Load and health reporting: ``~/status`` (JSON counters) and ``/diagnostics``.

Part of :class:`vlxseek_ros.serving.DetectorServing`. The counters are those of
:class:`~vlxseek_ros.serving_stats.ServingStats`; the diagnostic level follows
:mod:`vlxseek_ros.diagnostics`. Both are published every ``status_period_s`` by the status
timer, and a summary line is logged at most every
:data:`~vlxseek_ros.serving_state.STATUS_LOG_S` seconds.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict

from std_msgs.msg import String

from vlxseek_ros import diagnostics
from vlxseek_ros.serving_state import STATUS_LOG_S, Runtime


class ServingHealth:
    """Mixin of :class:`~vlxseek_ros.serving.DetectorServing`: status and diagnostics."""

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

    def _publish_diagnostics(self, snapshot: Dict[str, Any], rt: Runtime) -> None:
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

    def status(self) -> Dict[str, Any]:
        """Return the ``~/status`` payload now (a dict; see :mod:`vlxseek_ros.serving_stats`)."""
        return json.loads(self._stats.to_json(**self._status_extra,
                                              inference_in_flight=self.inference_in_flight()))

    def load_summary(self) -> str:
        """One line of the load counters (frames, requests, latency, errors)."""
        return self._stats.summary_line()
