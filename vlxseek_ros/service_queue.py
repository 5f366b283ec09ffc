"""The ``~/query_regions`` request queue: its QoS depth, the executor sizing, and closing it.

Why calls were lost (issue 11): a ROS 2 service is a pair of DDS topics, and rclpy's default
service QoS (``qos_profile_services_default``) is reliable, volatile, KEEP_LAST **depth 10** for
the service's request reader and response writer alike. rclpy's executors take one request per
pass of their wait loop, so a burst of calls queues in the request reader, and once more than
10 are waiting DDS replaces the oldest: the node never sees them and their clients wait forever
(80 concurrent calls on the tiny model: the node counted 20). A client's request writer and
response reader have its own QoS depth (rclpy's default is 10 too): the writer drops requests it
could not get acknowledged in time, and with Fast DDS every client's response reader receives
the responses to all clients of the service, so it drops responses once more than its depth
are outstanding on the service (500 calls from one client with the default client QoS and the
node at depth 1000: the node answered 500, the client received 418; 50 clients with 10 calls
each: 140 of 500). Clients therefore need KEEP_ALL or a depth at least the number of calls
outstanding on the service (README, "Many calls at once").

What this module provides:

* :func:`service_qos`: the service's QoS with an explicit depth (node parameter
  ``service_queue_depth``, default :data:`DEFAULT_QUEUE_DEPTH`): it bounds the calls that may be
  outstanding at once, across all clients, without any being dropped by DDS on the node's side.
* the executor sizing (:data:`EXECUTOR_THREADS`): every call that may wait for the model holds an
  executor thread (:data:`MAX_WAITING_CALLS`; more calls are answered busy at once), one more
  thread keeps taking requests and answering them busy while those wait, and every other
  callback group of the node gets one, as do the ``~/query`` action's group and its running goals
  (:data:`ACTION_THREADS`, :mod:`vlxseek_ros.query_action`).
* :class:`ServiceGate`: the service's callback group, which can be closed (no request is taken
  any more) and waited on until every taken request has been answered, so a service is only
  destroyed once no response can still be due; :func:`drain_requests` then answers what is
  still queued, so those calls get a ``busy`` answer instead of none, and
  :data:`DELIVERY_LINGER_S` later the answers are out and the service may go.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from rclpy.callback_groups import CallbackGroup
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Default depth of the service's request queue (and response history), calls.
DEFAULT_QUEUE_DEPTH = 1000
# Service calls that may wait for (or hold) the model at once; more are answered busy at once.
MAX_WAITING_CALLS = 4
# Callback groups other than the service's, each of which may hold one executor thread: the
# standing-query timer, the image subscription, the proposals subscription, the status timer,
# and the node's default group (parameter services; lifecycle services of the managed node).
OTHER_CALLBACK_GROUPS = 5
# Goals of the ``~/query`` action that may execute at once (more end aborted, busy at once);
# each holds an executor thread while it runs (and one of the MAX_WAITING_CALLS slots while it
# waits for or holds the model).
MAX_ACTION_GOALS = 2
# Threads of the action: its running goals and its own callback group (goal, cancel, result).
ACTION_THREADS = MAX_ACTION_GOALS + 1
# Executor threads: the waiting calls, one to take and answer further calls (busy) meanwhile,
# one per other callback group, and the action's, so no kind of callback waits for a thread
# behind calls or goals.
EXECUTOR_THREADS = MAX_WAITING_CALLS + 1 + OTHER_CALLBACK_GROUPS + ACTION_THREADS
# How often a call waiting for the model checks whether the service is closing, seconds.
CLOSING_POLL_S = 0.05
# Answers handed to DDS just before their service (or the node) is destroyed can go down with
# it: Fast DDS may still be sending them from its own thread (a CI run saw a node count 240
# answered calls at a double SIGINT while its clients received 236). Whoever destroys a
# service after its last answers waits this long first, seconds.
DELIVERY_LINGER_S = 0.25


def service_qos(depth: int) -> QoSProfile:
    """The QoS of ``~/query_regions``: rclpy's service default with ``depth`` instead of 10.

    Reliable and volatile as ``qos_profile_services_default``; KEEP_LAST ``depth`` on both the
    request reader and the response writer of the service.
    """
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


class ServiceGate(CallbackGroup):
    """Reentrant callback group of a service that can be closed and waited on.

    While open it lets any number of callbacks run in parallel, as ``ReentrantCallbackGroup``
    does, and counts them: rclpy calls :meth:`beginning_execution` before it takes a request and
    :meth:`ending_execution` after the response was sent. Once :meth:`close` d, the executor
    takes no more requests of its services (they stay queued in DDS), and :meth:`close` returns
    when the running callbacks have sent their responses.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition()
        self._open = True
        self._running = 0

    def can_execute(self, entity: Any) -> bool:
        """Whether the executor may wait for requests of ``entity`` (only while open)."""
        return self._open

    def beginning_execution(self, entity: Any) -> bool:
        """Admit one callback (before its request is taken) unless the gate is closed."""
        with self._cond:
            if not self._open:
                return False
            self._running += 1
            return True

    def ending_execution(self, entity: Any) -> None:
        """One callback has finished (its response was sent)."""
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    @property
    def running(self) -> int:
        """Callbacks admitted and not yet finished."""
        with self._cond:
            return self._running

    def close(self, timeout_s: float) -> bool:
        """Take no more requests; wait up to ``timeout_s`` for the running callbacks to end.

        Returns:
            True when none is running any more.
        """
        with self._cond:
            self._open = False
            return self._cond.wait_for(lambda: self._running == 0, timeout=max(0.0, timeout_s))

    def reopen(self) -> None:
        """Take requests again (a new service of a re-activated managed node)."""
        with self._cond:
            self._open = True


def drain_requests(service: Any, answer: Callable[[Any], Any], limit: int = 100000) -> int:
    """Take the requests still queued in ``service`` and send each ``answer(request)``.

    Call it only while no executor takes requests of ``service`` (its :class:`ServiceGate`
    closed, or the executor shut down). Requests still on their way are not seen: their clients
    see the service disappear instead. Errors (a destroyed service, an invalid context) end the
    draining quietly.

    Returns:
        How many requests were answered.
    """
    answered = 0
    while answered < limit:
        try:
            with service.handle:
                request, header = service.handle.service_take_request(service.srv_type.Request)
            if header is None:
                break
            service.send_response(answer(request), header)
        except Exception:  # destroyed, or the context is gone: nothing more can be answered
            break
        answered += 1
    return answered


def wait_for_lock(lock: Any, timeout_s: float, give_up: Callable[[], bool]) -> bool:
    """Acquire ``lock`` within ``timeout_s`` seconds (0: only if it is free now).

    ``give_up()`` is checked every :data:`CLOSING_POLL_S` seconds while waiting, so calls that
    wait for the model are answered as soon as the service closes (deactivate, shutdown)
    instead of after the running inference.

    Returns:
        True when acquired; False on timeout or when ``give_up()`` became true.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        remaining = deadline - time.monotonic()
        if (lock.acquire(timeout=min(CLOSING_POLL_S, remaining)) if remaining > 0.0
                else lock.acquire(blocking=False)):
            return True
        if give_up() or time.monotonic() >= deadline:
            return False
