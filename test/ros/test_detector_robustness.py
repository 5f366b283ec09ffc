"""In-process robustness tests of the node with a fake pipeline (no model).

Busy policy, load status, faults inside inference, 200 concurrent calls, and malformed requests
(incl. hypothesis fuzzing).

Requests are sent over DDS (in-process, LOCALHOST, own domain id from conftest.py) or, for the
fuzzing, handed to the service callback directly: nothing may raise out of it.
"""
import json
import math
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from vision_msgs.msg import BoundingBox2D  # noqa: E402

from node_harness import NS, FakePipeline, Harness, frame, wait_for  # noqa: E402
from vlxseek_ros import image_conversion  # noqa: E402
from vlxseek_ros.image_conversion import rgb_to_image_msg  # noqa: E402
from vlxseek_ros.srv import QueryRegions  # noqa: E402

TASKS = ["", "detect", "refer", "count", "caption", "ocr", "vqa", "ground", "visual_prompt",
         "reason", "detect_all", "no_such_task"]


class TimedFake(FakePipeline):
    """Fake pipeline that reports stage timings and records the boxes it was given."""

    def __init__(self):
        super().__init__()
        self.boxes = []

    def query(self, image, text, task="detect", boxes=None, max_new_tokens=None,
              region_indices=None, proposals=None, progress=None):
        self.boxes.append(None if boxes is None else np.array(boxes))
        result = super().query(image, text, task=task, boxes=boxes,
                               max_new_tokens=max_new_tokens, progress=progress)
        result.timings_ms = {"encode": 1.5, "generate": 2.5}
        return result


@pytest.fixture
def fake():
    return TimedFake()


@pytest.fixture
def harness(fake):
    h = Harness(fake, overrides=[Parameter("status_period_s", value=0.1)])
    yield h
    h.close()


def request(query="cup", task="", image=None, regions=()):
    req = QueryRegions.Request()
    req.query, req.task = query, task
    if image is not None:
        req.image = image
    req.regions = list(regions)
    return req


def box(cx, cy, w, h):
    b = BoundingBox2D()
    b.center.position.x, b.center.position.y = float(cx), float(cy)
    b.size_x, b.size_y = float(w), float(h)
    return b


def answer(node, req):
    """Call the service callback directly (the executor is not involved)."""
    return node._on_query(req, QueryRegions.Response())


def call_in_thread(harness, **kwargs):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("res", harness.call(**kwargs)))
    t.start()
    return t, out


# ------------------------------------------------------------------------------ busy policy

def test_busy_policy_reject_answers_busy_at_once(harness, fake):
    assert harness.node.set_parameters([Parameter("busy_policy", value="reject")])[0].successful
    fake.delay_s = 1.0
    t, first = call_in_thread(harness, image=frame())
    wait_for(lambda: fake.active == 1)
    start = time.monotonic()
    res = harness.call(image=frame())
    assert time.monotonic() - start < 0.8
    assert not res.success and res.message.startswith("busy:") and "reject" in res.message
    t.join(10)
    assert first["res"].success
    status = harness.node.status()
    assert status["requests_busy"] == 1 and status["requests_ok"] == 1


def test_busy_policy_wait_waits_then_times_out(harness, fake):
    node = harness.node
    assert node.set_parameters([Parameter("busy_timeout_s", value=0.2)])[0].successful
    fake.delay_s = 1.0
    t, first = call_in_thread(harness, image=frame())
    wait_for(lambda: fake.active == 1)
    res = harness.call(image=frame())
    assert not res.success and "busy_timeout_s=0.2" in res.message
    t.join(10)
    assert node.set_parameters([Parameter("busy_timeout_s", value=10.0)])[0].successful
    t, first = call_in_thread(harness, image=frame())
    wait_for(lambda: fake.active == 1)
    assert harness.call(image=frame()).success   # waited for the running one
    t.join(10)
    assert first["res"].success and fake.max_active == 1
    bad = node.set_parameters([Parameter("busy_policy", value="queue")])[0]
    assert not bad.successful and "busy_policy" in bad.reason


def test_status_topic_reports_frames_requests_and_latency(harness, fake):
    got = []
    harness.peer.create_subscription(
        String, f"{NS}/vlxseek_detector/status", got.append,
        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    for k in range(4):
        harness.send_frame(frame(sec=k))
    wait_for(lambda: harness.node._frames.newest_frame() is not None
             and harness.node._frames.newest_frame().msg.header.stamp.sec == 3)
    assert harness.call().success          # uses (answers) the newest frame
    assert not harness.call("").success    # empty query: failed
    harness.send_frame(frame(sec=7))       # replaces an answered frame: not a drop
    wait_for(lambda: harness.node._frames.newest_frame().msg.header.stamp.sec == 7)
    n = len(got)
    wait_for(lambda: len(got) > n + 1)
    s = json.loads(got[-1].data)
    assert s["node"] == f"{NS}/vlxseek_detector" and s["busy_policy"] == "wait"
    assert s["frames_received"] >= 2
    assert s["frames_dropped"] == 0   # replaced while no consumer waited: not drops
    assert s["frames_answered"] == 1
    assert (s["requests_ok"], s["requests_failed"], s["requests_busy"]) == (1, 1, 0)
    lat = s["latency_ms"]
    assert {"encode", "generate", "inference", "end_to_end"} <= set(lat)
    assert lat["generate"]["count"] == 1 and lat["generate"]["mean"] == 2.5
    assert lat["end_to_end"]["max"] >= lat["inference"]["max"] > 0.0
    assert s["inference_in_flight"] is False and s["last_error"] == ""


# ------------------------------------------------------------------------------ faults

def test_faults_inside_inference_fail_one_request_and_are_counted(harness, fake):
    torch = pytest.importorskip("torch")
    fake.error = torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
    res = harness.call(image=frame())
    assert not res.success
    assert res.message == "inference failed: OutOfMemoryError: CUDA out of memory (simulated)"
    fake.error = RuntimeError("corrupt tensor: expected finite values")
    res = harness.call(image=frame())
    assert res.message == "inference failed: RuntimeError: corrupt tensor: expected finite values"
    s = harness.node.status()
    assert s["inference_errors"] == 2 and s["consecutive_failures"] == 2
    assert s["requests_failed"] == 2 and "corrupt tensor" in s["last_error"]
    assert s["last_error_age_s"] >= 0.0
    fake.error = None
    assert harness.call(image=frame()).success
    s = harness.node.status()
    assert s["consecutive_failures"] == 0 and s["inference_errors"] == 2
    assert s["requests_ok"] == 1


def test_standing_query_failures_are_counted_and_do_not_stop_it(harness, fake):
    fake.error = RuntimeError("boom")
    assert harness.node.set_parameters([Parameter("standing_query", value="person"),
                                        Parameter("max_rate_hz", value=50.0)])[0].successful
    harness.send_frame(frame(sec=1))
    wait_for(lambda: harness.node.status()["inference_errors"] >= 1)
    fake.error = None
    harness.send_frame(frame(sec=2))
    wait_for(lambda: harness.node.status()["standing_answered"] >= 1)
    assert harness.node.status()["consecutive_failures"] == 0


def test_200_concurrent_calls_from_8_threads_all_answered(harness, fake):
    fake.delay_s = 0.002
    outcomes = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            res = harness.call(image=frame(), timeout=30)
            with lock:
                outcomes.append("ok" if res.success else res.message)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 200
    assert all(o == "ok" or o.startswith("busy:") for o in outcomes), set(outcomes)
    assert outcomes.count("ok") >= 1 and fake.max_active == 1
    s = harness.node.status()
    assert s["requests_ok"] + s["requests_busy"] == 200 and s["requests_failed"] == 0


# ------------------------------------------------------------------------------ bad requests

def _img(h, w, encoding="rgb8", **fields):
    msg = rgb_to_image_msg(np.full((max(h, 1), max(w, 1), 3), 60, np.uint8), None)
    msg.height, msg.width, msg.encoding = h, w, encoding
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


BAD_IMAGES = {
    "zero width": (_img(4, 0, step=0, data=b""), "image is empty"),
    "zero height": (_img(0, 4, step=12, data=b""), "image is empty"),
    "data short": (_img(4, 4, data=bytes(47)), "image data has 47 bytes"),
    "data long": (_img(4, 4, data=bytes(49)), "image data has 49 bytes"),
    "step small": (_img(4, 4, step=11, data=bytes(44)), "smaller than one row"),
    "bayer": (_img(4, 4, "bayer_rggb8", step=4, data=bytes(16)), "bayer_rggb8"),
    "yuv422": (_img(4, 4, "yuv422", step=8, data=bytes(32)), "yuv422"),
    "16UC1": (_img(4, 4, "16UC1", step=8, data=bytes(32)), "16-bit, float or depth"),
    "big endian 16 bit": (_img(4, 4, "mono16", is_bigendian=1, step=8, data=bytes(32)),
                          "unsupported image encoding 'mono16'"),
    "20000x20000 no data": (_img(20000, 20000, step=60000, data=b""), "exceeds the limit"),
    "empty encoding": (_img(4, 4, "", step=12, data=bytes(48)), "encoding is empty"),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_request_images_get_a_clear_error(harness, fake, monkeypatch, name):
    # as on a machine without cv_bridge (with it, bayer/yuv422 are converted)
    monkeypatch.setattr(image_conversion, "_cv_bridge_checked", True)
    monkeypatch.setattr(image_conversion, "_cv_bridge_convert", None)
    msg, needle = BAD_IMAGES[name]
    res = answer(harness.node, request(image=msg))
    assert not res.success and needle in res.message and "request image" in res.message
    assert fake.calls == []


@pytest.mark.parametrize("encoding, channels", [("bgr8", 3), ("mono8", 1), ("rgba8", 4),
                                                ("bgra8", 4)])
def test_request_image_encoding_may_differ_from_the_stream(harness, fake, encoding, channels):
    harness.send_frame(frame(sec=5))   # the stream is rgb8
    wait_for(lambda: harness.node._frames.newest_frame() is not None)
    msg = _img(3, 5, encoding, step=5 * channels, data=bytes(range(15 * channels)))
    res = answer(harness.node, request(image=msg))
    assert res.success, res.message
    assert fake.calls[-1][0] == (3, 5, 3)


def test_one_pixel_image_and_big_endian_8bit_work(harness, fake):
    res = answer(harness.node, request(image=_img(1, 1, step=3, data=bytes([1, 2, 3]))))
    assert res.success, res.message
    res = answer(harness.node, request(image=_img(2, 2, is_bigendian=1)))
    assert res.success, res.message


def test_non_contiguous_numpy_data_is_converted(harness, fake):
    base = np.arange(2 * 48, dtype=np.uint8)[::2]   # a strided (non-contiguous) view
    assert not base.flags["C_CONTIGUOUS"]
    res = answer(harness.node, request(image=_img(4, 4, data=base)))
    assert res.success, res.message


@pytest.mark.parametrize("query, task, regions, needle", [
    ("", "", (), "query is empty"),
    ("x" * 100_000, "", (), "query is 100000 characters long"),
    ("bad \udcff bytes", "", (), "not valid UTF-8"),
    ("cup", "no_such_task", (), "unknown task 'no_such_task'"),
    ("", "caption", (), "task 'caption' needs regions"),
    ("cup", "", [box(math.nan, 1, 2, 2)], "non-finite"),
    ("cup", "", [box(10, 10, math.inf, 2)], "non-finite"),
    ("cup", "", [box(10, 10, -4, 2)], "non-positive size"),
    ("cup", "", [box(500, 500, 10, 10)], "outside"),
])
def test_bad_request_fields_get_a_clear_error(harness, fake, query, task, regions, needle):
    res = answer(harness.node, request(query, task, frame(), regions))
    assert not res.success and needle in res.message, res.message
    assert fake.calls == []


def test_more_than_100_regions_keeps_the_first_100_and_says_so(harness, fake):
    regions = [box(10 + i % 40, 10, 4, 4) for i in range(130)]
    res = answer(harness.node, request("cup", "", frame(), regions))
    assert res.success
    assert "130 regions given, only the first 100 were used" in res.message
    assert fake.boxes[-1].shape == (100, 4)


finite = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query=st.text(max_size=300) | st.sampled_from(["", "cup", "x" * 5000]),
       task=st.sampled_from(TASKS) | st.text(max_size=20),
       regions=st.lists(st.tuples(finite, finite, finite, finite), max_size=120),
       has_image=st.booleans())
def test_fuzzed_requests_never_raise(harness, query, task, regions, has_image):
    req = request(query, task, frame() if has_image else None,
                  [box(*r) for r in regions])
    res = answer(harness.node, req)
    assert isinstance(res, QueryRegions.Response)
    assert res.success or res.message
