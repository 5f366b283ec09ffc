"""Decode latency of region-reference answers vs coordinate answers, same model, same prompt.

Method: build the ``detect`` prompt with P proposals for a frame (image rows and region rows are
random embeddings of the right count: the towers do not influence decode cost), prefill it once
with the KV cache, then decode exactly T tokens, teacher-forcing the target answer
(:class:`benchmarks.llm.KVDecoder`), for T = tokens of the VLM-FO1 region answer and T = tokens
of the equivalent Qwen2.5-VL ``bbox_2d`` answer (:mod:`benchmarks.answers`), N objects each.
The region answer runs under the pipeline's constrained decoding (``RegionAnswerLogitsProcessor``)
unless ``--no-constraint``; the coordinate answer runs unconstrained, as Qwen2.5-VL does.

VLX-Seek 1.5 (``--config vlxseek15-*``, :mod:`benchmarks.vlx15`): the 1.5 ``detection`` prompt
(expanded image pads and one ``<objfeat>`` per proposal, 1-D sequential positions), the
region answer with ``<objK>``, the coordinate answer with 0…1000 relative coordinates (the
Qwen3-VL convention, assumed for Qwen3.5), token counts from the offline stand-in tokenizer
(exact Qwen2 BPE, so they approximate the real Qwen3.5 vocabulary's), and decoding through the
hybrid cache (gated-delta-net state + attention KV).

Usage::

    python -m benchmarks.bench_decode                      # tiny model, CPU
    python -m benchmarks.bench_decode --config real3b --device cuda
    python -m benchmarks.bench_decode --config real3b --layers 2 --sizes 1 5 10   # CPU
    python -m benchmarks.bench_decode --config vlxseek15-10b --device cuda
    python -m benchmarks.bench_decode --config vlxseek15-depthcut --frame 640x360 --sizes 1 5
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.answers import (MIXED_LABELS, coordinate_answer, region_answer,  # noqa: E402
                                sample_objects, token_ids)
from benchmarks.configs import (ALL_CONFIG_NAMES, InsufficientMemory,  # noqa: E402
                                add_model_size_arguments, build_random_model, family)
from benchmarks.llm import KVDecoder  # noqa: E402

DEFAULT_SIZES = (1, 5, 10, 25, 50)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_size_arguments(parser, ALL_CONFIG_NAMES)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="object counts N (default 1 5 10 25 50)")
    parser.add_argument("--frame", type=common.parse_size, default=(1280, 720),
                        help="frame WIDTHxHEIGHT: sets the image token count (default 1280x720)")
    parser.add_argument("--proposals", type=int, default=100,
                        help="region tokens in the prompt, >= max N (default 100)")
    parser.add_argument("--mixed", action="store_true",
                        help="mixed labels (one <ground> block per label) instead of one label")
    parser.add_argument("--no-constraint", action="store_true",
                        help="decode the region answer without the constrained-decoding mask")
    common.add_run_args(parser, repeats=3, warmup=1)
    return parser


def build_prompt(model, tokenizer, frame_size, num_proposals: int, query: str, seed: int):
    """Spliced ``detect`` prompt ``(inputs_embeds, position_ids, num_image_tokens)``."""
    from vlxseek_core.modeling import EncodedFrame
    from vlxseek_core.prompts import PromptTokenizer, task_parts

    w_in, h_in = common.qwen_resized_size(*frame_size)
    patch = model.config.vision_config.patch_size
    merge = model.config.vision_config.spatial_merge_size
    grid_h, grid_w = h_in // patch, w_in // patch
    n_image = grid_h * grid_w // (merge * merge)
    hidden = model.config.text_config.hidden_size
    dev, dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
    gen = torch.Generator(device=dev).manual_seed(seed)
    frame = EncodedFrame(
        image_embeds=(torch.randn(n_image, hidden, generator=gen, device=dev) * 0.02).to(dtype),
        region_embeds=(torch.randn(num_proposals, hidden, generator=gen, device=dev)
                       * 0.02).to(dtype),
        image_grid_thw=torch.tensor([[1, grid_h, grid_w]], device=dev))
    ids = PromptTokenizer(tokenizer).build(task_parts("detect", query), num_proposals)
    embeds, position_ids, _ = model.build_inputs_embeds(ids, frame)
    return embeds, position_ids, n_image


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Print the decode table; return ``{"rows", "prefill_ms", "notes", "machine", ...}``.

    Raises:
        SystemExit: the model's weights do not fit the device (with sizes and alternatives).
    """
    args = build_parser().parse_args(argv)
    with common.torch_threads(args.threads):
        try:
            return run(args)
        except InsufficientMemory as exc:
            raise SystemExit(f"bench_decode: {exc}") from None


def family_parts(args, model):
    """``(tokenizer, prompt builder, region processor or None, answer writers)`` of the
    config's family; the answer writers map objects to the region / coordinate answer."""
    if family(args.config) == "vlx_seek_1_5":
        from benchmarks import vlx15

        tok = vlx15.tokenizer()
        proc = None if args.no_constraint else vlx15.region_processor(tok, args.proposals)
        return (tok, vlx15.build_prompt, proc,
                (lambda o: region_answer(o, "obj"), lambda o: coordinate_answer(o, True)))
    from vlxseek_core.decoding import RegionAnswerLogitsProcessor

    tok = common.qwen_tokenizer()
    proc = None if args.no_constraint else RegionAnswerLogitsProcessor(tok, args.proposals)
    return tok, build_prompt, proc, (region_answer, coordinate_answer)


def run(args: argparse.Namespace) -> Dict[str, object]:
    """The benchmark for parsed ``args`` (see :func:`main`).

    Raises:
        InsufficientMemory: the model does not fit (checked before building it).
    """
    if max(args.sizes) > args.proposals:
        raise SystemExit(f"--proposals {args.proposals} < largest N {max(args.sizes)}")
    device, dtype = common.resolve_device_dtype(args.device, args.dtype)
    with common.quiet_transformers():
        # The towers are never run here: one block per tower is enough to build the model.
        is_15 = family(args.config) == "vlx_seek_1_5"
        model, notes = build_random_model(args.config, dtype, device, layers=args.layers,
                                          vision_layers=1, seed=args.seed,
                                          aux_layers=1 if is_15 else None)
    notes = [n for n in notes if not n.startswith(("ViT", "aux tower"))]
    notes.append("towers not run (decode only; image/region rows are random embeddings)")
    if (args.config in ("real3b", "vlxseek15-10b") and device == "cpu"
            and args.layers is None):
        notes.append(f"{args.config} at full depth on CPU: expect minutes per size")
    if is_15:
        notes.append("VLX-Seek 1.5 token counts from the offline stand-in tokenizer (Qwen2 "
                     "BPE + the 1.5 special tokens); coordinate answer in 0..1000 relative "
                     "coordinates (assumed Qwen3.5 format)")
    tokenizer, prompt_builder, processor, (region_fn, coordinate_fn) = family_parts(args, model)
    query = "; ".join(MIXED_LABELS) if args.mixed else "person"
    embeds, position_ids, n_image = prompt_builder(model, tokenizer, args.frame, args.proposals,
                                                   query, args.seed)
    machine = common.print_header(
        f"bench_decode: region answer vs coordinate answer decode latency ({args.config})",
        device, {"config": args.config, "dtype": str(dtype).replace("torch.", ""),
                 "llm_layers": model.config.text_config.num_hidden_layers,
                 "prompt_tokens": embeds.shape[1], "image_tokens": n_image,
                 "frame": "x".join(map(str, args.frame)), "proposals": args.proposals,
                 "labels": "mixed" if args.mixed else "1 label",
                 "constrained_region_decoding": not args.no_constraint,
                 "repeats": args.repeats, "warmup": args.warmup})
    for note in notes:
        print(f"NOTE: {note}")
    common.flush()

    decoder = KVDecoder(model, embeds, position_ids)
    prefill = common.measure(decoder.prefill, repeats=args.repeats, warmup=args.warmup,
                             device=device)
    rows = []
    for n in args.sizes:
        objects = sample_objects(n, *args.frame, args.proposals, mixed=args.mixed,
                                 seed=args.seed)
        targets = {"region": (token_ids(tokenizer, region_fn(objects)), processor),
                   "coordinate": (token_ids(tokenizer, coordinate_fn(objects)), None)}
        row: Dict[str, object] = {"n": n}
        for kind, (ids, proc) in targets.items():
            timing = common.measure(lambda: decoder.forced(ids, proc), repeats=args.repeats,
                                    warmup=args.warmup, device=device, setup=decoder.reset)
            row[f"{kind}_tokens"] = len(ids)
            row[f"{kind}_decode_ms"] = timing.median_ms
            row[f"{kind}_ms_per_token"] = timing.median_ms / len(ids)
            row[f"{kind}_total_ms"] = prefill.median_ms + timing.median_ms
        row["decode_speedup"] = common.ratio(row["coordinate_decode_ms"],
                                             row["region_decode_ms"])
        row["total_speedup"] = common.ratio(row["coordinate_total_ms"], row["region_total_ms"])
        rows.append(row)
        print(f"  N={n}: region {row['region_tokens']} tok {row['region_decode_ms']:.1f} ms, "
              f"coordinate {row['coordinate_tokens']} tok {row['coordinate_decode_ms']:.1f} ms",
              flush=True)

    print(f"prefill (same prompt for both, {embeds.shape[1]} tokens): "
          f"{prefill.median_ms:.1f} ms median")
    print(common.format_table(
        ["N", "region tok", "coord tok", "region decode ms", "coord decode ms",
         "region ms/tok", "coord ms/tok", "decode speedup", "prefill+decode region ms",
         "prefill+decode coord ms", "prefill+decode speedup"],
        [[r["n"], r["region_tokens"], r["coordinate_tokens"], r["region_decode_ms"],
          r["coordinate_decode_ms"], r["region_ms_per_token"], r["coordinate_ms_per_token"],
          r["decode_speedup"], r["region_total_ms"], r["coordinate_total_ms"],
          r["total_speedup"]] for r in rows]))
    print("Medians of --repeats runs. speedup = coordinate time / region time. Vision towers "
          "(identical for both answers) are excluded; see bench_stages.")
    common.flush()
    return {"rows": rows, "prefill_ms": prefill.median_ms, "prompt_tokens": embeds.shape[1],
            "notes": notes, "machine": machine, "device": device}


if __name__ == "__main__":
    main()
