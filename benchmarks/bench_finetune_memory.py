"""Peak memory of one fine-tuning step (forward + backward + AdamW step) per training option.

Rows: stage 2 full fine-tuning, stage 1 (HFRE + connector + added-token rows), stage 2 with
LoRA on the LLM (rank ``--lora-rank``, default 16), each without and with gradient
checkpointing; bf16 autocast over fp32 master weights (what ``vlxseek train --bf16`` does) unless
``--no-bf16``. The step is the training code's own:
:class:`vlxseek_core.training.model.TrainingModel` on a batch built by
:class:`~vlxseek_core.training.samples.SampleBuilder` (one synthetic 1280×720 frame, 50 boxes,
a ``detect`` answer), the stage plan of
:func:`~vlxseek_core.training.freezing.apply_stage`, LoRA of :mod:`vlxseek_core.training.lora`
and fused ``torch.optim.AdamW`` (transformers' default optimiser).

Two figures per row:

* **measured**: ``torch.cuda.max_memory_allocated`` over the step on a GPU (tensors only, no
  CUDA context or allocator slack); the peak process RSS (psutil) on a CPU.
* **computed**: fp32 weights + fp32 gradients of the trainable parameters + AdamW's two fp32
  moments, counted on the *full-size* model (built on the meta device, no memory), plus the
  activations: the bytes of the tensors autograd saves for backward during the forward,
  counted with ``saved_tensors_hooks`` (parameters excluded; autocast's bf16 weight copies
  included). With gradient checkpointing the decoder layers save only their inputs; one
  layer's activations (from the run without checkpointing) are added for its recomputation.
  With ``--layers K`` the decoder-layer part is scaled to the full depth. ``--analytic-only``
  skips the run (weights, gradients and AdamW states only); ``--count-only`` runs one forward
  pass per mode and nothing else (computed column only, the checkpointed row derived). The
  computed figure leaves out transient buffers of the backward pass and of the optimiser step,
  so it is a lower bound.

Usage::

    python -m benchmarks.bench_finetune_memory                              # tiny, CPU
    python -m benchmarks.bench_finetune_memory --config real3b --device cuda
    python -m benchmarks.bench_finetune_memory --config real3b --analytic-only   # no run
    python -m benchmarks.bench_finetune_memory --config real3b --layers 1 --vision-layers 1 \
        --count-only                                   # CPU: computed figures with activations
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.configs import (add_model_size_arguments, build_config,  # noqa: E402
                                build_random_model)
from vlxseek_core.training.model import set_activation_checkpointing  # noqa: E402

MODES = ("full", "stage1", "lora")
"""``full`` = stage 2 full fine-tuning, ``stage1`` = stage 1, ``lora`` = stage 2 with LoRA."""
GIB = 2 ** 30


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_size_arguments(parser)
    parser.add_argument("--vision-layers", type=int, default=None,
                        help="keep only K primary-ViT blocks (frozen in stages 1 and 2)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="training options to measure (default: all)")
    parser.add_argument("--checkpointing", choices=("both", "off", "on"), default="both",
                        help="gradient checkpointing of the LLM layers (default: both)")
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--no-bf16", action="store_true",
                        help="fp32 step (default: bf16 autocast over fp32 master weights)")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per step (default 1)")
    parser.add_argument("--image-size", type=common.parse_size, default=(1280, 720),
                        help="frame WIDTHxHEIGHT (default 1280x720)")
    parser.add_argument("--boxes", type=int, default=50, help="regions per frame (default 50)")
    parser.add_argument("--answer-objects", type=int, default=10,
                        help="regions referenced by the answer (default 10)")
    parser.add_argument("--analytic-only", action="store_true",
                        help="no model run: weights, gradients and AdamW states of the full "
                             "model only")
    parser.add_argument("--count-only", action="store_true",
                        help="forward passes only (one per mode): the computed column with "
                             "activations, no measured column (for real3b on a CPU, where a "
                             "bf16 backward takes very long)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (boxes, weights)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads")
    return parser


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Print the memory table; return ``{"rows", "notes", "machine", "device", ...}``.

    Each row: ``mode``, ``checkpointing``, ``trainable_params``, ``weights_gib``,
    ``grads_gib``, ``adamw_gib``, ``activations_gib`` (``None`` when not run),
    ``computed_gib``, ``measured_gib`` (``None`` with ``--analytic-only``), ``step_s``.
    """
    args = build_parser().parse_args(argv)
    with common.torch_threads(args.threads):
        return run(args)


# ----------------------------------------------------------------------------- static part

def _apply_mode(vlm, mode: str, tokenizer, rank: int):
    """Freeze ``vlm`` for ``mode`` (adds LoRA adapters once); returns the FreezePlan."""
    from vlxseek_core.training.freezing import apply_stage
    from vlxseek_core.training.lora import add_lora, has_lora

    stage = 1 if mode == "stage1" else 2
    plan = apply_stage(vlm, stage, tokenizer, lora=mode == "lora")
    if mode == "lora" and not has_lora(vlm):
        add_lora(vlm, rank)
    return plan


def _counts(vlm) -> Tuple[int, int]:
    """``(distinct parameters, distinct trainable parameters)``."""
    seen: Dict[int, Tuple[int, bool]] = {}
    for p in vlm.parameters():
        seen[id(p)] = (p.numel(), p.requires_grad)
    return sum(n for n, _ in seen.values()), sum(n for n, t in seen.values() if t)


def static_figures(config_name: str, modes, tokenizer, rank: int) -> Dict[str, Dict[str, int]]:
    """Parameter counts and fp32 weight / gradient / AdamW bytes per mode, full-size model.

    The model is built on the meta device (no memory, no weights).

    Returns:
        ``{mode: {"params", "trainable", "weights", "grads", "adamw"}}`` (bytes for the last
        three).
    """
    from vlxseek_core.checkpoint import build_empty_model

    config, _ = build_config(config_name)
    with torch.device("meta"):
        vlm = build_empty_model(config, torch.float32)
    if config.tie_word_embeddings:
        vlm.lm_head.weight = vlm.model.embed_tokens.weight
    out = {}
    for mode in sorted(modes, key=lambda m: m == "lora"):  # LoRA last: adapters stay
        _apply_mode(vlm, mode, tokenizer, rank)
        total, trainable = _counts(vlm)
        out[mode] = {"params": total, "trainable": trainable, "weights": 4 * total,
                     "grads": 4 * trainable, "adamw": 8 * trainable}
    return out


# ----------------------------------------------------------------------------- activations

class SavedTensorCounter:
    """Bytes of the tensors autograd saves for backward (``saved_tensors_hooks``).

    Storages are counted once; parameter and buffer storages are not counted. Tensors saved
    while a decoder layer of ``layers`` runs are also summed in ``layer_bytes``; the inputs
    of those layers (what gradient checkpointing keeps) in ``layer_input_bytes``.
    """

    def __init__(self, model: torch.nn.Module, layers: torch.nn.ModuleList):
        self.exclude = {t.untyped_storage().data_ptr()
                        for t in list(model.parameters()) + list(model.buffers())}
        self.layers = layers
        self.seen = set()
        self.total_bytes = 0
        self.layer_bytes = 0
        self.layer_input_bytes = 0
        self._depth = 0

    def _pack(self, tensor: torch.Tensor):
        try:
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):
            return tensor
        if key and key not in self.exclude and key not in self.seen:
            self.seen.add(key)
            self.total_bytes += size
            if self._depth:
                self.layer_bytes += size
        return tensor

    def _enter(self, _module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if self._depth == 0 and isinstance(hidden, torch.Tensor):
            self.layer_input_bytes += hidden.numel() * hidden.element_size()
        self._depth += 1

    def _leave(self, *_):
        self._depth -= 1

    @contextmanager
    def counting(self) -> Iterator["SavedTensorCounter"]:
        handles = []
        for layer in self.layers:
            handles.append(layer.register_forward_pre_hook(self._enter, with_kwargs=True))
            handles.append(layer.register_forward_hook(self._leave))
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
                yield self
        finally:
            for handle in handles:
                handle.remove()


# ----------------------------------------------------------------------------- the step

def build_batch(model, args, device: str) -> Dict[str, list]:
    """One ``detect`` training sample (synthetic frame, ``args.boxes`` boxes, an answer that
    references ``args.answer_objects`` regions) repeated ``args.batch_size`` times, on
    ``device``."""
    import numpy as np
    from transformers import Qwen2VLImageProcessorPil

    from vlxseek_core.answer_format import format_answer
    from vlxseek_core.preprocessing import ImagePreprocessor, to_pil_rgb
    from vlxseek_core.tiny import QWEN25_VL_PREPROCESSOR
    from vlxseek_core.training.samples import SampleBuilder, collate_samples

    width, height = args.image_size
    frame = to_pil_rgb(common.synthetic_frame(width, height, args.seed))
    boxes = common.random_boxes(args.boxes, width, height, args.seed)
    qwen = Qwen2VLImageProcessorPil(**{k: v for k, v in QWEN25_VL_PREPROCESSOR.items()
                                       if k != "image_processor_type"})
    preprocessor = ImagePreprocessor(qwen, model.config.aux_image_aspect_ratio,
                                     int(model.config.mm("aux_image_size")))
    builder = SampleBuilder(common.qwen_tokenizer(), preprocessor)
    picked = np.random.default_rng(args.seed).permutation(args.boxes)[:args.answer_objects]
    half = max(1, len(picked) // 2)
    answer = format_answer([("person", sorted(picked[:half].tolist())),
                            ("car", sorted(picked[half:].tolist()))])
    record = {"id": "bench", "task": "detect", "query": "person; car",
              "bbox_list": boxes.tolist(),
              "conversations": [{"from": "human", "value": "<image>\n"},
                                {"from": "gpt", "value": answer}]}
    sample = builder.build(record, image=frame)
    batch = collate_samples([sample] * args.batch_size)
    return {k: [t.to(device) for t in v] for k, v in batch.items()}


def set_checkpointing(vlm, enabled: bool) -> None:
    """Gradient checkpointing of the LLM's decoder layers on or off, as ``vlxseek train
    --gradient-checkpointing`` sets it."""
    set_activation_checkpointing(vlm, enabled)


def training_step(vlm, batch, device: str, bf16: bool,
                  counter: SavedTensorCounter) -> Tuple[float, float, int]:
    """One forward (activations counted) + backward + fused AdamW step.

    Returns:
        ``(loss, peak bytes, seconds)``; the peak is CUDA ``max_memory_allocated`` or the
        sampled process RSS.
    """
    from vlxseek_core.training.model import TrainingModel

    model = TrainingModel(vlm)
    params = [p for p in vlm.parameters() if p.requires_grad]
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    with common.PeakMemory(device) as mem:
        start = time.perf_counter()
        optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=bf16), counter.counting():
            loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        common.synchronize(device)
        seconds = time.perf_counter() - start
    value = float(loss.detach())
    del optimizer, loss
    for p in vlm.parameters():
        p.grad = None
    gc.collect()
    if dev_type == "cuda":
        torch.cuda.empty_cache()
    return value, mem.peak_bytes, seconds


def count_forward(vlm, batch, device: str, bf16: bool, counter: SavedTensorCounter) -> None:
    """One forward pass with gradients enabled, counting what it saves for backward; the
    graph is dropped without a backward pass."""
    from vlxseek_core.training.model import TrainingModel

    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=bf16), counter.counting():
        loss = TrainingModel(vlm)(**batch)["loss"]
    del loss
    gc.collect()


# ----------------------------------------------------------------------------- run

def _label(mode: str, rank: int) -> str:
    return {"full": "stage 2 full", "stage1": "stage 1",
            "lora": f"stage 2 LoRA r={rank}"}[mode]


def run(args: argparse.Namespace) -> Dict[str, object]:
    """The benchmark for parsed ``args`` (see :func:`main`)."""
    device = "cpu"
    if not args.analytic_only:
        device = common.resolve_device_dtype(args.device, "float32")[0]
    tokenizer = common.qwen_tokenizer()
    modes = [m for m in MODES if m in args.modes]
    gcs = {"both": [False, True], "off": [False], "on": [True]}[args.checkpointing]
    bf16 = not args.no_bf16
    full_cfg, _ = build_config(args.config)
    full_layers = full_cfg.text_config.num_hidden_layers
    with common.quiet_transformers():
        static = static_figures(args.config, modes, tokenizer, args.lora_rank)
    settings = {"config": args.config, "image": "x".join(map(str, args.image_size)),
                "boxes": args.boxes, "batch": args.batch_size,
                "precision": "bf16 autocast, fp32 master weights" if bf16 else "fp32",
                "optimizer": "AdamW (fused), fp32 states", "lora_rank": args.lora_rank}
    notes: List[str] = []
    vlm = batch = None
    kept_layers = full_layers
    if not args.analytic_only:
        torch.manual_seed(args.seed)
        with common.quiet_transformers():
            vlm, notes = build_random_model(args.config, torch.float32, device,
                                            layers=args.layers,
                                            vision_layers=args.vision_layers, seed=args.seed,
                                            attn_implementation="sdpa")
        kept_layers = vlm.config.text_config.num_hidden_layers
        batch = build_batch(vlm, args, device)
        settings["sequence"] = f"{int(_sequence_length(vlm, batch))} tokens"
    machine = common.print_header(
        f"bench_finetune_memory: peak memory of one training step ({args.config})", device,
        settings)
    for note in notes:
        print(f"NOTE: {note}")
    if kept_layers != full_layers:
        print(f"NOTE: the model run has {kept_layers} of {full_layers} decoder layers; "
              "computed activations are scaled to the full depth")
    common.flush()

    rows: List[Dict[str, object]] = []
    per_layer: Dict[str, float] = {}
    scale = full_layers / kept_layers
    for mode in modes:
        fig = static[mode]
        counted: Dict[bool, float] = {}
        if vlm is not None:
            plan = _apply_mode(vlm, mode, tokenizer, args.lora_rank)
            if args.count_only:  # checkpointed row derived from the plain forward
                set_checkpointing(vlm, False)
                vlm.train()
                counter = SavedTensorCounter(vlm, vlm.model.layers)
                count_forward(vlm, batch, device, bf16, counter)
                other = counter.total_bytes - counter.layer_bytes
                counted = {False: other + counter.layer_bytes * scale,
                           True: other + counter.layer_input_bytes * scale
                           + counter.layer_bytes / kept_layers}
                print(f"  {_label(mode, args.lora_rank)}: forward counted", flush=True)
        for use_gc in gcs:
            row = {"mode": _label(mode, args.lora_rank), "checkpointing": use_gc,
                   "trainable_params": fig["trainable"], "weights_gib": fig["weights"] / GIB,
                   "grads_gib": fig["grads"] / GIB, "adamw_gib": fig["adamw"] / GIB,
                   "activations_gib": None, "measured_gib": None, "step_s": None,
                   "loss": None}
            static_gib = (fig["weights"] + fig["grads"] + fig["adamw"]) / GIB
            if counted:
                row["activations_gib"] = counted[use_gc] / GIB
                static_gib += counted[use_gc] / GIB
            elif vlm is not None:
                set_checkpointing(vlm, use_gc)
                vlm.train()
                counter = SavedTensorCounter(vlm, vlm.model.layers)
                loss, peak, seconds = training_step(vlm, batch, device, bf16, counter)
                other = counter.total_bytes - counter.layer_bytes
                if use_gc:
                    act = (other + counter.layer_input_bytes * scale
                           + per_layer.get(mode, counter.layer_bytes / kept_layers))
                else:
                    act = other + counter.layer_bytes * scale
                    per_layer[mode] = counter.layer_bytes / kept_layers
                row.update(activations_gib=act / GIB, measured_gib=peak / GIB,
                           step_s=seconds, loss=loss)
                static_gib += act / GIB
                print(f"  {row['mode']}, checkpointing {'on' if use_gc else 'off'}: "
                      f"{peak / GIB:.2f} GiB, {seconds:.2f} s", flush=True)
            row["computed_gib"] = static_gib
            rows.append(row)
        if vlm is not None and plan._hook is not None:
            plan._hook.remove()

    measured = ("peak CUDA alloc GiB" if device.startswith("cuda") else "peak RSS GiB")
    print(common.format_table(
        ["option", "grad. ckpt", "trainable M", "weights GiB", "grads GiB", "AdamW GiB",
         "activations GiB", "computed GiB", f"measured: {measured}", "step s"],
        [[r["mode"], "on" if r["checkpointing"] else "off", r["trainable_params"] / 1e6,
          r["weights_gib"], r["grads_gib"], r["adamw_gib"],
          "-" if r["activations_gib"] is None else r["activations_gib"], r["computed_gib"],
          "-" if r["measured_gib"] is None else r["measured_gib"],
          "-" if r["step_s"] is None else r["step_s"]] for r in rows]))
    print("computed = fp32 weights + fp32 grads + AdamW moments (full-size model) + tensors "
          "saved for backward (counted"
          + (", not run)" if args.analytic_only else ")")
          + "; measured = " + ("not run" if args.analytic_only or args.count_only else
                               "torch.cuda.max_memory_allocated over the step"
                               if device.startswith("cuda") else
                               "peak process RSS over the step (psutil)"))
    common.flush()
    return {"rows": rows, "notes": notes, "machine": machine, "device": device,
            "full_layers": full_layers, "kept_layers": kept_layers, "bf16": bf16,
            "settings": settings}


def _sequence_length(vlm, batch) -> int:
    """Spliced length of the first sample: text ids + image tokens − 1 placeholder."""
    grid = batch["image_grid_thw"][0][0]
    merge = vlm.config.vision_config.spatial_merge_size
    return len(batch["input_ids"][0]) - 1 + int(grid[1] * grid[2]) // merge ** 2


if __name__ == "__main__":
    main()
