"""Recent camera frames and externally detected proposals, matched by header stamp.

With ``proposal_source: topic`` the candidate regions of a frame come from another node (any
detector publishing ``vision_msgs/Detection2DArray`` with the image's header, as detectors in
ROS 2 do). Proposals usually arrive *after* their frame (the detector needs time), so the node
keeps the last few frames and pairs each with the proposals whose stamp matches.

``message_filters``' synchronizers pair messages as they arrive and drop unpaired images; here a
service call must also find the proposals of one given frame (a request image, the newest frame
that has proposals), and wait a bounded time for late ones, so the two buffers are kept here.

No ROS imports: stamps are integer nanoseconds (``sec * 10**9 + nanosec``); frames and
proposals are opaque objects. Thread-safe: one condition variable guards both buffers and wakes
waiters when proposals arrive.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Deque, Generic, Optional, Tuple, TypeVar

__all__ = ["StampMatcher", "stamp_to_ns", "format_stamp"]

F = TypeVar("F")
P = TypeVar("P")


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (anything with ``sec``, ``nanosec``) to integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def format_stamp(stamp_ns: Optional[int]) -> str:
    """``sec.nanosec`` text of a stamp in nanoseconds (``none`` for ``None``)."""
    if stamp_ns is None:
        return "none"
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return f"{sec}.{nsec:09d}"


class StampMatcher(Generic[F, P]):
    """The newest frames and proposal sets, and the pairing between them by stamp.

    A frame matches the proposal set whose stamp is nearest to the frame's stamp, provided the
    difference is at most ``tolerance_ns`` (0 = the stamps must be equal, the normal case when
    the detector copies the image header).

    Args:
        frame_capacity: frames kept (the newest ones); 1 keeps only the newest frame.
        proposal_capacity: proposal sets kept (the last received ones).
        tolerance_ns: largest accepted ``|frame stamp - proposals stamp|``, nanoseconds.

    Raises:
        ValueError: a capacity below 1 or a negative tolerance.
    """

    def __init__(self, frame_capacity: int = 1, proposal_capacity: int = 64,
                 tolerance_ns: int = 0) -> None:
        if int(frame_capacity) < 1 or int(proposal_capacity) < 1:
            raise ValueError(f"capacities must be >= 1, got frames {frame_capacity}, "
                             f"proposals {proposal_capacity}")
        self._frames: Deque[Tuple[int, F]] = deque(maxlen=int(frame_capacity))
        self._proposals: "OrderedDict[int, P]" = OrderedDict()
        self._proposal_capacity = int(proposal_capacity)
        self._cond = threading.Condition()
        self.tolerance_ns = tolerance_ns

    @property
    def tolerance_ns(self) -> int:
        return self._tolerance_ns

    @tolerance_ns.setter
    def tolerance_ns(self, value: int) -> None:
        if int(value) < 0:
            raise ValueError(f"tolerance must be >= 0 ns, got {value}")
        self._tolerance_ns = int(value)

    # ------------------------------------------------------------------ filling

    def add_frame(self, stamp_ns: int, frame: F) -> Optional[F]:
        """Keep ``frame``; returns the frame that fell out of the history, if any."""
        with self._cond:
            evicted = self._frames[0][1] if len(self._frames) == self._frames.maxlen else None
            self._frames.append((int(stamp_ns), frame))
            self._cond.notify_all()
            return evicted

    def add_proposals(self, stamp_ns: int, proposals: P) -> None:
        """Keep ``proposals`` for ``stamp_ns`` (a later set with the same stamp replaces it)."""
        with self._cond:
            self._proposals.pop(int(stamp_ns), None)
            self._proposals[int(stamp_ns)] = proposals
            while len(self._proposals) > self._proposal_capacity:
                self._proposals.popitem(last=False)
            self._cond.notify_all()

    def clear(self) -> None:
        """Forget every frame and proposal set."""
        with self._cond:
            self._frames.clear()
            self._proposals.clear()

    # ------------------------------------------------------------------ lookups

    def newest_frame(self) -> Optional[F]:
        """The newest frame, or ``None`` before the first one."""
        with self._cond:
            return self._frames[-1][1] if self._frames else None

    def newest_stamps(self) -> Tuple[Optional[int], Optional[int]]:
        """``(newest frame stamp, newest proposals stamp)`` by arrival, ns (``None``: none yet)."""
        with self._cond:
            frame = self._frames[-1][0] if self._frames else None
            proposals = next(reversed(self._proposals)) if self._proposals else None
            return frame, proposals

    def proposals_for(self, stamp_ns: int, timeout_s: float = 0.0) -> Optional[P]:
        """The proposals matching ``stamp_ns``, waiting up to ``timeout_s`` for them to arrive."""
        return self._wait(lambda: self._match(int(stamp_ns)), timeout_s)

    def newest_pair(self, accept: Callable[[F], bool] = lambda frame: True,
                    timeout_s: float = 0.0) -> Optional[Tuple[F, P]]:
        """The newest kept frame that ``accept`` allows and that has proposals, with them.

        Waits up to ``timeout_s`` seconds for such a pair (new frames and proposals keep
        arriving meanwhile); returns ``None`` when there is none by then.
        """
        def find() -> Optional[Tuple[F, P]]:
            for stamp, frame in reversed(self._frames):
                if accept(frame):
                    proposals = self._match(stamp)
                    if proposals is not None:
                        return frame, proposals
            return None
        return self._wait(find, timeout_s)

    # ------------------------------------------------------------------ internals

    def _match(self, stamp_ns: int) -> Optional[P]:
        """Nearest proposals within the tolerance (called with the condition held)."""
        exact = self._proposals.get(stamp_ns)
        if exact is not None or self._tolerance_ns == 0:
            return exact
        best, best_gap = None, None
        for stamp, proposals in self._proposals.items():
            gap = abs(stamp - stamp_ns)
            if gap <= self._tolerance_ns and (best_gap is None or gap < best_gap):
                best, best_gap = proposals, gap
        return best

    def _wait(self, find: Callable[[], Any], timeout_s: float) -> Any:
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        with self._cond:
            while True:
                found = find()
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0.0:
                    return found
                self._cond.wait(remaining)
