"""Per-stage latency and peak memory of one query (VLM-FO1 or VLX-Seek 1.5), any model size.

Stages, each timed by calling the model piece directly (the computation of the model's
``encode_frame`` split up; the pieces are checked to reproduce its region tokens): proposals
(user boxes, or a tiny random OmDet-Turbo), preprocessing (both towers' image preparation),
then per family

* VLM-FO1: primary ViT (+ ``mm_projector``), DaViT, HFRE (SimpleFP + RoIAlign + box
  embedding + ``mm_projector_aux``);
* VLX-Seek 1.5 (``--config vlxseek15-*``, :mod:`benchmarks.vlx15`): Qwen3.5 vision tower
  (+ ``mm_projector``), C-RADIO aux tower, HFRE + ``mm_projector_aux``;

and prompt splicing, LLM prefill, and LLM decode per token (cached, greedy; 1.5: the hybrid
gated-delta-net + attention cache). Memory: peak process RSS (psutil sampling) on CPU,
``max_memory_allocated`` on GPU, during each stage.

Usage::

    python -m benchmarks.bench_stages                        # tiny, CPU
    python -m benchmarks.bench_stages --config real3b --device cuda
    python -m benchmarks.bench_stages --config real3b --layers 2 --vision-layers 4 \\
        --image-size 640x360                                 # CPU, truncated depth
    python -m benchmarks.bench_stages --config vlxseek15-10b --device cuda
    python -m benchmarks.bench_stages --config vlxseek15-depthcut --image-size 640x360
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.configs import (ALL_CONFIG_NAMES, InsufficientMemory,  # noqa: E402
                                add_model_size_arguments, build_random_model, family,
                                parameter_bytes)
from benchmarks.llm import KVDecoder  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_size_arguments(parser, ALL_CONFIG_NAMES)
    parser.add_argument("--vision-layers", type=int, default=None,
                        help="keep only K primary-ViT blocks (for real3b / vlxseek15-10b on "
                             "CPU)")
    parser.add_argument("--aux-layers", type=int, default=None,
                        help="keep only K C-RADIO blocks (VLX-Seek 1.5 configs only)")
    parser.add_argument("--image-size", type=common.parse_size, default=(1280, 720),
                        help="input frame WIDTHxHEIGHT (default 1280x720)")
    parser.add_argument("--boxes", type=int, default=20,
                        help="regions (user boxes) per frame (default 20)")
    parser.add_argument("--proposals", choices=("user", "tiny-omdet"), default="user",
                        help="proposal stage: validate user boxes (default) or run a tiny "
                             "random OmDet-Turbo (the later stages use the user boxes)")
    parser.add_argument("--decode-tokens", type=int, default=16,
                        help="greedy decode steps timed for the per-token figure (default 16)")
    common.add_run_args(parser, repeats=3, warmup=1)
    return parser


def proposal_stage(args, image, boxes, device: str):
    """``(name, callable)`` of the proposal stage."""
    from vlxseek_core.proposals import build_proposal_source, validate_user_boxes

    if args.proposals == "user":
        shape = image.shape[:2]
        if family(args.config) == "vlx_seek_1_5":  # the family's own check (spec §4.4)
            from vlxseek_core.families.vlx_seek_1_5.box_order import validate_boxes

            size = (shape[1], shape[0])
            return "proposals (validate user boxes)", lambda: validate_boxes(boxes, size)
        return "proposals (validate user boxes)", lambda: validate_user_boxes(boxes, shape)
    with common.quiet_transformers():
        source = build_proposal_source("omdet_turbo", common.tiny_proposer_dir(args.cache_dir),
                                       device=device, min_score=0.0)
    return "proposals (tiny random OmDet-Turbo)", lambda: source.propose(image)


def encoder_pieces(model, prepared) -> Dict[str, Callable[[], object]]:
    """The parts of ``encode_frame`` as separate callables sharing their intermediate results.

    Returns:
        ordered ``{stage name: callable}``; each call stores its output in ``state``, which is
        also returned under the key ``"state"`` (not a stage).
    """
    m = model.model
    hfre = m.object_vp_extractor
    levels = hfre.vt_levels(len(m.vision_tower.config.fullatt_block_indexes))
    dev = model.lm_head.weight.device
    pv, grid = prepared.pixel_values.to(dev), prepared.image_grid_thw.to(dev)
    aux_pv = prepared.aux_pixel_values.to(dev).to(m.vision_tower_aux.image_tower.dtype)
    aux_boxes, vt_boxes = prepared.aux_boxes.to(dev), prepared.vt_boxes.to(dev)
    patch = m.vision_tower.config.patch_size
    vt_size = (int(grid[0, 1]) * patch, int(grid[0, 2]) * patch)
    state: Dict[str, object] = {}

    def vit():
        tokens, maps = m.vision_tower(pv, grid, levels)
        state["image_embeds"] = m.mm_projector(tokens)
        if maps and hfre.simple_fpn is not None:
            maps = [maps[-1].to(hfre.simple_fpn.simfp_1[0].weight.dtype)]
        state["vt_maps"] = maps

    def davit():
        state["aux_maps"] = m.vision_tower_aux(aux_pv)

    def regions():
        aux_maps = state["aux_maps"]
        feats = hfre(aux_maps, aux_boxes, state["vt_maps"], vt_boxes, vt_size)
        state["region_embeds"] = m.mm_projector_aux(feats.to(aux_maps[0].dtype))

    return {"primary ViT + mm_projector": vit, "DaViT (aux tower)": davit,
            "HFRE + mm_projector_aux": regions, "state": state}


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Print the stage table; return ``{"rows", "notes", "machine", ...}``.

    Raises:
        SystemExit: the model's weights do not fit the device (the message says how much
            they need and what to run instead).
    """
    args = build_parser().parse_args(argv)
    with common.torch_threads(args.threads), torch.inference_mode():
        try:
            return run(args)
        except InsufficientMemory as exc:
            raise SystemExit(f"bench_stages: {exc}") from None


def fo1_setup(args, model, image, boxes) -> Dict[str, object]:
    """VLM-FO1: preprocessor, encoder stages, check, prompt ids, header and parameter groups."""
    from transformers import Qwen2VLImageProcessorPil

    from vlxseek_core.preprocessing import ImagePreprocessor, to_pil_rgb
    from vlxseek_core.prompts import PromptTokenizer, task_parts
    from vlxseek_core.tiny import QWEN25_VL_PREPROCESSOR

    m = model.model
    qwen = Qwen2VLImageProcessorPil(**{k: v for k, v in QWEN25_VL_PREPROCESSOR.items()
                                       if k != "image_processor_type"})
    preprocessor = ImagePreprocessor(qwen, model.config.aux_image_aspect_ratio,
                                     int(model.config.mm("aux_image_size")))
    pil = to_pil_rgb(image)
    prepared = preprocessor(pil, boxes)
    device = model.lm_head.weight.device

    def check():
        return model.encode_frame(prepared.pixel_values.to(device),
                                  prepared.image_grid_thw.to(device),
                                  prepared.aux_pixel_values.to(device),
                                  prepared.aux_boxes.to(device), prepared.vt_boxes.to(device))

    return {
        "preprocess_name": "preprocess (resize, normalise, box frames)",
        "preprocess": lambda: preprocessor(pil, boxes), "prepared": prepared,
        "pieces": encoder_pieces(model, prepared), "check": check,
        "ids": PromptTokenizer(common.qwen_tokenizer()).build(
            task_parts("detect", "person; car"), args.boxes),
        "settings": {"llm_layers": model.config.text_config.num_hidden_layers,
                     "vit_blocks": model.config.vision_config.depth,
                     "aux_image": "x".join(str(v) for v in
                                           prepared.aux_pixel_values.shape[-2:])},
        "params": {"ViT": m.vision_tower, "DaViT": m.vision_tower_aux,
                   "HFRE+connector": torch.nn.ModuleList([m.object_vp_extractor,
                                                          m.mm_projector_aux]),
                   "LLM (incl. embeddings)": torch.nn.ModuleList([m.layers, m.embed_tokens,
                                                                  m.norm])}}


def vlx15_setup(args, model, image, boxes) -> Dict[str, object]:
    """VLX-Seek 1.5: the same items as :func:`fo1_setup` (:mod:`benchmarks.vlx15`)."""
    from benchmarks import vlx15

    order_mode = model.config.mm("mm_bbox_order_mode")
    preprocessor = vlx15.preprocessor(order_mode)

    def prep():
        return preprocessor(image, boxes)

    prepared = prep()
    height, width = image.shape[:2]
    return {
        "preprocess_name": "preprocess (Qwen2VL processor, [0,1] aux image, box order)",
        "preprocess": prep, "prepared": prepared,
        "pieces": vlx15.encoder_pieces(model, prepared),
        "check": lambda: vlx15.encode_check(model, prepared),
        "ids": vlx15.detect_prompt_ids(vlx15.tokenizer(), "person; car", boxes,
                                       (width, height), prepared.image_grid_thw, order_mode),
        "settings": vlx15.header_settings(model, prepared),
        "params": vlx15.parameter_groups(model)}


def run(args: argparse.Namespace) -> Dict[str, object]:
    """The benchmark for parsed ``args`` (see :func:`main`).

    Raises:
        InsufficientMemory: the model does not fit (checked before building it).
    """
    from vlxseek_core.modeling import EncodedFrame

    device, dtype = common.resolve_device_dtype(args.device, args.dtype)
    rss_before = common.current_rss()
    with common.quiet_transformers():
        model, notes = build_random_model(args.config, dtype, device, layers=args.layers,
                                          vision_layers=args.vision_layers, seed=args.seed,
                                          aux_layers=args.aux_layers)
    rss_model = common.current_rss()
    width, height = args.image_size
    image = common.synthetic_frame(width, height, args.seed)
    boxes = common.random_boxes(args.boxes, width, height, args.seed)
    fam = (vlx15_setup if family(args.config) == "vlx_seek_1_5" else fo1_setup)(
        args, model, image, boxes)
    prepared = fam["prepared"]
    grid = [int(v) for v in prepared.image_grid_thw[0]]
    machine = common.print_header(
        f"bench_stages: per-stage latency and peak memory ({args.config})", device,
        {"config": args.config, "dtype": str(dtype).replace("torch.", ""),
         **fam["settings"],
         "image": f"{width}x{height}", "vit_grid": f"{grid[1]}x{grid[2]} patches",
         "boxes": args.boxes, "decode_tokens": args.decode_tokens,
         "repeats": args.repeats, "warmup": args.warmup})
    print("parameters: " + ", ".join(f"{k} {common.mib(parameter_bytes(v)):.0f} MiB"
                                     for k, v in fam["params"].items())
          + f"; total {common.mib(parameter_bytes(model)):.0f} MiB")
    if device == "cpu":
        print(f"process RSS: {common.mib(rss_before):.0f} MiB before the model, "
              f"{common.mib(rss_model):.0f} MiB after building it")
    for note in notes:
        print(f"NOTE: {note}")
    common.flush()

    stages: Dict[str, Callable[[], object]] = {}
    name, fn = proposal_stage(args, image, boxes, device)
    stages[name] = fn
    stages[fam["preprocess_name"]] = fam["preprocess"]
    pieces = fam["pieces"]
    state = pieces.pop("state")
    stages.update(pieces)

    rows: List[Dict[str, object]] = []

    def record(stage: str, fn: Callable[[], object], setup=None, per: int = 1) -> None:
        with common.PeakMemory(device) as mem:
            timing = common.measure(fn, repeats=args.repeats, warmup=args.warmup, device=device,
                                    setup=setup)
        rows.append({"stage": stage, "ms": timing.median_ms / per,
                     "peak_mib": common.mib(mem.peak_bytes),
                     "delta_mib": common.mib(mem.peak_bytes - mem.start_bytes)})
        print(f"  {stage}: {rows[-1]['ms']:.2f} ms", flush=True)

    for stage, fn in stages.items():
        record(stage, fn)
    frame = EncodedFrame(state["image_embeds"], state["region_embeds"],
                         prepared.image_grid_thw.to(device))
    check = fam["check"]()
    if not torch.allclose(check.region_embeds.float(), frame.region_embeds.float(),
                          atol=1e-3, rtol=1e-3):
        raise AssertionError("stage-by-stage region tokens differ from encode_frame's")

    ids = fam["ids"]
    spliced: Dict[str, object] = {}

    def splice():
        spliced["out"] = model.build_inputs_embeds(ids, frame)

    record("prompt splice (build_inputs_embeds)", splice)
    embeds, position_ids, _ = spliced["out"]
    decoder = KVDecoder(model, embeds, position_ids)
    record(f"LLM prefill ({embeds.shape[1]} tokens)", decoder.prefill)
    record(f"LLM decode, per token (mean of {args.decode_tokens})",
           lambda: decoder.greedy(args.decode_tokens), setup=decoder.reset,
           per=args.decode_tokens)

    total = sum(r["ms"] for r in rows[:-1]) + rows[-1]["ms"] * args.decode_tokens
    mem_kind = "peak RSS MiB" if device == "cpu" else "peak CUDA alloc MiB"
    print(f"figures from device={device}"
          + (f" ({machine.get('gpu')})" if device.startswith("cuda") else
             f" ({machine['cpu']}, {machine['torch_threads']} torch threads)"))
    print(common.format_table(
        ["stage", "ms (median)", "share", mem_kind, "+MiB in stage"],
        [[r["stage"], r["ms"],
          f"{100 * r['ms'] * (args.decode_tokens if i == len(rows) - 1 else 1) / total:.1f}%",
          r["peak_mib"], r["delta_mib"]] for i, r in enumerate(rows)]))
    print(f"one query with {args.decode_tokens} decoded tokens: {total:.1f} ms "
          "(share column counts the decode row times its token count)")
    if device == "cpu":
        print("memory: process RSS sampled by psutil; '+MiB' = peak during the stage minus "
              "RSS at its start (transient working memory)")
    else:
        print("memory: torch.cuda.max_memory_allocated during the stage (weights included); "
              "'+MiB' = over memory_allocated at its start")
    common.flush()
    return {"rows": rows, "total_ms": total, "notes": notes, "machine": machine,
            "device": device, "prompt_tokens": int(embeds.shape[1])}


if __name__ == "__main__":
    main()
