"""``scripts/train_small_model.sh`` runs end to end (issue 9: the recipe of the scene model is
the command that reproduces it, so it must not rot between the runs that use it).

Scaled down to a smoke run: the tiny model, a few records per data set, one step per phase,
one process. The real run's numbers are in README ("Procedural scenes and the scene model").
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from vlxseek_core.parsing import grounded_blocks
from vlxseek_core.training import scenes as S
from vlxseek_core.training.run import file_sha256

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.long  # about 8 minutes: ~45 processes that import torch


PHASES = ["stage0t_22", "stage0t_33", "stage0t_24", "stage0t_26", "stage0tp_24", "stage1a_24",
          "stage2c", "stage2q", "stage2n", "stage2s4", "stage2s5l", "stage2s5l3", "stage2s5l4",
          "stage2s5lk", "stage2s5lf", "stage2s5t", "stage2s5tf", "stage2s5g", "stage2s5o",
          "stage2s5f", "stage2s5"]
SUPERLATIVE = PHASES[10:-1]  # 2s5l-2s5f: constant rate; 2s5 settles them on a cosine one
WORDS = ["leftmost", "topmost", "largest", "rightmost", "bottommost", "smallest"]


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _labels(record):
    """The ``<ground>`` labels of the record's answer, in answer order."""
    return [label for label, _ in grounded_blocks(record["conversations"][1]["value"])]


def _about_absent(record):
    """Whether the record asks about an absent target or names one beside present ones."""
    return record["meta"]["rejection"] or "None" in record["conversations"][1]["value"]


def _scheduler(info):
    """The last ``--scheduler`` of the phase's recorded command (later options win)."""
    words = info["command"].split()
    return [b for a, b in zip(words, words[1:]) if a == "--scheduler"][-1]


# 0t, 0tp, 1a, 2c (the colour-shape conjunction on long lists) and 2s5f (the six superlatives
# on the full scenes): trained until formed
FORMING = PHASES[:7] + ["stage2s5f"]


def _run(out, status=0, **extra):
    """Run the recipe scaled to a smoke run (every phase 1 step; ``FORMED=-1``,
    ``FORMED_SUP=-1`` and ``FORMED_SCENES=-1.5``: any lookup passes
    unless ``extra`` says otherwise; the lowest lift is -1); returns stdout and stderr."""
    env = dict(os.environ, PYTHON=sys.executable, LAUNCH=sys.executable, PRESET="tiny",
               SCALE="4000", STEPS0T="1 1 1 1", STEPS0TP="1", STEPS1A="1",
               STEPS2=" ".join(["1"] * 15), BATCH="2",
               FORMED="-1", FORMED_SCENES="-1.5", FORMED_SUP="-1")
    # this tree's vlxseek_core first, not an installed copy (the ROS workspace's may be older)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    # from another directory: the script finds benchmarks/ (not installed) by itself
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "train_small_model.sh"), str(out)],
                          env=env, cwd=str(out.parent), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == status, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def test_recipe_script_runs_every_phase_and_records_its_options(tmp_path):
    out = tmp_path / "run"
    # stopped after a phase, then resumed: finished phases are skipped, not trained again
    stdout = _run(out, UNTIL="stage2c", LR2="2e-3")[0]
    assert stdout.strip().endswith(f"stopped after {out}/stage2c")
    # the lookups on text (0t, 0tp) pass at FORMED on every list length (the weakest decides),
    # 1a's (image rows) at FORMED_SCENES over all, 2c's at FORMED in each colour group
    passed = [line.split(": ", 1)[1] for line in stdout.splitlines()
              if line.startswith("lookup formed:")]
    assert [p.split("(")[-1] for p in passed] == (
        [">= -1.0)"] * 5 + [">= -1.5)", ">= -1.0)"]), passed
    assert [p.split("weakest by ")[-1][:6] if "weakest" in p else None for p in passed] == (
        ["region"] * 5 + [None, "colour"]), passed
    assert not (out / "stage2q").exists()
    first = {p: (out / p / "model.safetensors").stat().st_mtime_ns for p in PHASES[:7]}
    assert _run(out, LR2="2e-3")[0].strip().endswith(
        f"final model: {out}/stage2s5")
    assert {p: (out / p / "model.safetensors").stat().st_mtime_ns for p in PHASES[:7]} == first
    infos = {p: json.loads((out / p / "vlxseek_training.json").read_text()) for p in PHASES}
    for phase, info in infos.items():
        assert (info["global_step"], info["seed"]) == (1, 0), phase  # the first data order
        assert "--device cpu" in info["command"], phase  # DEVICE's default
        # stage 0 on text, the paper's stage 1 (1a), then its stage 2
        assert info["stage"] == int(phase[5]), phase
        # a model trained from random initialisation throughout: the data's shortlist and
        # beta2 0.99 (docs/scene-model-notes.md "What forms it")
        assert (info["loss_vocab"], info["adam_beta2"]) == ("data", 0.99), phase
        assert info["optim"] == "adamw_torch_fused", phase
    assert [infos[p]["stage"] for p in PHASES] == [0] * 5 + [1] + [2] * 15
    # 0t: the softmax over the data's tokens alone (docs/scene-model-notes.md "The sampled
    # column"); the other phases keep the sampled column
    rates = {}
    for phase, info in infos.items():
        words = info["command"].split()
        rates[phase] = float(words[words.index("--lr") + 1])
        assert info["loss_negatives"] == (0 if phase.startswith("stage0t_") else 4096), phase
    assert {rates[p] for p in PHASES[:6]} == {1e-3}  # LR0T; stage 1 at the paper's rate
    assert {rates[p] for p in PHASES[6:]} == {2e-3}  # LR2
    # the whole answer: generated ones need it
    answer = ["stage2n", "stage2s4", "stage2s5lf", "stage2s5t", "stage2s5tf", "stage2s5f",
              "stage2s5"]
    assert [infos[p]["loss_on"] for p in PHASES] == [
        "answer" if p in answer else "choices" for p in PHASES]
    assert not any(infos[p]["lr_scales"] for p in PHASES[:6])  # text, or the region side alone
    for phase in PHASES[6:]:
        assert infos[phase]["lr_scales"] == {"towers": 0.1, "hfre": 0.1, "connector": 0.1}
    # the rate: constant in the forming phases but 0t's 2-6 one (cosine: the formed search
    # settles) and where the query is first taught (2q) and the superlatives (2s5l-2s5f);
    # cosine in the phases that settle them (2n, 2s4, 2s5)
    constant = PHASES[:8] + SUPERLATIVE
    assert [_scheduler(infos[p]) == "constant_with_warmup" for p in PHASES] == [
        p in constant and p != "stage0t_26" for p in PHASES]
    assert {_scheduler(infos[p]) for p in PHASES if p not in constant} == {"cosine"}
    assert not any("shared_word_rows" in info for info in infos.values())
    # the spaced words start near the bare ones (docs/scene-model-notes.md "A decaying rate ...")
    init = json.loads((out / "init" / "config.json").read_text())
    assert init["vlxseek_space_variant_similarity"] == 0.9
    # 0tp: the scenes' phrases as text rows, 2-4 of them
    phrases = _records(out / "text_scene_24.jsonl")
    assert phrases and all(2 <= len(r["text_regions"]) <= 4 for r in phrases)
    assert {t for r in phrases for t in r["text_regions"]} <= set(S.ALL_CATEGORIES)
    assert any(" " in t for r in phrases for t in r["text_regions"])
    assert infos["stage0tp_24"]["data"] == "text_scene_24.jsonl"
    # 1a's scenes: 2-4 objects, detect_all only, distinct categories, colours unique
    records = _records(out / "scenes_s1u_24" / "train.jsonl")
    assert records and all(r["task"] == "detect_all" for r in records)
    assert all(2 <= len(r["bbox_list"]) <= 4 for r in records)
    for r in records:
        labels = _labels(r)
        assert len(labels) == len(set(labels)) == len(r["bbox_list"])
        colours = [c.split(" ")[0] for c in labels if c not in S.PHOTOS]
        assert len(colours) == len(set(colours)), labels
    assert infos["stage1a_24"]["data"] == "train.jsonl"
    # 2c: detect_all over long lists, 2-6 objects of distinct categories among up to 8
    # candidates, some of them distractor boxes, a colour always shared by two shapes
    records = _records(out / "scenes_s2c" / "train.jsonl")
    records += _records(out / "scenes_s2c" / "heldout.jsonl")
    assert records and all(r["task"] == "detect_all" for r in records)
    distractors = shared = 0
    for r in records:
        labels = _labels(r)
        assert 2 <= len(labels) == len(set(labels)) <= 6, labels
        assert len(labels) <= len(r["bbox_list"]) <= 8
        distractors += len(r["bbox_list"]) - len(labels)
        colours = [c.split(" ")[0] for c in labels if c not in S.PHOTOS]
        # a colour shared by two shapes wherever the scene has a coloured shape to pair
        shared += len(colours) > len(set(colours))
    assert distractors > 0 and shared > 0
    assert infos["stage2c"]["data"] == "train.jsonl"
    # 2q: the query (detect, refer two a scene, detect_all) on 2c's list lengths, copies
    # allowed, no absent target; 2n: the same kind of scenes (its own) with absent targets,
    # beside the 2-8 word text detect records; both with 2c's scenes beside
    query = {}
    for name in ("scenes_s3q", "scenes_s3n"):
        records = _records(out / name / "train.jsonl") + _records(out / name / "heldout.jsonl")
        assert {r["task"] for r in records} == {"detect", "detect_all", "refer"}, name
        assert all(2 <= len(r["bbox_list"]) <= 8 for r in records), name
        for r in records:  # every object of the scene, 2-6 of them
            if r["task"] == "detect_all":
                answer = r["conversations"][1]["value"]
                assert 2 <= answer.count("<region") <= 6, (name, answer)
        refer = [r["image"] for r in records if r["task"] == "refer"]
        assert all(refer.count(image) == 2 for image in refer), name
        query[name] = {r["image"] for r in records}
    assert not query["scenes_s3q"] & query["scenes_s3n"]  # their own seeds
    assert not any(_about_absent(r) for r in _records(out / "scenes_s3q" / "train.jsonl"))
    for phase, sets in (("stage2q", "scenes_s3q scenes_s2c"),
                        ("stage2n", "scenes_s3n scenes_s2c ."),
                        ("stage2s4", "scenes_s4 . .")):
        assert _data(out, infos[phase])[1] == sets.split(), phase
    assert infos["stage2q"]["data"] == "train.jsonl train.jsonl"
    assert infos["stage2n"]["data"].split() == ["train.jsonl", "train.jsonl",
                                                "text_s4_detect.jsonl"]
    # each phase starts from the one before it
    for before, after in zip(PHASES, PHASES[1:]):
        assert infos[after]["start_model"] == str(out / before), after
    assert infos["stage0t_22"]["start_model"] == str(out / "init")
    # each forming phase was probed on held-out records of its list length, and passed
    for phase in FORMING:
        probe = json.loads((out / phase / "lookup_formed.json").read_text())
        assert probe == json.loads((out / phase / "lookup_1.json").read_text()), phase
        assert probe[str(out / phase)]["all"]["records"] > 0, phase
        # by list length (--by regions) but on 1a's image rows (over all lengths) and on 2c's
        # (by the first object's colour group)
        groups = set(probe[str(out / phase)]) - {"all"}
        assert bool(groups) == (phase != "stage1a_24"), (phase, groups)
        by = {"stage2c": "colour=", "stage2s5f": "superlative="}.get(phase, "regions=")
        assert all(g.startswith(by) for g in groups), groups
    assert not any((out / p / "lookup_formed.json").exists() for p in PHASES if p not in FORMING)
    assert not list(out.glob("*_seed*"))  # every lookup formed at its first data order
    for lo, hi, name in ((2, 2, "regions_22"), (3, 3, "regions_33"), (2, 4, "regions_24"),
                         (2, 6, "regions_26"), (2, 4, "scene_24")):
        held = _records(out / f"text_{name}_heldout.jsonl")
        assert held and all(lo <= len(r["text_regions"]) <= hi for r in held)
        assert held != _records(out / f"text_{name}.jsonl")[:len(held)]
    for phase in ("stage2s4", "stage2s5"):  # --save-dtype
        with safe_open(str(out / phase / "model.safetensors"), "pt") as fh:
            assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"BF16"}, phase
    _check_superlative_phases(out, infos)
    # no data set that no phase reads
    assert sorted(p.name for p in out.glob("scenes_*")) == [
        "scenes_s1u_24", "scenes_s2c", "scenes_s3n", "scenes_s3q", "scenes_s4", "scenes_s4p",
        "scenes_s5a", "scenes_s5a3", "scenes_s5a4", "scenes_s5c"]
    assert sorted(p.name for p in out.glob("text_*")) == sorted([
        f"text_{name}{part}.jsonl" for name in ("regions_22", "regions_33", "regions_24",
                                                "regions_26", "scene_24")
        for part in ("", "_heldout")] + ["text_s4_all.jsonl", "text_s4_detect.jsonl"])
    _check_snapshot_resume(out, tmp_path)


def _check_snapshot_resume(out, tmp_path):
    """A snapshot of 2s4 restored into an empty folder: the script skips the phases before it
    (their markers only, no model), writes the data sets again and trains on from 2s4."""
    snap, new = tmp_path / "snap", tmp_path / "moved" / "run"
    init = "--preset tiny --aux-aspect dynamic --space-variant-similarity 0.9 --seed 0"
    for argv in (["save", str(out), "stage2s4", str(snap), "--init-args", init],
                 ["restore", str(snap), str(new)]):
        subprocess.run([sys.executable, "-m", "vlxseek_core.training.snapshot"] + argv,
                       check=True, cwd=str(ROOT), capture_output=True)
    stdout = _run(new, UNTIL="stage2s5l", LR2="2e-3")[0]
    assert stdout.strip().endswith(f"stopped after {new}/stage2s5l")
    assert not any((new / p / "model.safetensors").exists() for p in PHASES[:9])
    assert (new / "stage2s4" / "model.safetensors").read_bytes() == (
        out / "stage2s4" / "model.safetensors").read_bytes()
    info = _info(new / "stage2s5l")
    assert (info["start_model"], info["global_step"]) == (str(new / "stage2s4"), 1)
    # the data sets written again are the run's own (fixed seeds)
    assert info["data_sha256"] == _info(out / "stage2s5l")["data_sha256"]
    data = _data(new, _info(new / "stage2s4"))[0]
    assert data[0] == "scenes_s4/train.jsonl"
    assert " ".join(file_sha256(new / d) for d in data) == _info(out / "stage2s4")["data_sha256"]


def _data(out, info):
    """The phase's ``--data`` files relative to ``out`` and their ``--images`` folders'
    parents (``.``: text-region records), from its recorded command."""
    words = info["command"].split()
    data = words[words.index("--data") + 1:words.index("--images")]
    images = words[words.index("--images") + 1:][:len(data)]
    return ([str(Path(d).relative_to(out)) for d in data],
            [i if i == "." else str(Path(i).parent.relative_to(out)) for i in images])


def _check_superlative_phases(out, infos):
    """2s5l-2s5: their data sets and what each phase reads."""
    word = lambda r: r["query"].split()[1]  # noqa: E731
    for name, rows in (("scenes_s5a", 2), ("scenes_s5a3", 3), ("scenes_s5a4", 4)):
        records = _records(out / name / "train.jsonl")
        # two copies of one category among 2-4 objects, every candidate an object,
        # superlative `refer` alone, no absent target; at least 300 scenes at any SCALE
        assert len(list((out / name / "images").glob("train_*"))) == 300, name
        assert all(r["task"] == "refer" and r["meta"]["kind"] == "superlative"
                   and not _about_absent(r) and len(r["bbox_list"]) == rows
                   for r in records), name
        for w in WORDS:  # each word's records, all of them and no other
            mine = _records(out / name / f"train_{w}.jsonl")
            assert mine and mine == [r for r in records if word(r) == w], (name, w)
    assert all(len(set(_labels(r))) == 1 for r in _records(out / "scenes_s5a" / "train.jsonl"))
    for w in WORDS:  # the short lists as trained (SCALE 4000: 6,000 -> 1, 1,500 -> 1, ...)
        two = _records(out / "scenes_s5a" / f"train_{w}.jsonl")
        three = _records(out / "scenes_s5a3" / f"train_{w}.jsonl")
        assert _records(out / "scenes_s5a" / f"train_{w}_6k.jsonl") == two[:1]
        assert _records(out / "scenes_s5a3" / f"train_{w}_t.jsonl") == three[:-1]
        for kept in (f"scenes_s5a/train_{w}_6k", f"scenes_s5a3/train_{w}_t",
                     f"scenes_s5a4/train_{w}"):
            assert _records(out / f"{kept}_2k.jsonl") == _records(out / f"{kept}.jsonl")[:1]
    # the full scenes: superlatives of 1-6 objects among up to 8 candidates, each word's apart
    sup = _records(out / "scenes_s5c" / "train.jsonl")
    assert sup and all(r["task"] == "refer" and len(r["bbox_list"]) <= 8 for r in sup)
    assert all(r["meta"]["kind"] == "superlative" for r in sup if not _about_absent(r))
    assert any(_about_absent(r) for r in sup) and not all(_about_absent(r) for r in sup)
    for w in WORDS:
        assert _records(out / "scenes_s5c" / f"train_{w}.jsonl") == [
            r for r in sup if word(r) == w], w
    # 2s5f's probe: new placements of scenes_s4's kinds, 400 scenes whatever SCALE says, their
    # superlatives (present targets)
    placed = _records(out / "scenes_s4p" / "train.jsonl")
    assert len({r["image"] for r in placed}) == 400
    assert {r["task"] for r in placed} == {"detect", "detect_all", "refer", "count", "caption"}
    assert max(len(r["bbox_list"]) for r in placed) == 8
    s4 = _records(out / "scenes_s4" / "train.jsonl")  # its own placements, not scenes_s4's
    assert [r["bbox_list"] for r in placed[:20]] != [r["bbox_list"] for r in s4[:20]]
    probe = _records(out / "scenes_s4p" / "sup.jsonl")
    assert probe == [r for r in placed if r["meta"].get("kind") == "superlative"]
    assert len(probe) > 200 and not any(_about_absent(r) for r in probe)
    formed = json.loads((out / "stage2s5f" / "lookup_formed.json").read_text())
    assert formed[str(out / "stage2s5f")]["all"]["records"] == min(300, len(probe))
    assert set(formed[str(out / "stage2s5f")]) - {"all"} == {f"superlative={w}" for w in WORDS}
    lines = (out / "scenes_s4" / "train.jsonl").read_text().splitlines()
    for size, first in (("9k", 2), ("20k", 5), ("40k", 10)):  # 9,000, 20,000, 40,000 / SCALE
        assert (out / "scenes_s4" / f"train_{size}.jsonl").read_text().splitlines() == (
            lines[:first]), size

    def rows(w):  # the word's three short-list sets as trained
        return [f"scenes_s5a/train_{w}_6k.jsonl", f"scenes_s5a3/train_{w}_t.jsonl",
                f"scenes_s5a4/train_{w}.jsonl"]

    def kept(w):  # their first 2,000 records each
        return [f"{r[:-len('.jsonl')]}_2k.jsonl" for r in rows(w)]

    lengths = ["scenes_s5a/train_leftmost.jsonl", "scenes_s5a3/train_leftmost_t.jsonl",
               "scenes_s5a4/train_leftmost.jsonl"]

    def full(*ws):  # the words' full-scene records
        return [f"scenes_s5c/train_{w}.jsonl" for w in ws]

    expected = {
        "stage2s5l": lengths[:1], "stage2s5l3": lengths[1:2], "stage2s5l4": lengths[2:],
        "stage2s5lk": lengths,
        "stage2s5lf": lengths + ["scenes_s4/train_9k.jsonl"] + full("leftmost"),
        "stage2s5t": rows("leftmost") + full("leftmost") + rows("topmost") + full("topmost")
        + ["scenes_s4/train_40k.jsonl"],
        "stage2s5tf": full("leftmost", "topmost") + ["scenes_s4/train_9k.jsonl"],
        "stage2s5g": rows("largest") + kept("leftmost") + kept("topmost"),
        "stage2s5o": rows("rightmost") + rows("bottommost") + rows("smallest")
        + kept("leftmost") + kept("topmost") + kept("largest"),
        "stage2s5f": full(*WORDS) + ["scenes_s4/train_20k.jsonl"],
        "stage2s5": ["scenes_s4/train.jsonl", "text_s4_all.jsonl", "text_s4_detect.jsonl"]
        + ["scenes_s5c/train.jsonl"] * 2}
    for phase, data in expected.items():
        images = [d.split("/")[0] if "/" in d else "." for d in data]
        assert _data(out, infos[phase]) == (data, images), phase
    # the short lists train on the region choices, the full scenes on the whole answer
    assert [infos[p]["loss_on"] for p in SUPERLATIVE] == [
        "answer" if any(d.startswith("scenes_s5c/") for d in expected[p]) else "choices"
        for p in SUPERLATIVE]


def _info(phase):
    """The phase's ``vlxseek_training.json``."""
    return json.loads((phase / "vlxseek_training.json").read_text())


def _seed(phase):
    return _info(phase)["seed"]


def test_a_forming_phase_trains_on_then_tries_other_data_orders_up_to_its_limits(tmp_path):
    """A lookup that never forms (``FORMED`` above any lift): the first 0t phase is probed
    after each step and trained one step more (``--resume``, a larger ``--max-steps``) up to
    ``FORM_CAP`` times its steps; then it starts over from the same model with the next data
    order (``--seed``), the stalled attempt kept beside it, up to ``FORM_SEEDS`` attempts;
    then the script stops with status 3 and says why. Run again with a larger cap, the last
    attempt goes on from the step it reached; with more seeds, the next data order starts."""
    out = tmp_path / "run"
    stdout, err = _run(out, status=3, FORMED="1.5", FORM_STEPS="1", FORM_CAP="2",
                       FORM_SEEDS="2")
    assert "stage0t_22: the lookup has not formed in 2 data orders of up to 2 steps (lift 1.5" \
        in err
    assert "stopped at FORM_SEEDS=2, FORM_CAP=2 times 1 steps" in err
    assert "stage0t_22: not formed in 2 steps with --seed 0; kept as" in stdout
    phase, stalled = out / "stage0t_22", out / "stage0t_22.stalled_seed0"
    for attempt, seed in ((stalled, 0), (phase, 1)):
        info = _info(attempt)
        assert (info["global_step"], info["seed"]) == (2, seed), attempt
        assert info["start_model"] == str(out / "init"), attempt  # both from the same model
        assert sorted(p.name for p in attempt.glob("lookup_*.json")) == [
            "lookup_1.json", "lookup_2.json"]
        assert not (attempt / "lookup_formed.json").exists()
    probe = json.loads((phase / "lookup_2.json").read_text())[str(phase)]["all"]
    assert 0 <= probe["first_region_acc"] <= 1 and probe["chance"] == 0.5
    assert not (out / "stage0t_33").exists()
    assert sorted(p.name for p in out.glob("stage0t_22*")) == [
        "stage0t_22", "stage0t_22.stalled_seed0"]
    # again with a larger cap: the last attempt trains on from the step it reached
    _, err = _run(out, status=3, FORMED="1.5", FORM_STEPS="1", FORM_CAP="3", FORM_SEEDS="2")
    assert "has not formed in 2 data orders of up to 3 steps" in err
    assert (_seed(phase), _info(phase)["global_step"]) == (1, 3)
    assert (phase / "lookup_3.json").exists() and _seed(stalled) == 0
    # with a third data order allowed: the stalled attempt is set aside, seed 2 starts over
    stdout, err = _run(out, status=3, FORMED="1.5", FORM_STEPS="1", FORM_CAP="3",
                       FORM_SEEDS="3")
    assert "not formed in 3 steps with --seed 1" in stdout
    assert [_seed(out / f"stage0t_22.stalled_seed{k}") for k in (0, 1)] == [0, 1]
    assert _seed(phase) == 2 and sorted(p.name for p in phase.glob("lookup_*.json")) == [
        "lookup_1.json", "lookup_2.json", "lookup_3.json"]


def test_a_stalled_later_0t_phase_redoes_the_phase_before_with_its_next_data_order(tmp_path):
    """0t's 3-row phase stalled: it is set aside, and the 2-row phase is trained again from
    ``init`` with its next data order (the formed one set aside too), then the 3-row phase
    with its next one from that new model (docs/scene-model-notes.md "Where the 3-row lookup
    forms"). The data orders count per phase; ``FORM_SEEDS`` bounds each."""
    out = tmp_path / "run"
    steps = "3 1 1 1"  # the 2-row phase 3 steps: every attempt trains the phase's own steps
    _run(out, FORMED="-1", UNTIL="stage0t_22", STEPS0T=steps)  # the 2-row lookup "formed"
    two, three = out / "stage0t_22", out / "stage0t_33"
    # nothing forms from here on: the 3-row attempt stalls at its cap (1 step), so the 2-row
    # phase is redone with --seed 1, which stalls too, and is its last data order
    stdout, err = _run(out, status=3, FORMED="1.5", FORM_CAP="1", FORM_SEEDS="2",
                       STEPS0T=steps)
    assert "stage0t_33: not formed in 1 steps with --seed 0; kept as" in stdout
    assert "stage0t_33: stage0t_22 again with --seed 1 (kept as " \
        f"{out}/stage0t_22.redone_seed0), then stage0t_33 with --seed 1" in stdout
    assert "stage0t_22: the lookup has not formed in 2 data orders of up to 3 steps" in err
    redone, stalled = out / "stage0t_22.redone_seed0", out / "stage0t_33.stalled_seed0"
    assert (redone / "lookup_formed.json").exists() and _seed(redone) == 0
    assert _seed(stalled) == 0 and not (stalled / "lookup_formed.json").exists()
    assert _info(stalled)["start_model"] == str(two)
    info = _info(two)
    assert (info["seed"], info["start_model"], info["global_step"]) == (1, str(out / "init"), 3)
    assert _info(redone)["global_step"] == 3
    assert not three.exists()
    # once the new 2-row model passes, the 3-row phase starts from it with its next data order
    stdout, _ = _run(out, FORMED="-1", UNTIL="stage0t_33", STEPS0T=steps)
    assert stdout.strip().endswith(f"stopped after {out}/stage0t_33")
    info = _info(three)
    assert (info["seed"], info["start_model"]) == (1, str(two)) and _seed(two) == 1
    assert sorted(p.name for p in out.glob("stage0t_*")) == [
        "stage0t_22", "stage0t_22.redone_seed0", "stage0t_33", "stage0t_33.stalled_seed0"]
