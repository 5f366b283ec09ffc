"""``/diagnostics`` of the detector: the health level as a pure function, and its message.

:func:`assess` decides the level from the node's counters (no ROS imports, unit-tested alone);
:func:`to_diagnostic_array` wraps the result in ``diagnostic_msgs/DiagnosticArray`` (importing
``diagnostic_msgs`` only when called). The node publishes one array every ``status_period_s``
with one ``DiagnosticStatus`` named ``<node name>: inference``:

* ERROR: ``error_after_failures`` or more consecutive inference failures;
* WARN: p95 latency above ``latency_budget_ms`` (end to end for service calls, else inference;
  0 = no budget), frames dropped since the previous report (see
  :mod:`vlxseek_ros.frame_demand`), or no frame on ``image`` for ``stale_frame_s`` while frames
  are expected (the topic has publishers, frames arrived before, or a standing query is set);
* OK otherwise. ``message`` lists every reason; the key/values carry the counters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

OK, WARN, ERROR = 0, 1, 2
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR"}
# Counters of ServingStats reported as key/values, in this order.
COUNTERS = ("frames_received", "frames_dropped", "frames_answered", "requests_received",
            "requests_answered", "requests_ok", "requests_failed", "requests_busy",
            "standing_answered", "inference_errors", "consecutive_failures",
            "proposals_received")


@dataclass(frozen=True)
class Limits:
    """The thresholds (node parameters of the same names)."""

    error_after_failures: int = 3
    latency_budget_ms: float = 0.0
    stale_frame_s: float = 5.0


@dataclass(frozen=True)
class Assessment:
    level: int
    message: str


def latency_p95(snapshot: Mapping[str, Any]) -> Tuple[str, float]:
    """The latency the budget applies to: end to end when calls were made, else inference."""
    latency = snapshot.get("latency_ms", {})
    for stage in ("end_to_end", "inference"):
        series = latency.get(stage)
        if series and series.get("count", 0) > 0:
            return stage, float(series.get("p95", 0.0))
    return "", 0.0


def assess(snapshot: Mapping[str, Any], limits: Limits, dropped_since_last: int,
           frame_age_s: Optional[float], frames_expected: bool) -> Assessment:
    """The level and message of one report.

    Args:
        snapshot: :meth:`vlxseek_ros.serving_stats.ServingStats.snapshot`.
        limits: the thresholds.
        dropped_since_last: frames dropped since the previous report.
        frame_age_s: seconds since the newest frame arrived; None = none arrived yet (counted
            from start-up by the caller when it wants that to be stale).
        frames_expected: frames should arrive (see the module docstring).
    """
    level, reasons = OK, []

    def raise_to(new_level: int, reason: str) -> None:
        nonlocal level
        level = max(level, new_level)
        reasons.append(reason)

    failures = int(snapshot.get("consecutive_failures", 0))
    if failures >= max(1, int(limits.error_after_failures)):
        raise_to(ERROR, f"{failures} consecutive inference failures (last: "
                        f"{snapshot.get('last_error', '')})")
    stage, p95 = latency_p95(snapshot)
    if limits.latency_budget_ms > 0.0 and p95 > limits.latency_budget_ms:
        raise_to(WARN, f"{stage} latency p95 {p95:g} ms exceeds latency_budget_ms "
                       f"{limits.latency_budget_ms:g}")
    if dropped_since_last > 0:
        raise_to(WARN, f"{dropped_since_last} frames dropped since the last report")
    if (frames_expected and limits.stale_frame_s > 0.0 and frame_age_s is not None
            and frame_age_s >= limits.stale_frame_s):
        raise_to(WARN, f"no frame received for {frame_age_s:.1f} s (stale_frame_s "
                       f"{limits.stale_frame_s:g})")
    return Assessment(level, "; ".join(reasons) if reasons else "ok")


def key_values(snapshot: Mapping[str, Any], extra: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """The (key, value) strings of one report: ``extra`` first, counters, latency, last error."""
    pairs = [(str(k), "" if v is None else str(v)) for k, v in extra.items()]
    pairs += [(name, str(snapshot.get(name, 0))) for name in COUNTERS]
    for stage, series in sorted(snapshot.get("latency_ms", {}).items()):
        pairs.append((f"latency_ms.{stage}.p95", str(series.get("p95", 0.0))))
        pairs.append((f"latency_ms.{stage}.mean", str(series.get("mean", 0.0))))
    pairs.append(("last_error", str(snapshot.get("last_error", ""))))
    pairs.append(("uptime_s", str(snapshot.get("uptime_s", 0.0))))
    return pairs


def to_diagnostic_array(stamp: Any, name: str, hardware_id: str, assessment: Assessment,
                        pairs: List[Tuple[str, str]]) -> Any:
    """A ``diagnostic_msgs/DiagnosticArray`` holding one status.

    Raises:
        ImportError: ``diagnostic_msgs`` is not installed.
    """
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    status = DiagnosticStatus()
    status.level = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN,
                    ERROR: DiagnosticStatus.ERROR}[assessment.level]
    status.name, status.hardware_id, status.message = name, hardware_id, assessment.message
    status.values = [KeyValue(key=k, value=v) for k, v in pairs]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array
