"""SIGINT and SIGTERM of a node process: recorded, never raised.

``rclpy.init`` installs rclpy's handlers for both signals: they shut every rclpy context down
(from a thread of rclpy's) and then call the handler that was installed before them. Left alone,
that earlier handler is Python's default: SIGINT raises ``KeyboardInterrupt`` wherever the main
thread happens to be (inside a model load, a teardown or a second signal's teardown: a traceback
and exit status -2), and SIGTERM before ``rclpy.init`` kills the process during its imports.

:func:`install` replaces both with a handler that only records the signal, so nothing is ever
raised; the start-up and spin code notices the request through the rclpy context (shut down by
rclpy's handler) or :func:`requested` (before ``rclpy.init``). The node modules install it as
the first thing they do when run as programs, before their slow imports, in a mode that ends
the process at once (status 0) while it only imports; ``run_node`` switches to recording.
The handler takes no lock (a lock held by the interrupted main thread would deadlock it):
callers poll.

When the node is gone, :func:`ignore` makes further signals harmless: Python resets handlers of
its own to the default action when the interpreter exits (seconds with torch loaded), so a
second SIGINT then, as ``ros2 launch`` sends 50 ms after the first, would kill the process
(exit status -2) after a clean shutdown.

Only for processes that run a node (``run_node``); in-process users of the node classes (tests,
other programs) keep their own signal handling.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import List

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: List[int] = []  # numbers of the signals received, in order (list.append is atomic)
_exit_at_once = False  # True while the process only imports: nothing to clean up yet
_EXIT_LINE = b"[vlxseek_detector] shutdown requested while importing: exiting\n"


def _record(signum: int, frame: object) -> None:
    _received.append(signum)
    if _exit_at_once:  # os.write and os._exit are safe in a handler; no lock, no buffer
        os.write(2, _EXIT_LINE)
        os._exit(0)


def install(exit_at_once: bool = False) -> bool:
    """Record SIGINT and SIGTERM from now on instead of raising or dying.

    Args:
        exit_at_once: the process is only importing (the node modules' first line): a signal
            ends it at once with status 0, instead of after seconds of imports (torch,
            transformers). :func:`install` without it (``run_node``, before ``rclpy.init``)
            switches to recording.

    Returns:
        True when installed; False outside the main thread (Python allows handlers only there).
    """
    global _exit_at_once
    if threading.current_thread() is not threading.main_thread():
        return False
    _exit_at_once = bool(exit_at_once)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _record)
    return True


def ignore() -> bool:
    """Ignore SIGINT and SIGTERM from now on (the process is exiting); False outside the main
    thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    return True


def requested() -> bool:
    """Whether SIGINT or SIGTERM arrived since :func:`install`."""
    return bool(_received)


def received() -> List[str]:
    """The names of the signals received, in order (``['SIGTERM', 'SIGINT']``)."""
    return [signal.Signals(s).name for s in list(_received)]


def reset() -> None:
    """Forget the signals received (tests)."""
    del _received[:]
