"""The serving node's interfaces: creating and destroying its publishers, subscriptions,
service, action and timers, and publishing an answer on them.

Part of :class:`vlxseek_ros.serving.DetectorServing` (the interfaces are listed in the
docstring of :mod:`vlxseek_ros.detector_node`). Destroying them (deactivate, shutdown) first
stops serving: new inferences are refused, the calls already taken are answered, those still
queued are answered ``busy``; the model stays loaded.
"""
from __future__ import annotations

import time
from typing import Any, Tuple

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from vision_msgs.msg import Detection2DArray

from vlxseek_ros.debug_image import draw_result
from vlxseek_ros.image_conversion import rgb_to_compressed_msg, rgb_to_image_msg
from vlxseek_ros.query_action import QueryAction
from vlxseek_ros.service_queue import DELIVERY_LINGER_S, drain_requests, service_qos
from vlxseek_ros.spatial_outputs import SpatialOutputs
from vlxseek_ros.srv import QueryRegions
from vlxseek_ros.startup import create_unless_stopping, resolved_device


class ServingInterfaces:
    """Mixin of :class:`~vlxseek_ros.serving.DetectorServing`: the node's ROS entities."""

    def _create_interfaces(self) -> None:
        """Create the publishers, the image subscription, the service and the timers.

        Raises:
            StartupInterrupted: shutdown began before or while they were created.
        """
        create_unless_stopping(self._make_interfaces, self._stopping, "the interfaces")

    def _make_interfaces(self) -> None:
        params = self._params
        # the device in use (cuda:0, cpu), known once the model is loaded; not "auto"
        self._status_extra["device"] = resolved_device(self._pipe, params["device"])
        image_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1,
            reliability=(ReliabilityPolicy.RELIABLE if params["image_qos_reliable"]
                         else ReliabilityPolicy.BEST_EFFORT),
            durability=DurabilityPolicy.VOLATILE)
        reliable1 = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                               reliability=ReliabilityPolicy.RELIABLE)
        self._detections_pub = self.create_publisher(Detection2DArray, "~/detections", 10)
        self._debug_pub = self.create_publisher(Image, "~/debug_image", reliable1)
        # image_transport's naming, so rqt_image_view / rviz2 offer it as the compressed stream
        self._debug_jpeg_pub = self.create_publisher(CompressedImage,
                                                     "~/debug_image/compressed", reliable1)
        self._status_pub = self.create_publisher(String, "~/status", reliable1)
        self._spatial = SpatialOutputs(self, params, self._tracker, self._proposal_group)
        self._diagnostics_pub = self._create_diagnostics_publisher()
        self._image_sub = self.create_subscription(
            Image, "image", self._on_image, image_qos, callback_group=self._image_group)
        if self._topic_proposals:
            # best effort hears reliable and best-effort detectors alike (REP 2003)
            self._proposal_sub = self.create_subscription(
                Detection2DArray, "proposals", self._on_proposals,
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                           reliability=ReliabilityPolicy.BEST_EFFORT),
                callback_group=self._proposal_group)
        self._service_group.reopen()
        self._service = self.create_service(
            QueryRegions, "~/query_regions", self._on_query,
            qos_profile=service_qos(params["service_queue_depth"]),
            callback_group=self._service_group)
        with self._state_lock:
            period = 1.0 / self._runtime.max_rate_hz
        self._timer = self.create_timer(period, self._on_timer,
                                        callback_group=self._timer_group)
        self._status_timer = self.create_timer(params["status_period_s"], self._on_status,
                                               callback_group=self._status_group)
        self._interfaces = [
            (self.destroy_timer, self._status_timer), (self.destroy_timer, self._timer),
            (self.destroy_service, self._service), (self.destroy_subscription, self._image_sub),
            (self.destroy_publisher, self._status_pub), (self.destroy_publisher, self._debug_pub),
            (self.destroy_publisher, self._debug_jpeg_pub),
            (self.destroy_publisher, self._detections_pub),
            (SpatialOutputs.destroy, self._spatial)]
        # ~/query (its own callback group); destroyed first: stops its generations, waits
        self._interfaces.insert(0, (QueryAction.destroy, QueryAction(self)))
        if self._diagnostics_pub is not None:
            self._interfaces.append((self.destroy_publisher, self._diagnostics_pub))
        if self._proposal_sub is not None:
            self._interfaces.append((self.destroy_subscription, self._proposal_sub))
        self._closing = ""
        proposals = (f"topic '{self._proposal_sub.topic_name}'" if self._proposal_sub
                     else params["proposal_source"])
        self.get_logger().info(
            f"ready: model '{params['model_path']}', proposals {proposals}, "
            f"image topic '{self._image_sub.topic_name}' "
            f"({'reliable' if params['image_qos_reliable'] else 'best effort'}), "
            f"service '{self.resolve_service_name(self._service.srv_name)}'")

    def _destroy_interfaces(self, wait_s: float = 30.0) -> None:
        """Stop serving; the model stays loaded.

        Refuses new inferences and takes no more requests, waits up to ``wait_s`` seconds for
        a running inference and for the calls already taken to be answered, answers the calls
        still queued ``busy``, then destroys the interfaces made by :meth:`_create_interfaces`.
        """
        self._closing = self._closing or "the service is being deactivated"
        deadline = time.monotonic() + wait_s
        if self._model_lock.acquire(timeout=wait_s):
            self._model_lock.release()
        # the calls that waited for the model now answer busy at once (self._closing)
        self._service_group.close(max(deadline - time.monotonic(), 0.0) + 1.0)
        self.answer_queued_calls()
        with self._state_lock:
            interfaces, self._interfaces = self._interfaces, []
            self._timer = None
            self._service = None
        self._frames.clear()
        for destroy, entity in interfaces:
            destroy(entity)

    def answer_queued_calls(self) -> int:
        """Answer ``busy`` to the calls still queued (no executor taking them); returns count.

        The last step before the service is destroyed (deactivate, shutdown): with a service,
        it then waits :data:`~vlxseek_ros.service_queue.DELIVERY_LINGER_S`, so that these
        answers and those just sent by the callbacks reach their callers first."""
        busy = QueryRegions.Response(
            success=False, message=f"busy: {self._closing or 'the node is shutting down'}")
        service = self._service
        if service is None:
            return 0
        answered = drain_requests(service, lambda _: busy)
        for name in ("requests_received", "requests_busy", "requests_answered"):
            self._stats.count(name, answered)
        time.sleep(DELIVERY_LINGER_S)
        return answered

    def _publish(self, rgb: np.ndarray, result: Any, header: Any,
                 detections: Detection2DArray) -> Tuple[Any, str]:
        """Publish an answer (detections, debug images, 3D); returns ``(Detection3DArray or
        None, note about missing 3D)`` for the service response."""
        self._detections_pub.publish(detections)
        spatial = (None, "")
        if self._spatial is not None:
            spatial = self._spatial.publish_3d(result, header, detections, rgb.shape[:2])
        with self._state_lock:
            debug = self._runtime.publish_debug_image
        raw = debug and self._debug_pub.get_subscription_count() > 0
        jpeg = debug and self._debug_jpeg_pub.get_subscription_count() > 0
        if raw or jpeg:  # drawn once, only for subscribers
            drawn = draw_result(rgb, result)
            if raw:
                self._debug_pub.publish(rgb_to_image_msg(drawn, header))
            if jpeg:
                self._debug_jpeg_pub.publish(rgb_to_compressed_msg(drawn, header))
        return spatial
