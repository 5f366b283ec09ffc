"""The ``~/query`` action (``vlxseek_ros/action/QueryRegions``): a service query with progress.

Goal, result and the request path are those of ``~/query_regions``: :meth:`QueryAction._execute`
turns the goal into a service request and answers it with the node's own service handler
(``_on_query``: the same validation, busy policy, waiting-call slots, counters, ``fill_response``
and ``~/detections``), passing a :class:`vlxseek_core.streaming.QueryProgress` that reports back:

* feedback ``queued`` (waiting for the frame and the model), then ``proposals`` / ``encode`` /
  ``generate`` as the query enters them, the answer so far token by token (at most every
  :data:`FEEDBACK_PERIOD_S` seconds; stage changes always), and ``done`` with the final answer;
* cancel requests are accepted and stop generation within one decoding step: the goal ends
  ``canceled`` with the partial result (``success=false``, message ``cancelled after N tokens``);
* a goal the service would answer ``success=false`` (invalid, busy, inference failed) ends
  ``aborted`` with that message; a successful one ``succeeded``. Nothing raises out of a
  callback and every accepted goal reaches exactly one terminal state.

Goals are refused at once while the node closes (deactivate, shutdown; the reason is logged),
and a generation still running when the node starts closing stops at the next token (the goal
ends ``aborted``, ``busy: ...``). At most :data:`~vlxseek_ros.service_queue.MAX_ACTION_GOALS`
goals execute at once (more end ``aborted``, ``busy``); each also takes one of the service's
waiting-call slots while it waits for or holds the model. Threads: the action server's
requests (goal, cancel, result) have their own callback group, and the executor has a thread
for it and one per running goal (:data:`~vlxseek_ros.service_queue.EXECUTOR_THREADS`), so goals
never take the threads of service calls.
"""
from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Dict, Optional

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from vlxseek_core.streaming import QueryProgress
from vlxseek_ros.action import QueryRegions as QueryAction_
from vlxseek_ros.service_queue import MAX_ACTION_GOALS
from vlxseek_ros.srv import QueryRegions as QuerySrv

ACTION_NAME = "~/query"
# Token feedback is published at most this often (about 20 Hz); stage changes always are.
FEEDBACK_PERIOD_S = 0.05
# How long destroy waits for the goals still executing to send their result, seconds.
DESTROY_WAIT_S = 5.0
# Goals ended by destroy time: how long to wait for rclpy to send their results (an executor
# task after the execute callback; a client that never asks for its result costs this), s.
RESULT_GRACE_S = 2.0
# A cancel accepted while the answer was being finished: how long to wait for the goal's
# state to become CANCELING before it is ended aborted instead, seconds.
CANCEL_STATE_WAIT_S = 1.0


def _copy_fields(src: Any, dst: Any) -> Any:
    """Copy every field ``dst`` and ``src`` share by name (goal -> request, response ->
    result); returns ``dst``."""
    names = set(src.get_fields_and_field_types())
    for name in dst.get_fields_and_field_types():
        if name in names:
            setattr(dst, name, getattr(src, name))
    return dst


class _Goal:
    """Progress of one executing goal: its QueryProgress and the feedback throttle."""

    def __init__(self, handle: Any, node: Any) -> None:
        self.handle = handle
        self.node = node
        self.client_cancel = threading.Event()
        self.progress = QueryProgress(on_stage=self.stage, on_token=self.token)
        self.tokens = 0
        self.partial = ""
        self._last_sent = 0.0

    def send(self, stage: str) -> None:
        """Publish one feedback message (errors, e.g. a context gone at shutdown, ignored)."""
        msg = QueryAction_.Feedback(stage=stage, partial_answer=self.partial,
                                    num_tokens=self.tokens)
        try:
            self.handle.publish_feedback(msg)
        except Exception:  # feedback is best effort; the query goes on
            pass
        self._last_sent = time.monotonic()

    def stage(self, name: str) -> None:
        self.send(name)

    def token(self, text: str, num_tokens: int) -> None:
        self.partial, self.tokens = text, int(num_tokens)
        if self.node._closing:  # deactivate / shutdown: stop within one decoding step
            self.progress.cancel.set()
        if time.monotonic() - self._last_sent >= FEEDBACK_PERIOD_S:
            self.send("generate")


class QueryAction:
    """The ``~/query`` action server of a :class:`~vlxseek_ros.serving.DetectorServing`
    node (created by its ``_make_interfaces``; :meth:`destroy` with its other interfaces)."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._cond = threading.Condition()
        self._running: Dict[int, _Goal] = {}
        self._slots = threading.BoundedSemaphore(MAX_ACTION_GOALS)
        self._open = True
        self._group = MutuallyExclusiveCallbackGroup()
        # goals whose execute callback returned / whose result rclpy sent (cumulative): destroy
        # waits for the difference, since rclpy sends a result in an executor task afterwards
        self._finished = 0
        self._results_sent = 0
        self.server = ActionServer(
            node, QueryAction_, ACTION_NAME, execute_callback=self._execute,
            goal_callback=self._on_goal, cancel_callback=self._on_cancel,
            callback_group=self._group)
        # count the result responses sent, so destroy can wait for those of its last goals
        send = self.server._send_result_response

        def counted_send(*args: Any) -> None:
            try:
                send(*args)
            finally:
                with self._cond:
                    self._results_sent += 1
                    self._cond.notify_all()
        self.server._send_result_response = counted_send

    # -------------------------------------------------------------- callbacks

    def _on_goal(self, goal: Any) -> GoalResponse:
        """Accept every goal unless the node is closing (the reason is logged)."""
        reason = self._node._closing or ("" if self._open else "the action server is closing")
        if reason:
            try:
                self._node.get_logger().warning(f"~/query goal rejected: {reason}")
            except Exception:  # no /rosout during shutdown
                pass
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_cancel(self, handle: Any) -> CancelResponse:
        """Accept: generation stops within one decoding step; the goal ends ``canceled``."""
        with self._cond:
            goal = self._running.get(id(handle))
        if goal is not None:
            goal.client_cancel.set()
            goal.progress.cancel.set()
        return CancelResponse.ACCEPT

    def _execute(self, handle: Any) -> Any:
        """Answer the goal through the service's path; exactly one terminal state."""
        goal = _Goal(handle, self._node)
        with self._cond:
            self._running[id(handle)] = goal
        if handle.is_cancel_requested:  # cancelled before it started
            goal.client_cancel.set()
            goal.progress.cancel.set()
        slot = self._slots.acquire(blocking=False)
        try:
            if not slot:
                result = QueryAction_.Result(
                    success=False, message=f"busy: {MAX_ACTION_GOALS} ~/query goals are "
                                           f"already running; retry later")
            elif goal.client_cancel.is_set():
                result = QueryAction_.Result(success=False,
                                             message="cancelled before the query started")
            else:
                result = self._answer(goal)
            return self._finish(goal, result)
        except Exception as exc:  # a bug of ours: the goal still ends, aborted
            self._report(f"~/query goal failed: {type(exc).__name__}: {exc}",
                         traceback.format_exc())
            return self._finish(goal, QueryAction_.Result(
                success=False, message=f"query failed: {type(exc).__name__}: {exc}"))
        finally:
            if slot:
                self._slots.release()
            with self._cond:
                self._running.pop(id(handle), None)
                self._finished += 1
                self._cond.notify_all()

    # -------------------------------------------------------------- helpers

    def _answer(self, goal: _Goal) -> Any:
        """Run the goal as a service request with progress; returns the action result."""
        request = _copy_fields(goal.handle.request, QuerySrv.Request())
        goal.send("queued")
        response = self._node._on_query(request, QuerySrv.Response(), progress=goal.progress)
        result = _copy_fields(response, QueryAction_.Result())
        if response.success:
            goal.partial = response.answer
        if goal.progress.cancel.is_set() and response.success:  # stopped early: a partial answer
            result.success = False
            why = ("cancelled" if goal.client_cancel.is_set()
                   else f"busy: {self._node._closing or 'closing'}; generation stopped")
            result.message = "; ".join(
                [f"{why} after {goal.tokens} tokens (partial answer)"]
                + [m for m in [response.message] if m and "cancelled after" not in m])
        goal.send("done")
        return result

    def _finish(self, goal: _Goal, result: Any) -> Any:
        """Set the goal's terminal state from ``result`` and return ``result``."""
        handle = goal.handle
        if goal.client_cancel.is_set() and not handle.is_cancel_requested:
            # the cancel callback accepted; rclpy moves the goal to CANCELING right after it
            deadline = time.monotonic() + CANCEL_STATE_WAIT_S
            while not handle.is_cancel_requested and time.monotonic() < deadline:
                time.sleep(0.005)
        try:
            if handle.is_cancel_requested:
                result.success = False
                if not result.message.startswith("cancelled"):
                    result.message = "cancelled" + (f": {result.message}" if result.message
                                                    else "")
                handle.canceled()
            elif result.success:
                handle.succeed()
            else:
                handle.abort()
        except Exception as exc:  # an invalid transition or a destroyed server: log only
            self._report(f"~/query goal could not end: {type(exc).__name__}: {exc}", "")
        return result

    def _report(self, message: str, detail: str) -> None:
        try:
            self._node._report(message, detail=detail, error=True)
        except Exception:  # no logging during shutdown
            pass

    @property
    def running(self) -> int:
        """Goals executing now."""
        with self._cond:
            return len(self._running)

    def destroy(self, wait_s: Optional[float] = None) -> None:
        """Refuse new goals, stop running generations (at the next token), wait up to
        ``wait_s`` (default :data:`DESTROY_WAIT_S`) for them to end and up to
        :data:`RESULT_GRACE_S` more for rclpy to send the results of every goal that ended,
        then destroy the server.

        rclpy sends a goal's result in an executor task after the execute callback returned
        (and only once the client asked for it), so a goal that ended just before this call
        would otherwise lose its result with the server.
        """
        wait_s = DESTROY_WAIT_S if wait_s is None else wait_s
        with self._cond:
            self._open = False
            for goal in self._running.values():
                goal.progress.cancel.set()
            self._cond.wait_for(lambda: not self._running, timeout=wait_s)
            self._cond.wait_for(lambda: self._results_sent >= self._finished,
                                timeout=RESULT_GRACE_S)
        self.server.destroy()
