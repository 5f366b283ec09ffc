"""``vlxseek`` command line: query a checkpoint, write tiny random checkpoints.

Examples::

    vlxseek query --model DIR --image photo.jpg --query "person; cup"
    vlxseek query --model DIR --image photo.jpg --task caption --boxes "[[10,20,200,300]]"
    vlxseek make-tiny-model DIR
    vlxseek make-tiny-proposer DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .errors import VLXSeekError


def _load_image(path: str):
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise VLXSeekError(f"cannot read image {path!r}: {exc}") from exc


def _parse_boxes(text: Optional[str]):
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise VLXSeekError(f"--boxes must be a JSON list of [x1, y1, x2, y2]: {exc}") from exc


def cmd_query(args) -> int:
    from . import TASKS
    from .pipeline import VLXSeek

    if args.task not in TASKS:
        raise VLXSeekError(f"unknown task {args.task!r}; known: {', '.join(TASKS)}")
    pipe = VLXSeek.from_pretrained(
        args.model, device=args.device, dtype=args.dtype,
        proposal_source=args.proposal_source, proposal_model=args.proposal_model,
        proposal_min_score=args.min_score, proposal_nms_iou=args.nms_iou,
        max_proposals=args.max_proposals)
    regions = [int(i) for i in args.regions.split(",")] if args.regions else None
    result = pipe.query(_load_image(args.image), args.query, task=args.task,
                        boxes=_parse_boxes(args.boxes), region_indices=regions,
                        max_new_tokens=args.max_new_tokens)
    json.dump(result.to_dict(), sys.stdout, indent=None if args.compact else 2)
    sys.stdout.write("\n")
    return 0


def cmd_make_tiny_model(args) -> int:
    from .tiny import make_tiny_model

    path = make_tiny_model(args.directory, seed=args.seed,
                           aux_image_aspect_ratio=args.aux_aspect)
    print(f"wrote tiny random VLM-FO1 checkpoint to {path}")
    return 0


def cmd_make_tiny_proposer(args) -> int:
    from .proposals import write_tiny_omdet_turbo

    path = write_tiny_omdet_turbo(args.directory)
    print(f"wrote tiny random OmDet-Turbo proposal detector to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlxseek", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("query", help="answer one query about one image, print JSON")
    q.add_argument("--model", required=True, help="VLM-FO1 checkpoint directory")
    q.add_argument("--image", required=True, help="image file")
    q.add_argument("--query", default="", help='text, e.g. "person; cup"')
    q.add_argument("--task", default="detect", help="detect, refer, count, caption, ocr, ...")
    q.add_argument("--boxes", help="JSON list of xyxy pixel boxes replacing proposals")
    q.add_argument("--regions", help="comma-separated region indices for region tasks")
    q.add_argument("--device", default="auto", help="cpu, cuda, auto")
    q.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    q.add_argument("--proposal-source", default="omdet_turbo",
                   help="omdet_turbo, grounding_dino, owlv2 or none")
    q.add_argument("--proposal-model", help="detector directory or hub id")
    q.add_argument("--min-score", type=float, default=0.3)
    q.add_argument("--nms-iou", type=float, default=0.8)
    q.add_argument("--max-proposals", type=int, default=100)
    q.add_argument("--max-new-tokens", type=int, default=None)
    q.add_argument("--compact", action="store_true", help="one-line JSON")
    q.set_defaults(func=cmd_query)

    t = sub.add_parser("make-tiny-model", help="write a tiny random checkpoint (tests/demos)")
    t.add_argument("directory")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--aux-aspect", default="squash",
                   choices=("squash", "dynamic", "dynamic_square"))
    t.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser("make-tiny-proposer",
                       help="write a tiny random OmDet-Turbo detector (tests/demos)")
    p.add_argument("directory")
    p.set_defaults(func=cmd_make_tiny_proposer)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``vlxseek`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (VLXSeekError, ValueError) as exc:
        print(f"vlxseek: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
