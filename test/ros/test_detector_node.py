"""Acceptance test: the vlxseek_detector node as its own process, with tiny random models.

One node process is started per module (``python -m vlxseek_ros.detector_node --ros-args
--params-file config/detector.yaml -p model_path:=<tiny> ...``) and driven over DDS from this
process: a real photo on ``image``, calls of ``~/query_regions``, ``~/detections`` and
``~/debug_image`` subscriptions, and runtime parameter changes. The environment (LOCALHOST
discovery, own domain id) comes from conftest.py; the ROS paths from ``scripts/ros_env.sh``.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")
skimage_data = pytest.importorskip("skimage.data")

from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402
from vision_msgs.msg import BoundingBox2D, Detection2DArray  # noqa: E402

from vlxseek_core.parsing import parse_answer  # noqa: E402
from vlxseek_ros.image_conversion import image_msg_to_rgb, rgb_to_image_msg  # noqa: E402
from vlxseek_ros.srv import QueryRegions  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NODE = "/vlxseek_test/vlxseek_detector"
IMAGE_TOPIC = "/vlxseek_test/camera/image_raw"
START_TIMEOUT_S = 150.0
CALL_TIMEOUT_S = 90.0


# ---------------------------------------------------------------------------------- fixtures

def _node_command(model, proposer, *extra, ns="/vlxseek_test"):
    return [sys.executable, "-m", "vlxseek_ros.detector_node", "--ros-args",
            "--params-file", str(REPO / "config" / "detector.yaml"),
            "-r", f"__ns:={ns}", "-r", f"image:={IMAGE_TOPIC}",
            "-p", f"model_path:={model}", "-p", f"proposal_model:={proposer}",
            "-p", "device:=cpu", "-p", "max_new_tokens:=64", *extra]


class Client:
    """Test-side node: publisher, subscriptions and service client, spun in a thread."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("vlxseek_test_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.detections = []
        self.debug_images = []
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, IMAGE_TOPIC, reliable)
        self.node.create_subscription(Detection2DArray, f"{NODE}/detections",
                                      self._keep(self.detections), reliable)
        self.node.create_subscription(Image, f"{NODE}/debug_image",
                                      self._keep(self.debug_images), reliable)
        self.query_client = self.node.create_client(QueryRegions, f"{NODE}/query_regions")
        self.param_client = self.node.create_client(SetParameters, f"{NODE}/set_parameters")
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _keep(self, store):
        def callback(msg):
            with self.lock:
                store.append(msg)
        return callback

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=5)  # out of spin_once before the node goes (node_harness)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def call(self, client, request, timeout=CALL_TIMEOUT_S):
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        assert done.wait(timeout), f"no answer from {client.srv_name} within {timeout} s"
        return future.result()

    def query(self, text="person", task="", image=None, max_frame_age=0.0, regions=(),
              region_indices=(), service=None):
        req = QueryRegions.Request()
        req.query, req.task, req.max_frame_age = text, task, float(max_frame_age)
        if image is not None:
            req.image = image
        req.regions = list(regions)
        req.region_indices = list(region_indices)
        return self.call(service or self.query_client, req)

    def set_params(self, **values):
        req = SetParameters.Request()
        for name, value in values.items():
            pv = ParameterValue()
            if isinstance(value, bool):
                pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
            elif isinstance(value, float):
                pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
            elif isinstance(value, int):
                pv.type, pv.integer_value = ParameterType.PARAMETER_INTEGER, value
            else:
                pv.type, pv.string_value = ParameterType.PARAMETER_STRING, value
            req.parameters.append(Parameter(name=name, value=pv))
        return self.call(self.param_client, req, timeout=20).results

    def publish_frame(self, msg, repeats=3):
        """Publish a frame once the node's subscription is matched (a few times: best effort)."""
        wait_for(lambda: self.image_pub.get_subscription_count() > 0, 30, "image subscriber")
        for _ in range(repeats):
            self.image_pub.publish(msg)
            time.sleep(0.1)

    def publish_until(self, msg, predicate, timeout, what):
        """Publish ``msg`` again before every check until ``predicate()`` holds (best effort)."""
        def check():
            self.publish_frame(msg, repeats=1)
            return predicate()
        wait_for(check, timeout, what)

    def received(self, store, count=1, timeout=20.0):
        wait_for(lambda: len(store) >= count, timeout, "messages")
        with self.lock:
            return list(store)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def node_process(tiny_models, tmp_path_factory):
    """The detector node as a subprocess (env from ros_env.sh + conftest); always killed."""
    log_path = tmp_path_factory.mktemp("node") / "node.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_node_command(*tiny_models), cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        yield proc, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(2)  # SIGINT: clean rclpy shutdown
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def client(node_process):
    proc, log_path = node_process
    c = Client()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not c.query_client.wait_for_service(timeout_sec=0.5):
            if proc.poll() is not None:
                pytest.fail(f"node exited with {proc.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"node not ready in {START_TIMEOUT_S} s:\n{log_path.read_text()}")
        # the node draws/publishes only for matched subscribers: wait for discovery
        for topic in ("detections", "debug_image"):
            wait_for(lambda: c.node.count_publishers(f"{NODE}/{topic}") > 0, 30, topic)
        time.sleep(0.5)
        yield c
    finally:
        c.close()


# ---------------------------------------------------------------------------------- helpers

PHOTO_STAMP = (1_700_000_000, 123_456_789)


def photo_msg(stamp=PHOTO_STAMP, frame_id="camera_optical"):
    header = Header()
    header.stamp.sec, header.stamp.nanosec = stamp
    header.frame_id = frame_id
    return rgb_to_image_msg(skimage_data.astronaut(), header)


def bad_image(kind):
    msg = photo_msg()
    if kind == "empty":
        msg.width = msg.height = msg.step = 0
        msg.data = []
    elif kind == "encoding":
        msg.encoding = "weird8"
    elif kind == "step":
        msg.step = msg.width * 3 + 4
    return msg


def _xyxy(detections):
    """Detection boxes as ``[x1, y1, x2, y2]`` lists (pixels)."""
    return [[d.bbox.center.position.x - d.bbox.size_x / 2, d.bbox.center.position.y
             - d.bbox.size_y / 2, d.bbox.center.position.x + d.bbox.size_x / 2,
             d.bbox.center.position.y + d.bbox.size_y / 2] for d in detections]


def assert_consistent(response, header):
    """Detections = (phrase, region) pairs of the answer, with the proposals' boxes."""
    assert response.success, response.message
    assert response.header == header
    proposals = response.proposals.detections
    parsed = parse_answer(response.answer, len(proposals))
    expected = [(g.phrase, i) for g in parsed.groundings for i in g.region_indices]
    got = [(d.results[0].hypothesis.class_id, int(d.id)) for d in response.detections.detections]
    assert got == expected
    assert [(g.phrase, list(g.region_indices)) for g in response.groundings] == [
        (g.phrase, list(g.region_indices)) for g in parsed.groundings]
    for det in response.detections.detections:
        prop = proposals[int(det.id)]
        assert det.header == header
        assert det.bbox == prop.bbox
        assert det.results[0].hypothesis.score == prop.results[0].hypothesis.score
        assert 0.0 <= det.results[0].hypothesis.score <= 1.0
    for i, prop in enumerate(proposals):
        assert prop.id == str(i) and prop.results[0].hypothesis.class_id == "proposal"
        b = prop.bbox
        assert -1e-3 <= b.center.position.x - b.size_x / 2
        assert b.center.position.x + b.size_x / 2 <= 512 + 1e-3
        assert -1e-3 <= b.center.position.y - b.size_y / 2
        assert b.center.position.y + b.size_y / 2 <= 512 + 1e-3
    return expected


# ---------------------------------------------------------------------------------- tests
# Order matters for the first test: no frame has been published yet.

def test_no_frame_yet_is_rejected(client):
    res = client.query("person")
    assert not res.success
    assert "no image received yet" in res.message and IMAGE_TOPIC in res.message


def test_photo_query_end_to_end(client):
    photo = photo_msg()
    client.publish_frame(photo)
    n_before = len(client.detections)
    res = client.query("person")
    expected = assert_consistent(res, photo.header)
    # the random tiny model may end at once (constrained decoding allows the empty answer) or
    # reject: then the message says so
    assert expected or "the model found nothing" in res.message or "absent:" in res.message, (
        f"no region and no reason: {res.answer!r}, {res.message!r}")
    assert len(res.proposals.detections) > 0
    assert res.count == -1 and res.reasoning == "" and res.inference_ms > 0
    # the same array is published on ~/detections
    published = client.received(client.detections, n_before + 1)[n_before]
    assert published == res.detections
    # the debug image has the photo's size and header
    debug = client.received(client.debug_images)[-1]
    assert (debug.height, debug.width, debug.encoding) == (512, 512, "rgb8")
    assert debug.header == photo.header
    assert image_msg_to_rgb(debug).shape == (512, 512, 3)


def test_count_task_returns_a_count(client):
    res = client.query("person", task="count", image=photo_msg())
    assert_consistent(res, photo_msg().header)
    assert res.count >= 0


@pytest.mark.parametrize("kind, needle", [
    ("empty", "image is empty"),
    ("encoding", "unsupported image encoding 'weird8'"),
    ("step", "step x height"),
])
def test_bad_request_image_then_good_request(client, kind, needle):
    res = client.query("person", image=bad_image(kind))
    assert not res.success
    assert needle in res.message and "request image" in res.message
    res = client.query("person", image=photo_msg())
    assert_consistent(res, photo_msg().header)


@pytest.mark.parametrize("text, task, needle", [
    ("", "", "query is empty"),
    ("   ", "detect", "query is empty"),
    ("person", "no_such_task", "unknown task 'no_such_task'"),
])
def test_bad_request_text(client, text, task, needle):
    res = client.query(text, task=task, image=photo_msg())
    assert not res.success and needle in res.message


def test_bad_frame_on_topic_then_good_frame(client):
    # The good photo's stamp is from 2023: with max_frame_age=3600 it is rejected as too old
    # (quickly, without inference), so a failure about the image itself proves that the node
    # now holds the bad frame.
    bad = bad_image("empty")
    now = client.node.get_clock().now().to_msg()
    bad.header.stamp = now

    def bad_frame_seen():
        res = client.query("person", max_frame_age=3600.0)
        assert not res.success, "answered although the newest frame is empty or too old"
        return "image is empty" in res.message
    client.publish_until(bad, bad_frame_seen, 30, "the bad frame to reach the node")
    res = client.query("person")
    assert not res.success and "newest frame" in res.message

    photo = photo_msg(stamp=(now.sec, now.nanosec), frame_id="cam2")
    client.publish_until(photo, lambda: client.query("person", max_frame_age=3600.0).success,
                         30, "the good frame to be answered")
    res = client.query("person")
    assert_consistent(res, photo.header)


def test_old_frame_is_rejected_by_max_frame_age(client):
    def old_frame_rejected():
        res = client.query("person", max_frame_age=5.0)
        return not res.success and "older than max_frame_age" in res.message
    client.publish_until(photo_msg(), old_frame_rejected, 30,  # stamp from 2023
                         "the old frame to be rejected")


def test_user_regions_replace_proposals(client):
    from vlxseek_ros.conversions import xyxy_to_bbox
    boxes = [[10, 20, 200, 300], [250, 40, 500, 500]]
    res = client.query("person", image=photo_msg(),
                       regions=[xyxy_to_bbox(b) for b in boxes])
    assert_consistent(res, photo_msg().header)
    np.testing.assert_allclose(_xyxy(res.proposals.detections), boxes, atol=1e-3)


def test_region_indices_refer_to_the_proposals_of_the_same_image(client):
    first = client.query("person", image=photo_msg())
    n = len(first.proposals.detections)
    assert first.success and n >= 2
    # the node re-uses the frame's encoding: the same image has the same proposals
    res = client.query("", task="caption", image=photo_msg(), region_indices=[1])
    assert res.success, res.message
    assert res.proposals == first.proposals
    res = client.query("What is in it?", task="vqa", image=photo_msg(), region_indices=[0, 1])
    assert res.success, res.message
    res = client.query("", task="ocr", image=photo_msg(), region_indices=[n])
    assert not res.success
    assert f"region index {n} out of range; there are {n} regions" in res.message


def test_runtime_parameters_are_validated(client):
    results = client.set_params(standing_task="caption")
    assert not results[0].successful and "needs regions" in results[0].reason
    results = client.set_params(standing_task="no_such_task")
    assert not results[0].successful and "unknown" in results[0].reason
    results = client.set_params(proposal_min_score=1.5)
    assert not results[0].successful
    results = client.set_params(model_path="/elsewhere")
    assert not results[0].successful  # read-only
    results = client.set_params(proposal_min_score=0.0, max_proposals=5)
    assert all(r.successful for r in results)
    res = client.query("person", image=photo_msg())
    assert_consistent(res, photo_msg().header)
    assert 0 < len(res.proposals.detections) <= 5
    results = client.set_params(proposal_min_score=0.3, max_proposals=100)
    assert all(r.successful for r in results)


def test_standing_query_publishes_new_frames(client):
    assert all(r.successful for r in client.set_params(standing_query="person",
                                                       max_rate_hz=5.0))
    try:
        n_before = len(client.detections)
        header_stamps = []
        for k in range(2):
            photo = photo_msg(stamp=(1_800_000_000 + k, 0), frame_id="standing")
            header_stamps.append(photo.header.stamp)
            client.publish_until(photo, lambda: any(d.header.stamp == photo.header.stamp
                                                    for d in client.detections[n_before:]),
                                 30, "a standing-query result for the new frame")
        got = [d.header.stamp for d in client.detections[n_before:]]
        assert all(s in got for s in header_stamps)
    finally:
        assert all(r.successful for r in client.set_params(standing_query=""))
    # once stopped, new frames are not answered any more
    time.sleep(2.0)  # an inference running when it was stopped may still publish
    n_after = len(client.detections)
    client.publish_frame(photo_msg(stamp=(1_900_000_000, 0)))
    time.sleep(1.5)
    assert len(client.detections) == n_after


def test_node_still_alive(node_process):
    proc, log_path = node_process
    assert proc.poll() is None, log_path.read_text()


def test_warm_up_ran_and_status_reports_the_device_in_use(client, node_process):
    """The node warmed up before serving (log line, ~/status warmup_ms), and ~/status names
    the device of the loaded weights."""
    proc, log_path = node_process
    assert "warm-up: one inference on a synthetic frame took" in log_path.read_text()
    got = []
    sub = client.node.create_subscription(
        String, f"{NODE}/status", got.append,
        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    try:
        wait_for(lambda: got, 20, "~/status")
        status = json.loads(got[-1].data)
        assert status["device"] == "cpu" and status["warmup_ms"] > 0.0, status
    finally:
        client.node.destroy_subscription(sub)


def _signal_during_inference(client, node_name, proc, log_path, sig):
    """Send ``sig`` during a real slow query; the node must exit with 0 within 2 s.

    The query (caption of 100 user regions, 8192 new tokens) takes tens of seconds on the tiny
    model.
    """
    query_client = client.node.create_client(QueryRegions, f"{node_name}/query_regions")
    param_client = client.node.create_client(SetParameters, f"{node_name}/set_parameters")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (query_client.wait_for_service(timeout_sec=0.5)
               and param_client.wait_for_service(timeout_sec=0.5)):
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
    preq = SetParameters.Request()
    preq.parameters = [Parameter(name="max_new_tokens", value=ParameterValue(
        type=ParameterType.PARAMETER_INTEGER, integer_value=8192))]
    assert client.call(param_client, preq, timeout=20).results[0].successful
    rng = np.random.default_rng(int(sig))
    req = QueryRegions.Request()
    req.task = "caption"
    req.image = rgb_to_image_msg(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                                 photo_msg().header)
    for cx, cy in rng.uniform(50, 400, (100, 2)):
        b = BoundingBox2D()
        b.center.position.x, b.center.position.y, b.size_x, b.size_y = cx, cy, 40.0, 30.0
        req.regions.append(b)
    future = query_client.call_async(req)
    time.sleep(2.0)
    assert not future.done(), f"the query finished before the signal: {future.result()}"
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"no exit within 10 s of signal {sig}:\n{log_path.read_text()}")
    elapsed = time.monotonic() - start
    out = log_path.read_text()
    assert rc == 0, out
    assert elapsed < 2.0, f"exit took {elapsed:.2f} s:\n{out}"
    assert "Traceback" not in out, out
    # decoding is stopped at once, so the call is answered busy before the node goes; only an
    # inference still encoding its frame after the grace is abandoned
    if "abandoning it" not in out:
        wait_for(future.done, 5, "the busy answer of the stopped query")
        res = future.result()
        assert not res.success and "the node is shutting down" in res.message, res.message


def test_sigterm_with_inference_in_flight_exits_within_2s(client, tiny_models, tmp_path):
    ns = "/vlxseek_term"
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_node_command(*tiny_models, ns=ns), cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        _signal_during_inference(client, f"{ns}/vlxseek_detector", proc, log_path,
                                 signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_proposals_from_a_topic_end_to_end(client, tiny_models, tmp_path):
    """A second node with ``proposal_source:=topic``: an external detector's array, stamped
    like the image, gives the regions (post-processed: threshold 0.3, NMS 0.8, int, sorted)."""
    from node_harness import detection_array

    ns = "/vlxseek_topic"
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_node_command(*tiny_models, "-p", "proposal_source:=topic",
                                              "-p", "proposal_wait_s:=5.0", ns=ns),
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ))
    try:
        service = client.node.create_client(QueryRegions, f"{ns}/vlxseek_detector/query_regions")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not service.wait_for_service(timeout_sec=0.5):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
        publisher = client.node.create_publisher(
            Detection2DArray, f"{ns}/proposals",
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        wait_for(lambda: publisher.get_subscription_count() > 0, 30, "proposals subscriber")
        photo = photo_msg(stamp=(1_750_000_000, 5))
        external = detection_array(photo.header, [
            (170.6, 30.2, 320.9, 200.5, 0.6),  # face
            (370.0, 0.0, 512.0, 140.0, 0.9),   # flag
            (0.0, 0.0, 40.0, 40.0, 0.1)])      # below proposal_min_score
        publisher.publish(external)
        res = client.query("person", image=photo, service=service)
        assert_consistent(res, photo.header)
        np.testing.assert_allclose(_xyxy(res.proposals.detections),
                                   [[370, 0, 512, 140], [170, 30, 320, 200]], atol=1e-3)
        scores = [d.results[0].hypothesis.score for d in res.proposals.detections]
        assert scores == pytest.approx([0.9, 0.6])
        res = client.query("", task="caption", image=photo, region_indices=[1],
                           service=service)
        assert res.success, res.message
        other = photo_msg(stamp=(1_750_000_001, 0))  # no proposals were published for it
        res = client.query("person", image=other, service=service)
        assert not res.success and "1750000001.000000000" in res.message
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_sigint_with_inference_in_flight_exits_within_2s(client, node_process):
    proc, log_path = node_process
    _signal_during_inference(client, NODE, proc, log_path, signal.SIGINT)


def test_corrupt_checkpoint_is_a_startup_error_naming_the_path(tmp_path, tiny_models):
    import shutil

    from vlxseek_ros.detector_node import PARAMETERS, StartupError, _load_pipeline
    model = tmp_path / "corrupt_model"
    shutil.copytree(tiny_models[0], model)
    weights = sorted(model.glob("*.safetensors"))[0]
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 3)
    params = {name: default for name, (default, _) in PARAMETERS.items()}
    params.update(model_path=str(model), proposal_source="none", device="cpu")
    with pytest.raises(StartupError, match=f"model_path='{model}'"):
        _load_pipeline(params)


def test_model_that_fails_to_load_exits_nonzero(tmp_path, tiny_models):
    missing = tmp_path / "no_model_here"
    cmd = _node_command(missing, tiny_models[1])
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"model_path='{missing}'" in out, out
    assert "Traceback" not in out, out
