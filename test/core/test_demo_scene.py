"""`scripts/demo_scene.sh`, the main job's demo of the trained scene model (issue 9 §8): it asks
a held-out scene through `vlxseek query` and prints verdicts that match the answers. Run here on
a tiny random model (its answers are wrong; the point is that the script reports them
truthfully), and without a model (skipped, exit 0: the state until the model is committed)."""
import json
import os
import subprocess

import numpy as np
import torch
from torchvision.ops import box_iou

from vlxseek_core.models import held_out_example

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "demo_scene.sh")


def _run(model, out):
    env = dict(os.environ, VLXSEEK_SMALL_MODEL=str(model), SCENE_DEMO_DIR=str(out),
               OMP_NUM_THREADS="1")
    return subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)


def test_without_a_model_the_demo_says_so_and_succeeds(tmp_path):
    proc = _run(tmp_path / "none", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "no trained scene model" in proc.stdout and "skipped" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_the_demo_asks_a_held_out_scene_and_reports_its_answers(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    proc = _run(tiny_model_dir, out)
    assert proc.returncode == 0, proc.stderr
    truth = json.loads((out / "truth.json").read_text())
    scene, boxes, target = held_out_example("red circle")
    assert truth["target"] == target and np.allclose(truth["boxes"], boxes)
    assert truth["absent"] in scene.absent_categories and truth["seed"] == scene.seed
    refer = json.loads((out / "refer.json").read_text())
    absent = json.loads((out / "absent.json").read_text())
    assert refer["task"] == "refer" and refer["query"] == "the red circle"
    assert absent["task"] == "detect" and absent["query"] == truth["absent"]
    assert refer["proposals"]["boxes_xyxy"] == truth["boxes"]  # the scene's candidates
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"scene demo: held-out scene (seed {scene.seed}), "
                               f"{len(boxes)} candidate boxes")
    assert f"refer 'the red circle': {refer['answer']!r}" in proc.stdout
    gt = truth["boxes"][target]
    if refer["detections"]:  # the printed IoU and verdict are those of the answer's box
        box = refer["detections"][0]["box_xyxy"]
        iou = float(box_iou(torch.tensor([box]), torch.tensor([gt]))[0, 0])
        assert f"IoU {iou:.2f}: {'right' if iou >= 0.5 else 'WRONG'}" in proc.stdout
    else:
        assert "no box" in proc.stdout and "WRONG" in proc.stdout
    verdict = lines[-1].strip()
    if absent["detections"]:
        assert verdict.startswith(f"WRONG: grounded {len(absent['detections'])} box(es)")
    else:
        assert verdict.startswith("absent")
