"""``vlxseek make-scenes`` and ``vlxseek make-train-data``: write training records.

Examples::

    vlxseek make-scenes data/scenes --train 20000 --heldout 1000 --seed 0
    vlxseek make-train-data coco --annotations instances_train2017.json --out coco_train.jsonl \\
        --proposals coco_train_upn.jsonl --rejection-rate 0.2 --tasks detect count
    vlxseek make-train-data refcoco --annotations final_refcoco_train.json --out refcoco.jsonl
    vlxseek make-train-data llava --annotations llava_v1_5_mix665k.json --out vqa.jsonl
    vlxseek make-text-regions text_regions.jsonl --num 200000 --seed 0

Errors are :class:`~vlxseek_core.errors.VLXSeekError` subclasses, which ``vlxseek`` prints as
one line (exit status 2).
"""
from __future__ import annotations

import json
from collections import Counter

from ..errors import InvalidRequestError


def _rate(text: str, option: str = "--rejection-rate") -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequestError(f"{option} must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidRequestError(f"{option} must be in [0, 1], got {value}")
    return value


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and value < 0:
            raise InvalidRequestError(f"--{name.replace('_', '-')} must be >= 0, got {value}")


def cmd_make_scenes(args) -> int:
    """Write procedural scenes (images, train/held-out JSONL, held-out ground truth)."""
    from .scene_data import make_scenes
    from .scenes import check_max_copies, check_max_objects, check_min_objects

    _check_positive(train=args.train, heldout=args.heldout, seed=args.seed,
                    workers=args.workers, max_distractors=args.max_distractors,
                    refer_per_scene=args.refer_per_scene)
    check_max_objects(args.max_objects, "--max-objects")
    check_max_copies(args.max_copies, "--max-copies")
    check_min_objects(args.min_objects, args.max_objects, "--min-objects")
    summary = make_scenes(args.out, args.train, args.heldout, seed=args.seed, size=args.size,
                          workers=args.workers, progress=not args.quiet,
                          max_candidates=args.max_candidates,
                          max_distractors=args.max_distractors,
                          max_objects=args.max_objects, max_copies=args.max_copies,
                          min_objects=args.min_objects,
                          shared_colour=_rate(args.shared_colour, "--shared-colour"),
                          unique_colours=args.unique_colours,
                          one_colour=_rate(args.one_colour, "--one-colour"),
                          rejection_rate=_rate(args.rejection_rate),
                          detect_extra_absent=_rate(args.detect_extra_absent,
                                                    "--detect-extra-absent"),
                          refer_per_scene=args.refer_per_scene,
                          detect_all_order=args.detect_all_order,
                          detect_all_article=_rate(args.detect_all_article,
                                                   "--detect-all-article"),
                          absent_near=_rate(args.absent_near, "--absent-near"),
                          detect_all_alias=_rate(args.detect_all_alias, "--detect-all-alias"),
                          refer_kinds=args.refer_kinds,
                          tasks=[t for item in args.tasks for t in item.split(",") if t])
    print(json.dumps(summary))
    return 0


def cmd_make_train_data(args) -> int:
    """Convert COCO / RefCOCO annotations or LLaVA VQA into a training JSONL file."""
    from .converters import coco_to_records, llava_to_records, refcoco_to_records
    from .records import write_records

    _check_positive(num_distractors=args.num_distractors, seed=args.seed)
    if args.source == "llava" and args.proposals:
        raise InvalidRequestError("llava makes vqa records without boxes; drop --proposals")
    mode = "proposals" if args.proposals else "jitter"
    common = dict(distractors=mode, proposals_path=args.proposals, max_boxes=args.max_boxes,
                  num_distractors=args.num_distractors)
    if args.source == "coco":
        tasks = [t for item in args.tasks for t in item.split(",") if t]
        records = coco_to_records(args.annotations, args.seed,
                                  rejection_rate=_rate(args.rejection_rate), tasks=tasks,
                                  samples_per_image=args.samples_per_image, **common)
    elif args.source == "llava":
        if args.tasks not in (["detect", "count", "caption"], ["vqa"]):
            raise InvalidRequestError("llava makes 'vqa' records only; drop --tasks")
        records = llava_to_records(args.annotations)
    else:
        if args.tasks != ["detect", "count", "caption"] and args.tasks != ["refer"]:
            raise InvalidRequestError("refcoco makes 'refer' records only; drop --tasks")
        records = refcoco_to_records(args.annotations, args.seed, images_dir=args.images,
                                     **common)
    n = write_records(args.out, records)
    _print_written(n, args.out, [(r.task, r.meta) for r in records])
    return 0


def _print_written(n: int, path: str, tasks_and_meta) -> None:
    """``wrote N records to PATH ({task: count}, R rejection samples)``."""
    pairs = list(tasks_and_meta)
    per_task = Counter(task for task, _ in pairs)
    rejections = sum(1 for _, meta in pairs if meta.get("rejection"))
    print(f"wrote {n} records to {path} ({dict(per_task)}, {rejections} rejection samples)")


def cmd_make_text_regions(args) -> int:
    """Write text-region records (the image-free binding curriculum, :mod:`.text_regions`)."""
    from .text_regions import (DEFAULT_WORDS, make_text_region_records, random_words,
                               write_text_region_records)

    _check_positive(num=args.num, seed=args.seed)
    words = args.words
    if args.scene_categories:
        if words:
            raise InvalidRequestError("give --words or --scene-categories, not both")
        from .scenes import split_categories
        words = split_categories("train")
    words = list(words or DEFAULT_WORDS)
    if args.random_words:
        _check_positive(random_words=args.random_words)
        words += [w for w in random_words(args.random_words, args.seed) if w not in words]
    records = make_text_region_records(
        args.num, args.seed, words=words, min_regions=args.min_regions,
        max_regions=args.max_regions,
        rejection_rate=_rate(args.rejection_rate),
        tasks=[t for item in args.tasks for t in item.split(",") if t])
    n = write_text_region_records(args.out, records)
    _print_written(n, args.out, [(r["task"], r["meta"]) for r in records])
    return 0


def add_data_commands(subparsers) -> None:
    """Add ``make-scenes`` and ``make-train-data`` to the ``vlxseek`` subparsers."""
    from .scene_options import REFER_KINDS

    m = subparsers.add_parser("make-scenes",
                              help="write procedural training/held-out scenes and records")
    m.add_argument("out", help="output directory (images/, train.jsonl, heldout.jsonl, ...)")
    m.add_argument("--train", type=int, default=1000, help="train scenes (default 1000)")
    m.add_argument("--heldout", type=int, default=200, help="held-out scenes (default 200)")
    m.add_argument("--seed", type=int, default=0, help="scene i has seed SEED*10^7+i")
    m.add_argument("--size", type=int, default=224, help="image side in px (default 224)")
    m.add_argument("--max-candidates", type=int, default=12,
                   help="candidate regions per scene, GT + distractors (default 12)")
    m.add_argument("--max-objects", type=int, default=6,
                   help="objects per scene at most, 1-6 (default 6; fewer: a curriculum)")
    m.add_argument("--min-objects", type=int, default=None,
                   help="objects per scene at least, 1 to --max-objects (default 2; equal to "
                        "--max-objects: one list length for a curriculum; a scene without "
                        "room left gets fewer, rare below 4 objects at 112 px)")
    m.add_argument("--max-copies", type=int, default=None,
                   help="each category at most N times per scene, 1-6 (default: no cap; 1: "
                        "one block = one region, no bias towards <region0> in answers)")
    m.add_argument("--shared-colour", default="0",
                   help="probability that one coloured shape of a scene shares its colour with "
                        "another shape of the scene, so that the colour alone does not pick it "
                        "(a curriculum knob for shape in the lookup; 0)")
    m.add_argument("--one-colour", default="0",
                   help="probability that every coloured shape of a scene has one colour, so "
                        "that only the shape tells them apart (a curriculum knob for shape in "
                        "the lookup; 0; not with --unique-colours)")
    m.add_argument("--unique-colours", action="store_true",
                   help="coloured shapes of different categories never share a colour, so the "
                        "colour alone picks out each (a curriculum knob; not with "
                        "--shared-colour)")
    m.add_argument("--max-distractors", type=int, default=None,
                   help="distractor boxes per scene at most (default: fill --max-candidates; "
                        "0: the candidates are the objects)")
    m.add_argument("--rejection-rate", default="0.2",
                   help="share of detect/refer/count samples about absent things (0.2)")
    m.add_argument("--detect-extra-absent", default="0.5",
                   help="probability that a detect query naming present categories also "
                        "names one absent one, answered None (0.5; 0 with --rejection-rate 0: "
                        "no absent target anywhere, a curriculum step before rejection)")
    m.add_argument("--refer-per-scene", type=int, default=2, help="refer records per scene")
    m.add_argument("--refer-kinds", nargs="+", choices=REFER_KINDS, default=None,
                   help="the expression kinds of present refer targets (default: all); a "
                        "scene without such a target gets only the absent ones that "
                        "--rejection-rate draws")
    m.add_argument("--detect-all-order", choices=("leftmost", "random"), default="leftmost",
                   help="category order of detect_all answers: of the leftmost instance "
                        "(default) or random (as in make-text-regions)")
    m.add_argument("--detect-all-article", default="0",
                   help="probability that a detect_all label is written 'the <label>' (0; a "
                        "curriculum step: the label's first word then has the space-prefixed "
                        "token that refer expressions use)")
    m.add_argument("--detect-all-alias", default="0",
                   help="probability that a detect_all record names every category by a fixed "
                        "one-token alias word instead of its name (0; a curriculum knob: a "
                        "word for an object's whole look beside the two-word names)")
    m.add_argument("--absent-near", default="0",
                   help="probability that the absent names of a detect record and an absent "
                        "refer expression are near misses, sharing a colour or shape with a "
                        "present object (hard negatives; 0)")
    m.add_argument("--tasks", nargs="+", default=["detect", "refer", "count", "caption"],
                   help="record tasks per scene: detect, detect_all, refer, count, caption, "
                        "single (one-region curriculum records)")
    m.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    m.add_argument("--quiet", action="store_true", help="no progress lines")
    m.set_defaults(func=cmd_make_scenes)

    r = subparsers.add_parser("make-text-regions",
                              help="write text-region records: words in place of region rows, "
                                   "no image (binding curriculum for models trained from "
                                   "scratch)")
    r.add_argument("out", help="output JSONL file")
    r.add_argument("--num", type=int, default=10000, help="records (default 10000)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--min-regions", type=int, default=2)
    r.add_argument("--max-regions", type=int, default=6)
    r.add_argument("--rejection-rate", default="0.2",
                   help="share of detect records naming only absent words, and of refer "
                        "records naming an absent one (0.2)")
    r.add_argument("--tasks", nargs="+", default=["detect"],
                   help="detect, detect_all, caption, refer")
    r.add_argument("--random-words", type=int, default=0, metavar="N",
                   help="add N random one-token words (drawn with --seed) to the region texts: "
                        "many words make a copy general instead of word by word")
    r.add_argument("--words", nargs="+", default=None,
                   help="region texts (default: 30 one-token words); a text may be a phrase "
                        "such as 'red ball'")
    r.add_argument("--scene-categories", action="store_true",
                   help="region texts = the train split's make-scenes categories (photo "
                        "names and colour-shape phrases such as 'red circle'; the held-out "
                        "combinations are left out)")
    r.set_defaults(func=cmd_make_text_regions)

    t = subparsers.add_parser("make-train-data",
                              help="training JSONL from COCO or RefCOCO annotations, or "
                                   "LLaVA-format VQA (box-less vqa records)")
    t.add_argument("source", choices=("coco", "refcoco", "llava"))
    t.add_argument("--annotations", required=True,
                   help="COCO instances JSON; RefCOCO: MDETR final_refcoco_*.json or JSONL; "
                        "llava: JSON list or JSONL of {id, image, conversations}")
    t.add_argument("--out", required=True, help="output JSONL file")
    t.add_argument("--proposals", help="proposals JSONL ({image, bbox_list, score_list}) as "
                   "distractors; default: jittered and random boxes")
    t.add_argument("--rejection-rate", default="0.2", help="coco: share of rejection samples")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--tasks", nargs="+", default=["detect", "count", "caption"],
                   help="coco: detect count caption (space or comma separated)")
    t.add_argument("--max-boxes", type=int, default=100, help="candidates per record (<= 100)")
    t.add_argument("--num-distractors", type=int, default=10,
                   help="jittered/random distractors per image (without --proposals)")
    t.add_argument("--samples-per-image", type=int, default=1,
                   help="coco: rounds of records per image, each with its own shuffle")
    t.add_argument("--images", help="refcoco: image directory, to read sizes JSONL lacks")
    t.set_defaults(func=cmd_make_train_data)
