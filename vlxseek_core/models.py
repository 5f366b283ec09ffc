"""Checkpoints that ship with this repository.

``models/vlm-fo1-small-scenes/`` is a small VLM-FO1 trained from random initialisation with
``vlxseek train`` on procedural scenes (``scripts/train_small_model.sh``; README "Procedural
scenes and the scene model"). It answers detection, referring expressions, counting and
rejection on held-out scenes of that kind; it knows nothing else.
"""
from __future__ import annotations

import os

from .errors import CheckpointError

SMALL_SCENE_MODEL = {
    "name": "vlm-fo1-small-scenes",
    "image_size": 112,
    "max_candidates": 8,
}
"""Where and on what the committed scene model was trained (``vlxseek make-scenes`` settings)."""


SMALL_SCENE_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "models", SMALL_SCENE_MODEL["name"])
"""Where the repository keeps the scene model (``python -m vlxseek_core.training.ship``
writes it there)."""


def small_scene_model_dir() -> str:
    """Directory of the committed scene model (``$VLXSEEK_SMALL_MODEL`` overrides).

    Raises:
        CheckpointError: the directory is missing (e.g. an install without the repository).
    """
    path = os.environ.get("VLXSEEK_SMALL_MODEL") or SMALL_SCENE_MODEL_DIR
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CheckpointError(f"the small scene model is not at {path!r} (it ships in the "
                              "repository's models/ folder)")
    return path


def held_out_example(category: str = "red circle", start_seed: int = 0):
    """A held-out scene for demos and tests of the scene model.

    The first held-out scene (seed ≥ ``start_seed``) with exactly one ``category`` object and at
    least one absent category, with the candidate boxes its records use (ground truth plus
    distractors, shuffled; as ``vlxseek make-scenes`` writes them).

    Returns:
        ``(scene, boxes, target)``: the :class:`~vlxseek_core.training.scenes.Scene`, float32
        ``[N, 4]`` xyxy pixel boxes, and the index of the ``category`` object's box in them.

    Raises:
        ValueError: no such scene among 1000 seeds.
    """
    import numpy as np

    from .training.scene_data import scene_sample

    for seed in range(start_seed, start_seed + 1000):
        scene, records = scene_sample(seed, "heldout", SMALL_SCENE_MODEL["image_size"],
                                      max_candidates=SMALL_SCENE_MODEL["max_candidates"])
        hits = [o for o in scene.objects if o.category == category]
        if len(hits) != 1 or not scene.absent_categories:
            continue
        boxes = np.asarray(records[0].bbox_list, dtype=np.float32)
        target = int(np.argmin(np.abs(boxes - np.asarray(hits[0].box, np.float32)).sum(1)))
        return scene, boxes, target
    raise ValueError(f"no held-out scene with exactly one {category!r}")
