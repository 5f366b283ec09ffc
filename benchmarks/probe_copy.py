"""Which head copies the query into ``<ground>``, and for which words? (issue 9)

In a ``detect`` or ``refer`` answer the phrase inside ``<ground>…</ground>`` repeats the query
of the prompt: a copy, not a choice. For held-out records the answer is teacher-forced, and at
every answer position whose target is a phrase token that the prompt's text holds too (the
copyable ones: `` circle`` of ``<ground>the circle``, `` circle`` of ``<ground>red circle``),
this probe records

* whether the model's most likely next token is that token (the copy is right), per target
  word;
* per layer and head, the attention from that position to the prompt positions that hold the
  target token (an induction copy reads the word it writes there), averaged over the right and
  over the wrong copies apart.

Only same-token copies count: the bare first word of a ``detect`` phrase (``red`` after
``<ground>``) stands in the prompt as `` red``, another token, and is left out.

A head that sits on the target when the copy is right and elsewhere when it is wrong is the
copy head; its rows per word show whether it copies any word or only some (README "The copy
into <ground> is a colour-word head"). Attention weights need ``eager`` attention, so the
model is loaded with it.

    python -m benchmarks.probe_copy --models CKPT --data scenes/heldout.jsonl \\
        --images scenes/images [--limit 300] [--heads 3]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (add_model_benchmark_args, format_table,  # noqa: E402
                               print_header, quiet_transformers, write_json)
from benchmarks.probe_region_choice import ground_positions  # noqa: E402


def copy_hits(model_dir: str, records: List[dict], images_dir: str, device: str = "cpu"
              ) -> List[dict]:
    """One entry per copyable position of ``records`` (``detect`` / ``refer`` only), in order:
    ``word`` (the target token's text), ``right`` (bool), ``attention`` (float tensor
    ``[layers, heads]``: the attention mass on the prompt positions holding the target)."""
    import torch
    from transformers import Qwen2VLImageProcessorPil

    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.modeling import IMAGE_PLACEHOLDER_ID
    from vlxseek_core.preprocessing import ImagePreprocessor
    from vlxseek_core.tokenizer import load_tokenizer
    from vlxseek_core.training.model import TrainingModel, expand_image_placeholder
    from vlxseek_core.training.samples import IGNORE_INDEX, SampleBuilder, collate_samples

    vlm, _ = load_model(model_dir, attn_implementation="eager")
    vlm.to(device).eval()
    tokenizer = load_tokenizer(model_dir)
    builder = SampleBuilder(tokenizer, ImagePreprocessor(
        Qwen2VLImageProcessorPil.from_pretrained(model_dir), vlm.config.aux_image_aspect_ratio),
        images_dir)
    ground_ids = builder.region_choice_ids().ground
    caught: List = []
    hooks = [layer.self_attn.register_forward_hook(lambda _m, _i, out: caught.append(out[1]))
             for layer in vlm.model.layers]
    model, hits = TrainingModel(vlm), []
    try:
        for record in records:
            if record.get("task") not in ("detect", "refer"):
                continue
            batch = collate_samples([builder.build(record)])
            batch = {k: [None if t is None else t.to(device) for t in v]
                     for k, v in batch.items()}
            caught.clear()
            with torch.no_grad():
                hidden, labels, frames = model.hidden_states(**batch)
                pred = vlm.lm_head(hidden[0, :-1]).argmax(-1).cpu()
            ids = batch["input_ids"][0].cpu()
            if frames[0] is not None:  # the image placeholder stands for its rows
                ids = expand_image_placeholder(ids, ids, frames[0].image_embeds.shape[0],
                                               IMAGE_PLACEHOLDER_ID)
            target = labels[0, 1:].cpu()
            start = int((labels[0] != IGNORE_INDEX).nonzero()[0, 0])
            prompt = ids[:start]
            inside, _ = ground_positions(target, ground_ids)
            attention = torch.stack([a[0].cpu() for a in caught])  # [layers, heads, L, L]
            for j in inside.nonzero().flatten().tolist():
                holds = prompt == target[j]
                if not holds.any():
                    continue  # not in the prompt's text: nothing to copy from
                hits.append({"word": tokenizer.decode([int(target[j])]),
                             "right": bool(pred[j] == target[j]),
                             "attention": attention[:, :, j, :start][:, :, holds].sum(-1)})
    finally:
        for hook in hooks:
            hook.remove()
    return hits


def summarise(hits: List[dict]) -> Dict[str, dict]:
    """Per word (and ``all``): ``n``, ``copy_acc`` and the mean attention ``[layers, heads]``
    on the target of the right and of the wrong copies (``None`` where there are none)."""
    groups: Dict[str, List[dict]] = defaultdict(list)
    for hit in hits:
        groups["all"].append(hit)
        groups[hit["word"]].append(hit)
    out = {}
    for word, part in groups.items():
        right = [h["attention"] for h in part if h["right"]]
        wrong = [h["attention"] for h in part if not h["right"]]
        mean = (lambda xs: sum(xs) / len(xs) if xs else None)  # noqa: E731
        out[word] = {"n": len(part), "copy_acc": len(right) / len(part),
                     "attention_right": mean(right), "attention_wrong": mean(wrong)}
    return out


def copy_head(summary: Dict[str, dict]):
    """``(layer, head)`` whose attention on the target differs most between the right and the
    wrong copies over all words (the copy head), or ``None`` without both kinds."""
    s = summary.get("all") or {}
    if s.get("attention_right") is None or s.get("attention_wrong") is None:
        return None
    gap = s["attention_right"] - s["attention_wrong"]
    flat = int(gap.argmax())
    return divmod(flat, gap.shape[1])


def best_head(attention) -> str:
    """``"L<layer>H<head> <mass>"`` of the head most on the target, or ``—``."""
    if attention is None:
        return "—"
    layer, head = divmod(int(attention.argmax()), attention.shape[1])
    return f"L{layer}H{head} {float(attention[layer, head]):.2f}"


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, dict]]:
    """Probe every ``--models`` checkpoint; prints a table per model, returns summaries."""
    from vlxseek_core.training.run import read_records

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_benchmark_args(parser, images_help="image directory of the records",
                             limit_help="first N records only")
    parser.add_argument("--data", required=True, help="held-out records (JSONL)")
    args = parser.parse_args(argv)
    quiet_transformers()
    records = read_records([args.data], [args.images])[: args.limit]
    print_header("probe_copy: the copy of the query into <ground>", args.device,
                 {"data": args.data, "records": len(records)})
    results = {}
    for m in args.models:
        summary = summarise(copy_hits(m, records, "", args.device))
        head = copy_head(summary)
        fmt = (lambda t: "—" if t is None or head is None  # noqa: E731
               else f"{float(t[head[0], head[1]]):.2f}")
        rows = [[w, s["n"], f"{s['copy_acc']:.3f}", fmt(s["attention_right"]),
                 fmt(s["attention_wrong"]), best_head(s["attention_right"])]
                for w, s in sorted(summary.items(),
                                   key=lambda kv: (kv[0] != "all", -kv[1]["n"]))]
        name = "—" if head is None else f"layer {head[0]} head {head[1]}"
        print(f"{m}: copy head {name}")
        print(format_table(["target word", "positions", "copy right",
                            "copy head on it (right)", "(wrong)",
                            "the word's own head (right)"], rows))
        results[m] = {"copy_head": head, "words": {
            w: {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in s.items()}
            for w, s in summary.items()}}
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
