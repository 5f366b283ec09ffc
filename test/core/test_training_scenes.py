"""Procedural scenes: determinism, exact boxes, correct expressions, held-out phrasings."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from vlxseek_core import cli
from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.parsing import extract_count, parse_answer
from vlxseek_core.prompts import parts_to_text, task_parts
from vlxseek_core.training import scene_data as D
from vlxseek_core.training import scenes as S
from vlxseek_core.training.records import TrainingRecord, box_iou, read_records

N_SCENES = 300


@pytest.fixture(scope="module")
def samples():
    return {split: [D.scene_sample(i, split) for i in range(N_SCENES)]
            for split in ("train", "heldout")}


def test_deterministic_per_seed_and_split():
    a, b = S.generate_scene(7, "train"), S.generate_scene(7, "train")
    np.testing.assert_array_equal(a.image, b.image)
    assert a.objects == b.objects and a.absent_categories == b.absent_categories
    c = S.generate_scene(7, "heldout")
    assert not np.array_equal(a.image, c.image)
    assert D.scene_sample(7, "train")[1] == D.scene_sample(7, "train")[1]
    big = S.generate_scene(7, "train", size=336)
    assert big.image.shape == (336, 336, 3) and big.image.dtype == np.uint8
    with pytest.raises(InvalidRequestError):
        S.generate_scene(1, "val")
    with pytest.raises(InvalidRequestError):
        S.generate_scene(1, "train", size=64)


def _visible_alone(scene, i):
    """No other object within 1 px of object ``i``'s box."""
    others = np.array([o.box for j, o in enumerate(scene.objects) if j != i], float)
    grown = np.array([scene.objects[i].box], float) + [-1, -1, 1, 1]
    return not len(others) or box_iou(grown, others).max() == 0


def test_objects_boxes_and_pixels(samples):
    for scene, _ in samples["train"][:150] + samples["heldout"][:150]:
        h, w, _ = scene.image.shape
        assert 2 <= len(scene.objects) <= 6
        boxes = np.array([o.box for o in scene.objects], float)
        assert (boxes[:, :2] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
        assert sides.min() >= S.MIN_SIDE and sides.max() <= S.MAX_SIDE
        iou = box_iou(boxes, boxes) - np.eye(len(boxes))
        assert iou.max() < 0.1
        for i, o in enumerate(scene.objects):
            x1, y1, x2, y2 = o.box
            assert o.category == (f"{o.colour} {o.shape}" if o.colour else o.shape)
            if o.colour is None:
                continue
            target = np.array(S.COLOURS[o.colour])
            is_colour = np.abs(scene.image.astype(int) - target).max(-1) <= 15
            assert is_colour[(y1 + y2) // 2, (x1 + x2) // 2], (o, scene.seed)
            if _visible_alone(scene, i):  # the box is the exact extent of the pasted mask
                inside = is_colour[y1:y2, x1:x2]
                assert inside[0].any() and inside[-1].any()
                assert inside[:, 0].any() and inside[:, -1].any()
                assert not is_colour[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1].sum() \
                    > inside.sum()


def _target_box(rec):
    parsed = parse_answer(rec.answer, len(rec.bbox_list))
    if not parsed.groundings:
        return None
    (idx,) = parsed.groundings[0].region_indices
    return tuple(int(v) for v in rec.bbox_list[idx])


def test_records_and_expressions_are_correct(samples):
    kinds = set()
    for split in ("train", "heldout"):
        for scene, records in samples[split]:
            by_cat = {}
            for o in scene.objects:
                by_cat.setdefault(o.category, []).append(o)
            for rec in records:
                assert TrainingRecord.from_json(rec.to_json()) == rec
                assert rec.task_text == parts_to_text(task_parts(rec.task, rec.query,
                                                                 rec.region_indices))
                assert len(rec.bbox_list) <= 12
                gt_boxes = {tuple(float(v) for v in o.box) for o in scene.objects}
                assert gt_boxes <= {tuple(b) for b in rec.bbox_list}
                if rec.task == "refer":
                    kinds.add(rec.meta["kind"])
                    _check_expression(rec, scene, by_cat)
                elif rec.task == "count":
                    cat = next(c for c in S.ALL_CATEGORIES if f"{c}s" == rec.query)
                    assert extract_count(rec.answer) == len(by_cat.get(cat, []))
                elif rec.task == "caption":
                    box = tuple(int(v) for v in rec.bbox_list[rec.region_indices[0]])
                    obj = next(o for o in scene.objects if o.box == box)
                    assert rec.answer in (f"a {obj.category}", f"an {obj.category}")
                elif rec.task == "detect":
                    for g in parse_answer(rec.answer, len(rec.bbox_list)).groundings:
                        got = {tuple(int(v) for v in rec.bbox_list[i]) for i in g.region_indices}
                        assert got == {o.box for o in by_cat.get(g.phrase, [])}
    assert kinds == {"category", "shape", "colour", "superlative", "absent"}


def _check_expression(rec, scene, by_cat):
    expr, kind, box = rec.query, rec.meta["kind"], _target_box(rec)
    words = expr.split(" ", 2)
    assert words[0] == "the"
    if kind == "absent":
        assert box is None and rec.meta["rejection"]
        assert expr.split(" ", 1)[1] in scene.absent_categories or (
            words[1] in S.SUPERLATIVES and words[2] in scene.absent_categories)
        return
    target = next(o for o in scene.objects if o.box == box)
    if kind == "category":
        assert by_cat[expr[4:]] == [target]
    elif kind == "shape":
        assert [o for o in scene.objects if o.shape == words[1]] == [target]
    elif kind == "colour":
        assert [o for o in scene.objects if o.colour == words[1]] == [target]
    else:
        sup, cat = words[1], words[2]
        group = by_cat[cat]
        assert len(group) >= 2 and target in group
        b = np.array([o.box for o in group], float)
        value = {"leftmost": -(b[:, 0] + b[:, 2]), "rightmost": b[:, 0] + b[:, 2],
                 "topmost": -(b[:, 1] + b[:, 3]), "bottommost": b[:, 1] + b[:, 3],
                 "largest": (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]),
                 "smallest": -(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])}[sup]
        assert group[int(np.argmax(value))] == target
        assert (np.sort(value)[-1] > np.sort(value)[-2])  # a clear winner, never a tie


def test_heldout_phrasings_only_in_heldout(samples):
    train_text = " ".join(r.to_json()["conversations"][0]["value"] + r.answer
                          for _, recs in samples["train"] for r in recs)
    for phrase in S.HELDOUT_COLOUR_SHAPES:
        assert phrase not in train_text
        assert all(o.category != phrase for sc, _ in samples["train"] for o in sc.objects)
        assert all(phrase not in sc.absent_categories for sc, _ in samples["train"])
    for sup, cat in S.HELDOUT_SUPERLATIVES:
        assert f"{sup} {cat}" not in train_text
        assert sup in train_text and cat in train_text  # built from words seen in training
    for word in ("yellow", "blue", "triangle", "circle"):
        assert word in train_text
    held = [r for _, recs in samples["heldout"] for r in recs if r.meta["heldout_phrase"]]
    held_text = " ".join(r.query + r.answer for r in held)
    assert all(p in held_text for p in S.HELDOUT_COLOUR_SHAPES)
    found = [f"{s} {c}" for s, c in S.HELDOUT_SUPERLATIVES if f"{s} {c}" in held_text]
    assert len(found) >= 4, found
    assert any(r.task == "refer" and r.meta["kind"] == "superlative" and not r.meta["rejection"]
               for r in held)


def test_objects_group_is_unseen_for_records_that_name_or_ground_an_unseen_kind(samples):
    """meta["objects"] marks composition: a record about a colour-shape kind no train image
    shows, named ("the blue circle") or only grounded ("the yellow one": a yellow triangle)."""
    assert all(r.meta["objects"] == "seen" for _, recs in samples["train"] for r in recs)
    grounded_only = 0
    for scene, records in samples["heldout"]:
        box_kind = {tuple(float(v) for v in o.box): o.category for o in scene.objects}
        for rec in records:
            text = rec.query + rec.answer
            regions = list(rec.region_indices) + [
                i for g in parse_answer(rec.answer, len(rec.bbox_list)).groundings
                for i in g.region_indices]
            kinds = {box_kind.get(tuple(rec.bbox_list[i])) for i in regions}
            unseen = (any(p in text for p in S.HELDOUT_COLOUR_SHAPES)
                      or bool(kinds & set(S.HELDOUT_COLOUR_SHAPES)))
            assert rec.meta["objects"] == ("unseen" if unseen else "seen"), (text, kinds)
            grounded_only += unseen and not S.names_unseen_object(text)
    assert grounded_only >= 5  # colour-alone and shape-alone targets of an unseen kind


def test_rejection_rate(samples):
    for task in ("detect", "count", "refer"):
        flags = [r.meta["rejection"] for _, recs in samples["train"] for r in recs
                 if r.task == task]
        assert abs(np.mean(flags) - 0.2) < 0.07, (task, np.mean(flags))
    _, recs = D.scene_sample(3, "train", rejection_rate=1.0, max_candidates=8)
    assert all(r.meta["rejection"] for r in recs if r.task != "caption")
    assert all(len(r.bbox_list) <= 8 for r in recs)
    with pytest.raises(InvalidRequestError):
        D.scene_sample(3, "train", max_candidates=1)


def test_generation_speed():
    S.generate_scene(0)
    t0 = time.perf_counter()
    for i in range(50):
        D.scene_sample(i, "train")
    per_scene = (time.perf_counter() - t0) / 50
    assert per_scene < 0.05  # ~4 ms on one core; generous for loaded CI machines


@pytest.mark.parametrize("workers", [1, 2])
def test_make_scenes(tmp_path, workers):
    out = str(tmp_path / "scenes")
    summary = D.make_scenes(out, 6, 4, seed=2, workers=workers, progress=False)
    assert summary["train"]["scenes"] == 6 and summary["heldout"]["records"] == 20
    train, held = read_records(os.path.join(out, "train.jsonl")), read_records(
        os.path.join(out, "heldout.jsonl"))
    assert len(train) == 30 and len(held) == 20
    with open(os.path.join(out, "scenes_heldout.json")) as fh:
        gt = json.load(fh)
    assert sorted(gt) == sorted({r.image for r in held})
    name = held[0].image
    scene = S.generate_scene(gt[name]["seed"], "heldout")
    assert [list(o.box) for o in scene.objects] == [o["box"] for o in gt[name]["objects"]]
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(out, "images", name))),
                                  scene.image)
    assert D.scene_sample(gt[name]["seed"], "heldout")[1] == [r for r in held if r.image == name]


def test_make_scenes_stopped_half_way_leaves_no_data_set(tmp_path, monkeypatch):
    """The recipe script writes a set once, skipping it when train.jsonl exists: a generation
    stopped half-way (here an error in the held-out split) must leave none of its files."""
    real, calls = D._work, []

    def failing(job):
        calls.append(job[1])
        if job[1] == "heldout" and calls.count("heldout") == 2:
            raise KeyboardInterrupt  # as a signal would stop it
        return real(job)

    monkeypatch.setattr(D, "_work", failing)
    out = tmp_path / "scenes"
    with pytest.raises(KeyboardInterrupt):
        D.make_scenes(str(out), 4, 3, seed=2, workers=1, progress=False)
    assert calls == ["train"] * 4 + ["heldout"] * 2
    assert sorted(p.name for p in out.iterdir()) == ["images"]  # no jsonl, no part file
    monkeypatch.setattr(D, "_work", real)
    D.make_scenes(str(out), 4, 3, seed=2, workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "heldout.jsonl", "images", "scenes_heldout.json", "train.jsonl"]
    assert len(read_records(str(out / "train.jsonl"))) == 20


@pytest.mark.parametrize("options, message", [
    ({"size": 100_000}, "scene size must be an integer in 112-4096"),
    ({"size": 64}, "scene size must be an integer in 112-4096"),
    ({"size": 224.5}, "scene size must be an integer"),
    ({"max_candidates": 0}, "max_candidates must be an integer in 1-100"),
    ({"max_candidates": 101}, "max_candidates must be an integer in 1-100"),
    ({"max_candidates": 3}, r"max_candidates \(3\) must hold every object.*max_objects \(6\)"),
    ({"max_candidates": 3, "max_objects": 4}, r"at least max_objects \(4\)"),
    ({"refer_per_scene": -1}, "refer_per_scene must be an integer >= 0"),
    ({"max_distractors": -2}, "max_distractors must be an integer >= 0"),
    ({"tasks": ["detect", "foo"]}, "scene tasks are some of detect, detect_all, refer, count, "
                                   "caption, single"),
    ({"rejection_rate": 1.5}, "rejection_rate must be in"),
    ({"detect_all_order": "size"}, "detect_all_order must be one of"),
    ({"refer_kinds": []}, "refer_kinds must be some of"),
])
def test_make_scenes_checks_every_option_before_writing(tmp_path, options, message):
    """A bad option stops make_scenes before its folder exists: not in a worker after some
    scenes were written (a 100,000 px side would ask for 30 GB)."""
    out = tmp_path / "scenes"
    with pytest.raises(InvalidRequestError, match=message):
        D.make_scenes(str(out), 2, 1, workers=1, progress=False, **options)
    assert not out.exists()


def test_scene_candidates_can_be_exactly_the_objects(tmp_path):
    out = tmp_path / "scenes"
    D.make_scenes(str(out), 3, 0, workers=1, progress=False, max_candidates=2, max_objects=2,
                  tasks=["detect", "single"])
    recs = read_records(str(out / "train.jsonl"))
    assert recs and all(1 <= len(r.bbox_list) <= 2 for r in recs)
    assert {r.task for r in recs} >= {"detect"}


def test_make_scenes_cli(tmp_path, capsys):
    out = str(tmp_path / "scn")
    assert cli.main(["make-scenes", out, "--train", "5", "--heldout", "3", "--seed", "1",
                     "--size", "252", "--max-candidates", "9", "--rejection-rate", "0.5",
                     "--workers", "1", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"]["records"] == 25 and summary["heldout"]["scenes"] == 3
    recs = read_records(os.path.join(out, "train.jsonl"))
    assert all(len(r.bbox_list) <= 9 for r in recs)
    assert len(os.listdir(os.path.join(out, "images"))) == 8


def test_console_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vlxseek_core.cli", "make-scenes",
                           str(tmp_path / "s"), "--train", "2", "--heldout", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train: 2/2 scenes" in proc.stderr and json.loads(proc.stdout)["heldout"]["scenes"] == 1


def _record_makers(value, tmp_path):
    from vlxseek_core.training.text_regions import make_text_region_records, random_words

    out = str(tmp_path / "scenes")
    return {"generate_scene seed": lambda: S.generate_scene(value, "train"),
            "generate_scene split": lambda: S.generate_scene(0, value),
            "scene_sample seed": lambda: D.scene_sample(value),
            "make_text_region_records num": lambda: make_text_region_records(value, 0),
            "make_text_region_records seed": lambda: make_text_region_records(3, value),
            "make_text_region_records min_regions":
                lambda: make_text_region_records(3, 0, min_regions=value),
            "random_words n": lambda: random_words(value, 0),
            "random_words seed": lambda: random_words(3, value),
            "make_scenes num_train": lambda: D.make_scenes(out, value, 0, progress=False),
            "make_scenes seed": lambda: D.make_scenes(out, 1, 0, seed=value, progress=False),
            "make_scenes workers": lambda: D.make_scenes(out, 1, 0, workers=value,
                                                         progress=False)}


@pytest.mark.parametrize("value", [None, True, -1, 1.5, float("nan"), "3", [], 2**70])
def test_record_makers_refuse_numbers_no_run_can_use(value, tmp_path):
    """Seeds, counts and worker numbers that are not integers in range: the project's error
    before any work (numpy's ValueError for a negative seed never leaves; 2**70 records or
    workers are refused, not attempted)."""
    for name, call in _record_makers(value, tmp_path).items():
        if (value is None and name.endswith("workers")  # None: every core
                or value == 2**70 and name.endswith("seed")):  # any int >= 0 is a seed
            continue
        with pytest.raises(InvalidRequestError, match="must be"):
            call()
    assert not (tmp_path / "scenes").exists()
