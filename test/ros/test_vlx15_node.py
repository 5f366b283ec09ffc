"""The detector node with a tiny VLX-Seek 1.5 checkpoint (issue 12, "Done when": it answers
through the node). The checkpoint orders its boxes (``mm_bbox_order_mode: raster``), so the
model sees them in another order than the caller gave them; every detection id must still be
the caller's region index.

* as its own process (``model_path`` = the tiny checkpoint, ``proposal_source: none``), asked
  over DDS with user regions;
* in-process (the harness of ``node_harness``) around a pipeline loaded from the same checkpoint,
  whose decoding is scripted to answer model-side ``<obj2><obj0>``.
"""
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")

from skimage import data as skimage_data  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from node_harness import node_process_client  # noqa: E402
from vlxseek_ros.conversions import xyxy_to_bbox  # noqa: E402
from vlxseek_ros.image_conversion import rgb_to_image_msg  # noqa: E402
from vlxseek_ros.srv import QueryRegions  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NS = "/vlxseek_v15"
BOXES = [[170.0, 30.0, 320.0, 200.0], [370.0, 0.0, 512.0, 140.0],
         [150.0, 10.0, 340.0, 240.0], [0.0, 0.0, 512.0, 512.0]]
RASTER = (3, 2, 0, 1)
"""Model box m is caller box RASTER[m] (sorted by x1)."""


@pytest.fixture(scope="module")
def tiny15(tmp_path_factory):
    """A tiny VLX-Seek 1.5 checkpoint (core CLI) with ``mm_bbox_order_mode: raster``."""
    model = tmp_path_factory.mktemp("tiny15") / "model"
    proc = subprocess.run([sys.executable, "-m", "vlxseek_core.cli", "make-tiny-model",
                           str(model), "--family", "vlx_seek_1_5"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = json.loads((model / "config.json").read_text())
    config["mm_bbox_order_mode"] = "raster"
    (model / "config.json").write_text(json.dumps(config))
    return str(model)


def photo_msg():
    header = Header()
    header.stamp.sec, header.frame_id = 1_700_000_000, "camera_optical"
    return rgb_to_image_msg(skimage_data.astronaut(), header)


def request(query, task="detect", region_indices=()):
    req = QueryRegions.Request()
    req.query, req.task, req.image = query, task, photo_msg()
    req.regions = [xyxy_to_bbox(b) for b in BOXES]
    req.region_indices = list(region_indices)
    return req


def xyxy(det):
    b = det.bbox
    return [b.center.position.x - b.size_x / 2, b.center.position.y - b.size_y / 2,
            b.center.position.x + b.size_x / 2, b.center.position.y + b.size_y / 2]


def assert_caller_indices(res):
    assert res.success, res.message
    np.testing.assert_allclose([xyxy(d) for d in res.proposals.detections], BOXES, atol=1e-3)
    for det in res.detections.detections:
        index = int(det.id)
        assert 0 <= index < len(BOXES)
        np.testing.assert_allclose(xyxy(det), BOXES[index], atol=1e-3)


@pytest.fixture(scope="module")
def node(tiny15, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("v15_node") / "node.log"
    ros_args = ["-r", f"__ns:={NS}", "-p", f"model_path:={tiny15}",
                "-p", "proposal_source:=none", "-p", "device:=cpu", "-p", "max_new_tokens:=24"]
    with node_process_client(ros_args, log_path, f"{NS}/vlxseek_detector/query_regions",
                             "vlxseek_v15_client", 180) as (_, service, _):
        yield service


def call(service, req):
    future = service.call_async(req)
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    assert done.wait(120), "no answer within 120 s"
    return future.result()


def test_node_process_answers_with_caller_indices(node):
    res = call(node, request("person; flag"))
    assert_caller_indices(res)
    assert "<obj" in res.answer or res.answer == "" or "None" in res.answer, res.answer
    res = call(node, request("", task="caption", region_indices=[1]))
    assert res.success, res.message
    res = call(node, request("x", task="ground"))  # a VLM-FO1 task without a 1.5 template
    assert not res.success
    assert res.message == ("unknown task 'ground'; known tasks: detect, refer, count, "
                           "caption, ocr, reason, vqa"), res.message


def test_in_process_node_maps_model_indices_to_caller_indices(tiny15, monkeypatch):
    import vlxseek_core.pipeline as pipeline_module
    from node_harness import Harness
    from vlxseek_core.decoding import RegionAnswerLogitsProcessor
    from vlxseek_core.pipeline import VLXSeek

    pipe = VLXSeek.from_pretrained(tiny15, device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=24)
    script = list(pipe.tokenizer("<ground>face</ground><objects><obj2><obj0></objects>",
                                 add_special_tokens=False)["input_ids"])
    script.append(pipe.tokenizer.convert_tokens_to_ids("<|im_end|>"))

    class Scripted(RegionAnswerLogitsProcessor):
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            scores[:, script[min(input_ids.shape[1], len(script) - 1)]] += 1e4
            return super().__call__(input_ids, scores)

    monkeypatch.setattr(pipeline_module, "RegionAnswerLogitsProcessor", Scripted)
    harness = Harness(pipe)
    try:
        res = harness.call("face", image=photo_msg(), regions=[xyxy_to_bbox(b) for b in BOXES])
    finally:
        harness.close()
    assert_caller_indices(res)
    assert res.answer == "<ground>face</ground><objects><obj0><obj3></objects>"
    assert sorted(int(d.id) for d in res.detections.detections) == [RASTER[2], RASTER[0]]
    assert {d.results[0].hypothesis.class_id for d in res.detections.detections} == {"face"}
