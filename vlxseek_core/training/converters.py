"""Training records from public annotation formats (COCO detection, RefCOCO REC, LLaVA VQA).

Only JSON is read (never pickle). Candidate regions are the ground-truth boxes plus
distractors, shuffled by :func:`~.records.build_candidates`; distractors are either jittered /
random boxes (:func:`~.records.jitter_distractors`) or proposals from a file in the reference's
own format (JSONL or a JSON list of ``{"image": name, "bbox_list": [...], "score_list": [...]}``)
with every proposal of IoU ≥ 0.5 to a ground-truth box removed, so that a distractor is never
a correct answer.

LLaVA-format general VQA becomes ``vqa`` records without boxes (stage 2's data against
forgetting; the prompt then has no region line, spec §3.2).

Structural problems (unreadable file, missing keys, a malformed entry: named by file and
entry, :mod:`.annotation_files`) raise
:class:`~vlxseek_core.errors.InvalidRequestError`; single unusable annotations (crowd, boxes
under 1 px, empty expressions, more ground truth than ``max_boxes``) are skipped and counted in
a log message.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..answer_format import MARKUP, format_answer
from ..errors import InvalidRequestError
from ..tokens import IMAGE_PLACEHOLDER, MAX_REGIONS
from .annotation_files import (as_object, box4, entry_errors, entry_size, image_name,
                               load_proposals, read_json_or_jsonl)
from .records import (TrainingRecord, box_iou, build_candidates, count_sample, detect_sample,
                      jitter_distractors, with_article)

LOGGER = logging.getLogger("vlxseek.training")
COCO_TASKS = ("detect", "count", "caption")
DISTRACTOR_MODES = ("jitter", "proposals")
SeedLike = Union[int, np.random.Generator]


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _clean_boxes(boxes: np.ndarray, size: Tuple[float, float]) -> np.ndarray:
    """Clip to the image; drop non-finite boxes and boxes under 1 px."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    boxes = boxes[np.isfinite(boxes).all(1)]
    boxes = np.clip(boxes, 0, [size[0], size[1], size[0], size[1]])
    return boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]


class _Distractors:
    """Distractor boxes for one image from the chosen source."""

    def __init__(self, mode: str, proposals_path: Optional[str], num: int):
        if mode not in DISTRACTOR_MODES:
            raise InvalidRequestError(
                f"distractors must be one of {DISTRACTOR_MODES}, got {mode!r}")
        if mode == "proposals" and not proposals_path:
            raise InvalidRequestError("distractors='proposals' needs a proposals file")
        self.mode, self.num, self.missing = mode, num, 0
        self.proposals = load_proposals(proposals_path) if mode == "proposals" else {}

    def __call__(self, image: str, gt: np.ndarray, size, rng) -> np.ndarray:
        props = self.proposals.get(image, self.proposals.get(os.path.basename(image)))
        if self.mode == "jitter" or props is None:
            self.missing += self.mode == "proposals"  # falls back to jitter, reported once
            return jitter_distractors(gt, size, rng, self.num)
        props = _clean_boxes(props, size)
        if len(gt):
            props = props[box_iou(props, gt).max(1) < 0.5]
        return props

    def report(self) -> None:
        if self.missing:
            LOGGER.warning("%d images had no proposals; jittered distractors were used",
                           self.missing)


def _check_max_boxes(max_boxes: int) -> None:
    if not 1 <= max_boxes <= MAX_REGIONS:
        raise InvalidRequestError(f"max_boxes must be in [1, {MAX_REGIONS}], got {max_boxes}")


def coco_to_records(instances_json_path: str, seed: SeedLike = 0, *,
                    rejection_rate: float = 0.2, tasks: Sequence[str] = COCO_TASKS,
                    distractors: str = "jitter", proposals_path: Optional[str] = None,
                    max_boxes: int = MAX_REGIONS, num_distractors: int = 10,
                    samples_per_image: int = 1, max_names: int = 3) -> List[TrainingRecord]:
    """COCO ``instances_*.json`` → ``detect`` / ``count`` / ``caption`` records.

    Per image and per round (``samples_per_image`` rounds, each with its own candidate
    shuffle) one record per task: **detect** (:func:`~.records.detect_sample`: 1–``max_names``
    categories, a rejection sample with probability ``rejection_rate``), **count**
    (:func:`~.records.count_sample`: one category in the plural, blocks + the number; absent
    with probability ``rejection_rate`` → rejection block + ``0``), **caption** (one region →
    ``"a dog"``). Crowd annotations and boxes that are not finite or under 1 px inside the
    image are not candidates, but their category is never called absent in that image: it is
    neither a rejection target nor counted there (its count would be wrong), and no distractor
    overlaps a crowd box (IoU ≥ 0.5). An image without annotations gives rejection samples
    only (no caption); an image with more than ``max_boxes`` annotations, or without a
    positive finite size, is skipped (counted in a log message).

    Args:
        instances_json_path: the COCO annotation file (``images``, ``annotations``,
            ``categories``; boxes ``[x, y, w, h]`` pixels).
        seed: an int seed or a ``numpy.random.Generator``.
        distractors: ``"jitter"`` (``num_distractors`` jittered/random boxes per image) or
            ``"proposals"`` (all proposals of ``proposals_path`` not overlapping the GT).

    Returns:
        validated records; ``image`` is the COCO ``file_name``; ids are
        ``"{image_id}:{task}:{round}"``.

    Raises:
        InvalidRequestError: unreadable file, missing COCO keys, a category name that is
            empty or holds ``;`` or markup, a task other than detect / count / caption, bad
            ``distractors``/``max_boxes``.
    """
    bad = [t for t in tasks if t not in COCO_TASKS]
    if bad:
        raise InvalidRequestError(f"COCO tasks must be among {COCO_TASKS}, got {bad}")
    _check_max_boxes(max_boxes)
    rng = _rng(seed)
    coco = read_json_or_jsonl(instances_json_path)
    if not isinstance(coco, dict) or not all(k in coco for k in ("images", "annotations",
                                                                 "categories")):
        raise InvalidRequestError(f"{instances_json_path}: not a COCO instances file (needs "
                                  "'images', 'annotations' and 'categories')")
    path = instances_json_path
    if not all(isinstance(coco[k], list) for k in ("images", "annotations", "categories")):
        raise InvalidRequestError(f"{path}: 'images', 'annotations' and 'categories' must be "
                                  "lists")
    cat_names: Dict[Any, str] = {}
    for k, c in enumerate(coco["categories"]):
        with entry_errors(path, "COCO", f"category {k}"):
            cat_names[as_object(c)["id"]] = str(c["name"]).strip()
    by_image: Dict[Any, List[Tuple[List[float], str, bool]]] = defaultdict(list)
    for k, ann in enumerate(coco["annotations"]):
        with entry_errors(path, "COCO", f"annotation {k}"):
            x, y, w, h = box4(as_object(ann)["bbox"])
            if ann["category_id"] not in cat_names:
                raise ValueError(f"category_id {ann['category_id']!r} is not a category")
            by_image[ann["image_id"]].append(([x, y, x + w, y + h], cat_names[ann["category_id"]],
                                              bool(ann.get("iscrowd", 0))))
    images = coco["images"]  # file order: deterministic for a given file
    sizes = {}
    for k, im in enumerate(images):
        with entry_errors(path, "COCO", f"image {k}"):
            image_name(as_object(im)["file_name"])
            sizes[im["id"]] = (float(im["width"]), float(im["height"]))
    for cid, name in cat_names.items():  # each is a label of detect/count answers
        problem = ("is empty" if not name else
                   "holds ';', the separator of a detect query's categories" if ";" in name
                   else "holds markup" if MARKUP.search(name) else None)
        if problem:
            raise InvalidRequestError(f"{instances_json_path}: the name {name!r} of category "
                                      f"{cid} {problem}; rename it")
    all_names = sorted(set(cat_names.values()))
    source = _Distractors(distractors, proposals_path, num_distractors)
    records: List[TrainingRecord] = []
    skipped = bad_size = 0
    for im in images:
        size = sizes[im["id"]]
        if not (np.isfinite(size).all() and min(size) > 0):
            bad_size += 1
            continue
        anns = by_image.get(im["id"], [])
        raw = np.asarray([b for b, _, _ in anns], np.float64).reshape(-1, 4)
        clipped = _clip_each(raw, size)
        keep = [i for i, b in enumerate(clipped) if b is not None and not anns[i][2]]
        gt = np.asarray([clipped[i] for i in keep], np.float64).reshape(-1, 4)
        names = [anns[i][1] for i in keep]
        # Objects that are there but are no candidate: their category is neither absent nor
        # countable here, and a distractor on a crowd box would be a false negative.
        kept = set(keep)
        unsure = {anns[i][1] for i in range(len(anns)) if i not in kept}
        crowd = np.asarray([clipped[i] for i in range(len(anns))
                            if anns[i][2] and clipped[i] is not None], np.float64).reshape(-1, 4)
        if len(gt) > max_boxes:
            skipped += 1
            continue
        for rnd in range(samples_per_image):
            extra = source(im["file_name"], gt, size, rng)
            if len(crowd) and len(extra):
                extra = extra[box_iou(extra, crowd).max(1) < 0.5]
            boxes, g2c = build_candidates(gt, extra, rng, max_boxes)
            if not len(boxes):
                continue
            present: Dict[str, List[int]] = defaultdict(list)
            for i, name in enumerate(names):
                present[name].append(g2c[i])
            absent = [n for n in all_names if n not in present and n not in unsure]
            countable = {n: v for n, v in present.items() if n not in unsure}
            for task in tasks:
                rid, region, meta = f"{im['id']}:{task}:{rnd}", [], {}
                if task == "detect":
                    if not (present or absent):  # every category here is unsure
                        continue
                    query, answer, meta = detect_sample(present, absent, rng, rejection_rate,
                                                        max_names)
                elif task == "count":
                    if not (countable or absent):
                        continue
                    query, answer, meta = count_sample(countable, absent, rng, rejection_rate)
                else:
                    if not names:
                        continue
                    i = int(rng.integers(len(names)))
                    query, answer, region = "", with_article(names[i]), [g2c[i]]
                records.append(TrainingRecord(rid, im["file_name"], task, query, answer, boxes,
                                              region_indices=region, meta=meta))
    if skipped:
        LOGGER.warning("%d images with more than %d annotations were skipped", skipped, max_boxes)
    if bad_size:
        LOGGER.warning("%d images without a positive finite width and height were skipped",
                       bad_size)
    source.report()
    return records


def _clip_each(boxes: np.ndarray, size) -> List[Optional[List[float]]]:
    """Each box clipped to the image, or ``None`` when under 1 px (kept in order)."""
    out: List[Optional[List[float]]] = []
    for b in boxes:
        c = _clean_boxes(b[None], size)
        out.append(c[0].tolist() if len(c) else None)
    return out


def _refcoco_entries(path: str) -> List[Dict[str, Any]]:
    """``{"id", "image", "expression", "box" (xyxy), "size" (w, h) or None}`` per expression.

    A JSON object with ``images`` or ``annotations`` is MDETR's form; any other object is one
    entry (a JSONL file of one line parses as one JSON document). Raises
    :class:`InvalidRequestError` naming the file and the entry for a malformed entry.
    """
    data = read_json_or_jsonl(path)
    out = []
    if isinstance(data, dict) and ("images" in data or "annotations" in data):
        if not isinstance(data.get("images"), list) or \
                not isinstance(data.get("annotations"), list):
            raise InvalidRequestError(f"{path}: needs 'images' and 'annotations' lists "
                                      "(MDETR form)")
        anns = defaultdict(list)
        for k, ann in enumerate(data["annotations"]):  # MDETR: one "image" per expression
            with entry_errors(path, "RefCOCO", f"annotation {k}"):
                anns[as_object(ann)["image_id"]].append(ann)
        for k, im in enumerate(data["images"]):
            with entry_errors(path, "RefCOCO", f"image {k}"):
                # MDETR REC: one target per expression
                for ann in anns.get(as_object(im)["id"], [])[:1]:
                    x, y, w, h = box4(ann["bbox"])
                    out.append({"id": str(im["id"]), "image": image_name(im["file_name"]),
                                "expression": str(im["caption"]), "box": [x, y, x + w, y + h],
                                "size": entry_size(im)})
    else:  # JSONL / JSON list: {"image", "expression", "bbox": [x1, y1, x2, y2]}
        for k, e in enumerate([data] if isinstance(data, dict) else data):
            with entry_errors(path, "RefCOCO", f"entry {k}"):
                e = as_object(e)
                out.append({"id": str(e.get("id", f"ref{k}")), "image": image_name(e["image"]),
                            "expression": str(e["expression"]), "box": box4(e["bbox"]),
                            "size": entry_size(e)})
    return out


def _image_size(entry: Dict[str, Any], images_dir: Optional[str], extent: np.ndarray):
    """``(w, h)``: from the annotation, else the image file's header, else the boxes' extent."""
    if entry["size"]:
        return entry["size"]
    if images_dir:
        from ..errors import InvalidImageError
        from ..image_files import image_size

        try:
            width, height = image_size(os.path.join(images_dir, entry["image"]))
            return float(width), float(height)
        except InvalidImageError:
            pass
    return float(extent[:, 2].max()) * 1.1, float(extent[:, 3].max()) * 1.1


def refcoco_to_records(annotations_path: str, seed: SeedLike = 0, *,
                       distractors: str = "jitter", proposals_path: Optional[str] = None,
                       max_boxes: int = MAX_REGIONS, num_distractors: int = 10,
                       images_dir: Optional[str] = None) -> List[TrainingRecord]:
    """RefCOCO-style REC annotations → ``refer`` records.

    Accepted inputs: MDETR's ``final_refcoco_*.json`` (COCO-format ``images`` with
    ``caption``/``file_name``, ``annotations`` with ``bbox`` ``[x, y, w, h]`` and ``image_id``)
    or JSONL / a JSON list of ``{"image", "expression", "bbox": [x1, y1, x2, y2]}`` (optional
    ``id``, ``width``, ``height``). The answer grounds the expression to the one target region:
    ``<ground>expression</ground><objects><regionK></objects>``. The other expressions' targets
    in the same image (IoU < 0.5 to this target) join the candidates as real-object
    distractors. Without a width/height the size comes from the image file in ``images_dir``
    (header only), else from the boxes' extent (+10 %).

    Returns:
        validated records; ids are the MDETR image ids / the JSONL ``id`` (else ``ref<line>``).

    Raises:
        InvalidRequestError: unreadable file, missing keys, bad ``distractors``/``max_boxes``.
    """
    _check_max_boxes(max_boxes)
    rng = _rng(seed)
    entries = _refcoco_entries(annotations_path)
    source = _Distractors(distractors, proposals_path, num_distractors)
    objects: Dict[str, List[List[float]]] = defaultdict(list)
    for e in entries:
        objects[e["image"]].append(e["box"])
    records, skipped = [], 0
    for e in entries:
        others = np.asarray(objects[e["image"]], np.float64)
        size = _image_size(e, images_dir, others)
        target = _clean_boxes(np.asarray(e["box"]), size)
        if not len(target) or not e["expression"].strip():
            skipped += 1
            continue
        others = _clean_boxes(others, size)
        others = _dedupe(others[box_iou(others, target)[:, 0] < 0.5])[:max_boxes - 1]
        gt = np.concatenate([target, others])
        dis = source(e["image"], target, size, rng)
        boxes, g2c = build_candidates(gt, dis, rng, max_boxes)
        expr = " ".join(e["expression"].split())
        try:
            records.append(TrainingRecord(e["id"], e["image"], "refer", expr,
                                          format_answer([(expr, [g2c[0]])]), boxes))
        except (InvalidRequestError, ValueError):  # e.g. markup-like text in an expression
            skipped += 1
    if skipped:
        LOGGER.warning("%d RefCOCO expressions were skipped (empty/degenerate/invalid)", skipped)
    source.report()
    return records


def _dedupe(boxes: np.ndarray, iou: float = 0.9) -> np.ndarray:
    """Drop boxes that repeat an earlier one (several expressions of one object)."""
    keep: List[int] = []
    for i in range(len(boxes)):
        if not keep or box_iou(boxes[i:i + 1], boxes[keep]).max() < iou:
            keep.append(i)
    return boxes[keep]


def llava_to_records(path: str) -> List[TrainingRecord]:
    """LLaVA-format general VQA → ``vqa`` records without boxes.

    Input: a JSON list or JSONL of ``{"id", "image", "conversations": [{"from": "human",
    "value": ...}, {"from": "gpt", "value": ...}, ...]}`` (LLaVA-1.5 mix and the reference's
    general VQA files; no ``bbox_list``). Each human/gpt pair becomes one record (id
    ``"{id}:{k}"``, ``k`` the pair's index): the query is the human turn without its
    ``<image>`` placeholder (before or after the question), whitespace-stripped, and the answer
    is the gpt turn. Text-only entries (no ``image`` string), out-of-order turns, empty or
    over-long questions and answers that spell ``<regionK>`` are skipped and counted in a log
    message.

    Returns:
        validated records with an empty ``bbox_list``.

    Raises:
        InvalidRequestError: unreadable file, or an entry that is not an object with a
            ``conversations`` list.
    """
    data = read_json_or_jsonl(path)
    records: List[TrainingRecord] = []
    skipped = 0
    for k, entry in enumerate([data] if isinstance(data, dict) else data):
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list):
            raise InvalidRequestError(f"{path}: entry {k} needs a 'conversations' list")
        image = entry.get("image")
        for j in range(0, len(turns) - 1, 2):
            human, gpt = turns[j], turns[j + 1]
            roles = [t.get("from") if isinstance(t, dict) else None for t in (human, gpt)]
            if not isinstance(image, str) or not image or roles != ["human", "gpt"]:
                skipped += 1
                continue
            question = str(human.get("value", "")).replace(IMAGE_PLACEHOLDER, "").strip()
            try:
                records.append(TrainingRecord(f"{entry.get('id', k)}:{j // 2}", image, "vqa",
                                              question, str(gpt.get("value", ""))))
            except InvalidRequestError:
                skipped += 1
    if skipped:
        LOGGER.warning("%d LLaVA question/answer pairs were skipped (no image, turn order, "
                       "empty/over-long question, region markup or a chat token in the "
                       "answer)", skipped)
    return records
