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

from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[2]


PHASES = ["stage0t_22", "stage0t_33", "stage0t_24", "stage0t_26", "stage0c", "stage0s1_22",
          "stage0s1_33", "stage0s1_24", "stage0s2q", "stage0s2r", "stage0s2f", "stage0s2t",
          "stage0s3r", "stage0s3a", "stage0s3t", "stage0s4", "stage1", "stage2"]


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _scheduler(info):
    """The last ``--scheduler`` of the phase's recorded command (later options win)."""
    words = info["command"].split()
    return [b for a, b in zip(words, words[1:]) if a == "--scheduler"][-1]


def _run(out, **extra):
    env = dict(os.environ, PYTHON=sys.executable, LAUNCH=sys.executable, PRESET="tiny",
               SCALE="4000", STEPS0T="1 1 1 1", STEPS0S1="1 1 1", STEPS0S="1 1 1 1 1 1 1 1",
               STEPS0C="1", STEPS1="1", STEPS2="1", BATCH="2", PYTHONPATH=str(ROOT), **extra)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "train_small_model.sh"), str(out)],
                          env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_recipe_script_runs_every_phase_and_records_its_options(tmp_path):
    out = tmp_path / "run"
    # stopped after a phase, then resumed: finished phases are skipped, not trained again
    assert _run(out, UNTIL="stage0s2q").strip().endswith(f"stopped after {out}/stage0s2q")
    assert not (out / "stage0s2r").exists()
    first = {p: (out / p / "model.safetensors").stat().st_mtime_ns for p in PHASES[:9]}
    assert _run(out).strip().endswith(f"final model: {out}/stage2")
    assert {p: (out / p / "model.safetensors").stat().st_mtime_ns for p in PHASES[:9]} == first
    infos = {p: json.loads((out / p / "vlxseek_training.json").read_text()) for p in PHASES}
    for phase, info in infos.items():
        assert info["global_step"] == 1, phase
        scratch = phase.startswith("stage0")
        assert info["stage"] == (0 if scratch else int(phase[-1])), phase
        # stage 0 from scratch: the data's shortlist and beta2 0.99; the paper's stages: as
        # the paper (full softmax, default beta2)
        assert info["loss_vocab"] == ("data" if scratch else "full"), phase
        assert info["adam_beta2"] == (0.99 if scratch else 0.999), phase
    assert all(infos[p]["loss_on"] == "choices" for p in PHASES[:13])
    assert all(infos[p]["loss_on"] == "answer" for p in PHASES[13:])
    for phase in PHASES[5:16]:
        assert infos[phase]["lr_scales"] == {"towers": 0.1, "hfre": 0.1, "connector": 0.1}
    # the rate: constant through 0s2r, falling to 0 in 0s2f, cosine from there
    assert {_scheduler(infos[p]) for p in PHASES[:10]} == {"constant_with_warmup"}
    assert _scheduler(infos["stage0s2f"]) == "linear"
    assert {_scheduler(infos[p]) for p in PHASES[11:]} == {"cosine"}
    # the scene words' spaced rows are set to the bare ones where refer expressions come in
    assert "red" in infos["stage0s2r"]["shared_word_rows"]
    assert not any("shared_word_rows" in infos[p] for p in PHASES if p != "stage0s2r")
    # the spaced words start near the bare ones (README "A decaying rate ...")
    init = json.loads((out / "init" / "config.json").read_text())
    assert init["vlxseek_space_variant_similarity"] == 0.9
    # 0c: "the <word>" refer records over many words (the copy forms for any word)
    refer = _records(out / "text_refer_24.jsonl")
    assert {r["task"] for r in refer} == {"refer"} and infos["stage0c"]["data"] == \
        "text_refer_24.jsonl"
    assert len({r["query"] for r in refer}) >= 0.8 * len(refer)
    # 0s1: one list length per phase (then 2-4), detect_all only, distinct categories
    for lo, hi in ((2, 2), (3, 3), (2, 4)):
        records = _records(out / f"scenes_s1_{lo}{hi}" / "train.jsonl")
        assert records and all(r["task"] == "detect_all" for r in records)
        assert sum(lo <= len(r["bbox_list"]) <= hi for r in records) >= 0.9 * len(records)
        assert lo == hi or len({len(r["bbox_list"]) for r in records}) > 1
        for r in records:
            labels = [b.split("</ground>")[0] for b in r["conversations"][1]["value"]
                      .split("<ground>")[1:]]
            assert len(labels) == len(set(labels)) == len(r["bbox_list"])
    # 0s2: 2-4 objects with a query in the prompt and no absent target, then refer records too
    for name, tasks in (("s2q", {"detect", "detect_all"}),
                        ("s2r", {"detect", "detect_all", "refer"})):
        records = _records(out / f"scenes_{name}" / "train.jsonl")
        assert {r["task"] for r in records} == tasks, name
        assert not any(r["meta"]["rejection"] or "None" in r["conversations"][1]["value"]
                       for r in records), name
    # 0s3: the same tasks with absent targets; 0s2t and 0s3t add the text-region records
    assert {r["task"] for r in _records(out / "scenes_s3" / "train.jsonl")} == \
        {"detect", "detect_all", "refer"}
    for phase, scenes in (("stage0s2t", "scenes_s2r"), ("stage0s3t", "scenes_s3")):
        # not the refer records of 0c: beside the scenes they left the scenes' copy as it was
        assert infos[phase]["data"].split() == ["train.jsonl", "text_detect_24.jsonl"], phase
        assert infos[phase]["start_model"] == str(out / PHASES[PHASES.index(phase) - 1])
    images = {r["image"] for r in _records(out / "scenes_s2q" / "train.jsonl")}
    first = _records(out / "scenes_s1_24" / "train.jsonl")[0]
    assert first["image"] not in images  # its own seed: other scenes than 0s1's
    # each phase starts from the one before it
    for before, after in zip(PHASES, PHASES[1:]):
        assert infos[after]["start_model"] == str(out / before), after
    assert infos["stage0t_22"]["start_model"] == str(out / "init")
    with safe_open(str(out / "stage2" / "model.safetensors"), "pt") as fh:  # --save-dtype
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"BF16"}
