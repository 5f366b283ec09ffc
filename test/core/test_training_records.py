"""Training record format, validation, candidates and the shared answer builders."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from vlxseek_core.answer_format import format_answer
from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.prompts import parts_to_text, task_parts
from vlxseek_core.training.records import (
    TrainingRecord, box_iou, build_candidates, count_sample, detect_sample, jitter_distractors,
    plural, read_records, with_article, write_records)

BOXES = [[10, 10, 50, 60], [100, 100, 150, 130], [0, 0, 20, 20]]


def _record(**kw):
    args = dict(id="r1", image="a.png", task="detect", query="cat; dog",
                answer=format_answer([("cat", [0, 2]), ("dog", [])]), bbox_list=BOXES)
    args.update(kw)
    return TrainingRecord(**args)


def test_round_trip_and_reference_layout():
    rec = _record(score_list=[0.9, 0.5, 0.3], meta={"rejection": False})
    obj = rec.to_json()
    assert obj["conversations"][0] == {
        "from": "human",
        "value": "<image>\n" + parts_to_text(task_parts("detect", "cat; dog"))}
    assert obj["conversations"][1]["value"] == (
        "<ground>cat</ground><objects><region0><region2></objects>"
        "<ground>dog</ground><objects>None</objects>")
    assert obj["bbox_list"] == [[float(v) for v in b] for b in BOXES]
    assert TrainingRecord.from_json(obj) == rec
    assert TrainingRecord.from_json(json.dumps(obj)) == rec


def test_region_task_text_uses_region_tokens():
    rec = _record(task="caption", query="", answer="a cat", region_indices=[2])
    assert rec.task_text == "Provide a brief description for <region2>."
    assert TrainingRecord.from_json(rec.to_json()).region_indices == [2]


@pytest.mark.parametrize("change, field", [
    (dict(task="segment"), "task"),
    (dict(bbox_list=[[0, 0, float("nan"), 5]]), "bbox_list"),
    (dict(bbox_list=[[0, 0, float("inf"), 5]]), "bbox_list"),
    (dict(bbox_list=[[10, 0, 10, 5]]), "bbox_list"),
    (dict(bbox_list=[[0, 9, 5, 2]]), "bbox_list"),
    (dict(bbox_list=[[0, 0, 5, 5]] * 101), "bbox_list"),
    (dict(bbox_list=[]), "bbox_list"),
    (dict(bbox_list=[[0, 0, 5]]), "bbox_list"),
    (dict(answer=format_answer([("cat", [3])])), "answer"),
    (dict(answer="a cat"), "answer"),
    (dict(answer=""), "answer"),
    (dict(task="caption", query="", answer="a cat", region_indices=[3]), "region_indices"),
    (dict(task="caption", query="", answer="a cat"), "region_indices"),
    (dict(task="refer", query="  "), "query"),
    (dict(score_list=[0.5]), "score_list"),
])
def test_validation_names_field_and_id(change, field):
    with pytest.raises(InvalidRequestError) as err:
        _record(id="rec-42", **change)
    assert "rec-42" in str(err.value) and repr(field) in str(err.value)


def test_from_json_rejects_missing_keys_and_foreign_prompts():
    obj = _record(id="x7").to_json()
    for key in ("id", "image", "conversations", "bbox_list", "task", "query"):
        bad = dict(obj)
        del bad[key]
        with pytest.raises(InvalidRequestError, match=f"missing field.*{key}"):
            TrainingRecord.from_json(bad)
    bad = json.loads(json.dumps(obj))
    bad["conversations"][0]["value"] = "<image>\nPlease detect cat in the image."
    with pytest.raises(InvalidRequestError, match="'x7'.*'conversations'"):
        TrainingRecord.from_json(bad)
    bad["conversations"] = bad["conversations"][:1]
    with pytest.raises(InvalidRequestError, match="conversations"):
        TrainingRecord.from_json(bad)
    with pytest.raises(InvalidRequestError, match="invalid JSON"):
        TrainingRecord.from_json("{not json")
    for key, value in (("meta", [1]), ("bbox_list", "abc"), ("region_indices", 3),
                       ("bbox_list", [["a", 0, 1, 1]])):
        with pytest.raises(InvalidRequestError, match="'x7'"):
            TrainingRecord.from_json(dict(obj, **{key: value}))


def test_read_write_records(tmp_path):
    recs = [_record(id=f"r{i}") for i in range(3)]
    path = str(tmp_path / "sub" / "train.jsonl")
    assert write_records(path, recs) == 3
    assert write_records(path, [recs[0].to_json()], append=True) == 1
    back = read_records(path)
    assert back[:3] == recs and back[3] == recs[0]
    with open(path, "a") as fh:
        fh.write('{"id": "broken"}\n')
    with pytest.raises(InvalidRequestError, match=r"train.jsonl:5: .*'broken'"):
        read_records(path)
    with pytest.raises(InvalidRequestError, match="cannot read"):
        read_records(str(tmp_path / "missing.jsonl"))


def test_build_candidates_keeps_ground_truth_and_remaps():
    rng = np.random.default_rng(0)
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 5, 60, 25]], np.float32)
    dis = np.array([[i, i, i + 5, i + 7] for i in range(200)], np.float32)
    for max_boxes in (3, 4, 12, 100):
        boxes, g2c = build_candidates(gt, dis, rng, max_boxes=max_boxes)
        assert boxes.dtype == np.float32 and boxes.shape == (max_boxes, 4)
        np.testing.assert_array_equal(boxes[g2c], gt)
        assert len(set(g2c)) == 3
    orders = {tuple(build_candidates(gt, dis[:3], rng)[1]) for _ in range(30)}
    assert len(orders) > 5  # the ground truth really is shuffled
    boxes, g2c = build_candidates(np.zeros((0, 4)), dis[:2], rng)
    assert boxes.shape == (2, 4) and g2c == []
    with pytest.raises(InvalidRequestError, match="exceed"):
        build_candidates(gt, dis, rng, max_boxes=2)
    with pytest.raises(InvalidRequestError, match="max_boxes"):
        build_candidates(gt, dis, rng, max_boxes=101)


def test_jitter_distractors_constraints():
    rng = np.random.default_rng(1)
    gt = np.array([[10, 10, 60, 70], [100, 120, 200, 220], [150, 10, 180, 40]], float)
    for _ in range(20):
        d = jitter_distractors(gt, (224, 240), rng, 10, max_iou=0.5)
        assert d.dtype == np.float32 and len(d) == 10
        assert (d[:, 0] >= 0).all() and (d[:, 2] <= 224).all()
        assert (d[:, 1] >= 0).all() and (d[:, 3] <= 240).all()
        assert ((d[:, 2] - d[:, 0]) >= 4).all() and ((d[:, 3] - d[:, 1]) >= 4).all()
        assert box_iou(d, gt).max() < 0.5
    near = jitter_distractors(gt, (224, 240), rng, 200)
    assert (box_iou(near, gt).max(1) > 0.05).mean() > 0.2  # some really are near misses
    assert len(jitter_distractors(np.zeros((0, 4)), (50, 50), rng, 5)) == 5
    assert len(jitter_distractors(gt, (224, 240), rng, 0)) == 0


def test_detect_and_count_samples():
    rng = np.random.default_rng(2)
    present, absent = {"cat": [4, 1], "dog": [0]}, ["knife", "bus", "cup", "kite"]
    rejections = 0
    for _ in range(2000):
        query, answer, meta = detect_sample(present, absent, rng, rejection_rate=0.2)
        names = query.split("; ")
        assert 1 <= len(names) <= 3 and len(set(names)) == len(names)
        expected = format_answer([(n, sorted(present.get(n, []))) for n in names])
        assert answer == expected
        assert meta["rejection"] == all(n in absent for n in names)
        rejections += meta["rejection"]
    assert abs(rejections / 2000 - 0.2) < 0.03
    q, a, m = detect_sample({}, ["knife"], rng, rejection_rate=0.0)
    assert (q, a, m["rejection"]) == ("knife", "<ground>knife</ground><objects>None</objects>",
                                      True)
    q, a, _ = count_sample(present, absent, rng, rejection_rate=0.0)
    assert a == format_answer([(q, sorted(present[q[:-1]]))], count=len(present[q[:-1]]))
    q, a, m = count_sample(present, absent, rng, rejection_rate=1.0)
    assert a.endswith("<objects>None</objects>0") and m["rejection"]
    with pytest.raises(InvalidRequestError):
        detect_sample({}, [], rng)


def test_words():
    assert plural("red circle") == "red circles"
    assert [plural(w) for w in ("person", "bus", "bench", "knife", "teddy bear", "sheep",
                                "skis", "toothbrush", "butterfly", "monkey")] == [
        "people", "buses", "benches", "knives", "teddy bears", "sheep", "skis",
        "toothbrushes", "butterflies", "monkeys"]
    assert with_article("dog") == "a dog" and with_article("astronaut") == "an astronaut"


def _caption(rid, image, boxes=((1, 1, 5, 5),), answer="a cat", **extra):
    """A reference-format caption record of ``<region0>``."""
    return dict({"id": rid, "image": image, "bbox_list": [list(b) for b in boxes],
                 "conversations": [
                     {"from": "human", "value": "<image>\nWhat is <region0>?"},
                     {"from": "gpt", "value": answer}]}, **extra)


def _png(path, size=(32, 24)):
    Image.new("RGB", size).save(path)


def test_read_records_concatenates_a_mix_with_image_dirs(tmp_path):
    from vlxseek_core.training.run import read_records

    for d, name in (("imgs_a", "x.png"), ("imgs_a", "y.png"), ("imgs_b", "z.png"),
                    ("imgs", "x.png"), ("imgs", "y.png"), ("imgs", "z.png")):
        os.makedirs(tmp_path / d, exist_ok=True)
        _png(tmp_path / d / name)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(_caption("a0", "x.png")) + "\n"
                 + json.dumps(_caption("a1", "y.png")) + "\n")
    b.write_text(json.dumps(_caption("b0", "z.png")) + "\n")
    mixed = read_records([str(a), str(b)], [str(tmp_path / "imgs_a"), str(tmp_path / "imgs_b")])
    assert [(r["id"], os.path.relpath(r["image"], tmp_path)) for r in mixed] == [
        ("a0", "imgs_a/x.png"), ("a1", "imgs_a/y.png"), ("b0", "imgs_b/z.png")]
    shared = read_records([str(a), str(b)], [str(tmp_path / "imgs")])
    assert [os.path.relpath(r["image"], tmp_path) for r in shared] == [
        "imgs/x.png", "imgs/y.png", "imgs/z.png"]
    with pytest.raises(InvalidRequestError, match="one per --data file"):
        read_records([str(a), str(b)], ["d1", "d2", "d3"])
    b.write_text("")
    with pytest.raises(InvalidRequestError, match="holds no records"):
        read_records([str(a), str(b)], [str(tmp_path / "imgs")])


@pytest.mark.parametrize("record, message", [
    (_caption("r", "x.png", boxes=[(1, 1, float("nan"), 5)]), "box 0 .* not 4 finite"),
    (_caption("r", "x.png", boxes=[(1, 1, 5)]), "box 0 .* not 4 finite"),
    (_caption("r", "x.png", boxes=[(5, 1, 1, 5)]), "x2 <= x1"),
    (_caption("r", "x.png", boxes=[(1, 1, 5, 5)] * 101), "at most 100 boxes"),
    (_caption("r", "x.png", answer="<ground>cat</ground><objects><region3></objects>"),
     "region 3 but there are 1 boxes"),
    (_caption("r", "x.png", region_indices=[2]), "region 2 but there are 1 boxes"),
    (_caption("r", "x.png", score_list=[0.5, 0.2]), "score_list"),
    (_caption("r", "x.png", boxes=[]), "region 0 but there are 0 boxes"),
    (_caption("r", "missing.png"), "cannot read image .*missing.png"),
    (_caption("r", "not-an-image.png"), "cannot read image .*not-an-image.png"),
    (_caption("r", "x.png", boxes=[(1, 1, 5, 5), (40, 1, 50, 5)]),
     r"box 1 \[40, 1, 50, 5\] lies entirely outside the 32x24"),
    (_caption("r", "x.png", boxes=[(1, -9, 5, 0)]), "box 0 .* lies entirely outside"),
    (_caption("r", "x.png", answer="<ground>a <region0></ground><objects><region0></objects>"),
     "label 'a <region0>' holds markup"),
    (_caption("r", "x.png", answer="a cat<|im_end|><|im_start|>user"),
     "special token '<|im_end|>'"),
    (_caption("r", "x.png", answer="<tool_call>a cat"), "special token '<tool_call>'"),
    ({"id": "r", "image": "x.png", "bbox_list": [[1, 1, 5, 5]],
      "conversations": [{"from": "human", "value": "hi"}]}, "no 'gpt' turn"),
    ({"id": "r", "bbox_list": [[1, 1, 5, 5]], "conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "a"}]}, "no 'image'"),
])
def test_read_records_checks_every_record_before_training(tmp_path, record, message):
    """A bad record anywhere in the data stops `vlxseek train` before its first step, naming
    the file, the record's place and id, and what is wrong."""
    from vlxseek_core.training.run import read_records

    _png(tmp_path / "x.png")  # 32 x 24 px; boxes may extend beyond it, not lie outside
    (tmp_path / "not-an-image.png").write_bytes(b"no PNG")
    data = tmp_path / "d.jsonl"
    good = [_caption(f"g{k}", "x.png", boxes=[(1, 1, 5, 5), (20, 10, 60, 40)])
            for k in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in good + [record]))
    with pytest.raises(InvalidRequestError, match=message) as info:
        read_records([str(data)], [str(tmp_path)])
    assert f"{data}, record 4: record 'r'" in str(info.value)
    data.write_text("".join(json.dumps(r) + "\n" for r in good))
    assert [r["id"] for r in read_records([str(data)], [str(tmp_path)])] == ["g0", "g1", "g2"]
