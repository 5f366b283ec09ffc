"""The serving core: the model lock and busy policy, the frame store and the pairing of frames
with proposals from the topic.

Part of :class:`vlxseek_ros.serving.DetectorServing`. One lock around the model makes
inferences (and threshold changes, applied between inferences) strictly sequential; a service
call waits for it per ``busy_policy`` (``wait``: up to ``busy_timeout_s``; ``reject``: not at
all), the standing query never waits, and once serving is closing (``self._closing``) every
inference is refused with :class:`~vlxseek_ros.serving_state.BusyError`. The ``image`` and
``proposals`` callbacks only store: the newest frame (or the last ``frame_history`` ones with
``proposal_source: topic``) and the proposal arrays, paired by header stamp
(:class:`~vlxseek_ros.frame_matching.StampMatcher`).
"""
from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from rclpy.time import Time
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from vlxseek_core.errors import InvalidRequestError, VLXSeekError
from vlxseek_core.streaming import QueryProgress
from vlxseek_ros.conversions import detection_array_to_raw_proposals
from vlxseek_ros.frame_matching import format_stamp, stamp_to_ns
from vlxseek_ros.serving_state import (LOG_REPEAT_S, BusyError, ExternalProposals, Frame,
                                       Runtime)
from vlxseek_ros.service_queue import wait_for_lock
from vlxseek_ros.srv import QueryRegions


class ServingCore:
    """Mixin of :class:`~vlxseek_ros.serving.DetectorServing`: inference under the model lock,
    the busy policy, the frame store and proposal matching, and problem logging."""

    # ------------------------------------------------------------------ model lock

    def inference_in_flight(self) -> bool:
        """Return True while an inference holds the model."""
        return self._model_lock.locked()

    def inference_callers(self) -> int:
        """Callbacks (service calls, goals, the standing query) waiting for an inference."""
        with self._state_lock:
            return self._inference_callers

    def abandon_inference(self) -> None:
        """Shutdown, after the grace: callers waiting for an inference stop waiting and answer
        ``busy`` at once; the inference itself runs on in its worker thread (the process exits
        without it)."""
        self._closing = self._closing or "the node is shutting down"
        self._abandon.set()

    def begin_shutdown(self) -> None:
        """Refuse new inferences (answered busy) and stop the decoding of running ones within
        one step, so their callers get a ``busy`` answer before the node goes (a pipeline
        that does not watch ``progress.cancel`` runs to its end)."""
        self._closing = "the node is shutting down"
        with self._state_lock:
            in_flight = list(self._in_flight)
        for progress in in_flight:
            progress.cancel.set()

    def _infer(self, rgb: np.ndarray, query: str, task: str, inputs: Dict[str, Any],
               service: bool, on_model: Optional[Callable[[], None]] = None,
               progress: Any = None):
        """Run one query under the model lock; returns ``(QueryResult, wall ms)``.

        Args:
            inputs: the regions: ``boxes`` (request regions), ``proposals`` (from the topic),
                ``region_indices``; passed to the pipeline's ``query``.
            service: a service call (waits per ``busy_policy``; the caller holds one of the
                MAX_WAITING_CALLS slots); else the standing query (never waits).
            on_model: called once the model is held (the caller stops waiting for frames).
            progress: the ``QueryProgress`` passed to the pipeline (stages, tokens, cancel);
                ``None``: a new one (shutdown cancels it through :meth:`begin_shutdown`).

        Raises:
            BusyError: the model was not free in time (message starts with ``busy:``).
            VLXSeekError: the pipeline rejected the request.
            Exception: anything else raised inside inference, after counting and logging it.
        """
        with self._state_lock:
            rt = self._runtime
        if self._closing:
            raise BusyError(f"busy: {self._closing}")
        if not service:
            if not self._model_lock.acquire(blocking=False):
                raise BusyError("busy: an inference is running")
            return self._infer_locked(rgb, query, task, inputs, rt, on_model, progress)
        timeout = rt.busy_timeout_s if rt.busy_policy == "wait" else 0.0
        if not wait_for_lock(self._model_lock, timeout, lambda: bool(self._closing)):
            if self._closing:  # a waiting call answers as soon as the service closes
                raise BusyError(f"busy: {self._closing}")
            raise BusyError(
                "busy: an inference is running (busy_policy reject)" if timeout <= 0.0 else
                f"busy: the model was not free within busy_timeout_s={timeout:g} s")
        return self._infer_locked(rgb, query, task, inputs, rt, on_model, progress)

    def _infer_locked(self, rgb, query, task, inputs: Dict[str, Any], rt: Runtime,
                      on_model: Optional[Callable[[], None]] = None, progress: Any = None):
        """Run the inference; called with the model lock held, which is released when the
        inference ends.

        The pipeline runs in a worker thread while this (callback) thread waits for it, so that
        a shutdown that cannot wait for the inference (:meth:`abandon_inference`) still
        answers the caller: the wait then ends with :class:`BusyError` at once.
        """
        if progress is None:
            progress = QueryProgress()  # so that shutdown can stop decoding (begin_shutdown)
        try:
            if on_model is not None:
                on_model()
            with self._state_lock:
                pending, self._pending_thresholds = self._pending_thresholds, {}
                self._in_flight.add(progress)  # registered before the closing check: no race
            if self._closing:
                raise BusyError(f"busy: {self._closing}")
            if pending:
                self._pipe.set_proposal_thresholds(**pending)
        except BaseException:
            self._end_inference(progress)
            raise
        start = time.perf_counter()
        outcome: Dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["result"] = self._pipe.query(
                    rgb, query, task=task, max_new_tokens=rt.max_new_tokens, progress=progress,
                    **inputs)
            except BaseException as exc:  # handed to the waiting caller
                outcome["error"] = exc
            finally:
                self._end_inference(progress)
                done.set()
        with self._state_lock:
            self._inference_callers += 1
        try:
            threading.Thread(target=work, name="vlxseek-inference", daemon=True).start()
            while not done.wait(0.05):
                if self._abandon.is_set():
                    raise BusyError(f"busy: {self._closing}; the running inference was "
                                    f"abandoned")
        finally:
            with self._state_lock:
                self._inference_callers -= 1
        if "error" in outcome:
            exc = outcome["error"]
            if not isinstance(exc, VLXSeekError):
                self._inference_failed(exc)
            raise exc
        result = outcome["result"]
        if self._closing and getattr(result, "cancelled", False):
            raise BusyError(f"busy: {self._closing} (decoding was stopped after "
                            f"{result.num_generated_tokens} tokens)")
        ms = (time.perf_counter() - start) * 1e3
        self._stats.inference_ok(getattr(result, "timings_ms", None) or {}, ms)
        return result, ms

    def _end_inference(self, progress: Any) -> None:
        """Forget ``progress`` and release the model lock (the inference ended)."""
        with self._state_lock:
            self._in_flight.discard(progress)
        self._model_lock.release()

    def _inference_failed(self, exc: BaseException) -> None:
        """Count and log an exception raised inside inference; free CUDA memory after an OOM."""
        message = f"inference failed: {type(exc).__name__}: {exc}"
        self._stats.inference_error(message)
        if type(exc).__name__ == "OutOfMemoryError":
            try:
                import torch
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # best effort only
                pass
        self._report(message, detail=traceback.format_exc(), error=True)

    # ------------------------------------------------------------------ frame store

    def _on_image(self, msg: Image) -> None:
        """Keep the newest frame(s) (no conversion, no inference here)."""
        seq = self._demand.arrived()
        evicted = self._frames.add_frame(stamp_to_ns(msg.header.stamp), Frame(msg, seq))
        self._stats.count("frames_received")
        if evicted is not None and self._demand.is_drop(evicted.seq, evicted.used):
            self._stats.count("frames_dropped")

    def _on_proposals(self, msg: Detection2DArray) -> None:
        """Keep an external detector's proposals for pairing with their frame by stamp."""
        try:
            boxes, scores = detection_array_to_raw_proposals(msg)
        except Exception as exc:  # a malformed message must not stop the subscription
            self._report(f"ignored a proposals message: {type(exc).__name__}: {exc}")
            return
        self._frames.add_proposals(stamp_to_ns(msg.header.stamp),
                                   ExternalProposals(msg.header.frame_id, boxes, scores))
        self._stats.count("proposals_received")

    def _request_image(self, request: QueryRegions.Request) -> Tuple[
            Image, str, Optional[Frame], Optional[ExternalProposals]]:
        """Return the image a request asks about, a name for messages, its stream frame and,
        with ``proposal_source: topic`` and no request ``regions``, its topic proposals.

        The request's own image when any of its fields is set (its proposals are those with
        its header stamp); else the newest frame of ``image`` (with topic proposals: the newest
        frame that has them, waiting up to ``proposal_wait_s``). A stream frame older than
        ``max_frame_age`` seconds by its header stamp is rejected.

        Raises:
            InvalidRequestError: no frame yet, no matching proposals in time, frame too old.
        """
        with self._state_lock:
            wait_s = self._runtime.proposal_wait_s
        need_proposals = self._topic_proposals and not request.regions
        img = request.image
        if img.width or img.height or len(img.data) or img.encoding:
            external = None
            if need_proposals:
                stamp = stamp_to_ns(img.header.stamp)
                external = self._frames.proposals_for(stamp, wait_s)
                if external is None:
                    raise InvalidRequestError(
                        f"no proposals on '{self._proposal_sub.topic_name}' match the request "
                        f"image's stamp {format_stamp(stamp)} (waited {wait_s:g} s; "
                        f"{self._matching_state()}); send `regions` or an image whose "
                        f"proposals were published")
            return img, "request image", None, external
        frame, external = None, None
        if need_proposals:
            pair = self._frames.newest_pair(timeout_s=wait_s)
            if pair is not None:
                frame, external = pair
            elif self._frames.newest_frame() is not None:
                raise InvalidRequestError(
                    f"no recent frame of '{self._image_sub.topic_name}' has proposals on "
                    f"'{self._proposal_sub.topic_name}' (waited {wait_s:g} s; "
                    f"{self._matching_state()})")
        else:
            frame = self._frames.newest_frame()
        if frame is None:
            raise InvalidRequestError(
                f"no image received yet on '{self._image_sub.topic_name}' and the request has "
                f"no image")
        max_age = float(request.max_frame_age)
        if max_age > 0.0:
            age = (self.get_clock().now() - Time.from_msg(frame.msg.header.stamp)).nanoseconds
            age_s = age / 1e9
            if age_s > max_age:
                raise InvalidRequestError(
                    f"newest frame is {age_s:.3f} s old (stamp {frame.msg.header.stamp.sec}."
                    f"{frame.msg.header.stamp.nanosec:09d}), older than max_frame_age "
                    f"{max_age:.3f} s")
        with self._state_lock:
            frame.used = True
        return frame.msg, f"newest frame of '{self._image_sub.topic_name}'", frame, external

    def _matching_state(self) -> str:
        """The newest frame and proposal stamps and the tolerance, for error messages."""
        frame, proposals = self._frames.newest_stamps()
        return (f"newest frame stamp {format_stamp(frame)}, newest proposals stamp "
                f"{format_stamp(proposals)}, tolerance "
                f"{self._frames.tolerance_ns / 1e9:g} s")

    def _filter_external(self, external: ExternalProposals, header: Any,
                         image_size: Tuple[int, int], notes: List[str]) -> Any:
        """Topic proposals through the shared post-processing (thresholds, NMS, int, top-k).

        Returns:
            :class:`vlxseek_core.types.Proposals` in pixels of the image (possibly empty).
        """
        from vlxseek_core.proposals import postprocess_proposals
        with self._state_lock:
            thresholds = dict(self._proposal_filter)
        if external.frame_id and header.frame_id and external.frame_id != header.frame_id:
            notes.append(f"proposals frame_id '{external.frame_id}' differs from the image's "
                         f"'{header.frame_id}' (paired by stamp)")
        return postprocess_proposals(external.boxes, external.scores, image_size=image_size,
                                     **thresholds)

    def _answered(self, frame: Optional[Frame]) -> None:
        """Count a stream frame the first time a query about it succeeds."""
        if frame is None:
            return
        with self._state_lock:
            first, frame.answered = not frame.answered, True
        if first:
            self._stats.count("frames_answered")

    # ------------------------------------------------------------------ problems

    def _report(self, message: str, detail: str = "", error: bool = False) -> None:
        """Log a problem once; identical repeats only every LOG_REPEAT_S seconds."""
        now = time.monotonic()
        with self._state_lock:
            last, when = self._last_problem
            if message == last and now - when < LOG_REPEAT_S:
                return
            self._last_problem = (message, now)
        logger = self.get_logger()
        if error:
            logger.error(message + ("\n" + detail if detail else ""))
        else:
            logger.warning(message)
