"""Evaluation protocols read rejection answers (``<objects>None</objects>``) as "nothing found"."""
import numpy as np

from vlxseek_core.answer_format import format_answer
from vlxseek_core.evaluation.coco import answer_to_coco_detections
from vlxseek_core.evaluation.counting import CountProtocol
from vlxseek_core.evaluation.refcoco import RefCocoProtocol

BOXES = np.array([[0, 0, 10, 10], [20, 20, 40, 50], [5, 5, 15, 15]], np.float32)
SCORES = np.array([0.9, 0.8, 0.7], np.float32)


def test_coco_rejected_category_yields_no_detections():
    answer = format_answer([("person", [1]), ("knife", []), ("cup", [0, 2])])
    assert "<ground>knife</ground><objects>None</objects>" in answer
    dets = answer_to_coco_detections(answer, BOXES, SCORES, 7,
                                     {"person": 1, "knife": 49, "cup": 47})
    assert [(d["category_id"], d["bbox"]) for d in dets] == [
        (1, [20.0, 20.0, 20.0, 30.0]), (47, [0.0, 0.0, 10.0, 10.0]), (47, [5.0, 5.0, 10.0, 10.0])]
    only_rejections = format_answer([("knife", []), ("fork", [])])
    assert answer_to_coco_detections(only_rejections, BOXES, SCORES, 7, {"knife": 49}) == []


def test_refcoco_rejection_is_no_box_and_a_miss():
    protocol = RefCocoProtocol("unused.json", "images")
    raw = {"image": "x.jpg", "expression": "the knife", "bbox_list": BOXES.tolist(),
           "gt_bbox_xyxy": [20, 20, 40, 50]}
    miss = protocol.predict(raw, format_answer([("the knife", [])]), BOXES, SCORES)
    assert miss["region_index"] is None and miss["pred_box"] is None and miss["iou"] == 0.0
    hit = protocol.predict(raw, format_answer([("the knife", [1])]), BOXES, SCORES)
    assert hit["region_index"] == 1 and hit["iou"] == 1.0
    metrics = protocol.metrics([{"ok": True, **miss}, {"ok": True, **hit}])
    assert metrics["acc@0.5"] == 0.5 and metrics["no_region"] == 1


def test_counting_rejection_counts_zero():
    protocol = CountProtocol("unused.json", "images")
    zero = protocol.predict({"answer": 0}, format_answer([("unicorns", [])], count=0),
                            BOXES, SCORES)
    assert zero == {"pred": 0, "gt": 0}
    # a rejection without the trailing number still reads 0 (the reference's "no number → 0")
    assert protocol.predict({"answer": 2}, format_answer([("cats", [])]), BOXES,
                            SCORES) == {"pred": 0, "gt": 2}
    found = protocol.predict({"answer": 2}, format_answer([("cats", [0, 2])], count=2),
                             BOXES, SCORES)
    assert found == {"pred": 2, "gt": 2}
    metrics = protocol.metrics([{"ok": True, **zero}, {"ok": True, **found}])
    assert metrics["accuracy"] == 1.0
