"""Procedural scenes: the data the small model is trained and tested on (issue 9, item 7a).

This module draws the scenes; :mod:`.scene_data` turns them into records and data sets.

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

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InvalidRequestError, VLXSeekError
from ..parsing import grounded_blocks
from .records import box_iou, check_int

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
SCENE_WORDS = (*COLOURS, *SHAPES, *PHOTOS, "shape")
"""The words of every ``make-scenes`` phrase's objects (colours, shapes, photo categories and
"shape" of "the red shape"), for ``vlxseek train --share-word-rows scene``."""
ALL_CATEGORIES = tuple(PHOTOS) + tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
SPLITS = {"train": 0, "heldout": 1}
MIN_SIDE, MAX_SIDE = 28, 90
MIN_SIZE = 112
"""Smallest image side: room for a few objects of up to 90 px."""
MAX_SIZE = 4096
"""Largest image side: a 4096 px scene takes about a second and 200 MB to write; the side is
read from the command line, and 100,000 px would ask for 30 GB."""
MAX_OBJECTS = 6
"""Most objects a scene holds (``generate_scene``'s ``max_objects`` may lower it)."""
_HELDOUT_TEXTS = tuple(HELDOUT_COLOUR_SHAPES) + tuple(f"{s} {c}" for s, c in HELDOUT_SUPERLATIVES)


def split_categories(split: str) -> Tuple[str, ...]:
    """The categories a split may show and name (train lacks the held-out colour-shapes)."""
    _check_split(split)
    return tuple(c for c in ALL_CATEGORIES
                 if split == "heldout" or c not in HELDOUT_COLOUR_SHAPES)


def is_heldout_phrase(text: str) -> bool:
    """Whether ``text`` contains a held-out combination (also inside plurals, prompts, answers)."""
    return any(t in text for t in _HELDOUT_TEXTS)


def names_unseen_object(text: str) -> bool:
    """Whether ``text`` names one of :data:`HELDOUT_COLOUR_SHAPES`: object kinds that no
    train-split image shows, so a record naming one tests composition (colour and shape
    learnt apart), beyond the held-out placements and phrasings of the split."""
    return any(t in text for t in HELDOUT_COLOUR_SHAPES)


def first_colour_group(answer: str) -> str:
    """The colour group of the first object a ``detect_all`` answer grounds, among the
    answer's other labels: ``"photo"`` (a photo category, "cat"), ``"shared"`` (a colour-shape
    category whose colour another grounded colour-shape category has: "red circle" beside "red
    square", where the colour alone does not pick the row), ``"unique"`` (no other label of its
    colour), or ``"-"`` (no label, or a first label that is no scene category, such as an
    alias). A leading "the " (``make-scenes --detect-all-article``) is ignored. Since a
    ``detect_all`` answer names every object of the scene, this is the scene's colour group;
    for other tasks' one-label answers it would say nothing, so callers keep it to
    ``detect_all`` (``benchmarks.common.record_group``'s ``colour`` key)."""
    labels = [label.strip().removeprefix("the ") for label, _ in grounded_blocks(answer)]
    if not labels or labels[0] not in ALL_CATEGORIES:
        return "-"
    if labels[0] in PHOTOS:
        return "photo"
    colour = labels[0].split()[0]
    others = [label for label in labels[1:] if label in ALL_CATEGORIES and label not in PHOTOS]
    return "shared" if any(label.split()[0] == colour for label in others) else "unique"


def _check_split(split: str) -> None:
    if not isinstance(split, str) or split not in SPLITS:
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


def load_assets() -> Dict[str, Any]:
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

    zooms = load_assets()["bg:" + BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]]
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


def _choose_categories(rng: np.random.Generator, split: str,
                       max_objects: int = MAX_OBJECTS,
                       max_copies: Optional[int] = None,
                       min_objects: Optional[int] = None,
                       shared_colour: float = 0.0, unique_colours: bool = False,
                       one_colour: float = 0.0) -> List[str]:
    """2-``max_objects`` categories (1 if it is 1; ``min_objects``-``max_objects`` if given);
    often one repeated (superlatives exist).

    ``max_copies``: each category at most this often (None: no cap, the default scenes). With
    1 every object has its own category, so a block of the answer holds one region and the
    first region of an answer is not biased towards the lowest index (a block lists its
    regions in ascending order: with repeats, "always <region0>" is right far above chance).

    ``shared_colour``: probability that one coloured shape of the scene gets a mate of its
    colour and another shape (it takes the place of another object, so the count stays), so
    that its colour alone does not pick it out (see :func:`_colour_mate`).

    ``unique_colours``: coloured shapes of different categories never share a colour (draws
    that would are skipped), so the colour alone picks out every coloured shape: the image
    lookup forms on such scenes within a few hundred steps, where it stays at chance on the
    default ones (docs/scene-model-notes.md "Scenes where every colour is unique").

    ``one_colour``: probability that every coloured shape of the scene takes one colour, so
    that only the shape tells them apart (see :func:`_one_colour`).
    """
    vocab = split_categories(split)
    # integers(2, 7) at the default, so scenes of the default are unchanged by the options
    low = min(2, max_objects) if min_objects is None else min_objects
    n = int(rng.integers(low, max_objects + 1))
    cap = max_copies if max_copies is not None else max_objects
    cats: List[str] = []
    if split == "heldout" and rng.random() < 0.6:
        cats.append(HELDOUT_COLOUR_SHAPES[int(rng.integers(len(HELDOUT_COLOUR_SHAPES)))])
    if rng.random() < 0.6:
        pool = ([c for _, c in HELDOUT_SUPERLATIVES] if split == "heldout" and rng.random() < 0.7
                else list(vocab))
        cat = pool[int(rng.integers(len(pool)))]
        copies = min(int(rng.integers(2, 4)), cap - cats.count(cat))
        if not (unique_colours and _takes_a_colour(cat, cats)):
            cats += [cat] * copies
    while len(cats) < n:
        cat = vocab[int(rng.integers(len(vocab)))]
        # never rejects at the default cap and colours (no draw is lost); with unique colours
        # the photos alone leave room for every object count
        if cats.count(cat) < cap and not (unique_colours and _takes_a_colour(cat, cats)):
            cats.append(cat)
    # at most 1 + 3 forced ones, so the cut only acts below the default
    cats = cats[:max_objects]
    if shared_colour > 0 and rng.random() < shared_colour:  # no draw at 0: scenes as before
        _colour_mate(rng, cats, vocab, cap)
    if one_colour > 0 and rng.random() < one_colour:  # no draw at 0: scenes as before
        _one_colour(rng, cats, vocab, cap)
    return cats


def _takes_a_colour(cat: str, cats: Sequence[str]) -> bool:
    """Whether ``cat`` is a coloured shape whose colour another category of ``cats`` has."""
    colour = None if cat in PHOTOS else cat.split(" ")[0]
    return colour is not None and any(
        c != cat and c not in PHOTOS and c.split(" ")[0] == colour for c in cats)


def _colour_mate(rng: np.random.Generator, cats: List[str], vocab, cap: int) -> None:
    """Replace, in place, one object of ``cats`` by a shape of the same colour as one of its
    coloured shapes and another shape (a category the split shows, under the ``cap``).

    A curriculum knob for the shape in the lookup: where every colour is unique in the scene
    a model can pick "red circle" by its colour alone, and shape-only expressions ("the
    triangle") then fail (docs/scene-model-notes.md "The lookup per expression kind").
    Nothing changes when the scene has fewer than two objects, no coloured shape, or no mate is
    allowed.
    """
    coloured = [i for i, c in enumerate(cats) if c not in PHOTOS]
    if len(cats) < 2 or not coloured:
        return
    anchor = coloured[int(rng.integers(len(coloured)))]
    colour, shape = cats[anchor].split(" ")
    others = [i for i in range(len(cats)) if i != anchor]
    slot = others[int(rng.integers(len(others)))]
    kept = cats[:slot] + cats[slot + 1:]
    mates = [f"{colour} {s}" for s in SHAPES
             if s != shape and f"{colour} {s}" in vocab and kept.count(f"{colour} {s}") < cap]
    if mates:
        cats[slot] = mates[int(rng.integers(len(mates)))]


def _one_colour(rng: np.random.Generator, cats: List[str], vocab, cap: int) -> None:
    """Recolour, in place, every coloured shape of ``cats`` with the colour of one of them.

    Each keeps its shape where the split shows that category and the ``cap`` allows it,
    else takes another shape of that colour, else a photo (else it stays as it was). A
    curriculum knob for the shape in the lookup: a lookup that reads the colour alone sits
    at chance among such shapes (docs/scene-model-notes.md "The single-attribute plateau").
    Nothing changes when the scene has fewer than two coloured shapes.
    """
    coloured = [i for i, c in enumerate(cats) if c not in PHOTOS]
    if len(coloured) < 2:
        return
    colour = cats[coloured[int(rng.integers(len(coloured)))]].split(" ")[0]
    for i in coloured:
        kept = cats[:i] + cats[i + 1:]
        own = f"{colour} {cats[i].split(' ')[1]}"
        allowed = [c for c in [f"{colour} {s}" for s in SHAPES] + sorted(PHOTOS)
                   if c in vocab and kept.count(c) < cap]
        if own in allowed:
            cats[i] = own
        elif allowed:
            pool = [c for c in allowed if c not in PHOTOS] or allowed  # a shape before a photo
            cats[i] = pool[int(rng.integers(len(pool)))]


def check_size(size) -> None:
    """Raise :class:`InvalidRequestError` unless ``size`` (the square scene's side, pixels) is
    an int in :data:`MIN_SIZE`-:data:`MAX_SIZE`."""
    check_int(size, "scene size", MIN_SIZE, MAX_SIZE)


def check_max_copies(max_copies, name: str = "max_copies") -> None:
    """Raise :class:`InvalidRequestError` naming ``name`` unless ``max_copies`` is None (no
    cap) or, as :func:`check_max_objects` asks, an int in 1-:data:`MAX_OBJECTS`."""
    if max_copies is not None:
        check_max_objects(max_copies, name)


def check_colour_knobs(shared_colour, unique_colours: bool = False,
                       one_colour=0.0) -> None:
    """Raise :class:`InvalidRequestError` unless ``shared_colour`` and ``one_colour`` are
    rates in [0, 1], ``unique_colours`` a bool, and both rates 0 with ``unique_colours`` (a
    shared colour and unique colours contradict each other)."""
    check_rate(shared_colour, "shared_colour")
    check_rate(one_colour, "one_colour")
    if not isinstance(unique_colours, bool):
        raise InvalidRequestError(f"unique_colours must be True or False, got {unique_colours!r}")
    for name, rate in (("shared_colour", shared_colour), ("one_colour", one_colour)):
        if unique_colours and rate > 0:
            raise InvalidRequestError(f"unique_colours and {name} > 0 contradict each other: "
                                      "choose one")


def check_min_objects(min_objects, max_objects: int, name: str = "min_objects") -> None:
    """Raise :class:`InvalidRequestError` naming ``name`` unless ``min_objects`` is None (the
    default count) or an int in 1-``max_objects``."""
    if min_objects is not None:
        check_max_objects(min_objects, name)
        if min_objects > max_objects:
            raise InvalidRequestError(f"{name} must be <= the most objects ({max_objects}), "
                                      f"got {min_objects!r}")


def check_max_objects(max_objects, name: str = "max_objects") -> None:
    """Raise :class:`InvalidRequestError` naming ``name`` (the argument or CLI flag) unless
    ``max_objects`` is an int in 1-:data:`MAX_OBJECTS`."""
    check_int(max_objects, name, 1, MAX_OBJECTS)


def check_rate(rate, name: str) -> None:
    """Raise :class:`InvalidRequestError` unless ``rate`` is a probability: an int or float
    in [0, 1] (not a bool, not NaN). Shared by the scene and record options."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise InvalidRequestError(f"{name} must be in [0, 1], got {rate!r}")


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


def generate_scene(seed: int, split: str = "train", size: int = 224,
                   max_objects: int = MAX_OBJECTS, max_copies: Optional[int] = None,
                   min_objects: Optional[int] = None, shared_colour: float = 0.0,
                   unique_colours: bool = False, one_colour: float = 0.0) -> Scene:
    """One procedural scene, deterministic per its arguments.

    Args:
        seed: non-negative int. split: ``"train"`` or ``"heldout"``.
        size: image side in pixels (≥ 112 so that objects fit).
        max_objects: at most this many objects, 1-6 (a curriculum knob: fewer rows to bind;
            the default 6 gives the same scenes as before the option existed).
        max_copies: each category at most this often, 1-6 (None, the default: as before;
            1: every object of its own category, a curriculum knob, see
            :func:`_choose_categories`).
        min_objects: at least this many categories are drawn, 1-``max_objects`` (None, the
            default: 2, as before; ``max_objects`` too: one list length, a curriculum knob).
            A scene without room left for an object still gets fewer (rare below 4 objects
            at 112 px).
        shared_colour: probability in [0, 1] that a coloured shape shares its colour with
            another shape of the scene (0, the default: as before; a curriculum knob, see
            :func:`_choose_categories`).
        unique_colours: coloured shapes of different categories never share a colour
            (False, the default: as before; a curriculum knob, see
            :func:`_choose_categories`; not with ``shared_colour`` above 0).
        one_colour: probability in [0, 1] that every coloured shape of the scene has one
            colour (0, the default: as before; a curriculum knob, see
            :func:`_choose_categories`; not with ``unique_colours``).

    Returns:
        :class:`Scene`; object boxes are exact int pixel boxes of the pasted pixels.

    Raises:
        InvalidRequestError: a seed that is not an integer >= 0, bad split, size,
            ``max_objects``, ``max_copies``, ``min_objects`` or ``shared_colour``;
            ``unique_colours`` with ``shared_colour``.
        VLXSeekError: scikit-image missing.
    """
    from PIL import Image

    check_int(seed, "seed")
    _check_split(split)
    check_size(size)
    check_max_objects(max_objects)
    check_max_copies(max_copies)
    check_min_objects(min_objects, max_objects)
    check_colour_knobs(shared_colour, unique_colours, one_colour)
    rng = np.random.default_rng([int(seed), SPLITS[split]])
    assets = load_assets()
    image = _background(rng, size)
    objects: List[SceneObject] = []
    placed: List[np.ndarray] = []
    # object sides scale with the image (28–90 px at 224 px), so smaller scenes look alike
    min_side = max(8, round(MIN_SIDE * size / 224))
    max_side = max(min_side, round(MAX_SIDE * size / 224))
    for cat in _choose_categories(rng, split, max_objects, max_copies, min_objects,
                                  shared_colour, unique_colours, one_colour):
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
