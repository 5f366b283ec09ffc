"""When a frame of ``image`` counts as dropped (thread-safe, no ROS imports).

A frame is **dropped** when it is replaced by a newer one (with ``proposal_source: topic``:
pushed out of ``frame_history``) before any query used it, *while a consumer was waiting for
frames*: a service call about the stream (no request image) from its start until it holds the
model (waiting for proposals or for the model), or the standing query from a tick that found
the model busy until it next holds the model.

Frames nobody waits for are not drops: an idle node, frames skipped between standing-query
ticks by ``max_rate_hz``, and frames that arrive while the consumer that asked runs its own
inference. A growing count therefore means consumers wait while frames go by (the node is
overloaded), which is what ``/diagnostics`` warns about. (Counting every unused frame made an
idle node report ``frames_dropped == frames_received``.)
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional


class FrameDemand:
    """Tracks frame arrivals and waiting consumers; decides whether an evicted frame dropped.

    Frames are numbered 1, 2, ... in arrival order. ``_mark`` is the newest frame number seen
    while a consumer waited: a frame numbered at most ``_mark`` and still stored was stored at
    a moment of demand, so replacing it unused is a drop.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting = 0               # service calls waiting for a frame / the model
        self._standing_behind = False   # the standing query found the model busy
        self._newest = 0                # number of the newest frame
        self._mark = 0
        self._last_arrival: Optional[float] = None

    def _demand(self) -> bool:
        return self._waiting > 0 or self._standing_behind

    def arrived(self) -> int:
        """Record a new frame; returns its number."""
        with self._lock:
            self._newest += 1
            self._last_arrival = self._clock()
            if self._demand():
                self._mark = self._newest
            return self._newest

    def is_drop(self, seq: int, used: bool) -> bool:
        """Whether replacing (evicting) frame ``seq`` now is a drop."""
        with self._lock:
            return not used and (self._demand() or seq <= self._mark)

    def frame_age_s(self) -> Optional[float]:
        """Seconds since the newest frame arrived; None before the first frame."""
        with self._lock:
            return None if self._last_arrival is None else self._clock() - self._last_arrival

    def received_any(self) -> bool:
        with self._lock:
            return self._newest > 0

    def _set_mark(self) -> None:  # with the lock held
        self._mark = self._newest

    @contextmanager
    def call_waiting(self) -> Iterator[Callable[[], None]]:
        """A service call waits for frames from here; call the yielded function (or leave the
        block) when it holds the model."""
        done = [False]

        def stop() -> None:
            with self._lock:
                if not done[0]:
                    done[0] = True
                    self._set_mark()
                    self._waiting -= 1

        with self._lock:
            self._waiting += 1
            self._set_mark()
        try:
            yield stop
        finally:
            stop()

    def standing_behind(self, behind: bool) -> None:
        """The standing query found the model busy (True) / holds it or is off (False)."""
        with self._lock:
            if behind != self._standing_behind:
                self._set_mark()
            self._standing_behind = behind
