"""Output tokens per object: VLM-FO1 region references vs Qwen2.5-VL ``bbox_2d`` coordinates.

For N objects on a 1280×720 frame (seeded boxes), both answers are tokenized with the exact
Qwen2.5-VL vocabulary plus the VLM-FO1 tokens (``build_qwen25_vl_tokenizer``); see
:mod:`benchmarks.answers` for the two formats. Two label cases: all objects ``person`` (one
``<ground>`` block) and mixed labels (one block per distinct label). No model is run.

Usage::

    python -m benchmarks.bench_tokens [--sizes 1 5 10 25 50] [--frame 1280x720]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.answers import (coordinate_answer, coordinate_answer_json,  # noqa: E402
                                region_answer, sample_objects, token_ids)

DEFAULT_SIZES = (1, 5, 10, 25, 50)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="object counts N (default 1 5 10 25 50)")
    parser.add_argument("--frame", type=common.parse_size, default=(1280, 720),
                        help="frame WIDTHxHEIGHT the boxes are drawn on (default 1280x720)")
    parser.add_argument("--proposals", type=int, default=100,
                        help="proposals the objects are chosen from (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-examples", action="store_true",
                        help="print the N=smallest answers of both formats")
    return parser


def count_case(tokenizer, n: int, mixed: bool, args) -> Dict[str, object]:
    """Token counts of both answers for ``n`` objects; checks both answers round-trip."""
    from vlxseek_core.parsing import parse_answer

    width, height = args.frame
    objects = sample_objects(n, width, height, args.proposals, mixed=mixed, seed=args.seed)
    region, coords = region_answer(objects), coordinate_answer(objects)
    parsed = parse_answer(region.removesuffix("<|im_end|>"), args.proposals)
    if sorted(parsed.region_indices) != sorted(objects.region_indices):
        raise AssertionError(f"region answer does not parse back: {region!r}")
    if len(coordinate_answer_json(coords)) != n:
        raise AssertionError(f"coordinate answer does not parse back: {coords!r}")
    t_region, t_coord = len(token_ids(tokenizer, region)), len(token_ids(tokenizer, coords))
    return {"n": n, "case": "mixed" if mixed else "1 label",
            "labels": len(set(objects.labels)), "region_tokens": t_region,
            "coordinate_tokens": t_coord, "region_per_object": t_region / n,
            "coordinate_per_object": t_coord / n,
            "ratio": common.ratio(t_coord, t_region),
            "region_answer": region, "coordinate_answer": coords}


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Print the token table; return ``{"rows": [...], "machine": {...}}``."""
    args = build_parser().parse_args(argv)
    machine = common.print_header(
        "bench_tokens: output tokens, region references vs Qwen2.5-VL bbox_2d JSON", "cpu",
        {"sizes": args.sizes, "frame": "x".join(map(str, args.frame)),
         "qwen_input_frame": "x".join(map(str, common.qwen_resized_size(*args.frame))),
         "proposals": args.proposals, "seed": args.seed,
         "tokenizer": "Qwen2.5-VL vocabulary + VLM-FO1 tokens (exact ids, offline)"})
    tokenizer = common.qwen_tokenizer()
    rows = [count_case(tokenizer, n, mixed, args)
            for mixed in (False, True) for n in args.sizes]
    print(common.format_table(
        ["N", "labels", "case", "region tok", "coord tok", "region tok/obj", "coord tok/obj",
         "coord/region"],
        [[r["n"], r["labels"], r["case"], r["region_tokens"], r["coordinate_tokens"],
          r["region_per_object"], r["coordinate_per_object"], r["ratio"]] for r in rows]))
    print("Both answers include the final <|im_end|>. Region references are single added "
          "tokens; Qwen2 splits every digit of a coordinate into its own token.")
    if args.show_examples:
        for r in rows:
            if r["n"] == min(args.sizes):
                print(f"\n[{r['case']}] region answer:\n{r['region_answer']}"
                      f"\n[{r['case']}] coordinate answer:\n{r['coordinate_answer']}")
    common.flush()
    return {"rows": rows, "machine": machine}


if __name__ == "__main__":
    main()
