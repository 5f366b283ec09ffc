"""Procedural scenes: the data the small model is trained and tested on (issue 9, item 7a).

A scene is a ``size`` × ``size`` RGB image (default 224, a multiple of the model's 28 px
factor): a toned-down random crop of a real photo texture from ``skimage.data`` (grass, gravel,
brick, moon, hubble_deep_field, grey-scaled, contrast reduced to 35 %, faintly tinted) with 2–6
objects (longer side 28–90 px at 224 px, scaled with the image; pairwise IoU < 0.1, no object
covering another's centre):

* **photo crops** of ``skimage.data`` photos: ``cat`` (chelsea), ``cup`` (coffee), ``rocket``
  (rocket), ``astronaut`` (astronaut), ``motorcycle`` (stereo_motorcycle), randomly flipped and
  brightened; the box is the pasted rectangle;
* **coloured shapes** ``{red, blue, green, yellow} × {circle, square, triangle}`` (category
  ``"red circle"``); the box is the exact pixel extent of the drawn mask.

Vocabulary and held-out rules (see :data:`HELDOUT_COLOUR_SHAPES`, :data:`HELDOUT_SUPERLATIVES`):

* the colour-shape combinations ``yellow triangle`` and ``blue circle`` never occur in the
  train split (neither as objects nor in any text, absent categories included); held-out
  scenes contain one with probability 0.6. ``yellow``, ``blue``, ``triangle`` and ``circle``
  all occur in training through the other combinations;
* the expressions "the leftmost cat", "the largest cup", "the rightmost astronaut", "the
  topmost red square", "the smallest green circle", "the bottommost blue triangle" never occur
  in train; every superlative and every category occurs in train in other combinations.

Referring expressions (task ``refer``): "the red circle" (only one of its category), "the
circle" (only one circle of any colour), "the red shape" (only one red shape), "the
leftmost|rightmost|topmost|bottommost|largest|smallest <category>" among ≥ 2 objects of the
category, only when clear (centres ≥ 4 % of the image apart, areas ≥ 1.4× apart), and with
probability ``rejection_rate`` an expression for an absent object (→ the rejection block).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..answer_format import format_answer
from ..errors import InvalidRequestError, VLXSeekError
from .records import (TrainingRecord, box_iou, build_candidates, count_sample, detect_sample,
                      jitter_distractors, with_article)

COLOURS = {"red": (215, 35, 35), "blue": (35, 75, 225), "green": (35, 170, 55),
           "yellow": (240, 215, 35)}
SHAPES = ("circle", "square", "triangle")
PHOTOS = {  # category: (skimage.data function, object crop x1, y1, x2, y2 in that photo)
    "cat": ("chelsea", (20, 0, 400, 300)), "cup": ("coffee", (75, 15, 480, 390)),
    "rocket": ("rocket", (240, 110, 400, 427)), "astronaut": ("astronaut", (20, 10, 370, 512)),
    "motorcycle": ("stereo_motorcycle", (90, 70, 690, 460))}
BACKGROUNDS = ("grass", "gravel", "brick", "moon", "hubble_deep_field")
SUPERLATIVES = ("leftmost", "rightmost", "topmost", "bottommost", "largest", "smallest")
HELDOUT_COLOUR_SHAPES = ("yellow triangle", "blue circle")
HELDOUT_SUPERLATIVES = (("leftmost", "cat"), ("largest", "cup"), ("rightmost", "astronaut"),
                        ("topmost", "red square"), ("smallest", "green circle"),
                        ("bottommost", "blue triangle"))
ALL_CATEGORIES = tuple(PHOTOS) + tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
SPLITS = {"train": 0, "heldout": 1}
MIN_SIDE, MAX_SIDE = 28, 90
MIN_SIZE = 112
"""Smallest image side: room for a few objects of up to 90 px."""
_HELDOUT_TEXTS = tuple(HELDOUT_COLOUR_SHAPES) + tuple(f"{s} {c}" for s, c in HELDOUT_SUPERLATIVES)


def split_categories(split: str) -> Tuple[str, ...]:
    """The categories a split may show and name (train lacks the held-out colour-shapes)."""
    _check_split(split)
    return tuple(c for c in ALL_CATEGORIES
                 if split == "heldout" or c not in HELDOUT_COLOUR_SHAPES)


def is_heldout_phrase(text: str) -> bool:
    """Whether ``text`` contains a held-out combination (also inside plurals, prompts, answers)."""
    return any(t in text for t in _HELDOUT_TEXTS)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidRequestError(f"split must be 'train' or 'heldout', got {split!r}")


@dataclass
class SceneObject:
    """One pasted object: ``category`` ("cat", "red circle"), ``colour`` (None for photos),
    ``shape`` (the noun: "circle", "cat"), ``box`` (xyxy int pixels, exclusive end)."""

    category: str
    colour: Optional[str]
    shape: str
    box: Tuple[int, int, int, int]


@dataclass
class Scene:
    """``image``: uint8 ``[size, size, 3]`` RGB; ``objects`` in paste order; the split's
    categories not in the image; the ``seed``/``split`` it was generated from."""

    image: np.ndarray
    objects: List[SceneObject]
    absent_categories: List[str]
    seed: int = 0
    split: str = "train"

    def gt_json(self) -> Dict[str, Any]:
        """The ground truth as JSON (``scenes_heldout.json`` entries)."""
        return {"seed": self.seed, "split": self.split,
                "objects": [asdict(o) for o in self.objects],
                "absent_categories": list(self.absent_categories)}


_ASSETS: Dict[str, Any] = {}
_MASKS: Dict[Tuple[str, int], np.ndarray] = {}


def _assets() -> Dict[str, Any]:
    """Photo crops and grey backgrounds, loaded once per process from ``skimage.data``."""
    if not _ASSETS:
        try:
            from skimage import data
        except ImportError as exc:
            raise VLXSeekError("procedural scenes need scikit-image "
                               "(pip install scikit-image)") from exc
        from PIL import Image

        for cat, (name, (x1, y1, x2, y2)) in PHOTOS.items():
            img = getattr(data, name)()
            img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, ...)
            crop = Image.fromarray(np.ascontiguousarray(img[y1:y2, x1:x2, :3]))
            crop.thumbnail((2 * MAX_SIDE, 2 * MAX_SIDE), Image.LANCZOS)  # cheap later resizes
            _ASSETS[cat] = np.asarray(crop)
        for name in BACKGROUNDS:
            img = getattr(data, name)()
            grey = Image.fromarray(img).convert("L") if img.ndim == 3 else Image.fromarray(img)
            # a few zoom levels made once, so that a scene only crops (no per-scene resize)
            _ASSETS["bg:" + name] = [np.asarray(grey.resize(
                (round(grey.width * z), round(grey.height * z)), Image.BILINEAR))
                for z in (1.0, 0.8, 0.65, 0.5)]
    return _ASSETS


def _mask(shape: str, s: int) -> np.ndarray:
    """Boolean ``[s, s]`` mask whose tight bounding box is the whole ``s`` × ``s`` square."""
    key = (shape, s)
    if key not in _MASKS:
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        c = (s - 1) / 2
        if shape == "circle":
            m = (xx - c) ** 2 + (yy - c) ** 2 <= (s / 2) ** 2
        elif shape == "triangle":  # apex row 0 (1-2 px wide), base = last row
            m = np.abs(xx - c) <= (yy + 1) / 2
        else:
            m = np.ones((s, s), bool)
        _MASKS[key] = m
    return _MASKS[key]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image

    zooms = _assets()["bg:" + BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]]
    tex = zooms[int(rng.integers(len(zooms)))]
    if min(tex.shape) < size:  # images larger than the textures: resize (slow path)
        tex = np.asarray(Image.fromarray(tex).resize((size, size), Image.BILINEAR))
    y, x = (int(rng.integers(0, d - size + 1)) for d in tex.shape)
    crop = tex[y:y + size, x:x + size]
    crop = crop[:, ::-1] if rng.random() < 0.5 else crop
    # contrast down to 35 % (objects stay the salient thing), faint tint; per-channel LUTs
    luts = np.clip((85.0 + 0.35 * np.arange(256))[None] * rng.uniform(0.92, 1.08, (3, 1)),
                   0, 255).astype(np.uint8)
    return np.stack([lut[crop] for lut in luts], axis=-1)


def _choose_categories(rng: np.random.Generator, split: str) -> List[str]:
    """2-6 categories; often one repeated (so superlatives exist)."""
    vocab = split_categories(split)
    n = int(rng.integers(2, 7))
    cats: List[str] = []
    if split == "heldout" and rng.random() < 0.6:
        cats.append(HELDOUT_COLOUR_SHAPES[int(rng.integers(len(HELDOUT_COLOUR_SHAPES)))])
    if rng.random() < 0.6:
        pool = ([c for _, c in HELDOUT_SUPERLATIVES] if split == "heldout" and rng.random() < 0.7
                else list(vocab))
        cats += [pool[int(rng.integers(len(pool)))]] * int(rng.integers(2, 4))
    while len(cats) < n:
        cats.append(vocab[int(rng.integers(len(vocab)))])
    return cats  # at most 1 + 3 forced ones, so still 2-6


def _free(box: np.ndarray, placed: List[np.ndarray]) -> bool:
    """IoU < 0.1, intersection < 20 % of the smaller box, no box over another's centre."""
    if not placed:
        return True
    others = np.asarray(placed, np.float64)
    if box_iou(box[None], others).max() >= 0.1:
        return False
    iw = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    areas = np.minimum((box[2] - box[0]) * (box[3] - box[1]),
                       (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]))
    if (iw * ih >= 0.2 * areas).any():
        return False
    cb, co = (box[:2] + box[2:]) / 2, (others[:, :2] + others[:, 2:]) / 2
    inside = lambda c, b: (b[..., 0] <= c[..., 0]) & (c[..., 0] < b[..., 2]) & (  # noqa: E731
        b[..., 1] <= c[..., 1]) & (c[..., 1] < b[..., 3])
    return not (inside(cb[None], others).any() or inside(co, box[None]).any())


def generate_scene(seed: int, split: str = "train", size: int = 224) -> Scene:
    """One procedural scene, deterministic per ``(seed, split, size)``.

    Args:
        seed: non-negative int. split: ``"train"`` or ``"heldout"``.
        size: image side in pixels (≥ 112 so that objects fit).

    Returns:
        :class:`Scene`; object boxes are exact int pixel boxes of the pasted pixels.

    Raises:
        InvalidRequestError: bad split or size. VLXSeekError: scikit-image missing.
    """
    from PIL import Image

    _check_split(split)
    if size < MIN_SIZE:
        raise InvalidRequestError(f"scene size must be >= {MIN_SIZE} px, got {size}")
    rng = np.random.default_rng([int(seed), SPLITS[split]])
    assets = _assets()
    image = _background(rng, size)
    objects: List[SceneObject] = []
    placed: List[np.ndarray] = []
    # object sides scale with the image (28–90 px at 224 px), so smaller scenes look alike
    min_side = max(8, round(MIN_SIDE * size / 224))
    max_side = max(min_side, round(MAX_SIDE * size / 224))
    for cat in _choose_categories(rng, split):
        photo = assets.get(cat)
        aspect = photo.shape[0] / photo.shape[1] if photo is not None else 1.0
        # photos keep their aspect ratio: the longer side must leave the shorter one >= 28 px
        low = min(max_side, int(np.ceil(min_side * max(aspect, 1 / aspect))))
        for _ in range(25):  # rejection sampling of size and position
            side = int(rng.integers(low, max_side + 1))
            w, h = ((side, max(min_side, round(side * aspect))) if aspect <= 1
                    else (max(min_side, round(side / aspect)), side))
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = np.array([x, y, x + w, y + h], np.float64)
            if _free(box, placed):
                break
        else:
            continue  # no room left: the scene gets fewer objects
        region = image[y:y + h, x:x + w]
        if photo is not None:
            patch = np.asarray(Image.fromarray(photo).resize((w, h), Image.BILINEAR), np.float32)
            patch = patch[:, ::-1] if rng.random() < 0.5 else patch
            region[:] = np.clip(patch * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
            colour, noun = None, cat
        else:
            colour, noun = cat.split(" ")
            rgb = np.clip(np.array(COLOURS[colour]) + rng.integers(-15, 16, 3), 0, 255)
            region[_mask(noun, w)] = rgb.astype(np.uint8)
        placed.append(box)
        objects.append(SceneObject(cat, colour, noun, (x, y, x + w, y + h)))
    present = {o.category for o in objects}
    absent = [c for c in split_categories(split) if c not in present]
    return Scene(image, objects, absent, int(seed), split)


def superlative_targets(scene: Scene, category: str) -> Dict[str, int]:
    """Superlative → index into ``scene.objects``, among the objects of ``category`` (≥ 2),
    only when the extreme is clear: centres ≥ 4 % of the image side apart, areas ≥ 1.4×."""
    idx = [i for i, o in enumerate(scene.objects) if o.category == category]
    if len(idx) < 2:
        return {}
    b = np.asarray([scene.objects[i].box for i in idx], np.float64)
    margin = 0.04 * scene.image.shape[1]
    keys = {"x": (b[:, 0] + b[:, 2]) / 2, "y": (b[:, 1] + b[:, 3]) / 2,
            "area": (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])}
    out = {}
    for sup, key, low in (("leftmost", "x", True), ("rightmost", "x", False),
                          ("topmost", "y", True), ("bottommost", "y", False),
                          ("smallest", "area", True), ("largest", "area", False)):
        v = keys[key] if low else -keys[key]
        order = np.argsort(v, kind="stable")
        a, b2 = keys[key][order[0]], keys[key][order[1]]
        clear = (min(a, b2) * 1.4 <= max(a, b2)) if key == "area" else abs(a - b2) >= margin
        if clear:
            out[sup] = idx[int(order[0])]
    return out


def referring_expressions(scene: Scene) -> List[Tuple[str, Optional[int], str]]:
    """Every correct ``(expression, object index or None if absent, kind)`` of the scene.

    Kinds: ``category``, ``shape``, ``colour``, ``superlative``, ``absent`` ("the
    <category>", "the leftmost|bottommost <category>" of an absent category). Held-out
    phrasings are included; :func:`scene_records` drops them for the train split.
    """
    objs = scene.objects
    count = lambda key: sum(1 for o in objs if key(o))  # noqa: E731
    out: List[Tuple[str, Optional[int], str]] = []
    for i, o in enumerate(objs):
        if count(lambda p: p.category == o.category) == 1:
            out.append((f"the {o.category}", i, "category"))
        if o.colour and count(lambda p: p.shape == o.shape) == 1:
            out.append((f"the {o.shape}", i, "shape"))
        if o.colour and count(lambda p: p.colour == o.colour) == 1:
            out.append((f"the {o.colour} shape", i, "colour"))
    for cat in dict.fromkeys(o.category for o in objs):
        out += [(f"the {sup} {cat}", i, "superlative")
                for sup, i in superlative_targets(scene, cat).items()]
    out += [(f"the {c}", None, "absent") for c in scene.absent_categories]
    out += [(f"the {sup} {c}", None, "absent") for c in scene.absent_categories
            for sup in SUPERLATIVES[::3]]  # "the leftmost / bottommost <absent category>"
    return out


def scene_records(scene: Scene, image_name: str, rng: np.random.Generator, *,
                  rejection_rate: float = 0.2, max_candidates: int = 12,
                  refer_per_scene: int = 2,
                  tasks: Sequence[str] = ("detect", "refer", "count", "caption"),
                  heldout_preference: float = 0.7) -> List[TrainingRecord]:
    """Training records of one scene, sharing one candidate list (GT + distractors, shuffled).

    Per scene: one ``detect`` (rules of :func:`~.records.detect_sample`), ``refer_per_scene``
    ``refer`` (distinct expressions; absent with probability ``rejection_rate``; in the
    held-out split a held-out phrasing is preferred with probability ``heldout_preference``),
    one ``count`` (plural category, blocks + number, ``0`` with the rejection block when
    absent) and one ``caption`` (one object → ``"a red circle"``). Records of the train split
    never contain a held-out phrase. ``meta`` holds ``rejection``, ``heldout_phrase`` and for
    refer the expression ``kind``.

    Raises:
        InvalidRequestError: ``max_candidates`` smaller than the number of objects or > 100.
    """
    gt = np.asarray([o.box for o in scene.objects], np.float64).reshape(-1, 4)
    room = max_candidates - len(gt)
    n_dis = int(rng.integers(min(2, max(room, 0)), max(room, 0) + 1))
    size = (scene.image.shape[1], scene.image.shape[0])
    boxes, g2c = build_candidates(gt, jitter_distractors(gt, size, rng, n_dis), rng,
                                  max_candidates)
    present: Dict[str, List[int]] = {}
    for i, o in enumerate(scene.objects):
        present.setdefault(o.category, []).append(g2c[i])
    train = scene.split == "train"
    absent = list(scene.absent_categories)
    out: List[Tuple[str, str, str, List[int], Dict[str, Any]]] = []
    for task in tasks:
        if task == "detect":
            out.append(("detect",) + _with_list(detect_sample(present, absent, rng,
                                                              rejection_rate)))
        elif task == "count":
            out.append(("count",) + _with_list(count_sample(present, absent, rng,
                                                            rejection_rate)))
        elif task == "detect_all" and scene.objects:
            # every object, one block per category; categories in the order of their leftmost
            # instance so that the answer is a function of the scene (dense region supervision)
            left = {}
            for o in scene.objects:
                left[o.category] = min(left.get(o.category, o.box[0]), o.box[0])
            blocks = [(c, sorted(present[c])) for c in sorted(left, key=left.get)]
            out.append(("detect_all", "", format_answer(blocks), [], {"rejection": False}))
        elif task == "caption" and scene.objects:
            i = int(rng.integers(len(scene.objects)))
            out.append(("caption", "", with_article(scene.objects[i].category), [g2c[i]], {}))
        elif task == "refer":
            out += [("refer", e, a, [], m) for e, a, m in _refers(
                scene, g2c, rng, rejection_rate, refer_per_scene, heldout_preference)]
        elif task not in ("caption", "refer", "detect_all", "single"):
            raise InvalidRequestError(
                f"scene tasks are detect, detect_all, refer, count, caption: {task!r}")
    records = []
    if "single" in tasks:
        records += single_region_records(scene, image_name, rng)
    for k, (task, query, answer, region, meta) in enumerate(out):
        meta["heldout_phrase"] = is_heldout_phrase(query + answer)
        if train and meta["heldout_phrase"]:  # cannot happen by construction; never let it
            raise AssertionError(f"held-out phrase in train record: {query!r} {answer!r}")
        records.append(TrainingRecord(f"{image_name}:{task}:{k}", image_name, task, query,
                                      answer, boxes, region_indices=region, meta=meta))
    return records


def single_region_records(scene: Scene, image_name: str, rng: np.random.Generator,
                          per_scene: int = 2) -> List[TrainingRecord]:
    """Curriculum records with one candidate region: no region binding is needed to answer.

    For up to ``per_scene`` objects: a ``caption`` of the object's box, and a ``detect`` whose
    query is the object's category (→ ``<region0>``) or, half of the time, another category
    of the scene or an absent one (→ the rejection form: the one region is not it). They teach
    the region features and the query–region match before several regions must be told apart.
    """
    out = []
    order = rng.permutation(len(scene.objects))[:per_scene]
    others = sorted({o.category for o in scene.objects} | set(scene.absent_categories))
    for k, i in enumerate(order):
        obj = scene.objects[int(i)]
        box = [list(map(float, obj.box))]
        out.append(TrainingRecord(f"{image_name}:single-caption:{k}", image_name, "caption", "",
                                  with_article(obj.category), box, region_indices=[0],
                                  meta={"single": True}))
        wrong = [c for c in others if c != obj.category]
        query = obj.category if (rng.random() < 0.5 or not wrong) else wrong[
            int(rng.integers(len(wrong)))]
        regions = [0] if query == obj.category else []
        out.append(TrainingRecord(f"{image_name}:single-detect:{k}", image_name, "detect", query,
                                  format_answer([(query, regions)]), box,
                                  meta={"single": True, "rejection": not regions}))
    return out


def _with_list(sample):
    query, answer, meta = sample
    return query, answer, [], meta


def _refers(scene, g2c, rng, rejection_rate, n, heldout_preference):
    """``n`` distinct ``(expression, answer, meta)`` refer samples of a scene."""
    options = [(e, i, k) for e, i, k in referring_expressions(scene)
               if not (scene.split == "train" and is_heldout_phrase(e))]
    chosen = []
    for _ in range(n):
        absent = [o for o in options if o[1] is None]
        found = [o for o in options if o[1] is not None]
        pool = absent if (rng.random() < rejection_rate or not found) else found
        if not pool:
            break
        held = [o for o in pool if is_heldout_phrase(o[0])]
        if held and rng.random() < heldout_preference:
            pool = held
        else:  # choose the kind first so that rare kinds (superlatives) are not drowned
            kinds = sorted({o[2] for o in pool})
            kind = kinds[int(rng.integers(len(kinds)))]
            pool = [o for o in pool if o[2] == kind]
        expr, i, kind = pool[int(rng.integers(len(pool)))]
        options.remove((expr, i, kind))
        chosen.append((expr, format_answer([(expr, [] if i is None else [g2c[i]])]),
                       {"kind": kind, "rejection": i is None}))
    return chosen


def scene_image_name(seed: int, split: str) -> str:
    """File name of a scene image: ``"{split}_{seed:08d}.png"``."""
    return f"{split}_{int(seed):08d}.png"


def scene_sample(seed: int, split: str = "train", size: int = 224, **record_kwargs
                 ) -> Tuple[Scene, List[TrainingRecord]]:
    """A scene and its records from a seed, without touching the disk (infinite data).

    The records' randomness is its own stream of ``(seed, split)``, so the scene does not
    depend on ``record_kwargs`` (see :func:`scene_records`); the image name is
    :func:`scene_image_name`.
    """
    scene = generate_scene(seed, split, size)
    rng = np.random.default_rng([int(seed), SPLITS[split], 1])
    return scene, scene_records(scene, scene_image_name(seed, split), rng, **record_kwargs)


def _work(job):
    """Worker: generate, save the PNG, return (JSONL lines, GT json, generation seconds)."""
    from PIL import Image

    seed, split, size, out_dir, kwargs = job
    t0 = time.perf_counter()
    scene, records = scene_sample(seed, split, size, **kwargs)
    took = time.perf_counter() - t0
    Image.fromarray(scene.image).save(os.path.join(out_dir, "images",
                                                   scene_image_name(seed, split)),
                                      compress_level=1)  # speed over a few % of disk
    # records validated on construction: serialise here, the parent only writes lines
    return [json.dumps(r.to_json()) + "\n" for r in records], scene.gt_json(), took


def make_scenes(out_dir: str, num_train: int, num_heldout: int, seed: int = 0, size: int = 224,
                workers: Optional[int] = None, progress: bool = True, **record_kwargs
                ) -> Dict[str, Any]:
    """Write ``images/*.png``, ``train.jsonl``, ``heldout.jsonl`` and ``scenes_heldout.json``.

    Scene ``i`` of a split has seed ``seed * 10_000_000 + i`` (so ``num_* < 10**7``);
    ``record_kwargs`` go to :func:`scene_records` (``max_candidates``, ``rejection_rate``, …).
    Work is spread over ``workers`` processes (default: all CPU cores).

    Raises:
        InvalidRequestError: counts outside ``[0, 10**7)``, a negative seed, ``size < 112``.

    Returns:
        summary: records per split, wall seconds, mean generation ms per scene (PNG excluded).
    """
    import multiprocessing

    if not (0 <= num_train < 10**7 and 0 <= num_heldout < 10**7 and seed >= 0):
        raise InvalidRequestError("scene counts must be in [0, 10**7) and the seed >= 0")
    if size < MIN_SIZE:  # checked here too, before any worker starts
        raise InvalidRequestError(f"scene size must be >= {MIN_SIZE} px, got {size}")
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    _assets()  # load once before forking: workers inherit the decoded photos
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1)
    summary: Dict[str, Any] = {"workers": workers}
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        for split, num in (("train", num_train), ("heldout", num_heldout)):
            t0, gen, gt, n_records = time.perf_counter(), 0.0, {}, 0
            jobs = [(seed * 10_000_000 + i, split, size, out_dir, record_kwargs)
                    for i in range(num)]
            results = (pool.imap(_work, jobs, chunksize=16) if pool else map(_work, jobs))
            with open(os.path.join(out_dir, f"{split}.jsonl"), "w", encoding="utf-8") as fh:
                for k, (lines, scene_gt, took) in enumerate(results, 1):
                    fh.writelines(lines)
                    n_records += len(lines)
                    gt[scene_image_name(scene_gt["seed"], split)] = scene_gt
                    gen += took
                    if progress and (k % max(1, num // 10) == 0 or k == num):
                        print(f"{split}: {k}/{num} scenes, {time.perf_counter() - t0:.1f} s",
                              file=sys.stderr, flush=True)
            summary[split] = {"scenes": num, "records": n_records,
                              "seconds": round(time.perf_counter() - t0, 3),
                              "generate_ms_per_scene": round(1000 * gen / max(num, 1), 3)}
            if split == "heldout":
                with open(os.path.join(out_dir, "scenes_heldout.json"), "w") as fh:
                    json.dump(gt, fh)
    finally:
        if pool:
            pool.close()
            pool.join()
    return summary
