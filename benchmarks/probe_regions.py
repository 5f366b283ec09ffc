"""Are the region tokens of a model distinct and informative? (issue 9 §7, the collapse check)

Trained from random initialisation at one learning rate, the region features of the small scene
model collapsed: every region row of an image pointed the same way, so the LLM could not tell
regions apart (README "Procedural scenes and the scene model"). For each model and the held-out
scenes of ``vlxseek make-scenes`` (``scenes_heldout.json``: every object's box and category),
this encodes each image with all its object boxes through the real pipeline and reports, on the
region tokens (``EncodedFrame.region_embeds``, ``[N, hidden]`` after the connector):

* ``in-image cosine``: mean cosine similarity between the region rows of one image (off the
  diagonal), averaged over images; near 1 = collapsed;
* ``category probe``: accuracy of a linear probe (ridge regression onto one-hot categories,
  fitted on the rows of the first half of the images, scored on the second half) against the
  majority-class rate (``chance``); ``colour probe`` / ``shape probe`` likewise;
* ``left_of`` / ``above`` / ``larger`` probes: whether the difference of two region rows of one
  image tells which object is further left, higher, or larger (a linear probe on the
  difference, both orders of every pair as clearly apart as a superlative's target,
  ``scene_data.clearly_apart``; chance 0.5): what "the
  leftmost red square" needs the rows to carry (docs/scene-model-notes.md, superlatives);
* the mean row norm.

    python -m benchmarks.probe_regions --models UNTRAINED_DIR TRAINED_DIR \\
        --scenes scenes/scenes_heldout.json --images scenes/images [--limit 200]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import (add_model_benchmark_args, format_table, print_header,  # noqa: E402
                               quiet_transformers, write_json)

RIDGE = 1e-2  # ridge strength of the linear probes, relative to the mean squared row norm
ORDERS = {"left_of": ("x", True), "above": ("y", True), "larger": ("area", False)}
"""Order probe → (``scene_data.box_keys`` key, whether the smaller value answers yes)."""


def in_image_cosine(rows: np.ndarray) -> Optional[float]:
    """Mean off-diagonal cosine of ``rows`` ``[N, C]`` (``None`` for fewer than 2 rows)."""
    if len(rows) < 2:
        return None
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    n = len(rows)
    return float((sim.sum() - np.trace(sim)) / (n * (n - 1)))


def probe_accuracy(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray,
                   test_y: Sequence[str]) -> Dict[str, float]:
    """Ridge-regression probe onto one-hot labels: ``{"accuracy", "chance"}`` on the test rows.

    ``chance`` is the test share of the most frequent training label.
    """
    classes = sorted(set(train_y))
    index = {c: i for i, c in enumerate(classes)}
    mean = train_x.mean(axis=0)
    x, xt = train_x - mean, test_x - mean
    targets = np.eye(len(classes))[[index[y] for y in train_y]]
    lam = RIDGE * float((x ** 2).sum(axis=1).mean())
    weights = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ targets)
    predicted = [classes[i] for i in np.argmax(xt @ weights, axis=1)]
    majority = max(classes, key=list(train_y).count)
    return {"accuracy": float(np.mean([p == y for p, y in zip(predicted, test_y)])),
            "chance": float(np.mean([y == majority for y in test_y]))}


def region_rows(pipe, scenes: Dict[str, dict], images_dir: str) -> List[tuple]:
    """``[(image name, rows [N, C] float64, objects, image width px)]``: the region tokens of
    every scene."""
    from PIL import Image

    out = []
    for name, scene in scenes.items():
        objects = scene["objects"]
        if not objects:
            continue
        boxes = np.array([o["box"] for o in objects], dtype=np.float32)
        with Image.open(os.path.join(images_dir, name)) as im:
            enc = pipe.encode(im.convert("RGB"), boxes=boxes, reuse_frame=False)
            side = im.width
        rows = enc.frame.region_embeds.float().cpu().numpy().astype(np.float64)
        out.append((name, rows, objects, side))
    return out


def order_pairs(items: List[tuple], order: str) -> Optional[tuple]:
    """``(row differences [P, C], labels "yes"/"no")`` of every ordered pair of objects of one
    image that :data:`ORDERS` ``[order]`` tells apart as clearly as a superlative needs
    (``scene_data.clearly_apart`` at the item's image width), or ``None`` without such pairs;
    items without a width or objects without boxes give none."""
    from vlxseek_core.training.scene_data import box_keys, clearly_apart

    (key, smaller_is_yes), diffs, labels = ORDERS[order], [], []
    for _, rows, objects, *side in items:
        if not side or not objects or any("box" not in o for o in objects):
            continue
        values = box_keys([o["box"] for o in objects])[key]
        for i, j in ((i, j) for i in range(len(objects)) for j in range(len(objects)) if i != j):
            if clearly_apart(key, values[i], values[j], side[0]):
                diffs.append(rows[i] - rows[j])
                labels.append("yes" if (values[i] < values[j]) == smaller_is_yes else "no")
    return (np.array(diffs), labels) if diffs else None


def measure(per_image: List[tuple]) -> Dict[str, Optional[float]]:
    """The module docstring's numbers for one model's region rows."""
    cos = [c for c in (in_image_cosine(rows) for _, rows, *_ in per_image) if c is not None]
    half = len(per_image) // 2
    result: Dict[str, Optional[float]] = {
        "in_image_cosine": float(np.mean(cos)) if cos else None,
        "row_norm": float(np.mean([np.linalg.norm(r, axis=1).mean() for _, r, *_ in per_image])),
        "rows": float(sum(len(r) for _, r, *_ in per_image))}
    for key in ("category", "colour", "shape"):
        def split(items):
            pairs = [(row, str(o[key])) for _, rows, objs, *_ in items
                     for row, o in zip(rows, objs) if o.get(key) is not None]
            return (np.array([p[0] for p in pairs]), [p[1] for p in pairs]) if pairs else None
        train, test = split(per_image[:half]), split(per_image[half:])
        if train is None or test is None or len(set(train[1])) < 2:
            result[f"{key}_probe"] = result[f"{key}_chance"] = None
            continue
        got = probe_accuracy(train[0], train[1], test[0], test[1])
        result[f"{key}_probe"], result[f"{key}_chance"] = got["accuracy"], got["chance"]
    for order in ORDERS:
        train, test = order_pairs(per_image[:half], order), order_pairs(per_image[half:], order)
        result[f"{order}_probe"] = (None if train is None or test is None else
                                    probe_accuracy(train[0], train[1], test[0],
                                                   test[1])["accuracy"])
    return result


def main(argv: Optional[List[str]] = None) -> Dict[str, dict]:
    """Run the probes; returns ``{model dir: numbers}``."""
    from vlxseek_core.pipeline import VLXSeek

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_benchmark_args(parser, images_help="the scenes' image directory",
                             limit_help="first N scenes only")
    parser.add_argument("--scenes", required=True, help="scenes_heldout.json of make-scenes")
    args = parser.parse_args(argv)
    with open(args.scenes, encoding="utf-8") as fh:
        scenes = dict(list(json.load(fh).items())[: args.limit])
    print_header("probe_regions: are region tokens distinct and informative?", args.device,
                 {"scenes": args.scenes, "images": len(scenes), "models": args.models})
    results: Dict[str, dict] = {}
    for model in args.models:
        with quiet_transformers():
            pipe = VLXSeek.from_pretrained(model, device=args.device, proposal_source="none")
        results[model] = measure(region_rows(pipe, scenes, args.images))
    names = [os.path.basename(os.path.normpath(m)) for m in args.models]
    keys = ["in_image_cosine", "row_norm", "category_probe", "category_chance", "colour_probe",
            "colour_chance", "shape_probe", "shape_chance", *(f"{o}_probe" for o in ORDERS),
            "rows"]
    rows = [[k] + ["—" if results[m][k] is None else f"{results[m][k]:.3f}"
                   for m in args.models] for k in keys]
    print(format_table(["measure", *names], rows))
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
