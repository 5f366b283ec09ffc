"""Does a model pick the right region? Teacher-forced region-token accuracy (issue 9).

For held-out training records (image records of ``make-scenes``, or the image-free records of
``vlxseek make-text-regions``), the answer is teacher-forced and at every answer position
whose target is a ``<regionK>`` token the model's most likely next token is compared with it:

* ``first_region_acc``: the first region token of each answer (nothing named before it, so
  it cannot be guessed by excluding; chance is 1 / the number of regions of the record);
* ``region_acc``: every region token of the answers;
* ``rejection_acc``: where the target after ``<objects>`` is ``None`` (an absent target), how
  often the model predicts ``None`` there;
* ``false_rejection``: where the target after ``<objects>`` is a region (a present target),
  how often the model predicts ``None`` there (a model that always rejects has
  ``rejection_acc`` 1 and ``false_rejection`` 1: read the two together);
* ``chance``: the mean of 1 / regions over the records with a region answer;
* ``ground_acc``: every token inside ``<ground>…</ground>`` (the model's copy of the query,
  or its own label for ``detect_all``), argmax over all rows; ``ground_first_acc``: the first
  token of each phrase only (the word the lookup keys on, docs/scene-model-notes.md "The
  lookup keys on the bare token"). In free generation the lookup reads the model's own words, so
  these cap what ``bench_training`` can score;
* ``stop_acc``: after each ``</objects>``, whether the model picks the right next token
  (``<ground>`` for another block, or the end of the answer). A model that ends after its
  first block scores well teacher-forced and misses every later target in free generation;
* ``region0_baseline``: how often the first region of an answer is ``<region0>``, i.e. the
  ``first_region_acc`` of a model that always answers ``<region0>`` first. A block lists its
  regions in ascending order, so in scenes where a category repeats this is far above
  ``chance``: compare ``first_region_acc`` with the larger of the two.

This isolates the binding circuit (README "Procedural scenes and the scene model") from
decoding; ``benchmarks/bench_training.py`` scores the answers the model generates.

    python -m benchmarks.probe_region_choice --models INIT_DIR CKPT_DIR \\
        --data text_regions_heldout.jsonl [--images DIR] [--limit 200] [--by kind]

``--by KEY`` adds a row per value of a record field (``task``) or of its ``meta`` (``kind``:
category, colour, shape, superlative or absent for ``refer`` records), so that an average
cannot hide an expression kind the model fails on. ``--by regions`` groups by the number of
candidate regions, so that a lookup bound to one list length shows (chance differs per row).

``--formed LIFT`` (one model) is the recipe's test that a forming phase has formed its lookup
(docs/scene-model-notes.md "The fresh run never formed the lookup"): the first region's lift
over chance, ``(first_region_acc - chance) / (1 - chance)`` (0 at chance, 1 when always right),
must reach ``LIFT``; the command exits 0 when it does and 3 (:data:`NOT_FORMED`) when it does not.
With ``--by`` (``--by regions`` for list lengths) every group must reach it: a lookup right on
2 rows and near chance on 6 has not formed, whatever its average (docs/scene-model-notes.md
"The sampled column").
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (add_by_arg, add_model_benchmark_args,  # noqa: E402
                               format_table, print_header, quiet_transformers, record_group,
                               write_json)


NOT_FORMED = 3  # exit status of ``--formed`` when the lookup has not formed (errors exit 1/2)


def score_model(model_dir: str, records: List[dict], images_dir: str, device: str = "cpu",
                batch_size: int = 16) -> Dict[str, float]:
    """Teacher-forced region metrics of one checkpoint on ``records`` (see module doc)."""
    return summarise(record_hits(model_dir, records, images_dir, device, batch_size))


def record_hits(model_dir: str, records: List[dict], images_dir: str, device: str = "cpu",
                batch_size: int = 16) -> List[Dict[str, list]]:
    """Run one checkpoint once over ``records``; per record, in order: ``first`` (the first
    region choice right, ``[]`` or ``[bool]``), ``all`` (every region choice), ``reject``
    (every ``None`` choice), ``false_none`` (per block with a region target: ``None``
    predicted there), ``chance`` (``[1 / regions]`` for a record with a region answer),
    ``region0`` (``[first target is <region0>]``) and ``stop`` (the token after every
    ``</objects>`` right). :func:`summarise` turns any subset of them into the metrics."""
    import torch
    from transformers import Qwen2VLImageProcessorPil

    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.preprocessing import ImagePreprocessor
    from vlxseek_core.tokenizer import load_tokenizer
    from vlxseek_core.tokens import OBJECTS_CLOSE
    from vlxseek_core.training.model import TrainingModel
    from vlxseek_core.training.samples import SampleBuilder, collate_samples

    vlm, _ = load_model(model_dir)
    vlm.to(device).eval()
    tokenizer = load_tokenizer(model_dir)
    builder = SampleBuilder(tokenizer, ImagePreprocessor(
        Qwen2VLImageProcessorPil.from_pretrained(model_dir), vlm.config.aux_image_aspect_ratio),
        images_dir)
    choices = builder.region_choice_ids()
    region_ids = torch.tensor(sorted(choices.regions))
    close_objects = builder.prompt_tokenizer.token_id(OBJECTS_CLOSE)
    model = TrainingModel(vlm)
    hits: List[Dict[str, list]] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        samples = [builder.build(r) for r in chunk]
        batch = collate_samples(samples)
        batch = {k: [None if t is None else t.to(device) for t in v] for k, v in batch.items()}
        with torch.no_grad():
            hidden, labels, _ = model.hidden_states(**batch)
            pred = vlm.lm_head(hidden[:, :-1]).argmax(-1).cpu()
        target, prev = labels[:, 1:].cpu(), labels[:, :-1].cpu()
        for row, record in enumerate(chunk):
            is_region = torch.isin(target[row], region_ids)
            correct = pred[row] == target[row]
            right = correct[is_region].tolist()
            n = len(record.get("text_regions") or record.get("bbox_list") or ())
            first_target = target[row][is_region][:1].tolist()
            inside, first_word = ground_positions(target[row], choices.ground)
            hit = {"first": right[:1], "all": right, "ground": correct[inside].tolist(),
                   "ground_first": correct[first_word].tolist(),
                   "chance": [1.0 / max(n, 1)] if right else [], "reject": [], "false_none": [],
                   "region0": [t == int(region_ids[0]) for t in first_target],
                   "stop": correct[prev[row] == close_objects].tolist()}
            if choices.none is not None:
                at_none = (prev[row] == choices.objects) & (target[row] == choices.none)
                hit["reject"] = correct[at_none].tolist()
                at_block = (prev[row] == choices.objects) & is_region
                hit["false_none"] = (pred[row] == choices.none)[at_block].tolist()
            hits.append(hit)
    return hits


def summarise(hits: List[Dict[str, list]]) -> Dict[str, float]:
    """The metrics of the module doc over per-record ``hits`` of :func:`record_hits`."""
    def mean(key: str) -> float:
        values = [v for hit in hits for v in hit[key]]
        return float(sum(values) / len(values)) if values else float("nan")

    return {"first_region_acc": mean("first"), "region_acc": mean("all"),
            "rejection_acc": mean("reject"), "false_rejection": mean("false_none"),
            "chance": mean("chance"),
            "region0_baseline": mean("region0"), "ground_acc": mean("ground"),
            "ground_first_acc": mean("ground_first"), "stop_acc": mean("stop"),
            "records": len(hits)}


def lookup_lift(metrics: Dict[str, float]) -> float:
    """How far the first region choice has left chance towards always right:
    ``(first_region_acc - chance) / (1 - chance)`` of :func:`summarise`'s ``metrics`` (0 at
    chance, 1 when every first region is right, negative below chance; NaN without region
    answers or when chance is 1, i.e. one region per record: nothing to choose)."""
    first, chance = metrics["first_region_acc"], metrics["chance"]
    return (first - chance) / (1 - chance) if chance < 1 else float("nan")


def weakest_lift(by_group: Dict[str, Dict[str, float]]) -> float:
    """The lowest :func:`lookup_lift` of the groups of one model's results (``{group:
    metrics}``) other than ``all``, or of ``all`` when there are none. Groups with nothing to
    choose (NaN lift) are left out; NaN when every group is."""
    groups = [m for g, m in by_group.items() if g != "all"] or [by_group["all"]]
    lifts = [lift for lift in map(lookup_lift, groups) if lift == lift]
    return min(lifts) if lifts else float("nan")


def ground_positions(target, ground_ids):
    """Masks over the next-token targets ``target`` ``[L]`` (int64, ``IGNORE_INDEX`` outside
    the answer): ``inside`` (a token of a ``<ground>…</ground>`` phrase) and ``first`` (the
    first token of a phrase). ``ground_ids``: the ids of ``<ground>`` and ``</ground>``."""
    import torch

    opening, closing = ground_ids
    inside = torch.zeros(target.shape, dtype=torch.bool)
    first = torch.zeros(target.shape, dtype=torch.bool)
    offset = None  # position inside the open phrase, None outside one
    for j, token in enumerate(target.tolist()):
        if token == closing:
            offset = None
        elif offset is not None:
            inside[j], first[j] = True, offset == 0
            offset += 1
        if token == opening:
            offset = 0
    return inside, first


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Score every ``--models`` checkpoint; prints a table and returns
    ``{model: {group: metrics}}`` (group ``all``, and with ``--by`` one per field value).

    Raises:
        SystemExit: ``--formed LIFT`` given and the model's :func:`lookup_lift` (all records)
            (with ``--by``: :func:`weakest_lift`, its lowest group's) is below ``LIFT``
            (code :data:`NOT_FORMED`), or bad arguments (code 2)."""
    from vlxseek_core.training.run import read_records

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_benchmark_args(parser, images_help="image directory of the records ('.' for "
                             "text-region records)", limit_help="first N records only")
    parser.add_argument("--data", required=True, help="held-out records (JSONL)")
    parser.add_argument("--formed", type=float, metavar="LIFT",
                        help="exit 0 when the first region's lift over chance, (first - chance)"
                        " / (1 - chance), reaches LIFT (with --by: in every group), else "
                        "exit 3 (one model only)")
    add_by_arg(parser)
    args = parser.parse_args(argv)
    if args.formed is not None and len(args.models) != 1:
        parser.error("--formed takes exactly one model")
    quiet_transformers()
    records = read_records([args.data], [args.images or "."])[: args.limit]
    print_header("probe_region_choice: teacher-forced region-token accuracy", args.device,
                 {"data": args.data, "records": len(records)})
    groups = {"all": list(range(len(records)))}  # group -> record indices
    for i, record in enumerate(records if args.by else ()):
        groups.setdefault(f"{args.by}={record_group(record, args.by)}", []).append(i)
    results = {}
    for m in args.models:  # each checkpoint runs once; the groups are subsets of its hits
        hits = record_hits(m, records, "", args.device)
        results[m] = {g: summarise([hits[i] for i in part]) for g, part in groups.items()}
    keys = ("first_region_acc", "region_acc", "rejection_acc", "false_rejection", "chance",
            "region0_baseline", "ground_first_acc", "ground_acc", "stop_acc", "records")
    print(format_table(["model", "records of", *keys],
                       [[m, g, *(f"{r[k]:.3f}" if k != "records" else str(r[k]) for k in keys)]
                        for m, by_group in results.items() for g, r in by_group.items()]))
    write_json(args.json, results)
    if args.formed is not None:
        lift = weakest_lift(results[args.models[0]])
        formed = lift >= args.formed  # NaN (nothing to choose) never counts as formed
        where = f" (weakest by {args.by})" if args.by else ""
        print(f"lookup {'formed' if formed else 'NOT formed'}: lift over chance {lift:.3f}"
              f"{where} ({'>=' if formed else 'below'} {args.formed})")
        if not formed:
            raise SystemExit(NOT_FORMED)
    return results


if __name__ == "__main__":
    main()
