"""COCO, RefCOCO and LLaVA annotations → training records (hand-made annotation files)."""
import json
import os
import re
from collections import Counter, defaultdict

import numpy as np
import pytest

from vlxseek_core import cli
from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.parsing import extract_count, parse_answer
from vlxseek_core.prompts import parts_to_text, task_parts
from vlxseek_core.training.converters import (coco_to_records, llava_to_records,
                                              refcoco_to_records)
from vlxseek_core.training.records import box_iou, plural, read_records, write_records

CATS = ["dog", "cat", "person", "knife", "bus", "teddy bear"]
NUM_IMAGES = 250
SINGULAR = {plural(c): c for c in CATS}


def _make_coco(path, num_images=NUM_IMAGES, seed=0):
    """Images 640x480 with 0-5 non-overlapping objects; image 1 has none, image 2 only crowd."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for img_id in range(1, num_images + 1):
        images.append({"id": img_id, "file_name": f"{img_id:012d}.jpg", "width": 640,
                       "height": 480})
        n = 0 if img_id in (1, 2) else int(rng.integers(1, 6))
        for k in range(n):
            x, y = 10 + 120 * k, float(rng.integers(0, 300))
            anns.append({"id": len(anns) + 1, "image_id": img_id, "iscrowd": 0,
                         "category_id": int(rng.integers(1, len(CATS) + 1)),
                         "bbox": [x + 0.25, y, 80.5, float(rng.integers(20, 150))]})
    anns.append({"id": len(anns) + 1, "image_id": 2, "iscrowd": 1, "category_id": 1,
                 "bbox": [0, 0, 100, 100]})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CATS)]}
    with open(path, "w") as fh:
        json.dump(coco, fh)
    return coco


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("coco") / "instances_train.json"
    return str(path), _make_coco(path)


def _gt_by_image(coco):
    names = {c["id"]: c["name"] for c in coco["categories"]}
    out = defaultdict(lambda: defaultdict(set))
    for a in coco["annotations"]:
        if not a["iscrowd"]:
            x, y, w, h = a["bbox"]
            out[a["image_id"]][names[a["category_id"]]].add(
                tuple(round(v, 3) for v in (x, y, x + w, y + h)))
    return out


def test_coco_counts_prompts_and_answers(coco_file):
    path, coco = coco_file
    records = coco_to_records(path, seed=0, rejection_rate=0.2)
    per_task = Counter(r.task for r in records)
    assert per_task == {"detect": NUM_IMAGES, "count": NUM_IMAGES, "caption": NUM_IMAGES - 2}
    gt = _gt_by_image(coco)
    for rec in records:
        img_id = int(rec.id.split(":")[0])
        assert rec.image == f"{img_id:012d}.jpg"
        assert rec.task_text == parts_to_text(task_parts(rec.task, rec.query,
                                                         rec.region_indices))
        assert rec.to_json()["conversations"][0]["value"] == "<image>\n" + rec.task_text
        boxes = [tuple(b) for b in rec.bbox_list]
        if rec.task == "caption":
            box = boxes[rec.region_indices[0]]
            cats = [c for c, bs in gt[img_id].items() if box in bs]
            assert rec.answer in (f"a {c}" for c in cats)
            continue
        parsed = parse_answer(rec.answer, len(boxes))
        names = rec.query.split("; ") if rec.task == "detect" else [rec.query]
        found = {g.phrase: {boxes[i] for i in g.region_indices} for g in parsed.groundings}
        rejected = set(getattr(parsed, "rejected", [])) | {p for p, b in found.items() if not b}
        assert set(found) | rejected == set(names)
        for name in names:
            category = name if rec.task == "detect" else SINGULAR[name]  # count: plural
            expected = gt[img_id].get(category, set())
            assert found.get(name, set()) == expected
            assert (name in rejected) == (not expected)
        if rec.task == "count":
            assert extract_count(rec.answer) == len(gt[img_id].get(category, ()))
        # all GT boxes of the image are candidates, distractors never overlap them
        all_gt = np.array(sorted(set().union(*gt[img_id].values()))).reshape(-1, 4)
        others = np.array([b for b in boxes if b not in set(map(tuple, all_gt))]).reshape(-1, 4)
        assert len(others) + len(all_gt) == len(boxes)
        if len(all_gt) and len(others):
            assert box_iou(others, all_gt).max() < 0.5


def test_coco_rejection_rate_and_empty_images(coco_file):
    path, _ = coco_file
    records = coco_to_records(path, seed=3, rejection_rate=0.2, tasks=("detect",),
                              samples_per_image=2)
    assert len(records) == 2 * NUM_IMAGES
    rate = np.mean([r.meta["rejection"] for r in records])
    assert abs(rate - 0.2) < 0.05
    for rec in records:
        if rec.image in ("000000000001.jpg", "000000000002.jpg"):  # no (non-crowd) objects
            assert rec.meta["rejection"] and "<region" not in rec.answer
        if rec.image == "000000000002.jpg":  # a crowd of dogs: never called absent
            assert "dog" not in rec.query.split("; ")
    none = coco_to_records(path, seed=3, rejection_rate=0.0, tasks=("detect",))
    assert sum(r.meta["rejection"] for r in none) == 2  # only the two empty images
    assert coco_to_records(path, seed=3) == coco_to_records(path, seed=3)


def test_coco_proposals_as_distractors(coco_file, tmp_path):
    path, coco = coco_file
    gt = _gt_by_image(coco)
    rows = []
    for img in coco["images"][:20]:
        own = sorted(set().union(*gt[img["id"]].values())) if gt[img["id"]] else []
        props = [[600, 400, 630, 470], [1, 1, 9, 9]]
        if own:  # a near-duplicate of a GT box: must be removed
            props.append([own[0][0] + 1, own[0][1] + 1, own[0][2] + 1, own[0][3]])
        rows.append({"image": img["file_name"], "bbox_list": props,
                     "score_list": [0.9] * len(props)})
    prop_path = tmp_path / "props.jsonl"
    prop_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = coco_to_records(path, seed=0, distractors="proposals",
                              proposals_path=str(prop_path), tasks=("detect",))
    for rec in records[:20]:
        img_id = int(rec.id.split(":")[0])
        n_gt = sum(len(b) for b in gt[img_id].values())
        assert len(rec.bbox_list) == n_gt + 2
        assert [600, 400, 630, 470] in rec.bbox_list and [1, 1, 9, 9] in rec.bbox_list
    small = coco_to_records(path, seed=0, distractors="proposals",
                            proposals_path=str(prop_path), tasks=("detect",), max_boxes=6)
    assert all(len(r.bbox_list) <= 6 for r in small)


def test_coco_objects_without_a_candidate_are_never_absent(tmp_path):
    """A crowd, a box under 1 px and a box outside the image are objects that are there: their
    category is neither a rejection target nor counted, and no distractor covers the crowd."""
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CATS)]
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 320, "height": 240} for i in (1, 2, 3)]
    images.append({"id": 4, "file_name": "4.jpg", "width": 0, "height": 240})  # skipped
    anns = [  # image 1: a cat, a crowd of persons; 2: a dog, a 0.5 px knife; 3: a bus outside
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 10, 50, 40], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [100, 20, 200, 200], "iscrowd": 1},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [30, 30, 80, 60], "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 4, "bbox": [5, 5, 0.5, 30], "iscrowd": 0},
        {"id": 5, "image_id": 3, "category_id": 2, "bbox": [30, 30, 80, 60], "iscrowd": 0},
        {"id": 6, "image_id": 3, "category_id": 5, "bbox": [400, 300, 50, 50], "iscrowd": 0},
        {"id": 7, "image_id": 4, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0}]
    path = tmp_path / "inst.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    unsure = {"1.jpg": ("person", [100, 20, 300, 220]), "2.jpg": ("knife", None),
              "3.jpg": ("bus", None)}
    records = coco_to_records(str(path), seed=0, rejection_rate=0.5, samples_per_image=60,
                              tasks=("detect", "count"))
    assert {r.image for r in records} == set(unsure)
    asked, dropped = Counter(), 0
    for rec in records:
        name, crowd = unsure[rec.image]
        query = rec.query.split("; ") if rec.task == "detect" else [SINGULAR[rec.query]]
        assert name not in query
        asked.update(query)
        if crowd is None:
            assert len(rec.bbox_list) == 11  # the object and 10 distractors
        else:  # those on the crowd are dropped
            assert box_iou(np.array(rec.bbox_list), np.array([crowd])).max() < 0.5
            dropped += 11 - len(rec.bbox_list)
    assert dropped > 0  # random distractors do land on the crowd, and are taken out
    # the other absent categories still are rejection targets, and the present ones asked
    assert {"bus", "teddy bear", "cat", "dog"} <= set(asked)


@pytest.mark.parametrize("name, problem", [("", "is empty"), ("  ", "is empty"),
                                           ("salt; pepper", "holds ';'"),
                                           ("<region1>", "holds markup"),
                                           ("a <|im_end|>", "holds markup")])
def test_coco_category_names_that_cannot_be_labels_are_refused(name, problem, tmp_path):
    """Each category is a label of detect and count answers and a part of detect queries."""
    coco = {"images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 100}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 20, 20]}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": name}]}
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(InvalidRequestError, match=f"category 2 {re.escape(problem)}"):
        coco_to_records(str(path))


def test_coco_errors(coco_file, tmp_path):
    path, _ = coco_file
    with pytest.raises(InvalidRequestError, match="tasks"):
        coco_to_records(path, tasks=("refer",))
    with pytest.raises(InvalidRequestError, match="proposals"):
        coco_to_records(path, distractors="proposals")
    with pytest.raises(InvalidRequestError, match="distractors"):
        coco_to_records(path, distractors="random")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(InvalidRequestError, match="not a COCO instances file"):
        coco_to_records(str(bad))
    bad.write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}))
    with pytest.raises(InvalidRequestError, match="COCO image 0 has no 'file_name'"):
        coco_to_records(str(bad))
    with pytest.raises(InvalidRequestError, match="cannot read"):
        coco_to_records(str(tmp_path / "nope.json"))


def _mdetr(path):
    """Two COCO images; three expressions (two about the same object)."""
    images = [
        {"id": 0, "file_name": "COCO_train2014_000000000009.jpg", "caption": "the left dog",
         "height": 480, "width": 640, "original_id": 9},
        {"id": 1, "file_name": "COCO_train2014_000000000009.jpg",
         "caption": "dog on the right", "height": 480, "width": 640, "original_id": 9},
        {"id": 2, "file_name": "COCO_train2014_000000000009.jpg", "caption": "  leftmost  dog ",
         "height": 480, "width": 640, "original_id": 9},
        {"id": 3, "file_name": "COCO_train2014_000000000025.jpg", "caption": "giraffe",
         "height": 300, "width": 400, "original_id": 25}]
    anns = [{"id": 10, "image_id": 0, "bbox": [10, 20, 100, 200], "category_id": 18},
            {"id": 11, "image_id": 1, "bbox": [300, 20, 100, 210], "category_id": 18},
            {"id": 12, "image_id": 2, "bbox": [10, 20, 100, 200], "category_id": 18},
            {"id": 13, "image_id": 3, "bbox": [50, 50, 60, 200], "category_id": 25}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))


def _check_refer(rec, target):
    parsed = parse_answer(rec.answer, len(rec.bbox_list))
    assert [g.phrase for g in parsed.groundings] == [rec.query]
    (idx,) = parsed.groundings[0].region_indices
    assert rec.bbox_list[idx] == target
    assert rec.task_text == parts_to_text(task_parts("refer", rec.query))


def test_refcoco_mdetr(tmp_path):
    _mdetr(tmp_path / "final_refcoco_train.json")
    recs = refcoco_to_records(str(tmp_path / "final_refcoco_train.json"), seed=1)
    assert [r.id for r in recs] == ["0", "1", "2", "3"]
    assert [r.query for r in recs] == ["the left dog", "dog on the right", "leftmost dog",
                                       "giraffe"]
    targets = [[10, 20, 110, 220], [300, 20, 400, 230], [10, 20, 110, 220], [50, 50, 110, 250]]
    for rec, target in zip(recs, targets):
        assert rec.task == "refer" and rec.image.startswith("COCO_train2014_")
        _check_refer(rec, [float(v) for v in target])
        assert box_iou(rec.boxes, np.array([target])).max() == 1.0
        assert (rec.boxes[:, 2] <= 640).all() and (rec.boxes[:, 3] <= 480).all()
    # the other dog is a real-object distractor, the duplicate expression's box is not doubled
    assert [300, 20, 400, 230] in recs[0].bbox_list
    assert recs[0].bbox_list.count([10, 20, 110, 220]) == 1
    assert len(recs[0].bbox_list) == 2 + 10


def test_refcoco_jsonl_and_proposals(tmp_path):
    lines = [{"image": "a.jpg", "expression": "red car", "bbox": [5, 5, 50, 40],
              "width": 100, "height": 80},
             {"image": "b.jpg", "expression": "man", "bbox": [0, 0, 30, 60], "id": "m1"},
             {"image": "b.jpg", "expression": "", "bbox": [0, 0, 30, 60]}]
    path = tmp_path / "refs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    recs = refcoco_to_records(str(path), seed=0)
    assert [r.id for r in recs] == ["ref0", "m1"]  # the empty expression is skipped
    _check_refer(recs[0], [5.0, 5.0, 50.0, 40.0])
    _check_refer(recs[1], [0.0, 0.0, 30.0, 60.0])
    props = tmp_path / "props.json"
    props.write_text(json.dumps([{"image": "a.jpg", "bbox_list": [[6, 5, 50, 40], [60, 0, 90, 70]],
                                  "score_list": [0.9, 0.8]}]))
    recs = refcoco_to_records(str(path), seed=0, distractors="proposals",
                              proposals_path=str(props))
    assert sorted(recs[0].bbox_list) == [[5.0, 5.0, 50.0, 40.0], [60.0, 0.0, 90.0, 70.0]]
    out = tmp_path / "out.jsonl"
    write_records(str(out), recs)
    assert read_records(str(out)) == recs
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "a.jpg", "bbox": [1, 2, 3, 4]}) + "\n")
    with pytest.raises(InvalidRequestError, match="RefCOCO entry 0 has no 'expression'"):
        refcoco_to_records(str(bad))


def test_make_train_data_cli(tmp_path, capsys):
    ann = tmp_path / "instances.json"
    _make_coco(ann, num_images=20)
    out = str(tmp_path / "coco.jsonl")
    assert cli.main(["make-train-data", "coco", "--annotations", str(ann), "--out", out,
                     "--tasks", "detect,count", "--seed", "4", "--rejection-rate", "0.3"]) == 0
    assert "wrote 40 records" in capsys.readouterr().out
    assert {r.task for r in read_records(out)} == {"detect", "count"}
    _mdetr(tmp_path / "refcoco.json")
    out = str(tmp_path / "ref.jsonl")
    assert cli.main(["make-train-data", "refcoco", "--annotations",
                     str(tmp_path / "refcoco.json"), "--out", out]) == 0
    assert [r.task for r in read_records(out)] == ["refer"] * 4


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["make-train-data", "coco", "--annotations", str(tmp_path / "no.json"),
                     "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlxseek: error: cannot read") and err.count("\n") == 1
    assert cli.main(["make-scenes", str(tmp_path / "s"), "--rejection-rate", "1.5"]) == 2
    assert "--rejection-rate must be in [0, 1]" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "s" / "train.jsonl")
    ann = tmp_path / "instances.json"
    _make_coco(ann, num_images=3)
    assert cli.main(["make-train-data", "coco", "--annotations", str(ann), "--out",
                     str(tmp_path / "y.jsonl"), "--tasks", "detect", "refer"]) == 2
    assert "tasks" in capsys.readouterr().err


LLAVA = [
    {"id": "a", "image": "coco/1.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is on the table?"},
        {"from": "gpt", "value": "A cup."},
        {"from": "human", "value": "What colour is it?"},
        {"from": "gpt", "value": "Blue."}]},
    {"id": "b", "image": "gqa/2.jpg", "conversations": [
        {"from": "human", "value": "Is it raining?\n<image>"}, {"from": "gpt", "value": "No."}]},
    {"id": "text-only", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
    {"id": "c", "image": "3.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhere?"}, {"from": "gpt", "value": "<region0>"},
        {"from": "human", "value": "  "}, {"from": "gpt", "value": "x"}]},
    {"id": "d", "image": "4.jpg", "conversations": [  # a chat token would end the turn early
        {"from": "human", "value": "<image>\nWhat?"},
        {"from": "gpt", "value": "A dog.<|im_end|>"}]},
]


def test_llava_converter_and_cli(tmp_path, capsys):
    """LLaVA-format general VQA → box-less vqa records, one per question/answer pair."""
    path = tmp_path / "llava.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in LLAVA))
    records = llava_to_records(str(path))
    assert [(r.id, r.image, r.query, r.answer, r.bbox_list) for r in records] == [
        ("a:0", "coco/1.jpg", "What is on the table?", "A cup.", []),
        ("a:1", "coco/1.jpg", "What colour is it?", "Blue.", []),
        ("b:0", "gqa/2.jpg", "Is it raining?", "No.", [])]
    out = str(tmp_path / "vqa.jsonl")
    assert cli.main(["make-train-data", "llava", "--annotations", str(path), "--out", out]) == 0
    assert read_records(out) == records
    assert "wrote 3 records" in capsys.readouterr().out
    assert cli.main(["make-train-data", "llava", "--annotations", str(path), "--out", out,
                     "--proposals", str(path)]) == 2
    assert "drop --proposals" in capsys.readouterr().err
