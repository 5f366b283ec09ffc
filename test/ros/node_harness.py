"""Test-only helpers for in-process node tests: a fake pipeline, a harness, message builders.

Imported by the test modules of this folder (and by the ``fake``/``harness`` fixtures of
``conftest.py``) after they have checked that rclpy and vision_msgs import.
"""
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.types import Detection, Grounding, Proposals, QueryResult
from vlxseek_ros import detector_node
from vlxseek_ros.image_conversion import rgb_to_image_msg
from vlxseek_ros.srv import QueryRegions

REPO = Path(__file__).resolve().parents[2]
NS = "/logic_test"
BOXES = np.array([[1, 2, 11, 12], [5, 5, 30, 40]], np.float32)


class FakePipeline:
    """Stands in for vlxseek_core.VLXSeek in these tests only."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []
        self.events = []            # ("query" | "thresholds", details) in order
        self.active = 0
        self.max_active = 0
        self.delay_s = 0.0
        self.error = None
        self.inputs = []            # the regions of every query: boxes, region_indices, proposals

    def set_proposal_thresholds(self, **kwargs):
        with self.lock:
            self.events.append(("thresholds", kwargs))

    def query(self, image, text, task="detect", boxes=None, max_new_tokens=None,
              region_indices=None, proposals=None, progress=None):
        if progress is not None:  # a QueryProgress, as VLXSeek takes it (cancel is not watched)
            progress.stage("generate")
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append((image.shape, text, task, max_new_tokens))
            self.inputs.append({"boxes": boxes, "region_indices": region_indices,
                                "proposals": proposals})
            self.events.append(("query", text))
        try:
            time.sleep(self.delay_s)
            if self.error is not None:
                raise self.error
            if not text.strip():
                raise InvalidRequestError("empty")
            return QueryResult(
                task=task, query=text, prompt_text="", answer="<ground>x</ground>",
                groundings=[Grounding(text, [1])],
                detections=[Detection(1, text, BOXES[1], 0.5)],
                proposals=(proposals if proposals is not None
                           else Proposals(BOXES, np.array([0.9, 0.5], np.float32))),
                image_size=image.shape[:2])
        finally:
            with self.lock:
                self.active -= 1


def frame(sec=1):
    msg = rgb_to_image_msg(np.full((48, 64, 3), 100, np.uint8), None)
    msg.header.stamp.sec = sec
    msg.header.frame_id = "cam"
    return msg


class Harness:
    def __init__(self, pipeline, overrides=()):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        # no warm-up by default: tests count the fake's queries (a test may pass warmup=True)
        self.node = detector_node.DetectorNode(
            pipeline=pipeline, context=self.context, namespace=NS,
            parameter_overrides=[Parameter("warmup", value=False), *overrides])
        self.peer = rclpy.create_node("logic_peer", namespace=NS, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.client = self.peer.create_client(QueryRegions, f"{NS}/vlxseek_detector/"
                                              "query_regions")
        self.image_pub = self.peer.create_publisher(
            Image, f"{NS}/image", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        assert self.client.wait_for_service(timeout_sec=10)

    def close(self):
        # the spin thread must be out of spin_once before the nodes go: destroying a node whose
        # guard condition the executor is still triggering raises InvalidHandle in that thread
        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def call(self, text="cup", image=None, timeout=20, **fields):
        """Call ~/query_regions; ``fields`` sets further request fields (task, regions...)."""
        req = QueryRegions.Request()
        req.query = text
        if image is not None:
            req.image = image
        for name, value in fields.items():
            setattr(req, name, value)
        future = self.client.call_async(req)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        assert done.wait(timeout)
        return future.result()

    def send_frame(self, msg):
        deadline = time.monotonic() + 10
        while self.image_pub.get_subscription_count() == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        self.image_pub.publish(msg)


def assert_startup_error(pipeline, overrides, match):
    """Constructing a :class:`DetectorNode` with ``overrides`` raises ``StartupError`` matching
    ``match`` (in a context of its own, shut down afterwards)."""
    import pytest
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(detector_node.StartupError, match=match):
            detector_node.DetectorNode(pipeline=pipeline, context=context, namespace=NS,
                                       parameter_overrides=overrides)
    finally:
        rclpy.try_shutdown(context=context)


@contextlib.contextmanager
def node_process_client(ros_args, log_path, service_name, client_name, timeout_s):
    """The detector node as its own process, and a client for its ``~/query_regions``.

    Starts ``python -m vlxseek_ros.detector_node --ros-args *ros_args`` (output to ``log_path``),
    a client node ``client_name`` in an rclpy context of its own, spun on a daemon thread, and
    waits up to ``timeout_s`` for the ``QueryRegions`` service ``service_name`` (the test fails
    with the node's log if the process exits or the time runs out). Yields
    ``(client_node, service, proc)``; afterwards shuts the client down and stops the process
    (SIGINT, killed after 10 s).
    """
    import pytest
    cmd = [sys.executable, "-m", "vlxseek_ros.detector_node", "--ros-args", *ros_args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ))
    context = rclpy.Context()
    rclpy.init(context=context)
    client_node = rclpy.create_node(client_name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client_node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        service = client_node.create_client(QueryRegions, service_name)
        deadline = time.monotonic() + timeout_s
        while not service.wait_for_service(timeout_sec=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"node not ready (rc {proc.poll()}):\n{Path(log_path).read_text()}")
        yield client_node, service, proc
    finally:
        executor.shutdown()
        thread.join(timeout=5)  # out of spin_once before the node goes (see Harness.close)
        client_node.destroy_node()
        rclpy.try_shutdown(context=context)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def detection_array(header, rows):
    """An external detector's ``Detection2DArray``: one detection per ``(x1, y1, x2, y2, score)``
    row (pixels), every header = ``header``. Floats only: this rclpy stores a Python int in a
    float64 field unconverted and serialises its bits (142 arrives as 5e-324)."""
    msg = Detection2DArray()
    msg.header = header
    for x1, y1, x2, y2, score in rows:
        det = Detection2D()
        det.header = header
        det.bbox.center.position.x = (x1 + x2) / 2.0
        det.bbox.center.position.y = (y1 + y2) / 2.0
        det.bbox.size_x, det.bbox.size_y = float(x2 - x1), float(y2 - y1)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = "object", float(score)
        det.results = [hyp]
        msg.detections.append(det)
    return msg
