"""Answering queries: the ``~/query_regions`` service handler (also run by the ``~/query``
action) and the standing query of the timer.

Part of :class:`vlxseek_ros.serving.DetectorServing`. A request is checked (task, query text,
regions), its image and regions are gathered from the core's frame store
(:mod:`vlxseek_ros.serving_core`), inferred under the model lock and answered exactly once: every
failure becomes ``success=false`` with a message. Answers are published through
:mod:`vlxseek_ros.serving_interfaces`.
"""
from __future__ import annotations

import time
import traceback
from contextlib import nullcontext
from typing import Any, Dict, List, Optional

import numpy as np
from sensor_msgs.msg import Image

from vlxseek_core.errors import InvalidImageError, InvalidRequestError, VLXSeekError
from vlxseek_ros.conversions import bbox_msgs_to_xyxy, detections_to_msg, fill_response
from vlxseek_ros.image_conversion import image_msg_to_rgb
from vlxseek_ros.serving_state import (MAX_QUERY_CHARS, MAX_REGIONS, BusyError,
                                       ExternalProposals, Frame, Runtime)
from vlxseek_ros.service_queue import MAX_WAITING_CALLS
from vlxseek_ros.srv import QueryRegions


class QueryAnswering:
    """Mixin of :class:`~vlxseek_ros.serving.DetectorServing`: service requests and the
    standing query."""

    def _on_query(self, request: QueryRegions.Request, response: QueryRegions.Response,
                  progress: Any = None) -> QueryRegions.Response:
        """Answer one service request exactly once; counted as received and answered.

        Nothing raises out of this callback: invalid requests and images, a busy model and
        exceptions inside inference all become ``success=false`` with a message.
        ``progress`` (a ``vlxseek_core.streaming.QueryProgress``): the ``~/query`` action's.
        """
        self._stats.count("requests_received")
        try:
            return self._answer_query(request, response, progress)
        except Exception as exc:  # a bug of ours must still answer the call
            self._stats.count("requests_failed")
            self._report(f"query failed: {type(exc).__name__}: {exc}",
                         detail=traceback.format_exc(), error=True)
            return QueryRegions.Response(
                success=False, message=f"query failed: {type(exc).__name__}: {exc}")
        finally:
            self._stats.count("requests_answered")

    def _answer_query(self, request: QueryRegions.Request, response: QueryRegions.Response,
                      progress: Any = None) -> QueryRegions.Response:
        """The answer to one request; every failure becomes success=false + message."""
        start = time.perf_counter()
        notes: List[str] = []
        frame: Optional[Frame] = None
        waiting = False
        try:
            if self._pipe is None:  # managed node before configure / after cleanup:
                # say so, rather than check the task against tasks that no model has yet
                raise BusyError(f"busy: {self._closing or 'no model is loaded'}")
            task = request.task or "detect"
            indices = [int(i) for i in request.region_indices]
            self._check_request_text(task, request.query, len(request.regions), len(indices))
            # bounds the calls waiting for proposals or the model (executor threads)
            waiting = self._waiting_calls.acquire(blocking=False)
            if not waiting:
                raise BusyError(f"busy: {MAX_WAITING_CALLS} requests are already waiting for "
                                f"the model; retry later")
            with self._stream_demand(request) as holds_model:
                image_msg, source, frame, external = self._request_image(request)
                try:
                    rgb = image_msg_to_rgb(image_msg)
                except InvalidImageError as exc:
                    raise InvalidImageError(f"{source}: {exc}") from exc
                inputs = self._request_inputs(request, rgb, image_msg, external, indices, notes)
                result, ms = self._infer(rgb, request.query, task, inputs, service=True,
                                         on_model=holds_model, progress=progress)
        except BusyError as exc:
            self._stats.count("requests_busy")
            response.success, response.message = False, str(exc)
            return response
        except VLXSeekError as exc:
            self._stats.count("requests_failed")
            return self._fail(response, str(exc))
        except Exception as exc:  # keep serving whatever happens inside the model
            self._stats.count("requests_failed")
            response.success = False
            response.message = f"inference failed: {type(exc).__name__}: {exc}"
            return response
        finally:
            if waiting:
                self._waiting_calls.release()
        filled = False
        try:
            fill_response(response, result, image_msg.header, ms)
            if notes:
                response.message = "; ".join(notes + ([response.message]
                                                      if response.message else []))
            filled = True
            array3d, note3d = self._publish(rgb, result, image_msg.header, response.detections)
            if array3d is not None:
                response.detections_3d = array3d
            if note3d:
                response.message = "; ".join(m for m in (response.message, note3d) if m)
        except Exception as exc:  # a malformed result must not escape the callback either
            if filled and self._stopping():  # topics gone with the context: the answer stands
                return self._succeeded(response, frame, start)
            self._stats.count("requests_failed")
            self._report(f"answer conversion failed: {type(exc).__name__}: {exc}",
                         detail=traceback.format_exc(), error=True)
            fresh = QueryRegions.Response()
            fresh.success = False
            fresh.message = f"answer conversion failed: {type(exc).__name__}: {exc}"
            return fresh
        return self._succeeded(response, frame, start)

    def _succeeded(self, response: QueryRegions.Response, frame: Optional[Frame],
                   start: float) -> QueryRegions.Response:
        """Count an answered call (and its stream frame) and return its response."""
        self._answered(frame)
        self._stats.count("requests_ok")
        self._stats.latency("end_to_end", (time.perf_counter() - start) * 1e3)
        return response

    def _stream_demand(self, request: QueryRegions.Request):
        """While a call about the stream waits for its frame and the model, frames it misses
        count as dropped (:mod:`vlxseek_ros.frame_demand`); a request image wants none."""
        img = request.image
        if img.width or img.height or len(img.data) or img.encoding:
            return nullcontext(None)
        return self._demand.call_waiting()

    def _request_inputs(self, request: QueryRegions.Request, rgb: np.ndarray, image_msg: Image,
                        external: Optional[ExternalProposals], indices: List[int],
                        notes: List[str]) -> Dict[str, Any]:
        """The regions of a request for the pipeline: request boxes, else topic proposals."""
        regions = list(request.regions)
        if len(regions) > MAX_REGIONS:
            notes.append(f"{len(regions)} regions given, only the first {MAX_REGIONS} were "
                         f"used (VLM-FO1 accepts at most {MAX_REGIONS})")
            regions = regions[:MAX_REGIONS]
        inputs: Dict[str, Any] = {"region_indices": indices or None}
        if regions:
            inputs["boxes"] = bbox_msgs_to_xyxy(regions, rgb.shape[:2])
        elif external is not None:
            inputs["proposals"] = self._filter_external(external, image_msg.header,
                                                        rgb.shape[:2], notes)
        return inputs

    def _check_request_text(self, task: str, query: str, n_regions: int,
                            n_indices: int = 0) -> None:
        """Reject unknown tasks, empty/overlong/non-UTF-8 queries and missing regions.

        Raises:
            InvalidRequestError: with the reason.
        """
        spec = self._tasks.get(task)
        if spec is None:
            raise InvalidRequestError(
                f"unknown task {task[:100]!r}; known tasks: {', '.join(self._tasks)}")
        try:
            query.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequestError(f"query is not valid UTF-8 text ({exc.reason} at "
                                      f"character {exc.start})") from exc
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequestError(f"query is {len(query)} characters long; at most "
                                      f"{MAX_QUERY_CHARS} are accepted")
        if spec.needs_query and not query.strip():
            raise InvalidRequestError(f"query is empty; task {task!r} needs a query")
        if spec.needs_regions and n_regions == 0 and n_indices == 0:
            raise InvalidRequestError(
                f"task {task!r} needs regions; the request has neither `regions` boxes nor "
                f"`region_indices` into the proposals")
        if n_indices > MAX_REGIONS:
            raise InvalidRequestError(f"{n_indices} region_indices given; at most "
                                      f"{MAX_REGIONS} regions exist")

    def _fail(self, response: QueryRegions.Response, message: str) -> QueryRegions.Response:
        self._report(f"query rejected: {message}")
        response.success = False
        response.message = message
        return response

    # ------------------------------------------------------------------ standing query

    def _on_timer(self) -> None:
        """Answer the standing query for a frame newer than the last one it answered.

        With ``proposal_source: topic`` that is the newest such frame whose proposals have
        arrived (never waiting: the next tick looks again).
        """
        with self._state_lock:
            rt = self._runtime
        task = rt.standing_task or "detect"
        if not self._standing_active(rt):
            self._demand.standing_behind(False)
            return
        last = self._standing_seq
        external = None
        if self._topic_proposals:
            pair = self._frames.newest_pair(lambda f: f.seq > last)
            if pair is None:
                return
            frame, external = pair
        else:
            frame = self._frames.newest_frame()
            if frame is None or frame.seq <= last:
                return

        def took_model() -> None:  # the frame is used only once the model runs on it
            self._demand.standing_behind(False)
            with self._state_lock:
                frame.used = True

        try:
            rgb = image_msg_to_rgb(frame.msg)
            previous, self._standing_seq = self._standing_seq, frame.seq
            inputs = {} if external is None else {"proposals": self._filter_external(
                external, frame.msg.header, rgb.shape[:2], [])}
            result, _ = self._infer(rgb, rt.standing_query, task, inputs, service=False,
                                    on_model=took_model)
        except BusyError:
            self._standing_seq = previous  # the model is busy: try again next tick
            self._demand.standing_behind(True)  # frames that go by until then are dropped
            return
        except VLXSeekError as exc:
            self._standing_seq = frame.seq
            self._report(f"standing query skipped a frame: {exc}")
            return
        except Exception:  # counted and logged by _infer
            return
        msg = detections_to_msg(result, frame.msg.header)
        if self._spatial is not None:  # track ids instead of region indices
            self._spatial.track(result, frame.msg.header, msg, (rt.standing_query, task))
        self._publish(rgb, result, frame.msg.header, msg)
        self._answered(frame)
        self._stats.count("standing_answered")

    def _standing_active(self, rt: Runtime) -> bool:
        """Whether the standing query is on (a query, or a standing_task needing no text)."""
        task = rt.standing_task or "detect"
        textless = bool(rt.standing_task) and not self._tasks[task].needs_query
        return bool(rt.standing_query.strip() or textless)
