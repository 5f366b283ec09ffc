"""Held-out scores per group of records (``evaluate_records(group=...)``,
``bench_training --by``): an average must not hide the records a model fails on, such as those
naming an object kind that no train image shows (issue 9 §7)."""
import json
import types

import numpy as np
import pytest
from PIL import Image

from benchmarks.common import record_group
from vlxseek_core.training.evaluate import evaluate_records


def _record(task, query, answer, **meta):
    return {"image": "s.png", "task": task, "query": query, "meta": meta,
            "bbox_list": [[0, 0, 10, 10], [20, 20, 30, 30]],
            "conversations": [{"from": "human", "value": f"<image>\nPlease detect {query}."},
                              {"from": "gpt", "value": answer}]}


RECORDS = [
    _record("detect", "red circle", "<ground>red circle</ground><objects><region0></objects>"),
    _record("detect", "yellow triangle",
            "<ground>yellow triangle</ground><objects><region1></objects>"),
    _record("refer", "the blue circle",
            "<ground>the blue circle</ground><objects><region1></objects>", kind="shape"),
    _record("detect", "cat", "<ground>cat</ground><objects>None</objects>", rejection=True),
]
# what the fake model answers: right, wrong region, right, right rejection
ANSWERS = {
    "red circle": "<ground>red circle</ground><objects><region0></objects>",
    "yellow triangle": "<ground>yellow triangle</ground><objects><region0></objects>",
    "the blue circle": "<ground>the blue circle</ground><objects><region1></objects>",
    "cat": "<ground>cat</ground><objects>None</objects>",
}


class FakePipe:
    def __init__(self):
        self.asked = []

    def query(self, image, query, task, boxes, region_indices=None, max_new_tokens=64):
        assert image.shape == (32, 32, 3) and boxes.shape == (2, 4)
        self.asked.append(query)
        return types.SimpleNamespace(answer=ANSWERS[query])


@pytest.fixture
def images(tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "s.png")
    return tmp_path


def _detect_all(*labels, task="detect_all"):
    answer = "".join(f"<ground>{label}</ground><objects><region{i}></objects>"
                     for i, label in enumerate(labels))
    return _record(task, "", answer)


@pytest.mark.parametrize("labels, group", [
    (("red circle", "red square", "cat"), "shared"),       # the colour alone picks two rows
    (("the red circle", "blue circle", "the red triangle"), "shared"),   # articles ignored
    (("red circle", "blue circle", "cup"), "unique"),       # a shared shape is not a shared colour
    (("red circle",), "unique"),
    (("cat", "red circle", "red square"), "photo"),         # only the first object counts
    (("astronaut",), "photo"),
    (("card", "red square"), "-"),                           # an alias is no scene category
    (("the leftmost red circle", "red square"), "-"),
])
def test_record_group_colour_groups_detect_all_by_the_first_object(labels, group):
    from vlxseek_core.training.scenes import first_colour_group

    assert record_group(_detect_all(*labels), "colour") == group
    assert first_colour_group(_detect_all(*labels)["conversations"][1]["value"]) == group


def test_record_group_colour_is_only_for_detect_all():
    # a detect or refer answer names one label: no scene-wide colour group to read
    assert record_group(_detect_all("red circle", "red square", task="detect"), "colour") == "-"
    assert record_group(RECORDS[2], "colour") == "-"
    assert record_group(_record("detect_all", "", ""), "colour") == "-"
    assert record_group({"task": "detect_all", "conversations": []}, "colour") == "-"
    assert record_group({"colour": "x", "task": "detect_all"}, "colour") == "x"


def test_record_group_objects_splits_unseen_colour_shapes_from_the_rest():
    assert [record_group(r, "objects") for r in RECORDS] == ["seen", "unseen", "unseen", "seen"]
    # a field of that name wins, as for every other key: a scene record's meta knows the
    # objects its answer grounds ("the yellow one" grounding a yellow triangle is unseen)
    assert record_group({"objects": "x"}, "objects") == "x"
    assert record_group(_record("refer", "the yellow one", "", objects="unseen"),
                        "objects") == "unseen"
    assert record_group(_record("refer", "the blue circle", "", objects="seen"),
                        "objects") == "seen"


def test_record_group_superlative_is_the_word_of_a_superlative_refer():
    sup = [_record("refer", f"the {w} red circle", "", kind="superlative")
           for w in ("leftmost", "rightmost", "topmost", "bottommost", "largest", "smallest")]
    assert [record_group(r, "superlative") for r in sup] == [
        "leftmost", "rightmost", "topmost", "bottommost", "largest", "smallest"]
    # an absent target phrased as a superlative, another kind, another task: no group
    absent = _record("refer", "the leftmost cat", "", kind="absent", rejection=True)
    other = [absent, RECORDS[2], _record("detect", "leftmost", ""),
             _record("refer", "the red circle", "", kind="superlative")]
    assert [record_group(r, "superlative") for r in other] == ["-"] * 4
    assert record_group({"superlative": "x"}, "superlative") == "x"


def test_groups_score_their_own_records_and_each_record_is_asked_once(images):
    pipe = FakePipe()
    out = evaluate_records(pipe, RECORDS, str(images),
                           group=lambda r: record_group(r, "objects"))
    assert pipe.asked == [r["query"] for r in RECORDS]
    assert out["det_precision"] == out["det_recall"] == pytest.approx(0.5)
    assert out["rec_acc50"] == 1.0 and out["rejection_acc"] == 1.0
    seen, unseen = out["groups"]["seen"], out["groups"]["unseen"]
    assert list(out["groups"]) == ["seen", "unseen"]
    assert seen["det_f1"] == 1.0 and seen["rejection_acc"] == 1.0 and seen["rec_acc50"] is None
    assert unseen["det_f1"] == 0.0 and unseen["rec_acc50"] == 1.0
    assert unseen["rejection_acc"] is None
    assert "groups" not in evaluate_records(FakePipe(), RECORDS, str(images))


def test_bench_training_by_objects_prints_a_table_per_group(images, tmp_path, monkeypatch,
                                                            capsys):
    from benchmarks import bench_training
    from vlxseek_core import pipeline

    monkeypatch.setattr(pipeline.VLXSeek, "from_pretrained",
                        classmethod(lambda cls, *a, **k: FakePipe()))
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    results = bench_training.main(["--models", str(tmp_path / "m"), "--data", str(data),
                                   "--images", str(images), "--by", "objects"])
    groups = results[str(tmp_path / "m")]["groups"]
    assert set(groups) == {"objects=seen", "objects=unseen"}
    assert groups["objects=unseen"]["det_f1"] == 0.0
    printed = capsys.readouterr().out
    assert "records of objects=seen:" in printed and "records of objects=unseen:" in printed
    # the unseen table: F1 0 for the model; chance of its one refer record = 1 / 2 regions
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")]
             for line in printed.split("records of objects=unseen:")[1].splitlines()
             if line.startswith("| "))}
    assert rows["det_f1"] == ["0.000", "—"]
    assert rows["rec_acc50"] == ["1.000", "0.500"]


def test_rejection_accuracy_is_split_by_the_near_miss_kind_of_each_absent_label(images):
    """A detect record's absent names and an absent refer expression are scored per kind of
    ``meta["near_miss"]``; present labels and labels without a kind only in the total."""
    records = [
        _record("detect", "red square; blue circle; cat",
                "<ground>red square</ground><objects>None</objects>"
                "<ground>blue circle</ground><objects>None</objects>"
                "<ground>cat</ground><objects><region0></objects>",
                near_miss={"red square": "colour", "blue circle": "shape"}),
        _record("refer", "the leftmost green square",
                "<ground>the leftmost green square</ground><objects>None</objects>",
                near_miss={"the leftmost green square": "none"}, rejection=True),
        _record("detect", "rocket", "<ground>rocket</ground><objects>None</objects>"),
    ]
    answers = {  # red square rejected, blue circle grounded (a miss), cat right;
        # the refer expression grounded (a miss); rocket rejected (no kind)
        "red square; blue circle; cat":
            "<ground>red square</ground><objects>None</objects>"
            "<ground>blue circle</ground><objects><region1></objects>"
            "<ground>cat</ground><objects><region0></objects>",
        "the leftmost green square":
            "<ground>the leftmost green square</ground><objects><region1></objects>",
        "rocket": "<ground>rocket</ground><objects>None</objects>"}
    pipe = types.SimpleNamespace(
        query=lambda image, query, **kw: types.SimpleNamespace(answer=answers[query]))
    out = evaluate_records(pipe, records, str(images))
    assert out["rejection_acc"] == pytest.approx(2 / 4)
    assert out["rejection_acc[colour]"] == 1.0
    assert out["rejection_acc[shape]"] == 0.0 and out["rejection_acc[none]"] == 0.0
    assert "rejection_acc[colour+shape]" not in out
    assert out["counts"]["rej_n:colour"] == 1 and out["counts"]["rej_n"] == 4
