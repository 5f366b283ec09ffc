"""Curriculum options of ``make-scenes`` (issue 9): fewer objects, capped copies, one list
length, the detect_all order and article, no absent targets; library and CLI."""
import os
import re

import numpy as np
import pytest

from vlxseek_core import cli
from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.parsing import parse_answer
from vlxseek_core.training import scene_data as D
from vlxseek_core.training import scenes as S
from vlxseek_core.training.records import read_records


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


def _blocks(answer):
    """``[(label, regions text)]`` of the ground/objects blocks of an answer."""
    return re.findall(r"<ground>([^<]*)</ground><objects>([^/]*)</objects>", answer)


def test_detect_all_order():
    # leftmost (default): categories by their leftmost instance, records unchanged by the
    # option; random: the same blocks in an order that is not always the leftmost one
    kw = dict(max_objects=3, max_copies=1, max_distractors=0, tasks=("detect_all", "refer"))
    not_leftmost = 0
    for seed in range(60):
        scene, base = D.scene_sample(seed, "train", 112, **kw)
        assert D.scene_sample(seed, "train", 112, detect_all_order="leftmost", **kw)[1] == base
        rand = D.scene_sample(seed, "train", 112, detect_all_order="random", **kw)[1][0]
        left = sorted(scene.objects, key=lambda o: o.box[0])
        assert [c for c, _ in _blocks(base[0].answer)] == [o.category for o in left]
        assert sorted(_blocks(rand.answer)) == sorted(_blocks(base[0].answer))
        assert rand.bbox_list == base[0].bbox_list
        not_leftmost += _blocks(rand.answer) != _blocks(base[0].answer)
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


def test_detect_all_article_writes_some_labels_with_the_space_token():
    """`detect_all_article` is the chance that a detect_all label reads "the <label>"; the
    regions and their order stay those of the bare answer, and 0 changes no record."""
    kw = dict(max_objects=4, max_copies=1, max_distractors=0, detect_all_order="random",
              tasks=("detect_all", "refer"))
    with_article, labels = 0, 0
    for seed in range(80):
        base = D.scene_sample(seed, "train", 112, **kw)[1]
        assert D.scene_sample(seed, "train", 112, detect_all_article=0.0, **kw)[1] == base
        for rate in (0.5, 1.0):
            rec = D.scene_sample(seed, "train", 112, detect_all_article=rate, **kw)[1][0]
            got, bare = _blocks(rec.answer), _blocks(base[0].answer)
            assert rec.task == "detect_all" and rec.bbox_list == base[0].bbox_list
            assert [g for _, g in got] == [g for _, g in bare]
            for (label, _), (category, _) in zip(got, bare):
                assert label in (category, "the " + category)
                assert rate < 1 or label == "the " + category
            if rate == 0.5:
                with_article += sum(lab.startswith("the ") for lab, _ in got)
                labels += len(got)
    assert 0.4 < with_article / labels < 0.6, with_article / labels
    with pytest.raises(InvalidRequestError, match="detect_all_article"):
        D.scene_sample(1, "train", 112, detect_all_article=-0.1)


def test_make_scenes_cli_detect_all_article(tmp_path, capsys):
    out = str(tmp_path / "a")
    recs = _cli_scenes(out, 6, "--max-objects", "3", "--tasks", "detect_all",
                       "--detect-all-article", "1")
    assert len(recs) == 6 and all(lab.startswith("the ") for r in recs
                                  for lab, _ in _blocks(r.answer))
    _cli_refuses(out, capsys, "--detect-all-article must be",
                 ["--detect-all-article", "2"], ["--detect-all-article", "some"])


def test_detect_all_alias_names_every_category_by_its_one_token_alias():
    """`detect_all_alias` is the chance that a detect_all record names each category by its
    fixed one-token alias (every label of the record, or none); the regions and their order
    stay those of the named answer, and 0 changes no record."""
    from vlxseek_core.tokenizer import build_qwen25_vl_tokenizer

    aliases = D.category_aliases()
    tok = build_qwen25_vl_tokenizer()
    assert set(aliases) >= set(S.split_categories("heldout")) | set(S.split_categories("train"))
    assert len(set(aliases.values())) == len(aliases)
    assert all(len(tok.encode(w)) == 1 == len(tok.encode(" " + w)) for w in aliases.values())
    assert not {w for c in aliases for w in c.split()} & set(aliases.values())
    kw = dict(max_objects=4, max_copies=1, max_distractors=0, detect_all_order="random",
              tasks=("detect_all", "refer"))
    aliased = 0
    for seed in range(60):
        base = D.scene_sample(seed, "train", 112, **kw)[1]
        assert D.scene_sample(seed, "train", 112, detect_all_alias=0.0, **kw)[1] == base
        for rate in (0.5, 1.0):
            recs = D.scene_sample(seed, "train", 112, detect_all_alias=rate, **kw)[1]
            got, named = _blocks(recs[0].answer), _blocks(base[0].answer)
            assert recs[0].bbox_list == base[0].bbox_list
            assert [g for _, g in got] == [g for _, g in named]
            labels = [lab for lab, _ in got]
            assert labels in ([c for c, _ in named], [aliases[c] for c, _ in named])
            assert rate < 1 or labels == [aliases[c] for c, _ in named]
            aliased += rate == 0.5 and labels != [c for c, _ in named]
    assert 20 < aliased < 40, aliased
    with pytest.raises(InvalidRequestError, match="detect_all_alias"):
        D.scene_sample(1, "train", 112, detect_all_alias=1.5)


def test_make_scenes_cli_detect_all_alias(tmp_path, capsys):
    out = str(tmp_path / "a")
    recs = _cli_scenes(out, 6, "--max-objects", "3", "--tasks", "detect_all",
                       "--detect-all-alias", "1")
    aliases = set(D.category_aliases().values())
    assert len(recs) == 6 and all(lab in aliases for r in recs for lab, _ in _blocks(r.answer))
    _cli_refuses(out, capsys, "--detect-all-alias must be",
                 ["--detect-all-alias", "2"], ["--detect-all-alias", "some"])


def test_refer_kinds_draws_present_targets_of_those_kinds_only():
    kinds, n_refer, n_scenes_without = set(), 0, 0
    for seed in range(60):
        scene, recs = D.scene_sample(seed, "train", 112, tasks=("refer",), rejection_rate=0,
                                     refer_kinds=("superlative",), max_candidates=8)
        refer = [r for r in recs if r.task == "refer"]
        has_superlative = any(k == "superlative" for _, i, k in D.referring_expressions(scene)
                              if i is not None and not S.is_heldout_phrase(_))
        # a scene without a superlative target gives no refer record, not an absent one
        assert bool(refer) == has_superlative, seed
        n_scenes_without += not has_superlative
        for r in refer:
            kinds.add(r.meta["kind"])
            assert not r.meta["rejection"] and re.match(
                r"the (leftmost|rightmost|topmost|bottommost|largest|smallest) ", r.query)
        n_refer += len(refer)
    assert kinds == {"superlative"} and n_refer > 20 and n_scenes_without > 5
    # absent targets still come at the rejection rate; two kinds mix
    recs = [r for seed in range(30) for r in D.scene_sample(
        seed, "train", 112, tasks=("refer",), rejection_rate=1.0,
        refer_kinds=("superlative",))[1]]
    assert recs and all(r.meta["rejection"] for r in recs)
    mixed = {r.meta["kind"] for seed in range(60) for r in D.scene_sample(
        seed, "train", 112, tasks=("refer",), rejection_rate=0,
        refer_kinds=("colour", "shape"))[1]}
    assert mixed == {"colour", "shape"}
    for bad in (("absent",), (), ("superlative", "size")):
        with pytest.raises(InvalidRequestError, match="refer_kinds"):
            D.scene_sample(1, "train", 112, tasks=("refer",), refer_kinds=bad)


def test_make_scenes_cli_refer_kinds(tmp_path, capsys):
    out = str(tmp_path / "s")
    recs = _cli_scenes(out, 20, "--tasks", "refer", "--rejection-rate", "0",
                       "--refer-kinds", "superlative")
    assert recs and {r.meta["kind"] for r in recs} == {"superlative"}
    # argparse's choices: exit status 2
    assert cli.main(["make-scenes", out, "--refer-kinds", "absent", "--quiet"]) == 2
    assert "invalid choice: 'absent'" in capsys.readouterr().err


def _scene(*objects, absent):
    return S.Scene(image=np.zeros((112, 112, 3), np.uint8), split="train", seed=0,
                   objects=[S.SceneObject(c, col, shape, (0, 0, 10, 10))
                            for c, col, shape in objects], absent_categories=list(absent))


def test_near_miss_categories_share_a_colour_or_a_shape_with_a_present_object():
    scene = _scene(("red circle", "red", "circle"), ("cat", None, "cat"),
                   absent=["red square", "green circle", "green square", "rocket", "cup"])
    assert D.near_miss_categories(scene) == ["red square", "green circle"]
    # photos have neither colour nor shape: no near miss
    assert D.near_miss_categories(_scene(("cat", None, "cat"), absent=["cup", "red circle"])) \
        == []


def test_near_miss_kind_says_what_an_absent_name_shares_with_the_scene():
    scene = _scene(("red circle", "red", "circle"), ("blue square", "blue", "square"),
                   ("cat", None, "cat"), absent=[])
    kinds = {c: D.near_miss_kind(scene, c) for c in
             ("red square", "red triangle", "green circle", "green triangle", "rocket")}
    assert kinds == {"red square": "colour+shape", "red triangle": "colour",
                     "green circle": "shape", "green triangle": "none", "rocket": "none"}


def test_records_naming_absent_targets_carry_the_near_miss_kind_of_each_absent_label():
    """Every absent label of a detect or refer answer (and no other) is in
    ``meta["near_miss"]``, with the kind of its category in that scene."""
    kw = dict(max_objects=4, max_copies=1, max_distractors=0, rejection_rate=0.5,
              detect_extra_absent=1.0, tasks=("detect", "refer", "count", "detect_all"),
              refer_per_scene=2, absent_near=0.5)
    seen = set()
    for seed in range(40):
        scene, recs = D.scene_sample(seed, "heldout", 112, **kw)
        for rec in recs:
            absent = [lab for lab, regions in _blocks(rec.answer) if regions == "None"]
            near = rec.meta.get("near_miss", {})
            if rec.task in ("detect", "refer"):
                assert sorted(near) == sorted(absent), (rec.query, rec.answer)
            else:
                assert not near
            for label, kind in near.items():
                category = _absent_categories(f"<ground>{label}</ground><objects>None"
                                              "</objects>")[0]
                assert kind == D.near_miss_kind(scene, category) != ""
                seen.add(kind)
    assert seen == {"colour", "shape", "colour+shape", "none"}, seen


def _absent_categories(answer):
    """The categories of the rejection blocks of an answer ("the leftmost red square" →
    "red square")."""
    out = []
    for label, regions in _blocks(answer):
        if regions == "None":
            words = label.split()
            words = words[1:] if words[0] == "the" else words
            out.append(" ".join(words[1:] if words[0] in S.SUPERLATIVES else words))
    return out


def test_absent_near_names_near_misses_in_detect_and_refer():
    """With `absent_near` 1 every absent name of a detect record and every absent refer
    expression is a near miss wherever the scene has one (without it, about as often as near
    misses are among the absent categories); 0 changes no record."""
    kw = dict(max_objects=4, max_copies=1, max_distractors=0, rejection_rate=0.5,
              detect_extra_absent=1.0, tasks=("detect", "refer", "detect_all"),
              refer_per_scene=2)
    near_share = {}
    for rate in (0.0, 1.0):
        names, near_names = 0, 0
        for seed in range(60):
            base = D.scene_sample(seed, "train", 112, **kw)[1]
            scene, recs = D.scene_sample(seed, "train", 112, absent_near=rate, **kw)
            if rate == 0.0:
                assert recs == base
            near = D.near_miss_categories(scene)
            for rec in recs:
                for category in _absent_categories(rec.answer):
                    assert category in scene.absent_categories
                    names += bool(near)
                    near_names += category in near
        near_share[rate] = near_names / names
    assert near_share[1.0] == 1.0 and near_share[0.0] < 0.7, near_share
    with pytest.raises(InvalidRequestError, match="absent_near"):
        D.scene_sample(1, "train", 112, absent_near=1.5)


def test_make_scenes_cli_absent_near(tmp_path, capsys):
    out = str(tmp_path / "n")
    recs = _cli_scenes(out, 8, "--max-objects", "3", "--tasks", "detect", "--absent-near", "1",
                       "--rejection-rate", "1")
    assert len(recs) == 8 and all(r.meta["rejection"] for r in recs)
    _cli_refuses(out, capsys, "--absent-near must be", ["--absent-near", "-1"])


def _shares_a_colour(categories) -> bool:
    """Two coloured shapes of ``categories`` ("red circle", "cat", …) share a colour and not a
    shape."""
    shapes = [c.split(" ") for c in set(categories) if c not in S.PHOTOS]
    return any(a[0] == b[0] and a[1] != b[1] for a in shapes for b in shapes)


def test_shared_colour_makes_the_colour_ambiguous(tmp_path, capsys):
    """`shared_colour` is the chance that a coloured shape gets a mate of its colour and
    another shape: the object count stays, the split's categories and the copy cap hold, and
    at 0 the scenes are those of before (no extra draw)."""
    kw = dict(max_objects=4, max_copies=1, min_objects=2)
    for seed in range(40):
        assert S.generate_scene(seed, "train", 112, **kw).objects == \
            S.generate_scene(seed, "train", 112, shared_colour=0.0, **kw).objects
    rates = {}
    for rate in (0.0, 1.0):
        shared = 0
        for seed in range(150):
            base = S.generate_scene(seed, "train", 112, **kw)
            scene = S.generate_scene(seed, "train", 112, shared_colour=rate, **kw)
            cats = [o.category for o in scene.objects]
            assert len(cats) == len(set(cats))  # max_copies=1 still holds
            assert not any(S.names_unseen_object(c) for c in cats)  # train split only
            assert abs(len(scene.objects) - len(base.objects)) <= 1  # one swap, room aside
            shared += _shares_a_colour(cats)
        rates[rate] = shared / 150
    # by chance some scenes share a colour already; the knob makes nearly all of them do
    assert rates[0.0] < 0.4 and rates[1.0] >= 0.9, rates
    held = [_shares_a_colour(o.category for o in S.generate_scene(
        s, "heldout", 112, shared_colour=1.0, **kw).objects) for s in range(100)]
    assert sum(held) >= 85
    for bad in (-0.1, 1.5, True, "0.5", float("nan")):
        with pytest.raises(InvalidRequestError, match="shared_colour"):
            S.generate_scene(1, "train", 112, shared_colour=bad)
    with pytest.raises(InvalidRequestError, match="shared_colour"):
        D.make_scenes(str(tmp_path / "never"), 1, 1, shared_colour=2.0)
    # the record rates go through the same check: a wrong type is a clear error too
    for name in ("detect_extra_absent", "detect_all_article", "absent_near",
                 "detect_all_alias"):
        with pytest.raises(InvalidRequestError, match=f"{name} must be in"):
            D.scene_sample(1, "train", 112, **{name: "0.5"})
    recs = _cli_scenes(str(tmp_path / "mates"), 6, "--shared-colour", "1", "--max-objects",
                       "4", "--max-copies", "1", "--tasks", "detect_all")
    labels = [re.findall(r"<ground>(.*?)</ground>", r.answer) for r in recs]
    assert len(recs) == 6 and sum(_shares_a_colour(found) for found in labels) >= 5, labels
    _cli_refuses(str(tmp_path / "mates"), capsys, "--shared-colour must be",
                 ["--shared-colour", "2"], ["--shared-colour", "x"])


def test_unique_colours_lets_the_colour_pick_every_shape(tmp_path, capsys):
    """With `unique_colours` no two categories of a scene share a colour, on both splits, at
    every object count and copy cap (copies of one category keep theirs); the object counts
    stay as asked; off, the scenes are those of before (no extra draw); it refuses a shared
    colour beside it, and `make-scenes --unique-colours` writes such scenes."""
    clashes = 0
    for kw in (dict(max_objects=4, max_copies=1, min_objects=2),
               dict(max_objects=6, max_copies=1, min_objects=6), dict(max_objects=6)):
        for seed in range(60):
            assert S.generate_scene(seed, "train", 112, **kw).objects == \
                S.generate_scene(seed, "train", 112, unique_colours=False, **kw).objects
            for split in ("train", "heldout"):
                base = S.generate_scene(seed, split, 112, **kw)
                clashes += _shares_a_colour(o.category for o in base.objects)
                scene = S.generate_scene(seed, split, 112, unique_colours=True, **kw)
                cats = [o.category for o in scene.objects]
                assert not _shares_a_colour(cats), cats
                if kw.get("max_copies") == 1:
                    assert len(cats) == len(set(cats))
                    assert len(cats) >= min(kw["min_objects"], 4)  # room at 112 px aside
                assert split == "heldout" or not any(S.names_unseen_object(c) for c in cats)
    assert clashes > 60  # the default scenes often share a colour: the knob changes them
    for bad in (0.5, 1.0):
        with pytest.raises(InvalidRequestError, match="contradict"):
            S.generate_scene(1, "train", 112, shared_colour=bad, unique_colours=True)
        with pytest.raises(InvalidRequestError, match="contradict"):
            D.make_scenes(str(tmp_path / "never"), 1, 1, shared_colour=bad, unique_colours=True)
    for bad in ("no", 1, None):  # a truthy string must not switch it on
        with pytest.raises(InvalidRequestError, match="unique_colours must be True or False"):
            S.generate_scene(1, "train", 112, unique_colours=bad)
        with pytest.raises(InvalidRequestError, match="unique_colours must be True or False"):
            D.make_scenes(str(tmp_path / "never"), 1, 1, unique_colours=bad)
    assert not os.path.exists(tmp_path / "never")
    recs = _cli_scenes(str(tmp_path / "unique"), 8, "--unique-colours", "--max-objects", "4",
                       "--min-objects", "4", "--max-copies", "1", "--tasks", "detect_all")
    labels = [re.findall(r"<ground>(.*?)</ground>", r.answer) for r in recs]
    assert len(recs) == 8 and not any(_shares_a_colour(found) for found in labels), labels
    assert sum(len(found) for found in labels) >= 28  # 4 objects a scene, room aside
    _cli_refuses(str(tmp_path / "unique"), capsys, "contradict",
                 ["--unique-colours", "--shared-colour", "0.5"])


def _one_colour(categories) -> bool:
    """The coloured shapes of ``categories`` (at least two distinct) all have one colour."""
    shapes = {c for c in categories if c not in S.PHOTOS}
    return len(shapes) >= 2 and len({c.split(" ")[0] for c in shapes}) == 1


def test_one_colour_leaves_the_shape_alone_to_tell_shapes_apart(tmp_path, capsys):
    """`one_colour` is the chance that every coloured shape of a scene takes one colour: off,
    the scenes are those of before (no extra draw); on, a scene with two or more coloured
    shapes has them in one colour, the copy cap and the split's categories hold, the object
    count stays; it refuses a bad rate and unique colours beside it, and `make-scenes
    --one-colour` writes such scenes."""
    kw = dict(max_objects=6, max_copies=1, min_objects=2)
    multi = 0
    for seed in range(120):
        base = S.generate_scene(seed, "train", 112, **kw)
        assert base.objects == S.generate_scene(seed, "train", 112, one_colour=0.0, **kw).objects
        scene = S.generate_scene(seed, "train", 112, one_colour=1.0, **kw)
        cats = [o.category for o in scene.objects]
        assert len(cats) == len(set(cats)) and len(cats) == len(base.objects)
        assert not any(S.names_unseen_object(c) for c in cats)
        if sum(c not in S.PHOTOS for c in cats) >= 2:
            multi += 1
            assert _one_colour(cats), cats
    assert multi >= 60
    for bad in (-0.1, 1.5, "0.5"):
        with pytest.raises(InvalidRequestError, match="one_colour"):
            S.generate_scene(1, "train", 112, one_colour=bad)
    with pytest.raises(InvalidRequestError, match="contradict"):
        D.make_scenes(str(tmp_path / "never"), 1, 1, one_colour=0.5, unique_colours=True)
    with pytest.raises(InvalidRequestError, match="unique_colours must be True or False"):
        S.generate_scene(1, "train", 112, one_colour=0.5, unique_colours="no")
    assert not os.path.exists(tmp_path / "never")
    recs = _cli_scenes(str(tmp_path / "one"), 8, "--one-colour", "1", "--max-objects", "6",
                       "--min-objects", "5", "--max-copies", "1", "--tasks", "detect_all")
    labels = [re.findall(r"<ground>(.*?)</ground>", r.answer) for r in recs]
    assert sum(_one_colour(found) for found in labels) >= 5, labels
    _cli_refuses(str(tmp_path / "one"), capsys, "--one-colour must be", ["--one-colour", "2"])
