"""``vlxseek eval coco`` reproduces the official VLM-FO1 COCO evaluation on fixed answers.

The official computation (``evaluation/eval_coco.py`` of om-ai-lab/VLM-FO1 writing
``predictions.json``, then the standard pycocotools recipe on ``instances_val2017.json``) is
re-stated here independently, step by step, and its AP on hand-made answers is the expected
value: blocks by ``re.findall`` of the reference pattern (no flags), stripped labels, a Python
``set`` of region indices per block (union for a repeated label), detections in the sets'
iteration order, an ``IndexError`` on an out-of-range index, images without an answer skipped
when writing predictions, and ``COCOeval`` over every image of the annotation file.
"""
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from vlxseek_core.cli import main
from vlxseek_core.evaluation import EvalError, build_protocol, load_records, run_eval
from vlxseek_core.evaluation.coco import CocoProtocol, coco_detections, label_region_sets
from vlxseek_core.evaluation.common import RECORDS_NAME
from vlxseek_core.types import Proposals

# ----------------------------------------------------------- the official computation, re-stated

OFFICIAL_BLOCK = r"<ground>(.*?)<\/ground><objects>(.*?)<\/objects>"


def official_label_sets(answer):
    """label -> set of indices, as the official script's answer extraction builds it."""
    result = {}
    for label, objects in re.findall(OFFICIAL_BLOCK, answer):
        label = label.strip()
        found = set([int(tag[len("<region"):-1]) for tag in re.findall(r"<region\d+>", objects)])
        result[label] = (result[label] | found) if label in result else found
    return result


def official_predictions(records, answers, category_ids, order=iter):
    """The official prediction list; ``order=sorted`` gives the index-sorted variant.

    A record without an answer (generation failed) contributes nothing; an out-of-range index
    raises ``IndexError`` (the bbox is looked up before the label is checked).
    """
    predictions = []
    for record in records:
        if record["id"] not in answers:
            continue
        for label, indices in official_label_sets(answers[record["id"]]).items():
            for i in order(indices):
                box, score = record["bbox_list"][i], record["score_list"][i]
                if label in category_ids:
                    predictions.append({"image_id": record["id"],
                                        "category_id": category_ids[label],
                                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                        "score": score})
    return predictions


def standard_coco_stats(ann_path, predictions, img_ids=None):
    """pycocotools' standard bbox recipe (every annotated image unless ``img_ids``)."""
    import contextlib
    import copy
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_path)
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(predictions)), "bbox")  # it edits
        if img_ids is not None:
            evaluator.params.imgIds = img_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


# ------------------------------------------------------------------------- hand-made dataset

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "person"}]
CATEGORY_IDS = {c["name"]: c["id"] for c in CATEGORIES}
# image id -> (size, category, ground-truth xywh); image 14 is not in the proposals file
IMAGES = {11: ((200, 150), "cat", [100, 40, 60, 50]),
          12: ((210, 150), "dog", [20, 30, 80, 60]),
          13: ((220, 150), "person", [50, 20, 40, 100]),
          14: ((230, 150), "cat", [10, 10, 50, 50])}
ANSWERS = {
    # tie at score .5: region9 is the cat, region2 background. The set {2, 9} iterates 9, 2,
    # so the official run ranks the true positive first; index order would rank it second.
    11: "<ground>cat</ground><objects><region2><region9></objects><|im_end|>",
    # a newline between the tags: the official pattern does not match, the dog is missed
    12: "<ground>dog</ground>\n<objects><region0></objects><|im_end|>",
    # the "<object>" spelling is not read by the official pattern (lenient: a dog false positive)
    13: "<ground>person</ground><objects><region1></objects><ground>dog</ground> "
        "<object><region5></object><|im_end|>",
}


def xyxy(box):
    return [box[0], box[1], box[0] + box[2], box[1] + box[3]]


def proposals(image_id):
    """Ten proposals, scores with two decimals as UPN's; the answered ones placed by hand."""
    boxes = [[5 + 10 * i, 120, 15 + 10 * i, 140] for i in range(10)]
    scores = [0.3] * 10
    gt = xyxy(IMAGES[image_id][2])
    if image_id == 11:
        boxes[9], scores[9] = gt, 0.5
        boxes[2], scores[2] = [0, 100, 30, 140], 0.5
    elif image_id == 12:
        boxes[0], scores[0] = gt, 0.8
    elif image_id == 13:
        boxes[1], scores[1] = gt, 0.7
        boxes[5], scores[5] = [150, 10, 200, 60], 0.3
    return boxes, scores


@pytest.fixture
def dataset(tmp_path):
    """Annotation file (4 images), proposals JSONL (3 of them), image files."""
    from PIL import Image

    images, annotations, records = [], [], []
    for image_id, ((w, h), name, box) in IMAGES.items():
        Image.new("RGB", (w, h), (90, 120, 150)).save(tmp_path / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": w, "height": h})
        annotations.append({"id": 100 + image_id, "image_id": image_id,
                            "category_id": CATEGORY_IDS[name], "bbox": box,
                            "area": box[2] * box[3], "iscrowd": 0})
        if image_id in ANSWERS:
            boxes, scores = proposals(image_id)
            records.append({"id": image_id, "image": f"{image_id}.png", "bbox_list": boxes,
                            "score_list": scores,
                            "conversations": [{"from": "human", "value": "<image>\nunused"}]})
    ann_path = tmp_path / "instances.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": CATEGORIES}))
    data_path = tmp_path / "proposals.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return SimpleNamespace(ann=str(ann_path), data=str(data_path), images=str(tmp_path),
                           records=records, tmp=tmp_path)


class FixedAnswers:
    """Stands in for ``VLXSeek``: a fixed answer per image, looked up by the image's size."""

    def __init__(self, answers):
        self.by_size = {IMAGES[i][0]: a for i, a in answers.items()}
        self.proposal_source = None

    def query(self, image, text, task="detect", boxes=None, box_scores=None,
              max_new_tokens=None):
        return SimpleNamespace(answer=self.by_size[image.size],
                               proposals=Proposals(boxes, box_scores), warnings=[])


def evaluate(dataset, out, **options):
    protocol = build_protocol("coco", dataset.data, dataset.images, annotations=dataset.ann,
                              **options)
    return run_eval(protocol, FixedAnswers(ANSWERS), str(dataset.tmp / out), progress=False,
                    print_table=False)


# ----------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("answer", [
    "<ground>cat</ground><objects><region2><region9></objects>",
    "<ground> cat </ground><objects><region3><region17><region40><region3></objects>",
    "<ground>cat</ground><objects><region9></objects><ground>cat</ground><objects><region1>"
    "<region2></objects>",                                           # union of a repeated label
    "<ground>cat</ground> <objects><region1></objects>",           # space between the tags
    "<ground>cat</ground>\n<objects><region1></objects>",          # newline between the tags
    "<ground>c\nat</ground><objects><region1></objects>",          # newline in the label
    "<ground>cat</ground><object><region1></object>",               # paper spelling
    "<ground>dog</ground><ground>cat</ground><objects><region1></objects>",  # label w/o objects
    "<ground>cat</ground><objects><region1>\n<region2></objects>",  # newline in the objects
    "<ground>cat</ground><objects>None</objects>",                  # rejection: empty set
    "<ground>cat</ground><objects><region٣></objects>",             # a Unicode digit
    "There are <region1> and <region2>.",                           # no block at all
])
def test_strict_reading_is_the_official_one_set_order_included(answer):
    ours = label_region_sets(answer, "strict")
    official = official_label_sets(answer)
    assert [(k, list(v)) for k, v in ours.items()] == [(k, list(v)) for k, v in official.items()]


def test_set_order_and_lenient_reading_by_example():
    assert list(label_region_sets(ANSWERS[11])["cat"]) == [9, 2]  # not sorted
    assert label_region_sets(ANSWERS[12]) == {}
    assert label_region_sets(ANSWERS[12], "lenient") == {"dog": {0}}
    assert label_region_sets(ANSWERS[13]) == {"person": {1}}
    assert label_region_sets(ANSWERS[13], "lenient") == {"person": {1}, "dog": {5}}
    label_without_objects = "<ground>dog</ground><ground>cat</ground><objects><region1></objects>"
    assert label_region_sets(label_without_objects) == {"dog</ground><ground>cat": {1}}
    assert label_region_sets(label_without_objects, "lenient") == {"cat": {1}}


def test_coco_ap_equals_the_official_computation(dataset):
    official = official_predictions(dataset.records, ANSWERS, CATEGORY_IDS)
    expected = standard_coco_stats(dataset.ann, official)
    # by hand: cat 51/101 (TP ranked first, image 14's cat missed), dog 0, person 1
    assert expected[0] == pytest.approx((51 / 101 + 0 + 1) / 3)

    summary = evaluate(dataset, "strict")
    m = summary["metrics"]
    assert m["parse"] == "strict"
    assert [m[k] for k in ("AP", "AP50", "AP75", "AR100")] == pytest.approx(
        [expected[0], expected[1], expected[2], expected[8]])
    with open(dataset.tmp / "strict" / "predictions.json") as fh:
        assert json.load(fh) == official  # the same list, in the same order
    # coverage: image 14 has no proposals record, so no answer; it is still scored
    assert (m["images_annotated"], m["images_answered"], m["images_scored"]) == (4, 3, 4)
    assert m["coverage"] == 0.75
    assert m["answers_parse_differs"] == 2 and m["answers_with_dropped_indices"] == 0
    entries = {e["id"]: e for e in load_records(str(dataset.tmp / "strict" / RECORDS_NAME))}
    assert [entries[i]["parse_differs"] for i in ("11", "12", "13")] == [False, True, True]
    assert all(entries[i]["dropped_indices"] == [] for i in entries)

    # each departure from the official computation changes the AP on these answers
    by_index = standard_coco_stats(
        dataset.ann, official_predictions(dataset.records, ANSWERS, CATEGORY_IDS, order=sorted))
    assert by_index[0] == pytest.approx((25.5 / 101 + 0 + 1) / 3)
    assert abs(by_index[0] - expected[0]) > 0.05
    answered_only = evaluate(dataset, "records", score_images="records")["metrics"]
    assert answered_only["AP"] == pytest.approx(
        standard_coco_stats(dataset.ann, official, img_ids=[11, 12, 13])[0])
    assert answered_only["AP"] == pytest.approx(2 / 3)  # image 14's missed cat not counted
    assert abs(answered_only["AP"] - expected[0]) > 0.05
    assert answered_only["images_scored"] == 3 and answered_only["coverage"] == 0.75


def test_lenient_parse_is_an_option_and_reports_the_strict_result(dataset):
    strict = evaluate(dataset, "strict")["metrics"]
    summary = evaluate(dataset, "lenient", parse="lenient")
    m = summary["metrics"]
    # lenient: the dog of image 12 is found (TP .8) and image 13's "<object>" dog is a FP (.3)
    assert m["parse"] == "lenient"
    assert m["AP"] == pytest.approx((51 / 101 + 1 + 1) / 3)
    assert m["AP_strict"] == pytest.approx(strict["AP"])
    assert m["AP50_strict"] == pytest.approx(strict["AP50"])
    assert (m["num_detections"], m["num_detections_strict"]) == (5, 3)
    assert m["answers_parse_differs"] == 2
    entries = {e["id"]: e for e in load_records(str(dataset.tmp / "lenient" / RECORDS_NAME))}
    assert "strict_detections" not in entries["11"]
    assert entries["12"]["strict_detections"] == []
    with open(dataset.tmp / "lenient" / "meta.json") as fh:
        assert json.load(fh)["parse"] == "lenient"
    # a run is resumed only with the same parse
    with pytest.raises(EvalError, match="parse"):
        evaluate(dataset, "lenient")


def test_out_of_range_indices_are_recorded_where_the_official_script_stops(dataset):
    record = dataset.records[0]  # image 11, ten proposals
    answer = ("<ground>cat</ground><objects><region9><region12></objects>"
              "<ground>sofa</ground><objects><region30></objects>")
    with pytest.raises(IndexError):  # the official script stops here (for any label)
        official_predictions([record], {11: answer}, CATEGORY_IDS)
    protocol = CocoProtocol(dataset.ann, dataset.images, dataset.data)
    boxes = np.asarray(record["bbox_list"], float)
    entry = protocol.predict(record, answer, boxes, np.asarray(record["score_list"]))
    assert entry["dropped_indices"] == [12, 30]
    assert [d["bbox"] for d in entry["detections"]] == [[100.0, 40.0, 60.0, 50.0]]
    metrics = protocol.metrics([{"id": "11", "ok": True, **entry}])
    assert metrics["answers_with_dropped_indices"] == 1
    assert coco_detections(answer, boxes, np.ones(10), 11, CATEGORY_IDS)[1] == [12, 30]


def test_cli_parse_option_and_coverage_in_the_table(dataset, monkeypatch, capsys):
    from vlxseek_core.pipeline import VLXSeek

    monkeypatch.setattr(VLXSeek, "from_pretrained",
                        staticmethod(lambda path, **kwargs: FixedAnswers(ANSWERS)))
    common = ["--model", str(dataset.tmp), "--images", dataset.images, "--no-progress"]
    code = main(["eval", "coco", *common, "--annotations", dataset.ann, "--data", dataset.data,
                 "--out", str(dataset.tmp / "cli"), "--parse", "lenient"])
    assert code == 0
    table = capsys.readouterr().out
    assert "coverage" in table and "0.7500" in table and "AP_strict" in table
    summary = json.loads((dataset.tmp / "cli" / "summary.json").read_text())
    assert summary["metrics"]["parse"] == "lenient" and summary["metrics"]["coverage"] == 0.75
    assert main(["eval", "refcoco", *common, "--data", dataset.data,
                 "--out", str(dataset.tmp / "ref"), "--parse", "lenient"]) == 2
    assert "--parse applies to coco only" in capsys.readouterr().err
