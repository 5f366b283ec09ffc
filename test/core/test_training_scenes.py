"""Procedural scenes: determinism, exact boxes, correct expressions, held-out phrasings."""
import json
import os
import re
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


def test_max_objects_and_max_distractors():
    # the defaults are the scenes and records from before the options existed
    for seed in range(40):
        assert S.generate_scene(seed, "train", 112).objects == S.generate_scene(
            seed, "train", 112, max_objects=6).objects
        assert D.scene_sample(seed, "heldout", 112)[1] == D.scene_sample(
            seed, "heldout", 112, max_objects=6, max_distractors=None)[1]
    counts = set()
    for seed in range(60):
        for split in ("train", "heldout"):
            scene, recs = D.scene_sample(seed, split, 112, max_objects=3, max_distractors=0,
                                         tasks=("detect_all",), max_candidates=8)
            counts.add(len(scene.objects))
            assert 1 <= len(scene.objects) <= 3
            # no distractors: every candidate is one of the objects' boxes, each once
            assert sorted(map(tuple, recs[0].bbox_list)) == sorted(
                tuple(map(float, o.box)) for o in scene.objects)
            one = S.generate_scene(seed, split, 112, max_objects=1)
            assert len(one.objects) == 1
    assert {2, 3} <= counts
    capped = D.scene_sample(5, "train", 112, max_candidates=12, max_distractors=2)
    assert len(capped[1][0].bbox_list) <= len(capped[0].objects) + 2
    for bad in (0, 7, 2.5, True):
        with pytest.raises(InvalidRequestError, match="max_objects"):
            S.generate_scene(1, "train", 112, max_objects=bad)
    with pytest.raises(InvalidRequestError, match="max_distractors"):
        D.scene_sample(1, "train", 112, max_distractors=-1)


def test_max_copies_removes_the_region0_bias():
    # default: unchanged scenes; 1: every object its own category, and so the first region of
    # a detect_all / detect answer is region 0 about as often as 1 / candidates (with repeats
    # a block lists its regions ascending, and "always <region0>" is right far above chance)
    for seed in range(40):
        for split in ("train", "heldout"):
            assert S.generate_scene(seed, split, 112).objects == S.generate_scene(
                seed, split, 112, max_copies=None).objects
    first0 = {None: [0, 0.0, 0], 1: [0, 0.0, 0]}  # hits of region 0, chance sum, answers
    for cap in (None, 1):
        for seed in range(300):
            for split in ("train", "heldout"):
                scene, recs = D.scene_sample(seed, split, 112, max_objects=3, max_copies=cap,
                                             max_distractors=0, tasks=("detect_all", "detect"))
                cats = [o.category for o in scene.objects]
                if cap == 1:
                    assert len(set(cats)) == len(cats) and 2 <= len(cats) <= 3
                for r in recs:
                    regions = re.findall(r"<region(\d+)>", r.answer)
                    if regions:
                        first0[cap][0] += regions[0] == "0"
                        first0[cap][1] += 1 / len(r.bbox_list)
                        first0[cap][2] += 1
    rate = {cap: (h / n, c / n) for cap, (h, c, n) in first0.items()}
    assert rate[None][0] > rate[None][1] + 0.2  # the bias this option exists to remove
    assert abs(rate[1][0] - rate[1][1]) < 0.06
    for bad in (0, 7, 1.5, True):
        with pytest.raises(InvalidRequestError, match="max_copies"):
            S.generate_scene(1, "train", 112, max_copies=bad)


def test_detect_all_order():
    # leftmost (default): categories by their leftmost instance, records unchanged by the
    # option; random: the same blocks in an order that is not always the leftmost one
    kw = dict(max_objects=3, max_copies=1, max_distractors=0, tasks=("detect_all", "refer"))
    not_leftmost = 0
    for seed in range(60):
        scene, base = D.scene_sample(seed, "train", 112, **kw)
        assert D.scene_sample(seed, "train", 112, detect_all_order="leftmost", **kw)[1] == base
        rand = D.scene_sample(seed, "train", 112, detect_all_order="random", **kw)[1][0]
        blocks = lambda r: re.findall(r"<ground>([^<]*)</ground><objects>([^/]*)</objects>",
                                      r.answer)  # noqa: E731
        left = sorted(scene.objects, key=lambda o: o.box[0])
        assert [c for c, _ in blocks(base[0])] == [o.category for o in left]
        assert sorted(blocks(rand)) == sorted(blocks(base[0])) and rand.bbox_list == \
            base[0].bbox_list
        not_leftmost += blocks(rand) != blocks(base[0])
    assert 20 < not_leftmost < 55
    with pytest.raises(InvalidRequestError, match="detect_all_order"):
        D.scene_sample(1, "train", 112, detect_all_order="sorted")


def test_make_scenes_cli_max_objects(tmp_path, capsys):
    out = str(tmp_path / "few")
    assert cli.main(["make-scenes", out, "--train", "6", "--heldout", "2", "--size", "112",
                     "--max-objects", "2", "--max-distractors", "0", "--tasks", "detect_all",
                     "--workers", "1", "--quiet"]) == 0
    recs = read_records(os.path.join(out, "train.jsonl"))
    assert len(recs) == 6 and all(1 <= len(r.bbox_list) <= 2 for r in recs)
    capsys.readouterr()
    for flag, value in (("--max-objects", "9"), ("--max-objects", "0"),
                        ("--max-distractors", "-1"), ("--max-copies", "0")):
        assert cli.main(["make-scenes", out, flag, value, "--quiet"]) == 2
        assert f"{flag} must be" in capsys.readouterr().err


def test_min_objects_fixes_the_list_length():
    # default: unchanged scenes (2 is the default least count, so the RNG stream is the same);
    # min = max: one list length for a curriculum phase (a scene without room may lose one)
    for seed in range(30):
        for split in ("train", "heldout"):
            assert S.generate_scene(seed, split, 112, max_objects=4).objects == \
                S.generate_scene(seed, split, 112, max_objects=4, min_objects=2).objects
    for n in (1, 3, 4):
        counts = [len(S.generate_scene(seed, split, 112, max_objects=n, max_copies=1,
                                       min_objects=n).objects)
                  for seed in range(100) for split in ("train", "heldout")]
        assert max(counts) == n and sum(c == n for c in counts) >= 0.95 * len(counts)
    counts = [len(S.generate_scene(seed, "train", 112, max_objects=3).objects)
              for seed in range(100)]
    assert min(counts) == 2  # the default still draws shorter lists
    for bad, why in ((0, "1-6"), (1.5, "1-6"), (True, "1-6"), (4, "<= the most objects")):
        with pytest.raises(InvalidRequestError, match=f"min_objects must be.*{why}"):
            S.generate_scene(1, "train", 112, max_objects=3, min_objects=bad)
    with pytest.raises(InvalidRequestError, match="min_objects"):
        D.make_scenes("/nonexistent/never", 1, 1, max_objects=2, min_objects=3)


def _cli_scenes(out, train, *args):
    """``vlxseek make-scenes`` on a few small scenes (one worker): the train records."""
    assert cli.main(["make-scenes", out, "--train", str(train), "--heldout", "2", "--size",
                     "112", *args, "--workers", "1", "--quiet"]) == 0
    return read_records(os.path.join(out, "train.jsonl"))


def _cli_refuses(out, capsys, message, *bad_args):
    """Each argument list of ``bad_args`` exits 2 with ``message`` on stderr."""
    capsys.readouterr()
    for args in bad_args:
        assert cli.main(["make-scenes", out, *args, "--quiet"]) == 2
        assert message in capsys.readouterr().err


def test_make_scenes_cli_min_objects(tmp_path, capsys):
    out = str(tmp_path / "three")
    recs = _cli_scenes(out, 8, "--min-objects", "3", "--max-objects", "3", "--max-copies", "1",
                       "--max-distractors", "0", "--tasks", "detect_all")
    assert len(recs) == 8 and sum(len(r.bbox_list) == 3 for r in recs) >= 7
    _cli_refuses(out, capsys, "--min-objects must be", ["--min-objects", "0"],
                 ["--min-objects", "4", "--max-objects", "3"])


def test_detect_extra_absent_controls_absent_names_in_present_queries():
    """`detect_extra_absent` is the chance that a query of present categories also names an
    absent one (answered None); 0 with rejection 0 leaves no absent target in any record, and
    the other records of the scene do not change (the draw is still made)."""
    kw = dict(max_objects=4, max_copies=1, max_distractors=0, tasks=("detect", "detect_all"))

    def none_blocks(rate, seed):
        recs = D.scene_sample(seed, "train", 112, rejection_rate=0.0,
                              detect_extra_absent=rate, **kw)[1]
        det = [r for r in recs if r.task == "detect"]
        assert len(det) == 1 and not det[0].meta["rejection"]
        answer = det[0].answer
        return answer.count("<objects>None</objects>"), answer.count("<ground>"), recs

    counts = {rate: [none_blocks(rate, s)[0] for s in range(120)] for rate in (0.0, 0.5, 1.0)}
    assert sum(counts[0.0]) == 0
    assert 0.3 < np.mean(counts[0.5]) < 0.7, np.mean(counts[0.5])
    assert np.mean(counts[1.0]) > np.mean(counts[0.5]) + 0.2
    for seed in range(20):  # present blocks still name the right regions; detect_all unchanged
        scene = D.scene_sample(seed, "train", 112, rejection_rate=0.0, **kw)[0]
        n_none, n, recs = none_blocks(0.0, seed)
        assert n >= 1 and recs[1].answer == none_blocks(1.0, seed)[2][1].answer
        groundings = parse_answer(recs[0].answer, len(recs[0].bbox_list)).groundings
        assert len(groundings) == n
        for g in groundings:
            box = tuple(int(v) for v in recs[0].bbox_list[g.region_indices[0]])
            assert len(g.region_indices) == 1
            assert [o.category for o in scene.objects if o.box == box] == [g.phrase]
    with pytest.raises(InvalidRequestError, match="detect_extra_absent"):
        D.scene_sample(1, "train", 112, detect_extra_absent=1.5)


def test_make_scenes_cli_detect_extra_absent(tmp_path, capsys):
    out = str(tmp_path / "q")
    recs = _cli_scenes(out, 12, "--max-objects", "3", "--max-copies", "1", "--tasks", "detect",
                       "--rejection-rate", "0", "--detect-extra-absent", "0")
    assert len(recs) == 12 and all("None" not in r.answer for r in recs)
    _cli_refuses(out, capsys, "--detect-extra-absent must be",
                 ["--detect-extra-absent", "1.5"], ["--detect-extra-absent", "x"])
