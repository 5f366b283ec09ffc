"""``vlxseek`` command line: query a checkpoint, write tiny random checkpoints.

Every command that reads a checkpoint takes either model family (``config.json``'s
``model_type``: VLM-FO1 or VLX-Seek 1.5, see :mod:`vlxseek_core.families`).

Examples::

    vlxseek query --model DIR --image photo.jpg --query "person; cup"
    vlxseek query --model DIR --image photo.jpg --task caption --boxes "[[10,20,200,300]]"
    vlxseek make-tiny-model DIR [--family vlx_seek_1_5]
    vlxseek make-tiny-proposer DIR [--kind wedetect]
    vlxseek eval countbench --model DIR --data countbench.json --images IMGS --out OUT
    vlxseek inspect DIR [--spec vlm-fo1-3b-keys.json] [--json]
    vlxseek download [omlab/VLM-FO1_Qwen2.5-VL-3B-v01] [--dir DIR] [--revision REV]
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .errors import VLXSeekError


def _load_image(path: str):
    import numpy as np

    from .image_files import read_rgb

    return np.asarray(read_rgb(path))  # InvalidImageError: printed as one line


def _parse_boxes(text: Optional[str]):
    if not text:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise VLXSeekError(f"--boxes must be a JSON list of [x1, y1, x2, y2]: {exc}") from None


# The reference's evaluation scripts decode up to this many tokens (spec §4.3).
REFERENCE_MAX_NEW_TOKENS = 4096


def cmd_query(args) -> int:
    from . import TASKS
    from .pipeline import VLXSeek

    if args.task not in TASKS:
        raise VLXSeekError(f"unknown task {args.task!r}; known: {', '.join(TASKS)}")
    pipe = VLXSeek.from_pretrained(
        args.model, device=args.device, dtype=args.dtype,
        proposal_source=_query_proposal_source(args), proposal_model=args.proposal_model,
        proposal_min_score="auto" if args.min_score is None else args.min_score,
        proposal_nms_iou="auto" if args.nms_iou is None else args.nms_iou,
        max_proposals=args.max_proposals, constrained_decoding=not args.unconstrained)
    try:
        regions = [int(i) for i in args.regions.split(",")] if args.regions else None
    except ValueError:
        raise VLXSeekError(f"--regions must be comma-separated integers, got "
                           f"{args.regions!r}") from None
    result = pipe.query(_load_image(args.image), args.query, task=args.task,
                        boxes=_parse_boxes(args.boxes), region_indices=regions,
                        max_new_tokens=args.max_new_tokens)
    json.dump(result.to_dict(), sys.stdout, indent=None if args.compact else 2)
    sys.stdout.write("\n")
    return 0


def _query_proposal_source(args) -> str:
    """``--proposal-source``, defaulting to ``none`` when ``--boxes`` replace the proposals
    (no detector is loaded, or downloaded, for boxes it would not use) and to ``omdet_turbo``
    otherwise."""
    if args.proposal_source is not None:
        return args.proposal_source
    return "none" if args.boxes else "omdet_turbo"


def cmd_make_tiny_model(args) -> int:
    from .families import FAMILY_KEYS, family_for_model_type

    family = family_for_model_type(FAMILY_KEYS[args.family])
    path = family.make_tiny_model(args.directory, seed=args.seed, preset=args.preset,
                                  aux_image_aspect_ratio=args.aux_aspect,
                                  space_variant_similarity=args.space_variant_similarity)
    print(f"wrote {args.preset} random {family.name} checkpoint to {path}")
    return 0


def cmd_make_tiny_proposer(args) -> int:
    if args.kind == "wedetect":
        from .proposals import write_tiny_wedetect

        path = write_tiny_wedetect(args.directory)
        print(f"wrote tiny random WeDetect-Uni proposal detector to {path}")
        return 0
    from .proposals import write_tiny_omdet_turbo

    path = write_tiny_omdet_turbo(args.directory)
    print(f"wrote tiny random OmDet-Turbo proposal detector to {path}")
    return 0


def cmd_eval(args) -> int:
    """Run one benchmark (spec §5); exit 1 when some records failed (re-run retries them)."""
    import logging
    import os

    from .evaluation import EvalError, build_protocol, run_eval
    from .evaluation.templates import uses_templates
    from .hub import resolve_model_path
    from .pipeline import VLXSeek

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for flag, path in (("--data", args.data), ("--annotations", args.annotations)):
        if path and not os.path.isfile(path):
            raise EvalError(f"{flag} {path!r} is not a file")
    if not os.path.isdir(args.images):
        raise EvalError(f"--images {args.images!r} is not a directory")
    protocol = build_protocol(args.protocol, args.data, args.images,
                              annotations=args.annotations, gt_format=args.gt_box_format,
                              parse=args.parse, score_images=args.score_images)
    model_dir = resolve_model_path(args.model)
    pipe = VLXSeek.from_pretrained(model_dir, device=args.device, dtype=args.dtype,
                                   proposal_source=args.proposal_source,
                                   proposal_model=args.proposal_model)
    if uses_templates(pipe):
        # templates of region tasks would be constrained; the reference decodes plain greedy
        # (VLX-Seek 1.5 §4.3), as VLM-FO1's verbatim vqa prompts are
        pipe.constrained_decoding = False
    summary = run_eval(protocol, pipe, args.out, limit=args.limit,
                       max_new_tokens=args.max_new_tokens, model_id=os.path.abspath(model_dir),
                       restart=args.restart, progress=not args.no_progress)
    return 0 if summary["num_errors"] == 0 else 1


def cmd_inspect(args) -> int:
    """Check a checkpoint without loading weights; exit 1 on any failed check."""
    from .inspect_checkpoint import inspect_checkpoint

    report = inspect_checkpoint(args.directory, spec_path=args.spec)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(report.format(max_items=args.max_items))
    return 0 if report.ok else 1


def cmd_download(args) -> int:
    """Download a checkpoint's safetensors snapshot; prints the local directory."""
    from .hub import download

    path = download(args.repo_id, local_dir=args.dir, revision=args.revision,
                    cache_dir=args.cache_dir, local_files_only=args.local_files_only)
    print(path)
    return 0


def _add_tool_commands(sub) -> None:
    """The ``eval``, ``inspect`` and ``download`` subcommands."""
    from .hub import DEFAULT_REPO_ID

    e = sub.add_parser("eval", help="evaluate on COCO, CountBench, PixMo-Count or RefCOCO")
    e.add_argument("protocol", choices=("coco", "countbench", "pixmo-count", "refcoco"))
    e.add_argument("--model", required=True, help="checkpoint directory or hub repo id")
    e.add_argument("--data", help="records file (JSON list or JSONL); coco: proposals JSONL, "
                   "omit to use --proposal-source")
    e.add_argument("--images", required=True, help="directory of the records' images")
    e.add_argument("--out", required=True, help="output directory (resumable)")
    e.add_argument("--annotations", help="coco: COCO instances JSON (ground truth)")
    e.add_argument("--gt-box-format", default="xywh", choices=("xywh", "xyxy"),
                   help="refcoco: format of the records' 'bbox' ground truth")
    e.add_argument("--parse", choices=("strict", "lenient"), default=None,
                   help="coco: read answers as the reference script does (strict, default) or "
                        "also accept whitespace/newlines between tags and <object> (lenient; "
                        "the summary then also gives the strict AP)")
    e.add_argument("--score-images", choices=("all", "records"), default=None,
                   help="coco: score every image of --annotations (all, default; images "
                        "without an answer are misses) or only the evaluated records' images")
    e.add_argument("--limit", type=int, default=None, help="only the first N records")
    e.add_argument("--device", default="auto", help="cpu, cuda, auto")
    e.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    e.add_argument("--max-new-tokens", type=int, default=REFERENCE_MAX_NEW_TOKENS,
                   help="decoding budget per record (default: the reference's 4096)")
    e.add_argument("--proposal-source", default="none",
                   help="detector for records without proposals: omdet_turbo, ... or none")
    e.add_argument("--proposal-model", help="detector directory or hub id")
    e.add_argument("--restart", action="store_true", help="discard previous results in --out")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)

    i = sub.add_parser("inspect", help="check a checkpoint directory without loading weights")
    i.add_argument("directory")
    i.add_argument("--spec", help="key file to compare with: vlm-fo1-3b-keys.json (VLM-FO1) "
                   "or vlx-seek-1.5-10b-keys.json (VLX-Seek 1.5)")
    i.add_argument("--json", action="store_true", help="machine-readable report")
    i.add_argument("--max-items", type=int, default=10, help="details shown per check")
    i.set_defaults(func=cmd_inspect)

    d = sub.add_parser("download", help="download a checkpoint (safetensors only) from the hub")
    d.add_argument("repo_id", nargs="?", default=DEFAULT_REPO_ID)
    d.add_argument("--dir", help="copy into this directory (default: the HF cache)")
    d.add_argument("--revision", help="branch, tag or commit to pin")
    d.add_argument("--cache-dir", help="HF cache directory")
    d.add_argument("--local-files-only", action="store_true", help="never use the network")
    d.set_defaults(func=cmd_download)


def cmd_train(args) -> int:
    from .training.run import train

    print(train(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlxseek", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("query", help="answer one query about one image, print JSON")
    q.add_argument("--model", required=True,
                   help="checkpoint directory or hub id (VLM-FO1 or VLX-Seek 1.5)")
    q.add_argument("--image", required=True, help="image file")
    q.add_argument("--query", default="", help='text, e.g. "person; cup"')
    q.add_argument("--task", default="detect", help="detect, refer, count, caption, ocr, ... "
                   "(VLX-Seek 1.5: detect, refer, count, caption, ocr, reason, vqa)")
    q.add_argument("--boxes", help="JSON list of xyxy pixel boxes replacing proposals")
    q.add_argument("--regions", help="comma-separated region indices for region tasks")
    q.add_argument("--device", default="auto", help="cpu, cuda, auto")
    q.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    q.add_argument("--proposal-source", default=None,
                   help="omdet_turbo, grounding_dino, owlv2, wedetect or none (default: none "
                        "with --boxes, else omdet_turbo)")
    q.add_argument("--proposal-model", help="detector directory or hub id")
    q.add_argument("--min-score", type=float, default=None,
                   help="proposal score threshold (default: the source's reference value, "
                        "0.3; wedetect: > 0)")
    q.add_argument("--nms-iou", type=float, default=None,
                   help="proposal NMS IoU (default: the source's, 0.8; wedetect: 0.7)")
    q.add_argument("--max-proposals", type=int, default=100)
    q.add_argument("--max-new-tokens", type=int, default=None)
    q.add_argument("--unconstrained", action="store_true",
                   help="plain greedy decoding as the reference (no region-answer constraint)")
    q.add_argument("--compact", action="store_true", help="one-line JSON")
    q.set_defaults(func=cmd_query)

    t = sub.add_parser("make-tiny-model", help="write a tiny random checkpoint (tests/demos)")
    t.add_argument("directory")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--aux-aspect", default="squash",
                   choices=("squash", "dynamic", "dynamic_square"))
    t.add_argument("--preset", default="tiny", choices=("tiny", "small"),
                   help="tiny: test sizes; small: the trainable scene model (issue 9)")
    t.add_argument("--family", default="vlm_fo1", choices=("vlm_fo1", "vlx_seek_1_5"),
                   help="model family of the checkpoint (default VLM-FO1)")
    t.add_argument("--space-variant-similarity", type=float, default=0.0, metavar="C",
                   help="initialise each space-prefixed word's embedding row (' red') at "
                   "cosine ~C to the bare word's ('red'); 0 (default): independent rows "
                   "(issue 9, training from scratch)")
    t.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser("make-tiny-proposer",
                       help="write a tiny random proposal detector (tests/demos)")
    p.add_argument("directory")
    p.add_argument("--kind", default="omdet_turbo", choices=("omdet_turbo", "wedetect"),
                   help="which detector (default OmDet-Turbo)")
    p.set_defaults(func=cmd_make_tiny_proposer)
    _add_tool_commands(sub)
    from .training.cli_data import add_data_commands  # make-scenes, make-train-data
    add_data_commands(sub)
    tr = sub.add_parser("train", help="fine-tune one stage (paper §3.3) on JSONL records")
    from .training.arguments import add_train_arguments
    add_train_arguments(tr)
    tr.set_defaults(func=cmd_train)
    return parser


def error_line(exc: BaseException) -> str:
    """One line for the user: the message with its whitespace (newlines) collapsed, or the
    exception's type name when it has no message."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``vlxseek`` command; returns the exit status.

    Every project error (:class:`~vlxseek_core.errors.VLXSeekError`: bad arguments, images,
    checkpoints, hub failures, evaluation data), a ``ValueError`` or an ``OSError`` (files)
    is printed as one line ``vlxseek: error: …`` on stderr with exit status 2, no traceback.
    Options argparse refuses (an unknown option, a number out of range) return 2 after its
    usage message; ``--help`` returns 0.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except (VLXSeekError, ValueError, OSError) as exc:
        print(f"vlxseek: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
