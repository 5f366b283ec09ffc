"""Helpers every training-record source shares (COCO, RefCOCO, procedural scenes).

* Candidate regions: ground-truth boxes plus distractors, shuffled (:func:`build_candidates`),
  distractors that never overlap a ground-truth box much (:func:`jitter_distractors`),
  :func:`box_iou`.
* Answer builders for ``detect`` and ``count`` samples with rejection
  (:func:`detect_sample`, :func:`count_sample`) and the small English helpers they use.
* Data files written whole or not at all (:func:`written_whole`); integer options
  (:func:`check_int`).

Every answer is made with :mod:`vlxseek_core.answer_format`; boxes are xyxy float pixels.
:mod:`~vlxseek_core.training.records` re-exports all of them.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np

from ..answer_format import format_answer
from ..errors import InvalidRequestError
from ..tokens import MAX_REGIONS


# ------------------------------------------------------------------------------- numbers

def check_int(value: Any, name: str, low: int = 0, high: Any = None) -> int:
    """``value`` as an int in ``[low, high]`` (``high`` None: no upper bound): a Python or
    numpy integer, not a bool, a float or a string. Seeds and counts of the record makers are
    checked with it, so that numpy's own errors (a negative seed) never leave them.

    Raises:
        InvalidRequestError: naming ``name`` and the bounds.
    """
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) \
        and low <= value and (high is None or value <= high)
    if not ok:
        bounds = f">= {low}" if high is None else f"in {low}-{high}"
        raise InvalidRequestError(f"{name} must be an integer {bounds}, got {value!r:.40}")
    return int(value)


# ---------------------------------------------------------------------------------- files

@contextlib.contextmanager
def written_whole(path: str) -> Iterator[str]:
    """Yield ``path + ".part"`` to write; it becomes ``path`` only when the block ends
    without an error (``os.replace``, atomic on one file system).

    A data set or model file's existence is what a resumable run checks
    (``scripts/train_small_model.sh`` writes each data set once and skips a phase whose
    ``vlxseek_training.json`` exists), so a writer stopped half-way (a session's end, a kill)
    must leave no file at ``path``. On an error the part file is removed and the error goes on.
    """
    part = f"{path}.part"
    try:
        yield part
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(part)
        raise
    os.replace(part, path)


# ---------------------------------------------------------------------------------- boxes

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` ``[N, 4]`` and ``b`` ``[M, 4]`` → float64 ``[N, M]``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def build_candidates(gt_boxes, distractor_boxes, rng: np.random.Generator,
                     max_boxes: int = MAX_REGIONS) -> Tuple[np.ndarray, List[int]]:
    """Candidate regions = ground truth + distractors, shuffled, at most ``max_boxes``.

    Distractors are dropped at random when there are too many; ground-truth boxes never are.

    Args:
        gt_boxes: ``[G, 4]`` xyxy pixels. distractor_boxes: ``[D, 4]`` xyxy pixels.
        rng: the random generator (shuffle and the choice of kept distractors).
        max_boxes: at most this many candidates (≤ 100, the region tokens that exist).

    Returns:
        ``(boxes float32 [N, 4], gt_to_candidate)`` where ``boxes[gt_to_candidate[i]]`` is
        ground-truth box ``i``: remap the answer's region indices with it.

    Raises:
        InvalidRequestError: ``max_boxes`` outside ``[1, 100]`` or ``G > max_boxes``.
    """
    if not 1 <= max_boxes <= MAX_REGIONS:
        raise InvalidRequestError(f"max_boxes must be in [1, {MAX_REGIONS}], got {max_boxes}")
    gt = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    dis = np.asarray(distractor_boxes, np.float32).reshape(-1, 4)
    if len(gt) > max_boxes:
        raise InvalidRequestError(f"{len(gt)} ground-truth boxes exceed max_boxes={max_boxes}")
    dis = dis[rng.permutation(len(dis))[:max_boxes - len(gt)]]
    allb = np.concatenate([gt, dis])
    perm = rng.permutation(len(allb))  # candidate j is allb[perm[j]]
    position = np.empty(len(allb), np.int64)
    position[perm] = np.arange(len(allb))
    return allb[perm], [int(p) for p in position[:len(gt)]]


def jitter_distractors(gt_boxes, image_size: Tuple[int, int], rng: np.random.Generator,
                       n: int, max_iou: float = 0.5, min_size: float = 4.0) -> np.ndarray:
    """Up to ``n`` distractor boxes: shifted/scaled ground-truth boxes and random boxes.

    Every box lies inside the image (clipped), is at least ``min_size`` px wide and high and
    has IoU < ``max_iou`` with every ground-truth box (so it is never a correct answer).

    Args:
        gt_boxes: ``[G, 4]`` xyxy pixels (may be empty: random boxes only).
        image_size: ``(width, height)`` of the image in pixels.
        rng: the random generator.

    Returns:
        float32 ``[M, 4]``, ``M <= n`` (fewer only when the image leaves no room), coordinates
        rounded to 0.1 px.
    """
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    width, height = float(image_size[0]), float(image_size[1])
    out = np.zeros((0, 4))
    for _ in range(4):  # vectorised rejection sampling, a few rounds at most
        if len(out) >= n or n <= 0:
            break
        m = 4 * (n - len(out)) + 8
        side = np.array([width, height, width, height])
        rand_wh = rng.uniform(0.05, 0.6, (m, 2)) * side[:2]
        rand_xy = rng.uniform(0, 1, (m, 2)) * (side[:2] - rand_wh)
        cand = np.concatenate([rand_xy, rand_xy + rand_wh], 1)
        if len(gt):  # half of them: a GT box moved by 30-100 % of its size and rescaled
            src = gt[rng.integers(0, len(gt), m // 2)]
            wh = (src[:, 2:] - src[:, :2]) * rng.uniform(0.5, 1.8, (m // 2, 2))
            shift = (src[:, 2:] - src[:, :2]) * rng.uniform(0.3, 1.0, (m // 2, 2))
            centre = (src[:, :2] + src[:, 2:]) / 2 + shift * rng.choice([-1, 1], (m // 2, 2))
            cand[:m // 2] = np.concatenate([centre - wh / 2, centre + wh / 2], 1)
        cand = np.round(np.clip(cand, 0, side), 1)
        ok = (cand[:, 2] - cand[:, 0] >= min_size) & (cand[:, 3] - cand[:, 1] >= min_size)
        if len(gt):
            ok &= box_iou(cand, gt).max(1) < max_iou
        cand = cand[ok]
        out = np.concatenate([out, cand[rng.permutation(len(cand))]])[:n]
    return out.astype(np.float32)


# ------------------------------------------------------------------------- answer builders

_PLURAL_IRREGULAR = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep",
                     "skis": "skis", "scissors": "scissors", "glasses": "glasses",
                     "skateboard": "skateboards", "child": "children", "man": "men",
                     "woman": "women", "leaf": "leaves", "shelf": "shelves"}


def plural(phrase: str) -> str:
    """English plural of a noun phrase's last word (``"red circle"`` → ``"red circles"``)."""
    head, _, word = phrase.strip().rpartition(" ")
    low = word.lower()
    if low in _PLURAL_IRREGULAR:
        word = _PLURAL_IRREGULAR[low]
    elif low.endswith(("s", "x", "z", "ch", "sh")):
        word += "es"
    elif low.endswith("y") and low[-2:-1] not in ("a", "e", "i", "o", "u"):
        word = word[:-1] + "ies"
    else:
        word += "s"
    return f"{head} {word}" if head else word


def with_article(phrase: str) -> str:
    """The short caption of a category: ``"a dog"``, ``"an astronaut"``."""
    phrase = phrase.strip()
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _rejection_draw(task: str, present: Mapping[str, Sequence[int]], absent: Sequence[str],
                    rng: np.random.Generator, rejection_rate: float
                    ) -> Tuple[List[str], List[str], bool]:
    """``(present names, absent names, reject)``: a rejection sample with probability
    ``rejection_rate`` or when nothing is present, and only when something is absent.

    Raises:
        InvalidRequestError: both ``present`` and ``absent`` are empty.
    """
    names_p, names_a = list(present), list(absent)
    if not names_p and not names_a:
        raise InvalidRequestError(f"{task} sample needs a present or an absent category")
    reject = (rng.random() < rejection_rate or not names_p) and bool(names_a)
    return names_p, names_a, reject


def detect_sample(present: Mapping[str, Sequence[int]], absent: Sequence[str],
                  rng: np.random.Generator, rejection_rate: float = 0.2, max_names: int = 3,
                  extra_absent_prob: float = 0.5) -> Tuple[str, str, Dict[str, Any]]:
    """Query, answer and meta of one ``detect`` sample.

    With probability ``rejection_rate`` the query names 1..``max_names`` absent categories and
    every block is the rejection form; otherwise it names 1..``max_names`` present ones and,
    with probability ``extra_absent_prob`` (room permitting), one absent category whose block
    is the rejection form. Falls back to the other kind when one side is empty.

    Args:
        present: category name → candidate indices of its instances (non-empty lists).
        absent: category names not in the image.

    Raises:
        InvalidRequestError: both ``present`` and ``absent`` are empty.
    """
    names_p, names_a, reject = _rejection_draw("detect", present, absent, rng, rejection_rate)
    if reject:
        k = int(rng.integers(1, min(max_names, len(names_a)) + 1))
        names = [names_a[i] for i in rng.choice(len(names_a), k, replace=False)]
    else:
        k = int(rng.integers(1, min(max_names, len(names_p)) + 1))
        names = [names_p[i] for i in rng.choice(len(names_p), k, replace=False)]
        if names_a and k < max_names and rng.random() < extra_absent_prob:
            names.append(names_a[int(rng.integers(len(names_a)))])
            names = [names[i] for i in rng.permutation(len(names))]
    blocks = [(n, sorted(present.get(n, ()))) for n in names]
    return "; ".join(names), format_answer(blocks), {"rejection": reject}


def count_sample(present: Mapping[str, Sequence[int]], absent: Sequence[str],
                 rng: np.random.Generator, rejection_rate: float = 0.2
                 ) -> Tuple[str, str, Dict[str, Any]]:
    """Query (plural category), answer (its block, then the number) and meta of ``count``.

    An absent category (probability ``rejection_rate``, or when nothing is present) gives the
    rejection block and ``0``.

    Raises:
        InvalidRequestError: both ``present`` and ``absent`` are empty.
    """
    names_p, names_a, reject = _rejection_draw("count", present, absent, rng, rejection_rate)
    pool = names_a if reject else names_p
    name = pool[int(rng.integers(len(pool)))]
    idx = sorted(present.get(name, ()))
    query = plural(name)
    return query, format_answer([(query, idx)], count=len(idx)), {"rejection": reject}
