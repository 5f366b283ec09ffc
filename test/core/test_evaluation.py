"""Evaluation runners and metrics (spec §5) on small hand-made datasets over real photos.

Metric checks use a scripted stand-in for the pipeline (hand-written answer strings); one smoke
run per protocol uses the tiny random checkpoint end to end.
"""
import json
import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest

from vlxseek_core.cli import main
from vlxseek_core.evaluation import EvalError, build_protocol, run_eval
from vlxseek_core.evaluation.coco import coco_bbox_metrics, coco_query
from vlxseek_core.evaluation.common import RECORDS_NAME, load_records, usable_boxes
from vlxseek_core.evaluation.counting import count_accuracy
from vlxseek_core.evaluation.refcoco import box_accuracy, box_ious, gt_box_xyxy
from vlxseek_core.types import Proposals

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
COUNT_QUESTION = ("How many {} are there in the image? Count each instance of the target "
                  "object. Locate them with object indexes and then answer the question with "
                  "the number of objects.")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """skimage photos as PNG files; returns ``(directory, {name: (width, height)})``."""
    from PIL import Image
    from skimage import data

    directory = tmp_path_factory.mktemp("photos")
    sizes = {}
    for name in PHOTOS:
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        img.save(directory / f"{name}.png")
        sizes[name] = img.size
    return str(directory), sizes


class ScriptedPipeline:
    """Stands in for ``VLXSeek``: the answer is looked up by the image's (width, height).

    With ``detector_boxes`` it behaves like a pipeline with a proposal detector.
    """

    def __init__(self, answers, detector_boxes=None):
        self.answers = answers
        self.calls = []
        self.detector_boxes = detector_boxes
        self.proposal_source = None if detector_boxes is None else "scripted"

    def query(self, image, text, task="detect", boxes=None, box_scores=None,
              max_new_tokens=None):
        self.calls.append({"size": image.size, "text": text, "task": task, "boxes": boxes,
                           "scores": box_scores})
        if boxes is None:
            boxes, box_scores = self.detector_boxes, np.full(len(self.detector_boxes), 0.5)
        return SimpleNamespace(answer=self.answers[image.size],
                               proposals=Proposals(boxes, box_scores), warnings=[])


def xyxy(box):
    x, y, w, h = box
    return [x, y, x + w, y + h]


def shifted(box, dx):
    """xyxy ``box`` moved right by ``dx`` px (IoU with it = (w - dx) / (w + dx))."""
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


def write_json(path, value, lines=False):
    with open(path, "w", encoding="utf-8") as fh:
        if lines:
            fh.writelines(json.dumps(v) + "\n" for v in value)
        else:
            json.dump(value, fh)
    return str(path)


def without_run(summary):
    return {k: v for k, v in summary.items() if k not in ("run", "out_dir")}


# ------------------------------------------------------------------------------------- COCO

# Ground truth (xywh px) on three photos; category ids deliberately not contiguous.
COCO_GT = {"astronaut": (1, [130, 20, 250, 490]), "coffee": (5, [150, 20, 300, 250]),
           "chelsea": (2, [100, 20, 250, 260])}
COCO_CATS = [{"id": 1, "name": "person"}, {"id": 2, "name": "cat"}, {"id": 5, "name": "cup"}]


@pytest.fixture
def coco_files(photo_dir, tmp_path):
    """Annotations + reference-format proposals JSONL; region0 = gt box, region1 = gt shifted
    right by w/5 (IoU 2/3)."""
    images_dir, sizes = photo_dir
    images, anns, records = [], [], []
    for image_id, (name, (cat, box)) in enumerate(COCO_GT.items(), start=1):
        w, h = sizes[name]
        images.append({"id": image_id, "file_name": f"{name}.png", "width": w, "height": h})
        anns.append({"id": image_id, "image_id": image_id, "category_id": cat, "bbox": box,
                     "area": box[2] * box[3], "iscrowd": 0})
        gt = xyxy(box)
        records.append({"id": image_id, "image": f"{name}.png",
                        "conversations": [{"from": "human", "value": "ignored"},
                                          {"from": "gpt", "value": ""}],
                        "bbox_list": [gt, shifted(gt, box[2] // 5)],
                        "score_list": [0.9, 0.4]})
    ann_path = write_json(tmp_path / "instances.json",
                          {"images": images, "annotations": anns, "categories": COCO_CATS})
    data_path = write_json(tmp_path / "coco_upn.jsonl", records, lines=True)
    return ann_path, data_path, images_dir, sizes


def coco_answers(sizes, cat_region):
    return {
        sizes["astronaut"]: "<ground>person</ground><objects><region0></objects>",
        # a label that is no category is dropped
        sizes["coffee"]: "<ground>cup</ground><objects><region0></objects>"
                         "<ground>dog</ground><objects><region1></objects>",
        # an out-of-range index is dropped
        sizes["chelsea"]: f"<ground>cat</ground><objects><region{cat_region}><region7>"
                          "</objects>",
    }


def test_coco_perfect_predictions_give_ap_1(coco_files, tmp_path):
    ann_path, data_path, images_dir, sizes = coco_files
    pipe = ScriptedPipeline(coco_answers(sizes, cat_region=0))
    protocol = build_protocol("coco", data_path, images_dir, annotations=ann_path)
    summary = run_eval(protocol, pipe, str(tmp_path / "out"), progress=False, print_table=False)
    # one query per image, reference wording, categories in id order, sent verbatim
    query = "Please detect person; cat; cup in the image and return the object indexes."
    assert coco_query(["person", "cat", "cup"]) == query
    assert [c["text"] for c in pipe.calls] == [query] * 3
    assert {c["task"] for c in pipe.calls} == {"vqa"}
    assert summary["num_errors"] == 0 and summary["num_records"] == 3
    assert summary["metrics"]["AP"] == pytest.approx(1.0)
    assert summary["metrics"]["num_detections"] == 3
    with open(tmp_path / "out" / "predictions.json") as fh:
        preds = sorted(json.load(fh), key=lambda d: d["image_id"])
    assert preds[0] == {"image_id": 1, "category_id": 1, "bbox": [130.0, 20.0, 250.0, 490.0],
                        "score": pytest.approx(0.9)}
    assert [p["category_id"] for p in preds] == [1, 5, 2]
    with open(tmp_path / "out" / "summary.json") as fh:
        assert json.load(fh)["metrics"]["AP"] == pytest.approx(1.0)
    # the out-of-range region7 of the cat answer is dropped and recorded
    entries = load_records(str(tmp_path / "out" / RECORDS_NAME))
    assert [e["dropped_indices"] for e in entries] == [[], [], [7]]
    assert summary["metrics"]["answers_with_dropped_indices"] == 1
    assert summary["metrics"]["coverage"] == 1.0


def test_coco_known_shift_gives_hand_computed_ap(coco_files, tmp_path):
    ann_path, data_path, images_dir, sizes = coco_files
    pipe = ScriptedPipeline(coco_answers(sizes, cat_region=1))  # cat box: IoU 2/3
    protocol = build_protocol("coco", data_path, images_dir, annotations=ann_path)
    metrics = run_eval(protocol, pipe, str(tmp_path / "out"), progress=False,
                       print_table=False)["metrics"]
    # cat: TP at IoU thresholds .50 .55 .60 .65 (2/3 ≥ t), FP at .70 … .95 → AP_cat = 4/10;
    # person and cup are perfect. AP is the mean over the three categories.
    assert metrics["AP"] == pytest.approx((1 + 1 + 0.4) / 3)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(2 / 3)


def test_coco_metric_interpolated_precision_by_hand():
    """Two images, one category: a perfect detection (score .9) and one with IoU 2/3 (.8)."""
    gt = {"images": [{"id": i, "width": 300, "height": 300} for i in (1, 2)],
          "categories": [{"id": 1, "name": "thing"}],
          "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 100, 100],
                           "area": 10000, "iscrowd": 0} for i in (1, 2)]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 100, 100], "score": 0.9},
            {"image_id": 2, "category_id": 1, "bbox": [30, 10, 100, 100], "score": 0.8}]
    metrics = coco_bbox_metrics(gt, dets)
    # t ≤ .65: both TP → AP 1. t ≥ .70: precision 1 up to recall .5, then 0 → 51/101 of the
    # 101 recall points.
    assert metrics["AP"] == pytest.approx((4 * 1 + 6 * 51 / 101) / 10)
    assert metrics["AP75"] == pytest.approx(51 / 101)
    assert metrics["APs"] is None  # no small objects: pycocotools' -1 becomes None
    assert coco_bbox_metrics(gt, dets[:1] + [dict(dets[1], bbox=[10, 10, 100, 100])])["AP"] \
        == pytest.approx(1.0)
    empty = coco_bbox_metrics(gt, [])
    assert empty["AP"] == 0.0 and empty["AR100"] == 0.0
    with pytest.raises(EvalError, match="not in the annotations"):
        coco_bbox_metrics(gt, [dict(dets[0], image_id=9)])


def test_coco_with_detector_proposals(coco_files, tmp_path):
    ann_path, _, images_dir, sizes = coco_files
    protocol = build_protocol("coco", None, images_dir, annotations=ann_path)
    with pytest.raises(EvalError, match="proposal detector"):
        run_eval(protocol, ScriptedPipeline({}), str(tmp_path / "a"), progress=False,
                 print_table=False)
    detector = np.array([[130, 20, 380, 510], [0, 0, 50, 50]], np.float32)
    pipe = ScriptedPipeline(coco_answers(sizes, cat_region=1), detector_boxes=detector)
    summary = run_eval(protocol, pipe, str(tmp_path / "b"), progress=False, print_table=False)
    assert all(c["boxes"] is None for c in pipe.calls)  # the detector proposed
    with open(tmp_path / "b" / "predictions.json") as fh:
        preds = json.load(fh)
    person = [p for p in preds if p["image_id"] == 1][0]
    assert person["bbox"] == [130.0, 20.0, 250.0, 490.0] and person["score"] == 0.5
    assert summary["metrics"]["AP50"] == pytest.approx(1 / 3)  # only the person box matches


# -------------------------------------------------------------------------------- counting


@pytest.fixture
def count_data(photo_dir, tmp_path):
    images_dir, sizes = photo_dir
    truth = [("astronaut", "people", 1), ("coffee", "cups", 2), ("chelsea", "dogs", 0),
             ("rocket", "rockets", 4)]
    records = [{"question": COUNT_QUESTION.format(what), "answer": answer,
                "image": f"{name}.png", "bboxes": [[10, 10, 100, 100], [50, 60, 200, 220]],
                "scores": [0.8, 0.5]} for name, what, answer in truth]
    answers = {sizes["astronaut"]: "<ground>people</ground><objects><region0></objects>1",
               sizes["coffee"]: "There are 3 cups.",           # wrong
               sizes["chelsea"]: "I see none.",                # no integer → 0, right
               sizes["rocket"]: "<region12><region1>5 rockets"}  # tags removed → 5, wrong
    return write_json(tmp_path / "count.json", records), images_dir, answers


def test_count_accuracy_known_list():
    assert count_accuracy([3, 5, None, 2], [3, 4, 1, 2]) == 0.5
    assert count_accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        count_accuracy([1], [1, 2])


def test_countbench_runner_accuracy(count_data, tmp_path):
    data, images_dir, answers = count_data
    pipe = ScriptedPipeline(answers)
    summary = run_eval(build_protocol("countbench", data, images_dir), pipe,
                       str(tmp_path / "out"), progress=False, print_table=False)
    assert summary["metrics"]["accuracy"] == 0.5
    assert summary["metrics"]["mean_abs_error"] == pytest.approx((0 + 1 + 0 + 1) / 4)
    assert pipe.calls[0]["text"] == COUNT_QUESTION.format("people")  # verbatim question
    assert pipe.calls[0]["scores"].tolist() == pytest.approx([0.8, 0.5])
    entries = load_records(str(tmp_path / "out" / RECORDS_NAME))
    assert [(e["id"], e["pred"], e["gt"]) for e in entries] == [
        ("0", 1, 1), ("1", 3, 2), ("2", 0, 0), ("3", 5, 4)]


def test_resume_skips_done_records_and_keeps_the_summary(count_data, tmp_path):
    data, images_dir, answers = count_data
    out = str(tmp_path / "out")
    protocol = build_protocol("pixmo-count", data, images_dir)
    first = run_eval(protocol, ScriptedPipeline(answers), out, progress=False, print_table=False)
    again = ScriptedPipeline(answers)
    second = run_eval(protocol, again, out, progress=False, print_table=False)
    assert again.calls == [] and second["run"]["resumed"] == 4
    assert without_run(second) == without_run(first)
    # An interrupted run: the last record never finished and its line is half written.
    path = os.path.join(out, RECORDS_NAME)
    with open(path) as fh:
        lines = fh.readlines()
    with open(path, "w") as fh:
        fh.writelines(lines[:-1] + ['{"id": "3", "ok": tr'])
    third_pipe = ScriptedPipeline(answers)
    third = run_eval(protocol, third_pipe, out, progress=False, print_table=False)
    assert len(third_pipe.calls) == 1 and third["run"]["processed"] == 1
    assert without_run(third) == without_run(first)
    # Other settings are refused; --restart starts over.
    with pytest.raises(EvalError, match="other settings"):
        run_eval(protocol, ScriptedPipeline(answers), out, model_id="another", progress=False,
                 print_table=False)
    fresh = ScriptedPipeline(answers)
    run_eval(protocol, fresh, out, model_id="another", restart=True, progress=False,
             print_table=False)
    assert len(fresh.calls) == 4


def test_failed_records_are_logged_and_counted(count_data, tmp_path, caplog):
    data, images_dir, answers = count_data
    records = json.load(open(data)) + [
        {"question": "How many?", "answer": 1, "image": "missing.png", "bboxes": [[0, 0, 9, 9]]},
        {"question": "How many?", "image": "astronaut.png", "bboxes": [[0, 0, 9, 9]]}]
    data = write_json(tmp_path / "with_errors.json", records)
    pipe = ScriptedPipeline(answers)
    with caplog.at_level(logging.WARNING, logger="vlxseek.eval"):
        summary = run_eval(build_protocol("countbench", data, images_dir), pipe,
                           str(tmp_path / "out"), progress=False, print_table=False)
    assert summary["num_records"] == 6 and summary["num_ok"] == 4
    assert summary["num_errors"] == 2
    assert [e["id"] for e in summary["errors"]] == ["4", "5"]
    assert "missing.png" in summary["errors"][0]["error"]
    assert "'answer'" in summary["errors"][1]["error"]
    assert "record 4 failed" in caplog.text and "record 5 failed" in caplog.text
    assert summary["metrics"]["accuracy"] == pytest.approx(2 / 6)  # failures count as wrong
    assert summary["metrics"]["accuracy_evaluated"] == 0.5
    # A re-run retries only the failed records (they fail again, still counted).
    retry = run_eval(build_protocol("countbench", data, images_dir), ScriptedPipeline(answers),
                     str(tmp_path / "out"), progress=False, print_table=False)
    assert retry["run"]["processed"] == 2 and retry["num_errors"] == 2


def test_records_and_boxes_helpers(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n{"id": \n')
    with pytest.raises(EvalError, match=r"bad.jsonl:2"):
        load_records(str(path))
    boxes = np.array([[10, 10, 10, 20], [-5, 0, 700, 50], [599.5, 5, 600, 9]], np.float64)
    fixed, n = usable_boxes(boxes, width=600, height=400)
    assert n == 2 and len(fixed) == 3
    assert fixed.tolist() == [[10, 10, 11, 20], [0, 0, 600, 50], [599, 5, 600, 9]]


# -------------------------------------------------------------------------------- RefCOCO


def test_box_accuracy_hand_made():
    gt = [[100, 50, 300, 250]] * 4  # w = 200
    pred = [gt[0], shifted(gt[0], 40), shifted(gt[0], 100), None]
    assert box_ious(pred, gt) == pytest.approx([1.0, 160 / 240, 100 / 300, 0.0])
    assert box_accuracy(pred, gt) == 0.5
    assert box_accuracy(pred, gt, iou_threshold=0.3) == 0.75
    assert gt_box_xyxy({"bbox": [10, 20, 30, 40]}) == [10, 20, 40, 60]
    assert gt_box_xyxy({"bbox": [10, 20, 30, 40]}, "xyxy") == [10, 20, 30, 40]
    assert gt_box_xyxy({"bbox": [0, 0, 1, 1], "gt_bbox_xyxy": [1, 2, 3, 4]}) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="no area"):
        gt_box_xyxy({"bbox": [5, 5, 4, 9]}, "xyxy")


def test_refcoco_runner_acc_at_05(photo_dir, tmp_path):
    images_dir, sizes = photo_dir
    gt = [150, 40, 350, 240]  # xyxy, w = 200
    proposals = [gt, shifted(gt, 40), shifted(gt, 100)]  # IoU 1, 2/3, 1/3
    records = [
        {"image": "astronaut.png", "expression": "the astronaut", "bbox": [150, 40, 200, 200],
         "bbox_list": proposals},
        {"image": "coffee.png", "sent": "the cup", "gt_bbox_xyxy": gt, "bboxes": proposals,
         "scores": [0.9, 0.8, 0.7]},
        {"image": "chelsea.png", "expression": "the cat", "bbox": [150, 40, 200, 200],
         "bbox_list": proposals},
        {"image": "rocket.png", "expression": "the rocket", "bbox": [150, 40, 200, 200],
         "bbox_list": proposals},
    ]
    answers = {sizes["astronaut"]: "<ground>the astronaut</ground><objects><region0></objects>",
               sizes["coffee"]: "<ground>the cup</ground><objects><region1><region0></objects>",
               # region7 does not exist: dropped (and recorded), region2 is the first box
               sizes["chelsea"]: "<ground>the cat</ground><objects><region7><region2></objects>",
               sizes["rocket"]: "nothing here"}
    pipe = ScriptedPipeline(answers)
    data = write_json(tmp_path / "refcoco.jsonl", records, lines=True)
    summary = run_eval(build_protocol("refcoco", data, images_dir), pipe, str(tmp_path / "out"),
                       progress=False, print_table=False)
    assert pipe.calls[0]["text"] == ("Please detect the astronaut in this image. Answer the "
                                     "question with object indexes.")
    m = summary["metrics"]
    assert m["acc@0.5"] == 0.5 and m["no_region"] == 1
    # the first referred box in answer order: region1 (IoU 2/3) for the cup, not region0
    assert m["mean_iou"] == pytest.approx((1 + 2 / 3 + 1 / 3 + 0) / 4)
    assert m["answers_with_dropped_indices"] == 1
    entries = load_records(str(tmp_path / "out" / RECORDS_NAME))
    assert [(e["region_index"], e["dropped_indices"]) for e in entries] == [
        (0, []), (1, []), (2, [7]), (None, [])]


# ------------------------------------------------------------------- tiny pipeline smoke runs


def test_smoke_coco_and_refcoco_with_tiny_pipeline(tiny_pipeline, coco_files, tmp_path):
    ann_path, data_path, images_dir, _ = coco_files
    summary = run_eval(build_protocol("coco", data_path, images_dir, annotations=ann_path),
                       tiny_pipeline, str(tmp_path / "coco"), limit=2, max_new_tokens=6,
                       progress=False, print_table=False)
    assert summary["num_records"] == 2 and summary["num_errors"] == 0
    assert 0.0 <= summary["metrics"]["AP"] <= 1.0
    assert 0.0 <= summary["metrics"]["AP50"] <= 1.0
    records = [{"image": f"{name}.png", "expression": "the main object",
                "bbox": [10, 10, 100, 100], "bbox_list": [[10, 10, 110, 110], [0, 0, 50, 60]]}
               for name in ("chelsea", "coffee")]
    data = write_json(tmp_path / "ref.json", records)
    summary = run_eval(build_protocol("refcoco", data, images_dir), tiny_pipeline,
                       str(tmp_path / "ref"), max_new_tokens=6, progress=False, print_table=False)
    assert summary["num_errors"] == 0
    assert 0.0 <= summary["metrics"]["acc@0.5"] <= 1.0


def test_smoke_countbench_cli_with_tiny_model(tiny_model_dir, tiny_pipeline, count_data,
                                              tmp_path, capsys, monkeypatch):
    from vlxseek_core.pipeline import VLXSeek

    loads = []

    def from_pretrained(path, **kwargs):  # reuse the session's loaded tiny model
        loads.append((path, kwargs))
        return tiny_pipeline

    monkeypatch.setattr(VLXSeek, "from_pretrained", staticmethod(from_pretrained))
    data, images_dir, _ = count_data
    out = tmp_path / "cli"
    code = main(["eval", "countbench", "--model", tiny_model_dir, "--data", data,
                 "--images", images_dir, "--out", str(out), "--limit", "2", "--device", "cpu",
                 "--dtype", "float32", "--max-new-tokens", "6", "--no-progress"])
    assert code == 0
    assert loads == [(tiny_model_dir, {"device": "cpu", "dtype": "float32",
                                       "proposal_source": "none", "proposal_model": None})]
    printed = capsys.readouterr().out
    assert "vlxseek eval countbench" in printed and "accuracy" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_records"] == 2 and summary["num_errors"] == 0
    assert 0.0 <= summary["metrics"]["accuracy"] <= 1.0
    assert main(["eval", "coco", "--model", tiny_model_dir, "--images", images_dir,
                 "--out", str(out)]) == 2  # coco without --annotations: clean error
