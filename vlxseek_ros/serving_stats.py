"""Load and health counters of the vlxseek_detector node (thread-safe, no ROS imports).

Everything is counted since the node started:

* frames: ``received`` on ``image``; ``dropped`` = replaced by a newer frame (with
  ``proposal_source: topic``: pushed out of the ``frame_history``) before any query (service
  call or standing query) used it; ``answered`` = frames with at least one successful
  answer (request images are not frames of the stream and are not counted here).
* ``proposals_received``: arrays received on ``proposals`` (``proposal_source: topic``).
* requests (service calls): ``received`` (taken from the service's queue), ``answered``
  (responses handed to rclpy: every received request is answered exactly once, so the two are
  equal whenever no call is in progress), and by outcome ``ok``, ``failed`` (invalid request or
  inference error, answered ``success=false``) and ``busy`` (answered ``success=false,
  message="busy: ..."``); ``answered`` = ``ok`` + ``failed`` + ``busy``.
* ``inference_errors``: inferences that raised (service or standing query);
  ``consecutive_failures``: inference errors since the last successful inference (0 = healthy);
  ``last_error``: the newest error message with its age in seconds.
* latency in milliseconds per stage (the pipeline's ``QueryResult.timings_ms`` keys: proposals,
  preprocess, encode, prefill_prefix, generate, recorded as the pipeline reports them; on a
  frame-cache hit the core currently repeats the frame's proposals/preprocess/encode times)
  plus ``inference`` (model lock held) and ``end_to_end`` (service callback entry to response,
  including the wait for the model): count, last, mean, p95 over the newest :data:`WINDOW`
  samples, and max.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Mapping, Optional

# Samples kept per latency series for the p95 (a bounded window: memory does not grow).
WINDOW = 200


class _Series:
    """Latency samples of one stage, milliseconds."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.last = 0.0
        self.window: Deque[float] = deque(maxlen=WINDOW)

    def add(self, ms: float) -> None:
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)
        self.last = ms
        self.window.append(ms)

    def summary(self) -> Dict[str, float]:
        ordered = sorted(self.window)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0
        return {"count": self.count, "last": round(self.last, 2),
                "mean": round(self.total / self.count, 2) if self.count else 0.0,
                "p95": round(p95, 2), "max": round(self.max, 2)}


class ServingStats:
    """Counters of one node; every method may be called from any thread."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self.counts: Dict[str, int] = {
            "frames_received": 0, "frames_dropped": 0, "frames_answered": 0,
            "requests_received": 0, "requests_answered": 0,
            "requests_ok": 0, "requests_failed": 0, "requests_busy": 0,
            "standing_answered": 0, "inference_errors": 0, "consecutive_failures": 0,
            "proposals_received": 0,
        }
        self._latency: Dict[str, _Series] = {}
        self._last_error = ""
        self._last_error_at: Optional[float] = None

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (one of :attr:`counts`)."""
        with self._lock:
            self.counts[name] += n

    def latency(self, stage: str, ms: float) -> None:
        """Record one latency sample of ``stage``, milliseconds."""
        with self._lock:
            self._latency.setdefault(stage, _Series()).add(float(ms))

    def inference_ok(self, timings_ms: Mapping[str, float], inference_ms: float) -> None:
        """Record a successful inference: its per-stage timings and the wall time under lock."""
        with self._lock:
            self.counts["consecutive_failures"] = 0
            for stage, ms in (timings_ms or {}).items():
                self._latency.setdefault(str(stage), _Series()).add(float(ms))
            self._latency.setdefault("inference", _Series()).add(float(inference_ms))

    def inference_error(self, message: str) -> int:
        """Record an inference that raised; returns the consecutive failure count."""
        with self._lock:
            self.counts["inference_errors"] += 1
            self.counts["consecutive_failures"] += 1
            self._last_error, self._last_error_at = message, self._clock()
            return self.counts["consecutive_failures"]

    def snapshot(self) -> Dict[str, Any]:
        """Return all counters, ``last_error`` (+ its age) and ``latency_ms`` per stage."""
        with self._lock:
            now = self._clock()
            snap: Dict[str, Any] = {"uptime_s": round(now - self._started, 3), **self.counts}
            snap["last_error"] = self._last_error
            snap["last_error_age_s"] = (round(now - self._last_error_at, 3)
                                        if self._last_error_at is not None else -1.0)
            snap["latency_ms"] = {k: s.summary() for k, s in sorted(self._latency.items())}
        return snap

    def to_json(self, **extra: Any) -> str:
        """Return :meth:`snapshot` plus ``extra`` keys as one JSON string (``~/status``)."""
        return json.dumps({**extra, **self.snapshot()}, sort_keys=True)

    def summary_line(self) -> str:
        """Return a one-line human summary for the (throttled) log."""
        s = self.snapshot()
        e2e = s["latency_ms"].get("end_to_end", {})
        return (f"frames {s['frames_received']} received / {s['frames_dropped']} dropped / "
                f"{s['frames_answered']} answered; requests {s['requests_received']} received / "
                f"{s['requests_answered']} answered: {s['requests_ok']} ok / "
                f"{s['requests_failed']} failed / {s['requests_busy']} busy; "
                f"end-to-end ms mean {e2e.get('mean', 0.0)} p95 {e2e.get('p95', 0.0)}; "
                f"inference errors {s['inference_errors']} "
                f"({s['consecutive_failures']} consecutive)"
                + (f"; last error: {s['last_error']}" if s["last_error"] else ""))
