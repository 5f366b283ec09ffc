"""Records of procedural scenes: referring expressions, per-scene training records, and the
on-disk data set (``vlxseek make-scenes``); the scenes themselves come from
:mod:`vlxseek_core.training.scenes`.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..answer_format import format_answer
from .record_helpers import written_whole
from .records import (REGION_REF, TrainingRecord, build_candidates, check_int, count_sample,
                      detect_sample, jitter_distractors, with_article)
from .scene_options import check_record_options
from .scenes import (MAX_OBJECTS, SPLITS, SUPERLATIVES, Scene, check_colour_knobs,
                     check_max_copies, check_max_objects, check_min_objects, check_size,
                     generate_scene, is_heldout_phrase, load_assets, names_unseen_object,
                     split_categories)


@functools.lru_cache(maxsize=1)
def category_aliases() -> Dict[str, str]:
    """Every scene category (both splits) → its alias: a lowercase word that the Qwen2 BPE
    vocabulary holds as one token bare and space-prefixed, unrelated to the scenes' words and
    to the prompts' task texts (``make-scenes --detect-all-alias``). Fixed: drawn once from
    :func:`~.text_regions.random_words` with seed 0, in the order of the categories."""
    import re

    from .. import prompts
    from .text_regions import random_words

    categories = list(dict.fromkeys(split_categories("heldout") + split_categories("train")))
    taken = {w for c in categories for w in c.split()}
    taken |= {w.lower() for name, text in vars(prompts).items()
              if name.endswith("_TEMPLATE") for w in re.findall(r"[A-Za-z]+", text)}
    pool = [w for w in random_words(2 * len(categories), seed=0) if w not in taken]
    return dict(zip(categories, pool))


def box_keys(boxes) -> Dict[str, np.ndarray]:
    """The keys superlatives compare, of xyxy pixel ``boxes`` ``[N, 4]``: ``x`` and ``y``
    (centre, pixels) and ``area`` (pixels²), each float64 ``[N]``."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return {"x": (b[:, 0] + b[:, 2]) / 2, "y": (b[:, 1] + b[:, 3]) / 2,
            "area": (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])}


def clearly_apart(key: str, a: float, b: float, side: float) -> bool:
    """Whether two values of :func:`box_keys` ``[key]`` tell their boxes apart as clearly as
    a superlative's target must be: centres at least 4 % of the image ``side`` (pixels)
    apart, areas at least 1.4× apart."""
    if key == "area":
        return min(a, b) * 1.4 <= max(a, b)
    return abs(a - b) >= 0.04 * side


def superlative_targets(scene: Scene, category: str) -> Dict[str, int]:
    """Superlative → index into ``scene.objects``, among the objects of ``category`` (≥ 2),
    only when the extreme is clear (:func:`clearly_apart`)."""
    idx = [i for i, o in enumerate(scene.objects) if o.category == category]
    if len(idx) < 2:
        return {}
    keys = box_keys([scene.objects[i].box for i in idx])
    out = {}
    for sup, key, low in (("leftmost", "x", True), ("rightmost", "x", False),
                          ("topmost", "y", True), ("bottommost", "y", False),
                          ("smallest", "area", True), ("largest", "area", False)):
        v = keys[key] if low else -keys[key]
        order = np.argsort(v, kind="stable")
        if clearly_apart(key, keys[key][order[0]], keys[key][order[1]], scene.image.shape[1]):
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
                  rejection_rate: float = 0.2, detect_extra_absent: float = 0.5,
                  max_candidates: int = 12, max_distractors: Optional[int] = None,
                  refer_per_scene: int = 2,
                  tasks: Sequence[str] = ("detect", "refer", "count", "caption"),
                  heldout_preference: float = 0.7,
                  detect_all_order: str = "leftmost",
                  detect_all_article: float = 0.0,
                  absent_near: float = 0.0,
                  detect_all_alias: float = 0.0,
                  refer_kinds: Optional[Sequence[str]] = None) -> List[TrainingRecord]:
    """Training records of one scene, sharing one candidate list (GT + distractors, shuffled).

    Per scene: one ``detect`` (rules of :func:`~.records.detect_sample`; a query of present
    categories names one absent category too with probability ``detect_extra_absent``),
    ``refer_per_scene`` ``refer`` (distinct expressions; absent with probability
    ``rejection_rate``; in the held-out split a held-out phrasing is preferred with probability
    ``heldout_preference``),
    one ``count`` (plural category, blocks + number, ``0`` with the rejection block when
    absent) and one ``caption`` (one object → ``"a red circle"``). Records of the train split
    never contain a held-out phrase. ``meta`` holds ``rejection``, ``heldout_phrase``,
    ``objects`` (``seen`` or ``unseen``: :func:`_objects_group`), for refer the expression
    ``kind``, and for a detect or refer record that names an absent
    target ``near_miss``: each absent label of the answer → :func:`near_miss_kind` of its
    category (rejection accuracy per kind, :mod:`~.evaluate`).

    ``detect_all_order``: the order of the categories in a ``detect_all`` answer, ``leftmost``
    (of their leftmost instance: the answer is a function of the scene) or ``random`` (as in
    ``make-text-regions``: then the first word is any present category, and a model learns it
    by reading whichever row it attends to, not by comparing every row's box first).
    ``detect_all_article``: probability that a ``detect_all`` label is written with an article
    (``<ground>the red circle</ground>``). A curriculum option: the label's first word then is
    the space-prefixed BPE token (`` red``), as in every ``refer`` expression, whereas a bare
    label starts with ``red``; a lookup trained on bare labels alone keys on the bare token and
    misses `` red`` (docs/scene-model-notes.md "The lookup keys on the bare token").

    ``detect_all_alias``: probability that a ``detect_all`` record names every category by its
    one-token alias (:func:`category_aliases`: ``<ground>card</ground>`` for "red circle")
    instead of its name. A curriculum option: a word for an object's whole look (colour and
    shape) beside the two-word names brought the colour-shape lookup on long lists sooner in
    the sandbox (docs/scene-model-notes.md "The single-attribute plateau"); not for held-out
    records meant to score the names.

    ``refer_kinds``: the expression kinds a present ``refer`` target is drawn from (of
    :data:`~.scene_options.REFER_KINDS`; ``None``: all). A curriculum option for one kind, such as
    ``superlative``. A scene with no present target of those kinds gives only the absent
    ``refer`` records drawn at ``rejection_rate`` (without ``refer_kinds`` such a scene's
    ``refer`` records are all absent ones).

    ``absent_near``: probability that the absent names of a ``detect`` record, and an absent
    ``refer`` expression, are near misses (:func:`near_miss_categories`: "red square" beside a
    red circle, "blue circle" beside a green one), where the scene has any; the hard negatives
    of OVDEval. Then the scene alone does not tell a phrase of the query: a model that writes
    the colour-shape it sees instead of the one asked is wrong.

    Distractors fill the room left by the objects (at least 2 where there is room), at most
    ``max_distractors`` (None: no cap; 0: the candidates are exactly the objects).

    Raises:
        InvalidRequestError: an option :func:`~.scene_options.check_record_options` refuses, or
            ``max_candidates`` smaller than the scene's number of objects.
    """
    check_record_options(rejection_rate=rejection_rate, detect_extra_absent=detect_extra_absent,
                         max_candidates=max_candidates, max_distractors=max_distractors,
                         refer_per_scene=refer_per_scene, tasks=tasks,
                         heldout_preference=heldout_preference, detect_all_order=detect_all_order,
                         detect_all_article=detect_all_article, absent_near=absent_near,
                         detect_all_alias=detect_all_alias, refer_kinds=refer_kinds)
    gt = np.asarray([o.box for o in scene.objects], np.float64).reshape(-1, 4)
    room = max_candidates - len(gt)
    n_dis = int(rng.integers(min(2, max(room, 0)), max(room, 0) + 1))
    if max_distractors is not None:  # drawn first, so the record stream is the same
        n_dis = min(n_dis, max_distractors)
    size = (scene.image.shape[1], scene.image.shape[0])
    boxes, g2c = build_candidates(gt, jitter_distractors(gt, size, rng, n_dis), rng,
                                  max_candidates)
    present: Dict[str, List[int]] = {}
    for i, o in enumerate(scene.objects):
        present.setdefault(o.category, []).append(g2c[i])
    train = scene.split == "train"
    absent = list(scene.absent_categories)
    near = near_miss_categories(scene) if absent_near > 0 else []
    out: List[Tuple[str, str, str, List[int], Dict[str, Any]]] = []
    for task in tasks:
        if task == "detect":
            # drawn only with near misses: records without them unchanged
            names = near if near and rng.random() < absent_near else absent
            out.append(("detect",) + _with_list(detect_sample(
                present, names, rng, rejection_rate, extra_absent_prob=detect_extra_absent)))
        elif task == "count":
            out.append(("count",) + _with_list(count_sample(present, absent, rng,
                                                            rejection_rate)))
        elif task == "detect_all" and scene.objects:
            # every object, one block per category; categories in the order of their leftmost
            # instance so that the answer is a function of the scene (dense region supervision)
            left = {}
            for o in scene.objects:
                left[o.category] = min(left.get(o.category, o.box[0]), o.box[0])
            order = sorted(left, key=left.get)
            if detect_all_order == "random":  # drawn only here: leftmost records unchanged
                order = [order[i] for i in rng.permutation(len(order))]
            labels = list(order)
            if detect_all_alias > 0 and rng.random() < detect_all_alias:  # drawn only here
                labels = [category_aliases()[c] for c in order]
            elif detect_all_article > 0:  # drawn only here: records without it unchanged
                labels = [f"the {c}" if rng.random() < detect_all_article else c
                          for c in order]
            blocks = [(lab, sorted(present[c])) for lab, c in zip(labels, order)]
            out.append(("detect_all", "", format_answer(blocks), [], {"rejection": False}))
        elif task == "caption" and scene.objects:
            i = int(rng.integers(len(scene.objects)))
            out.append(("caption", "", with_article(scene.objects[i].category), [g2c[i]], {}))
        elif task == "refer":
            out += [("refer", e, a, [], m) for e, a, m in _refers(
                scene, g2c, rng, rejection_rate, refer_per_scene, heldout_preference,
                near, absent_near, refer_kinds)]
    records = []
    if "single" in tasks:
        records += single_region_records(scene, image_name, rng)
    c2o = {c: i for i, c in enumerate(g2c)}
    for k, (task, query, answer, region, meta) in enumerate(out):
        meta["heldout_phrase"] = is_heldout_phrase(query + answer)
        meta["objects"] = _objects_group(scene, c2o, query + answer, region)
        labels = _absent_labels(scene, task, query, meta)
        if labels:  # per absent label, for rejection accuracy by near-miss kind
            meta["near_miss"] = {lab: near_miss_kind(scene, _absent_category(scene, lab))
                                 for lab in labels}
        if train and meta["heldout_phrase"]:  # cannot happen by construction; never let it
            raise AssertionError(f"held-out phrase in train record: {query!r} {answer!r}")
        records.append(TrainingRecord(f"{image_name}:{task}:{k}", image_name, task, query,
                                      answer, boxes, region_indices=region, meta=meta))
    return records


def _objects_group(scene: Scene, c2o: Dict[int, int], text: str, region: Sequence[int]) -> str:
    """``"unseen"`` when a record names or grounds an object of a colour-shape kind that no
    train image shows (:func:`~.scenes.names_unseen_object`), else ``"seen"``. Grounded
    counts too: "the yellow one" or "the triangle" may pick out a yellow triangle without
    naming it, and answering it tests composition as much as naming it does. ``c2o``:
    candidate index → object index; ``region``: the record's region indices (caption)."""
    grounded = [int(m) for m in REGION_REF.findall(text)] + list(region)
    kinds = {scene.objects[c2o[c]].category for c in grounded if c in c2o}
    return "unseen" if names_unseen_object(text) or any(map(names_unseen_object, kinds)) \
        else "seen"


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


def near_miss_kind(scene: Scene, category: str) -> str:
    """What an absent ``category`` shares with the scene's coloured shapes: ``"colour"``
    ("red square" beside a red circle), ``"shape"`` ("blue circle" beside a red circle),
    ``"colour+shape"`` (beside a red circle and a blue square) or ``"none"``. Photo objects
    ("cat") have neither a colour nor a shape to share. The split tells a model that keys on
    one attribute (it rejects the names that share neither) from one that reads the phrase."""
    words = set(category.split())
    colour = bool(words & {o.colour for o in scene.objects if o.colour})
    shape = bool(words & {o.shape for o in scene.objects if o.colour})
    return "colour+shape" if colour and shape else "colour" if colour else (
        "shape" if shape else "none")


def near_miss_categories(scene: Scene) -> List[str]:
    """The scene's absent categories that share a colour or a shape with a present object
    (:func:`near_miss_kind` not ``"none"``): hard negatives. A scene of photos alone has
    none."""
    return [c for c in scene.absent_categories if near_miss_kind(scene, c) != "none"]


def _absent_labels(scene: Scene, task: str, query: str, meta: Dict[str, Any]) -> List[str]:
    """The labels of a record's answer that name an absent target: a ``detect`` query's
    absent names, an absent ``refer`` expression ("the leftmost red square")."""
    if task == "detect":
        return [n for n in query.split("; ") if n in scene.absent_categories]
    if task == "refer" and meta.get("rejection"):
        return [query]
    return []


def _absent_category(scene: Scene, label: str) -> str:
    """The absent category an absent label names: the longest one it ends with."""
    names = [c for c in scene.absent_categories if label == c or label.endswith(f" {c}")]
    return max(names, key=len)


def _refers(scene, g2c, rng, rejection_rate, n, heldout_preference, near=(), absent_near=0.0,
            kinds=None):
    """``n`` distinct ``(expression, answer, meta)`` refer samples of a scene; an absent one
    names a near miss (``near``) with probability ``absent_near``; present targets only of
    ``kinds`` (``None``: any). With ``kinds``, a draw that finds no present target of them
    ends the list; without, it names an absent target instead."""
    options = [(e, i, k) for e, i, k in referring_expressions(scene)
               if not (scene.split == "train" and is_heldout_phrase(e))
               and (kinds is None or i is None or k in kinds)]
    chosen = []
    for _ in range(n):
        absent = [o for o in options if o[1] is None]
        found = [o for o in options if o[1] is not None]
        draw_absent = rng.random() < rejection_rate  # drawn first, as always
        if kinds is not None and not found and not draw_absent:
            break  # no present target of those kinds: no record, not a rejection
        pool = absent if (draw_absent or not found) else found
        if not pool:
            break
        if pool is absent and near and absent_near > 0:  # drawn only with near misses
            close = [o for o in pool if any(o[0].endswith(f" {c}") for c in near)]
            if close and rng.random() < absent_near:
                pool = close
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


def scene_sample(seed: int, split: str = "train", size: int = 224,
                 max_objects: int = MAX_OBJECTS, max_copies: Optional[int] = None,
                 min_objects: Optional[int] = None, shared_colour: float = 0.0,
                 unique_colours: bool = False, one_colour: float = 0.0, **record_kwargs
                 ) -> Tuple[Scene, List[TrainingRecord]]:
    """A scene and its records from a seed, without touching the disk (infinite data).

    The records' randomness is its own stream of ``(seed, split)``, so the scene does not
    depend on ``record_kwargs`` (see :func:`scene_records`); the image name is
    :func:`scene_image_name`. ``max_objects``, ``max_copies``, ``min_objects``,
    ``shared_colour``, ``unique_colours``, ``one_colour``: see
    :func:`~.scenes.generate_scene`.
    """
    scene = generate_scene(seed, split, size, max_objects, max_copies, min_objects,
                           shared_colour, unique_colours, one_colour)
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


MAX_WORKERS = 256
"""Most processes :func:`make_scenes` starts (each holds the decoded photos)."""


def make_scenes(out_dir: str, num_train: int, num_heldout: int, seed: int = 0, size: int = 224,
                workers: Optional[int] = None, progress: bool = True, **record_kwargs
                ) -> Dict[str, Any]:
    """Write ``images/*.png``, ``train.jsonl``, ``heldout.jsonl`` and ``scenes_heldout.json``.

    Scene ``i`` of a split has seed ``seed * 10_000_000 + i`` (so ``num_* < 10**7``);
    ``record_kwargs`` go to :func:`scene_sample` (``max_objects``, ``max_copies``,
    ``min_objects``, ``shared_colour``, ``unique_colours``, ``one_colour``) and
    :func:`scene_records` (``max_candidates``, ``max_distractors``, ``rejection_rate``, …).
    Work is spread over ``workers`` processes (default: all CPU cores).

    Raises:
        InvalidRequestError: counts outside ``[0, 10**7)``, a seed or ``workers`` (at most
            :data:`MAX_WORKERS`) that is not an integer >= 0, ``size`` outside
            112-4096 px, a bad scene option (:func:`~.scenes.generate_scene`) or record option
            (:func:`~.scene_options.check_record_options`): each before anything is written.

    Returns:
        summary: records per split, wall seconds, mean generation ms per scene (PNG excluded).
    """
    import multiprocessing

    for name, count in (("num_train", num_train), ("num_heldout", num_heldout)):
        check_int(count, name, 0, 10**7 - 1)
    check_int(seed, "seed")
    if workers is not None:  # 0 or None: every core; a cap, as each worker is a process
        check_int(workers, "workers", 0, MAX_WORKERS)
    # every option is checked here, before a file is written or a worker starts
    check_size(size)
    scene_options = ("max_objects", "max_copies", "min_objects", "shared_colour",
                     "unique_colours", "one_colour")
    max_objects = record_kwargs.get("max_objects", MAX_OBJECTS)
    check_max_objects(max_objects)
    check_max_copies(record_kwargs.get("max_copies"))
    check_min_objects(record_kwargs.get("min_objects"), max_objects)
    check_colour_knobs(record_kwargs.get("shared_colour", 0.0),
                       record_kwargs.get("unique_colours", False),
                       record_kwargs.get("one_colour", 0.0))
    check_record_options(max_objects=max_objects,
                         **{k: v for k, v in record_kwargs.items() if k not in scene_options})
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    load_assets()  # load once before forking: workers inherit the decoded photos
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1)
    summary: Dict[str, Any] = {"workers": workers}
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    # every file is written as a part and renamed when all are done, train.jsonl last (the
    # stack unwinds in reverse): its existence means the whole set is there, which is what
    # the recipe script checks before it writes a set again
    with contextlib.ExitStack() as files:
        if pool:  # its exit terminates the workers, whose jobs are all done by then
            files.enter_context(pool)
        part = {name: files.enter_context(written_whole(os.path.join(out_dir, name)))
                for name in ("train.jsonl", "heldout.jsonl", "scenes_heldout.json")}
        for split, num in (("train", num_train), ("heldout", num_heldout)):
            t0, gen, gt, n_records = time.perf_counter(), 0.0, {}, 0
            jobs = [(seed * 10_000_000 + i, split, size, out_dir, record_kwargs)
                    for i in range(num)]
            results = (pool.imap(_work, jobs, chunksize=16) if pool else map(_work, jobs))
            with open(part[f"{split}.jsonl"], "w", encoding="utf-8") as fh:
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
        with open(part["scenes_heldout.json"], "w") as fh:
            json.dump(gt, fh)  # the held-out split's, the last one generated
    return summary
