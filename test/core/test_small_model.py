"""The committed scene model answers held-out scenes correctly (issue 9 §7, inference only).

Held-out scenes are generated on the fly (split ``heldout``: placements and phrasings never seen
in training) and asked through the real pipeline; an inference regression shows up here as lost
accuracy. Thresholds sit a margin below the issue-9 targets (REC 0.9, F1 0.9, count 0.8,
rejection 0.9) and apply to the records of seen object kinds: those naming or grounding a
colour-shape kind that no train image shows ("the yellow one" whose target is a yellow
triangle) test composition, which the targets do not cover (README "Procedural scenes and the
scene model"). The module is skipped while no trained model is committed.
"""

import pytest
from PIL import Image

from benchmarks.common import record_group
from vlxseek_core.errors import CheckpointError
from vlxseek_core.models import SMALL_SCENE_MODEL, small_scene_model_dir
from vlxseek_core.training.evaluate import evaluate_records
from vlxseek_core.training.scene_data import scene_sample
from vlxseek_core.training.ship import check_shipped

try:
    small_scene_model_dir()
except CheckpointError as exc:  # issue 9 is open until a trained model meets its targets
    pytest.skip(f"{exc}; the trained scene model is not committed yet", allow_module_level=True)

NUM_SCENES = 40
THRESHOLDS = {"rec_acc50": 0.85, "det_f1": 0.85, "count_exact": 0.75, "rejection_acc": 0.85}


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("heldout_scenes")
    records = []
    for seed in range(NUM_SCENES):
        scene, recs = scene_sample(seed, "heldout", SMALL_SCENE_MODEL["image_size"],
                                   max_candidates=SMALL_SCENE_MODEL["max_candidates"])
        Image.fromarray(scene.image).save(folder / recs[0].image)
        records += [r.to_json() for r in recs]
    return records, str(folder)


@pytest.fixture(scope="module")
def metrics(held_out):
    from vlxseek_core.pipeline import VLXSeek

    pipe = VLXSeek.from_pretrained(small_scene_model_dir(), device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=48)
    records, folder = held_out
    out = evaluate_records(pipe, records, folder, max_new_tokens=48,
                           group=lambda r: record_group(r, "objects"))
    return out["groups"]["seen"]


@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_held_out_accuracy(metrics, name):
    assert metrics[name] is not None
    assert metrics[name] >= THRESHOLDS[name], {k: v for k, v in metrics.items() if k != "counts"}


def test_answers_are_well_formed(metrics):
    assert metrics["format_ok"] >= 0.95


def test_shipped_files_match_their_checksums():
    check_shipped(small_scene_model_dir())  # raises CheckpointError on any changed or lost file
