"""Running a detector node as a process: signals, start-up, spinning and exit.

:func:`run_node` is what ``vlxseek_detector`` (plain or ``--managed``) runs:

1. SIGINT and SIGTERM are recorded, never raised (:mod:`vlxseek_ros.stop_signals`); rclpy's
   handlers, installed by ``rclpy.init``, shut the context down on either.
2. The node is built; its slow start-up steps (model loading, warm-up) are interruptible
   (:func:`vlxseek_ros.startup.run_interruptibly`), and no interface is created once shutdown
   began.
3. It spins on a ``MultiThreadedExecutor`` sized by :mod:`vlxseek_ros.service_queue` until
   shutdown (:func:`spin_until_shutdown`).

Whatever the moment of the signal (before or while loading, during the warm-up, while serving,
during the teardown or the interpreter's exit, several signals in a row), the process exits
with status 0 and one info
line, without a traceback; exit status 1 is kept for a start-up that failed on its own (bad
parameter, model that does not load). Work that cannot be interrupted (a model load or an
inference in native code) is abandoned: the process then exits with ``os._exit`` instead of
waiting for it.

Messages after shutdown go to the logger :data:`PROCESS_LOGGER`, which has no ``/rosout``
publisher (the node's has one, and its context is gone by then).
"""
from __future__ import annotations

import ctypes
import os
import sys
import time
import traceback
from typing import Any, Callable, List, Optional

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from vlxseek_ros import stop_signals
from vlxseek_ros.parameters import NODE_NAME
from vlxseek_ros.service_queue import EXECUTOR_THREADS
from vlxseek_ros.startup import StartupError, StartupInterrupted, abandoned_work

# On SIGINT/SIGTERM, a running inference gets this long before the process exits without it.
# Its decoding is stopped at once (begin_shutdown), so this covers the proposal detector and
# the towers of a frame still being encoded, and the answer's way back to the caller.
SHUTDOWN_GRACE_S = 1.0
# An inference still running after the grace is abandoned: its caller answers busy at once,
# and the process waits this long more for that answer to be sent, seconds.
ABANDON_ANSWER_S = 0.3
# Logger of the process-level messages (start-up interrupted, abandoned inference).
PROCESS_LOGGER = f"{NODE_NAME}.process"
M_ARENA_MAX = -8  # glibc mallopt parameter number


def process_logger() -> Any:
    """The rclpy logger of process-level messages (console only, usable after shutdown)."""
    return rclpy.logging.get_logger(PROCESS_LOGGER)


def limit_malloc_arenas(max_arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas unless the user set ``MALLOC_ARENA_MAX``.

    glibc gives each thread that allocates concurrently its own arena and rarely returns their
    memory; with camera frames arriving on executor threads the node's resident size grew by
    ~400 MB in a 60 s 1280x720 @ 60 Hz soak, and by ~40 MB with two arenas
    (benchmarks/RESULTS.md). Returns True when the cap was applied.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        return ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, int(max_arenas)) == 1
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False


def shutdown_requested() -> bool:
    """Whether SIGINT/SIGTERM arrived or the default rclpy context was shut down."""
    return stop_signals.requested() or not rclpy.ok()


def _exit_now(status: int, node: Any = None) -> None:
    """End the process at once, leaving native work (model load, inference) behind.

    The node (if given) and the rclpy context are destroyed first, so that peers see its
    service and participant go at once (``os._exit`` skips that, and DDS would otherwise keep
    them for the participant lease, ~20 s); then the console is flushed.
    """
    try:
        if node is not None:
            node.destroy_node()
        context = rclpy.get_default_context() if node is None else node.context
        context.try_shutdown()
        context.destroy()
    except Exception:  # best effort: the process ends either way
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    try:  # C stdio too: rcutils writes the log lines there
        ctypes.CDLL(None).fflush(None)
    except Exception:
        pass
    os._exit(status)


def spin_until_shutdown(node: Any) -> None:
    """Spin ``node`` on a MultiThreadedExecutor until SIGINT/SIGTERM or rclpy shutdown.

    Then: new service calls are answered busy, calls still queued in the service get a busy
    answer, the load counters are logged (``at exit: ...``), and the node is destroyed once no
    callback runs. An inference still running
    :data:`SHUTDOWN_GRACE_S` seconds after the shutdown request is abandoned: its caller
    answers ``busy`` (sent within :data:`ABANDON_ANSWER_S`), and the process exits with status
    0 (``os._exit``, after flushing the console) instead of waiting for it; likewise start-up
    work of a managed node's interrupted ``configure``. Either way the node is destroyed
    only once the answers are out (``answer_queued_calls`` waits
    :data:`~vlxseek_ros.service_queue.DELIVERY_LINGER_S` for them).
    """
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:
        # the executor re-raises what a callback raised; a callback that used the context just
        # shut down (a timer publishing ~/status) is part of the shutdown, not an error
        if node.context.ok():
            raise
        process_logger().debug(f"during shutdown: {type(exc).__name__}: {exc}")
    finally:
        node.begin_shutdown()
        executor.shutdown(timeout_sec=SHUTDOWN_GRACE_S, wait_for_threads=False)
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while node.inference_in_flight() and time.monotonic() < deadline:
            time.sleep(0.02)
        if node.inference_in_flight():
            # its caller answers busy now (the inference runs in a worker thread, left behind)
            node.abandon_inference()
            deadline = time.monotonic() + ABANDON_ANSWER_S
            while node.inference_callers() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)  # the callback's thread sends the answer right after it returns
        if node.inference_in_flight() or abandoned_work():
            node.answer_queued_calls()  # calls that waited for the model have answered busy
            what = "an inference in flight" if node.inference_in_flight() else "start-up work"
            process_logger().warning(f"shutting down with {what}: abandoning it; at exit: "
                                     + node.load_summary())
            _exit_now(0, node)
        # rclpy's Executor.shutdown does not wait for callbacks already running, and the first
        # call above left the worker threads alone (an inference might have been in flight):
        # join them now, so no callback publishes on an entity destroy_node frees (a segfault
        # at exit under load)
        executor.shutdown(timeout_sec=SHUTDOWN_GRACE_S, wait_for_threads=True)
        node.answer_queued_calls()
        process_logger().info("at exit: " + node.load_summary())
        node.destroy_node()


def _start(node_class: Callable[[], Any]) -> Optional[Any]:
    """Build the node; None when shutdown was requested before it was ready.

    Raises:
        StartupError: the node failed to start on its own (not because of a shutdown).
    """
    log = process_logger()
    if shutdown_requested():
        log.info("shutdown requested before start-up: exiting")
        return None
    try:
        node = node_class()
    except StartupInterrupted as exc:
        log.info(f"shutdown requested {exc}: exiting")
        return None
    except Exception as exc:
        if shutdown_requested():  # an error caused by the shutdown itself (invalid context...)
            log.info(f"shutdown requested during start-up ({type(exc).__name__}): exiting")
            return None
        raise
    if shutdown_requested():  # the signal came as the node became ready: nothing will spin
        node.destroy_node()
        log.info("shutdown requested during start-up: exiting")
        return None
    return node


def run_node(node_class: Callable[[], Any], args: Optional[List[str]] = None) -> int:
    """Init rclpy (SIGINT and SIGTERM both shut it down), build ``node_class()`` and spin it.

    Signals are recorded from the first line on (:mod:`vlxseek_ros.stop_signals`) and malloc
    arenas are capped (:func:`limit_malloc_arenas`), before any thread exists.

    Returns:
        0 after a normal shutdown or one requested during start-up, 1 when the node raised
        :class:`StartupError` on its own.
    """
    stop_signals.install()
    limit_malloc_arenas()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.ALL)
    status = 0
    try:
        try:
            node = _start(node_class)
        except StartupError as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
            status = 1
            node = None
        if node is not None:
            spin_until_shutdown(node)
    except BaseException:  # os._exit below would swallow it: say what failed, exit 1
        traceback.print_exc()
        status = 1
    finally:
        rclpy.try_shutdown()
        stop_signals.ignore()  # done: a signal from here on must not kill the process
        # Everything is answered and destroyed: end now. The interpreter's own teardown (torch,
        # transformers, CUDA) takes 1.5-2.5 s and would make every Ctrl-C slow; an interrupted
        # model load or warm-up may also still run in native code (abandoned_work).
        _exit_now(status)
    return status
