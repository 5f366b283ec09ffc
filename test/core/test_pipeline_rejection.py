"""Rejection and empty answers in QueryResult: ``rejected``, warnings, count, end to end."""
import json

import numpy as np
import pytest

from vlxseek_core.pipeline import VLXSeek
from vlxseek_core.types import Grounding, Proposals, QueryResult
from vlx15_fixtures import scripted_processor

BOXES = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]], np.float32)


def result(task="detect"):
    return QueryResult(task=task, query="q", prompt_text="", answer="", groundings=[],
                       detections=[], proposals=Proposals(BOXES, np.ones(3)),
                       image_size=(30, 30))


def test_rejection_fills_rejected_and_says_so():
    r = result()
    VLXSeek._fill_answer(r, "<ground>knife</ground><objects>None</objects>"
                            "<ground>cup</ground><objects><region1></objects>")
    assert r.rejected == ["knife"]
    assert r.groundings == [Grounding("cup", [1])]
    assert [(d.label, d.region_index) for d in r.detections] == [("cup", 1)]
    assert r.warnings == ["absent: 'knife' (the model answered None)"]
    assert r.count is None
    d = r.to_dict()
    assert d["rejected"] == ["knife"]
    json.dumps(d)


def test_empty_answer_is_reported():
    r = result()
    VLXSeek._fill_answer(r, "")
    assert r.rejected == [] and r.detections == [] and r.groundings == []
    assert r.warnings == ["the model found nothing (empty answer)"]


def test_count_rejection_is_zero_and_a_missing_number_is_not_a_silent_zero():
    r = result("count")
    VLXSeek._fill_answer(r, "<ground>knife</ground><objects>None</objects>0")
    assert r.count == 0 and r.rejected == ["knife"] and r.detections == []
    assert r.warnings == ["absent: 'knife' (the model answered None)"]
    r = result("count")  # a rejection without the 0 still means none
    VLXSeek._fill_answer(r, "<ground>knife</ground><objects>None</objects>")
    assert r.count == 0 and r.warnings == ["absent: 'knife' (the model answered None)"]
    r = result("count")  # regions but no number: 0 for compatibility, and a warning
    VLXSeek._fill_answer(r, "<ground>cat</ground><objects><region0><region2></objects>")
    assert r.count == 0 and [d.region_index for d in r.detections] == [0, 2]
    assert r.warnings == ["the answer holds no number; count 0 is not a reading"]
    r = result("count")
    VLXSeek._fill_answer(r, "")
    assert r.count == 0
    assert r.warnings == ["the model found nothing (empty answer)",
                          "the answer holds no number; count 0 is not a reading"]
    r = result("count")
    VLXSeek._fill_answer(r, "<ground>cat</ground><objects><region0></objects>1")
    assert r.count == 1 and r.warnings == []


@pytest.mark.parametrize("task", ["detect", "count"])
def test_end_to_end_rejection(tiny_pipeline, astronaut, astronaut_boxes, monkeypatch, task):
    import vlxseek_core.pipeline as pipeline_module

    answer = "<ground>knife</ground><objects>None</objects>" + ("0" if task == "count" else "")
    monkeypatch.setattr(pipeline_module, "RegionAnswerLogitsProcessor",
                        scripted_processor(tiny_pipeline.tokenizer, answer))
    res = tiny_pipeline.query(astronaut, "knife", task=task, boxes=astronaut_boxes)
    assert res.answer == answer
    assert res.rejected == ["knife"] and res.detections == [] and res.groundings == []
    assert "absent: 'knife' (the model answered None)" in res.warnings
    assert res.count == (0 if task == "count" else None)


def test_end_to_end_found_regions_map_to_boxes(tiny_pipeline, astronaut, astronaut_boxes,
                                               monkeypatch):
    import vlxseek_core.pipeline as pipeline_module

    answer = "<ground>face</ground><objects><region2><region0></objects>"
    monkeypatch.setattr(pipeline_module, "RegionAnswerLogitsProcessor",
                        scripted_processor(tiny_pipeline.tokenizer, answer))
    res = tiny_pipeline.query(astronaut, "face", task="detect", boxes=astronaut_boxes)
    assert res.answer == answer and res.rejected == []
    assert [(d.label, d.region_index) for d in res.detections] == [("face", 0), ("face", 2)]
    for det in res.detections:
        assert np.array_equal(det.box, astronaut_boxes[det.region_index])
