"""Small-scale version of benchmarks/load_soak.py.

3 s of 320x240 frames at 30 Hz (tiny models, CPU) while the service is called back to back:
bounded memory growth, no backlog (the answered frame is always about one call old: depth-1
newest-frame buffer), every call answered (ok or busy) within its timeout.
"""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "load_soak.py"
# A leak of every frame would be ~20 MB in 3 s at this size; allocator/thread-arena warm-up
# after the warm-up queries was measured at 60-130 MB on CPU: the bound catches runaway growth.
MAX_RSS_GROWTH_MB = 400.0
CALL_TIMEOUT_S = 20.0


def _load_soak_module():
    spec = importlib.util.spec_from_file_location("load_soak", SOAK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_load_soak(tiny_models, tmp_path):
    soak = _load_soak_module()
    log = tmp_path / "node.log"
    r = soak.run_soak(tiny_models[0], tiny_models[1], seconds=3.0, rate_hz=30.0, width=320,
                      height=240, device="cpu", call_timeout_s=CALL_TIMEOUT_S, log_path=log)
    out = log.read_text()
    o = r["outcomes"]
    assert o["timeout"] == 0 and o["failed"] == 0, (r, out)
    assert o["ok"] >= 1, (r, out)
    assert r["rss_end_mb"] - r["rss_start_mb"] < MAX_RSS_GROWTH_MB, r
    # no backlog: the answered frame is the newest one when the call started
    assert r["frame_age_ms"]["max"] <= r["latency_ms"]["max"] + 1000.0, r
    s, s0 = r["status"], r["status_start"]
    received = s["frames_received"] - s0["frames_received"]
    assert received >= 10, r
    # one client calling back to back never waits for the model while frames go by, so frames
    # it skips are not drops (vlxseek_ros/frame_demand.py); the count stays consistent
    assert 0 <= s["frames_dropped"] - s0["frames_dropped"] <= received - o["ok"], r
    assert s["requests_ok"] - s0["requests_ok"] == o["ok"], r
    assert r["node_exit"] == 0, out
