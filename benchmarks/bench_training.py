"""Held-out accuracy of trained vs untrained models, and the cost of training (issue 9 §7).

For each model directory, every held-out record (``vlxseek make-scenes`` writes
``heldout.jsonl``) is asked through the real pipeline with its candidate boxes, and the answers
are scored by :mod:`vlxseek_core.training.evaluate`: detection precision / recall / F1, REC
Acc@0.5 (also per expression kind), count exact match, rejection accuracy (also per near-miss
kind of the absent name: ``rejection_acc[colour]`` for "red square" beside a red circle) and
caption exact match. Chance levels are printed beside them. Training cost (steps/s, peak
memory, device) is read from each model's ``vlxseek_training.json``, written by ``vlxseek
train``.

    python -m benchmarks.bench_training --models UNTRAINED_DIR TRAINED_DIR \\
        --data scenes/heldout.jsonl --images scenes/images [--limit 600] [--device cuda] \\
        [--by objects]

``--by KEY`` adds a table per group of records (as ``probe_region_choice``): ``objects`` splits
the held-out records into those naming or grounding a colour-shape kind that no train image
shows (unseen: composition; "the yellow one" whose target is a yellow triangle too) and the
rest (seen kinds in new placements and phrasings).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (add_by_arg, add_model_benchmark_args, flush,  # noqa: E402
                               format_table, print_header, quiet_transformers, record_group,
                               write_json)

METRICS = ("det_precision", "det_recall", "det_f1", "rec_acc50", "count_exact", "rejection_acc",
           "false_rejection", "caption_exact", "format_ok")


def chance_levels(records: List[dict]) -> Dict[str, float]:
    """Expected scores of uniform guessing: REC = 1 / candidates; rejection = 1/2."""
    refer = [r for r in records if r.get("task") == "refer"
             and not (r.get("meta") or {}).get("rejection")]
    rec = (sum(1 / len(r["bbox_list"]) for r in refer) / len(refer)) if refer else None
    return {"rec_acc50": rec, "rejection_acc": 0.5}


def _fmt(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.3f}"


def metrics_table(names: List[str], metrics: List[dict], chance: Dict[str, float]) -> str:
    """One row per metric (and per REC expression kind and rejection near-miss kind), one
    column per model."""
    kinds = sorted({k for m in metrics for k in m
                    if k.startswith(("rec_acc50[", "rejection_acc["))})
    rows = [[name] + [_fmt(m.get(name)) for m in metrics] + [_fmt(chance.get(name))]
            for name in (*METRICS, *kinds)]
    return format_table(["metric", *names, "chance"], rows)


def training_info(model_dir: str) -> dict:
    path = os.path.join(model_dir, "vlxseek_training.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def main(argv: Optional[List[str]] = None) -> Dict[str, dict]:
    """Run the benchmark; returns ``{model dir: metrics}``."""
    from vlxseek_core.pipeline import VLXSeek
    from vlxseek_core.training.evaluate import evaluate_records
    from vlxseek_core.training.run import read_jsonl

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_benchmark_args(parser, images_help="their image directory",
                             limit_help="first N records only")
    parser.add_argument("--data", required=True, help="held-out records (JSONL)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    add_by_arg(parser)
    args = parser.parse_args(argv)
    records = read_jsonl(args.data)[: args.limit]
    print_header("bench_training: held-out accuracy of scene models", args.device,
                 {"data": args.data, "records": len(records), "models": args.models})
    results: Dict[str, dict] = {}
    group = (lambda r: f"{args.by}={record_group(r, args.by)}") if args.by else None
    for model in args.models:
        with quiet_transformers():
            pipe = VLXSeek.from_pretrained(model, device=args.device, proposal_source="none",
                                           max_new_tokens=args.max_new_tokens)
        start = time.perf_counter()
        metrics = evaluate_records(pipe, records, args.images, args.max_new_tokens, group)
        metrics["seconds"] = time.perf_counter() - start
        metrics["training"] = training_info(model)
        results[model] = metrics
    names = [os.path.basename(os.path.normpath(m)) for m in args.models]
    print(metrics_table(names, [results[m] for m in args.models], chance_levels(records)))
    parts: Dict[str, List[dict]] = {}  # group name -> its records, for the chance levels
    for record in records if group else ():
        parts.setdefault(group(record), []).append(record)
    for part in sorted(parts):
        print(f"records of {part}:")
        print(metrics_table(names, [results[m]["groups"].get(part, {}) for m in args.models],
                            chance_levels(parts[part])))
    cost_rows = []
    for model, name in zip(args.models, names):
        info = results[model]["training"]
        if info:
            cost_rows.append([name, info.get("stage"), info.get("global_step"),
                              _fmt(info.get("train_steps_per_second")),
                              json.dumps(info.get("peak_memory")), info.get("device")])
    if cost_rows:
        print(format_table(["model", "stage", "steps", "steps/s", "peak memory (GiB)",
                            "device"], cost_rows))
    flush()
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
