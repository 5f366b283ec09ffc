"""Attention probes of region binding in a trained model (issue 9 §7, "attention maps tell").

Emitting ``<regionK>`` needs two hops, because ``<regionK>`` comes *before* its feature row:
(1) each feature row copies the identity of the ``<regionK>`` token just before it (a
previous-token head); (2) the answer position attends by content to the feature row that
matches the query and reads that identity. For held-out ``refer`` records this script measures,
per layer and head, with the answer teacher-forced (``--task`` picks ``detect`` or
``detect_all`` records instead):

* ``prev``: mean attention of each region feature row to the ``<regionK>`` token before it;
* ``target``: attention of the position that predicts the answer's first region token (its
  ``<objects>``; in a ``detect`` answer an absent category's ``None`` block may come first) to
  the target's feature row, and ``others``: its mean attention to the other feature rows;
* ``same first word`` / ``same last word``: that position's mean attention to the rows whose
  answer label shares only its first word (colour: "red square" for "red circle") or only its
  last (shape: "blue circle") with the target's, averaged over the records that have such rows
  (a leading "the" is ignored; rows the answer does not name have no label). Near ``target``:
  the lookup reads one word of a two-word label (docs/scene-model-notes.md, "The colour–shape
  conjunction on long lists").

    python -m benchmarks.probe_binding --model DIR --data scenes/heldout.jsonl \\
        --images scenes/images [--limit 50] [--task refer|detect|detect_all]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import format_table, print_header  # noqa: E402


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the probes; returns ``{"prev": [L, H], "target": [L, H], "others": [L, H]}``."""
    import numpy as np
    import torch
    from transformers import Qwen2VLImageProcessorPil

    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.parsing import parse_answer
    from vlxseek_core.preprocessing import ImagePreprocessor
    from vlxseek_core.tokenizer import load_tokenizer
    from vlxseek_core.tokens import (IMAGE_PLACEHOLDER_ID, MAX_REGIONS,
                                     REGION_FEATURE_PLACEHOLDER_ID, region_token)
    from vlxseek_core.training.model import TrainingModel
    from vlxseek_core.training.run import read_jsonl
    from vlxseek_core.training.samples import SampleBuilder, collate_samples

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--task", default="refer", choices=("refer", "detect", "detect_all"),
                        help="records of this task (the <objects> before the answer's first "
                             "region is scored)")
    args = parser.parse_args(argv)
    vlm, _ = load_model(args.model, attn_implementation="eager")
    tokenizer = load_tokenizer(args.model)
    builder = SampleBuilder(tokenizer, ImagePreprocessor(
        Qwen2VLImageProcessorPil.from_pretrained(args.model), vlm.config.aux_image_aspect_ratio),
        args.images)
    region_of = {builder.prompt_tokenizer.token_id(region_token(k)): k  # id -> K
                 for k in range(MAX_REGIONS)}
    records = [r for r in read_jsonl(args.data) if r.get("task") == args.task
               and not (r.get("meta") or {}).get("rejection")][: args.limit]
    print_header("probe_binding: attention of the region-binding circuit", "cpu",
                 {"model": args.model, "records": len(records)})
    # all frames first: a forward with output_attentions installs capture hooks on the whole
    # model (the towers live inside it), which the tower calls must not meet
    encoded = []
    for record in records:
        sample = builder.build(record)
        batch = collate_samples([sample])
        with torch.no_grad():
            frame = TrainingModel(vlm).encode_frames(
                batch["pixel_values"], batch["image_grid_thw"], batch["aux_pixel_values"],
                batch["aux_boxes"], batch["vt_boxes"])[0]
        encoded.append((record, sample, frame))
    sums = None
    shares = {"same_first": [], "same_last": []}  # [L, H] per record that has such rows
    for record, sample, frame in encoded:
        with torch.no_grad():
            ids = sample.input_ids
            emb = vlm.model.embed_tokens(ids.clamp(min=0))
            seq, types = vlm.splice(ids, emb, frame)
            pos, _ = vlm.rope_index(types[None], frame.image_grid_thw)
            out = vlm.model(inputs_embeds=seq[None], position_ids=pos, output_attentions=True)
        attn = torch.stack(out.attentions)[:, 0]  # [L, H, T, T]
        # positions in the spliced sequence (the image placeholder expands)
        at = int((ids == IMAGE_PLACEHOLDER_ID).nonzero()[0, 0])
        shift = frame.image_embeds.shape[0] - 1
        expand = [i if i < at else i + shift for i in range(len(ids))]
        feat = [expand[i] for i in (ids == REGION_FEATURE_PLACEHOLDER_ID).nonzero()[:, 0]]
        prompt_len = int((sample.labels == -100).sum())
        answer = sample.input_ids[prompt_len:].tolist()
        offset, target = first_region_choice(answer, region_of)
        ask = expand[prompt_len + offset]
        prev = torch.stack([attn[:, :, p, p - 1] for p in feat]).mean(0)
        tgt = attn[:, :, ask, feat[target]]
        others = torch.stack([attn[:, :, ask, p] for k, p in enumerate(feat) if k != target])
        stats = torch.stack([prev, tgt, others.mean(0)])
        sums = stats if sums is None else sums + stats
        labels = region_words(parse_answer(record["conversations"][1]["value"], len(feat)))
        for key, rows in word_sharing_rows(labels, target).items():
            if rows:
                shares[key].append(torch.stack([attn[:, :, ask, feat[k]] for k in rows]).mean(0))
    mean = (sums / len(records)).numpy()
    layers, heads = mean.shape[1:]
    share = {key: (torch.stack(v).mean(0).numpy() if v else np.full((layers, heads), np.nan))
             for key, v in shares.items()}
    rows = [[f"{layer}.{head}", f"{mean[0, layer, head]:.3f}", f"{mean[1, layer, head]:.3f}",
             f"{mean[2, layer, head]:.3f}", f"{share['same_first'][layer, head]:.3f}",
             f"{share['same_last'][layer, head]:.3f}"]
            for layer in range(layers) for head in range(heads)]
    print(format_table(["layer.head", "prev (feature row → its <regionK>)",
                        "target (answer → target row)", "others (mean)",
                        f"same first word ({len(shares['same_first'])} records)",
                        f"same last word ({len(shares['same_last'])} records)"], rows))
    length = np.mean([int((s.labels == -100).sum()) + f.image_embeds.shape[0]
                      for _, s, f in encoded])
    print(f"uniform attention over the ~{length:.0f} prompt positions gives "
          f"{1 / length:.3f} per position")
    return {"prev": mean[0], "target": mean[1], "others": mean[2], **share}


def region_words(parsed) -> Dict[int, List[str]]:
    """Region index K -> the words of the label that names region K in ``parsed`` (a
    :class:`vlxseek_core.parsing.ParsedAnswer` of the record's answer), a leading "the"
    dropped. Regions no grounding names are absent."""
    out: Dict[int, List[str]] = {}
    for grounding in parsed.groundings:
        words = grounding.phrase.split()
        if words[:1] == ["the"]:
            words = words[1:]
        for k in grounding.region_indices:
            out[k] = words
    return out


def word_sharing_rows(labels: Dict[int, List[str]], target: int) -> Dict[str, List[int]]:
    """The regions whose label shares only its first word (``same_first``) or only its last
    (``same_last``) with the label of region ``target``; both empty when ``target`` has no
    label of two words or more."""
    mine = labels.get(target, [])
    out: Dict[str, List[int]] = {"same_first": [], "same_last": []}
    if len(mine) < 2:
        return out
    for k, words in sorted(labels.items()):
        if k == target or not words:
            continue
        first, last = words[0] == mine[0], words[-1] == mine[-1]
        if first and not last:
            out["same_first"].append(k)
        elif last and not first:
            out["same_last"].append(k)
    return out


def first_region_choice(answer: List[int], region_of: Dict[int, int]) -> Tuple[int, int]:
    """The answer's first region choice: the offset in ``answer`` (token ids) of the position
    that predicts it (the ``<objects>`` just before it, past any ``None`` block of an absent
    category), and its index K. ``region_of`` maps each ``<regionK>`` token id to K.

    Raises:
        ValueError: the answer names no region.
    """
    for offset, token in enumerate(answer):
        if token in region_of:
            return offset - 1, region_of[token]
    raise ValueError("the answer names no region")


if __name__ == "__main__":
    main()
