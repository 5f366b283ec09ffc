"""``vlxseek train``: one stage of fine-tuning from a checkpoint directory (issue 9 §4–6).

Runs as a plain process (one CPU or GPU) or under ``torchrun --nproc_per_node N`` /
``accelerate launch`` for data parallelism; ``--deepspeed ds.json`` and ``--fsdp`` hand the
sharding to the engine (configs for the 3B in ``config/training/``).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import List, Optional

import time

import torch
from torch.utils.data import Dataset
from transformers import TrainerCallback

from ..errors import InvalidRequestError
from .samples import (SampleBuilder, check_boxes_in_image, check_record, collate_samples,
                      has_region_choice)
from .shortlist import NEGATIVES, data_shortlist
from .text_regions import is_text_region_record
DEFAULT_LR = {0: 1e-3, 1: 1e-3, 2: 1e-5}
"""Paper §4.1: stage 1 at 1e-3, stage 2 at 1e-5; stage 0 (from scratch) like stage 1."""


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file (recorded for the data a checkpoint was trained on)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class StopEarly(TrainerCallback):
    """Stop training (with a final save) after ``minutes`` of training or at ``step``, while
    the learning-rate schedule keeps the length set by ``--max-steps``."""

    def __init__(self, minutes: Optional[float] = None, step: Optional[int] = None):
        self.seconds = None if minutes is None else minutes * 60.0
        self.step = step
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        late = (self.seconds is not None and self.start is not None
                and time.monotonic() - self.start > self.seconds)
        if late or (self.step is not None and state.global_step >= self.step):
            control.should_training_stop = True
            control.should_save = True
        return control


class RecordDataset(Dataset):
    """Training records (JSONL) → :class:`~.samples.TrainingSample` on access.

    Args:
        records: parsed JSON records (see :mod:`vlxseek_core.training.records`).
        builder: the :class:`SampleBuilder` (reads images relative to its ``images_dir``).
    """

    def __init__(self, records: List[dict], builder: SampleBuilder):
        self.records = records
        self.builder = builder

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        return self.builder.build(self.records[index])


def read_jsonl(path: str) -> List[dict]:
    """Records of a JSONL file (blank lines skipped).

    Raises:
        InvalidRequestError: unreadable file or a line that is not a JSON object.
    """
    import json

    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                records.append(record)
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8
        where = f"line {number}" if "number" in locals() else "file"
        raise InvalidRequestError(f"cannot read training data {path!r} ({where}): {exc}") from exc
    if not records:
        raise InvalidRequestError(f"training data {path!r} holds no records")
    return records


def read_records(paths: List[str], images_dirs: List[str]) -> List[dict]:
    """Records of several JSONL files, concatenated in order (a data mix), with each record's
    ``image`` joined to its file's image directory (one directory for all files, or one per file).

    Every record is checked here (:func:`~.samples.check_record`; its image's header is read
    and every box keeps some area inside the image), so that bad data stops ``vlxseek train``
    before its first step.

    Raises:
        InvalidRequestError: unreadable or empty file, a directory count that is neither 1
            nor the number of files, or a bad record (naming its file, line number among the
            records, id and field), a missing or unreadable image file.
    """
    if len(images_dirs) not in (1, len(paths)):
        raise InvalidRequestError(f"--images takes one directory or one per --data file "
                                  f"({len(paths)}), not {len(images_dirs)}")
    dirs = images_dirs * len(paths) if len(images_dirs) == 1 else images_dirs
    records, sizes = [], {}
    for path, images in zip(paths, dirs):
        for number, record in enumerate(read_jsonl(path), 1):
            try:  # the whole data set, before the first step rather than hours into a run
                check_record(record)
                if record.get("image"):
                    record = dict(record, image=os.path.join(images, str(record["image"])))
                    if record["image"] not in sizes:
                        sizes[record["image"]] = _image_size(record)
                    check_boxes_in_image(record, *sizes[record["image"]])
                elif not is_text_region_record(record):
                    raise InvalidRequestError(f"record {record.get('id')!r}: no 'image' (only "
                                              "text-region records have none)")
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"{path}, record {number}: {exc}") from None
            records.append(record)
    return records


def _image_size(record: dict) -> tuple:
    """``(width, height)`` of the record's image, from its header (the pixels are not decoded).

    Raises:
        InvalidRequestError: no such file, not an image, or a decompression bomb.
    """
    from ..errors import InvalidImageError
    from ..image_files import image_size

    try:
        return image_size(record["image"])
    except InvalidImageError as exc:
        raise InvalidRequestError(f"record {record.get('id')!r}: {exc}") from None


def share_word_rows(vlm, tokenizer, words: List[str]) -> List[str]:
    """``--share-word-rows``: give each word's spaced token the bare token's embedding row
    (``"scene"`` expands to :data:`~.scenes.SCENE_WORDS`); returns the words that are one token
    both ways, whose rows were set (the others are left as they are)."""
    from ..tiny import relate_model_rows, word_pairs
    from .scenes import SCENE_WORDS

    expanded = [w for word in words for w in (SCENE_WORDS if word == "scene" else (word,))]
    pairs, shared = word_pairs(tokenizer, list(dict.fromkeys(expanded)))
    relate_model_rows(vlm, pairs, 1.0)
    return shared


def _latest_checkpoint(out: str) -> Optional[str]:
    """The newest complete ``checkpoint-N`` folder of ``out`` (``None``: none yet).

    ``Trainer`` writes ``trainer_state.json`` last, so a folder without it is one the run was
    stopped while saving (a session's end, a kill): resuming from it would fail, so it is
    skipped with a line on stderr and the one before is taken; training to its step again
    overwrites it.
    """
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import sort_checkpoints

    for path in reversed(sort_checkpoints(out) if os.path.isdir(out) else []):
        if os.path.isfile(os.path.join(path, TRAINER_STATE_NAME)):
            return path
        print(f"vlxseek train: {path} is incomplete (no {TRAINER_STATE_NAME}: the run stopped "
              "while saving it); resuming from the checkpoint before", file=sys.stderr)
    return None


def _check_deepspeed(config: str) -> None:
    """``--deepspeed CONFIG``: the config file exists and the ``deepspeed`` package is
    installed (transformers raises its own PackageNotFoundError deep inside otherwise)."""
    import importlib.util

    if not os.path.isfile(config):
        raise InvalidRequestError(f"--deepspeed config {config!r} is not a file (shipped: "
                                  "config/training/zero2.json, zero3.json)")
    if importlib.util.find_spec("deepspeed") is None:
        raise InvalidRequestError("--deepspeed needs the deepspeed package: pip install "
                                  "deepspeed (on a machine with the CUDA toolkit)")


def _check_out(out: str, model: str) -> None:
    """Refuse an ``--out`` that is a file, or that is the ``--model`` folder: the final save
    would overwrite the checkpoint the run starts from (and that a resume restarts from)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise InvalidRequestError(f"--out {out!r} is a file: give a folder for the trained "
                                  "model and its checkpoints")
    if os.path.isdir(out) and os.path.isdir(model) and os.path.samefile(out, model):
        raise InvalidRequestError(f"--out {out!r} is the --model folder: the trained model "
                                  "would overwrite the one it starts from; give another folder")


def train(args: argparse.Namespace, argv: Optional[List[str]] = None) -> str:
    """Run one training stage; returns the final model directory (``args.out``).

    Raises:
        CheckpointError: unreadable starting checkpoint or resume directory.
        InvalidRequestError: unreadable or malformed training data; an ``--out`` that is a
            file or the ``--model`` folder.
    """
    from transformers import Qwen2VLImageProcessorPil, TrainingArguments

    from ..checkpoint import load_model
    from ..preprocessing import ImagePreprocessor
    from ..tokenizer import load_tokenizer
    from .freezing import apply_stage
    from .model import TrainingModel, set_activation_checkpointing
    from .trainer import VLXSeekTrainer, export_model, last_loss

    from .trainer import parse_lr_scales

    try:
        lr_scales = parse_lr_scales(args.lr_scale)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    if args.deepspeed and lr_scales:
        raise InvalidRequestError("--lr-scale needs the Trainer's own optimizer; with "
                                  "--deepspeed set per-group rates in the DeepSpeed config")
    if args.loss_vocab == "data" and (args.deepspeed or args.fsdp):
        raise InvalidRequestError("--loss-vocab data reads lm_head's rows directly, which "
                                  "sharded parameters (--deepspeed, --fsdp) do not allow")
    if args.loss_negatives is not None and (args.loss_vocab != "data" or
                                            args.loss_negatives < 0):
        raise InvalidRequestError("--loss-negatives N (N >= 0) goes with --loss-vocab data: "
                                  "the full softmax has no rows off a shortlist")
    if args.lora and args.stage != 2:  # stage 1 would train adapters of its frozen LLM and,
        # the embedding left whole to the adapters' plan, not the added tokens' rows
        raise InvalidRequestError(f"--lora is a stage-2 option (the LLM trains only there); "
                                  f"stage {args.stage} got --lora {args.lora}")
    if args.share_word_rows and args.stage != 0:
        raise InvalidRequestError("--share-word-rows edits vocabulary rows: stage 0 only (the "
                                  "paper's stages keep the original rows as trained)")
    if not 0.0 <= args.adam_beta2 < 1.0:
        raise InvalidRequestError(f"--adam-beta2 must be in [0, 1), got {args.adam_beta2}")
    if args.deepspeed:  # after the option conflicts above, which name both options
        _check_deepspeed(args.deepspeed)
    _check_out(args.out, args.model)
    records = read_records(args.data, args.images)
    if args.loss_on != "answer":  # captions etc. choose no region: nothing to learn from
        kept = [r for r in records if has_region_choice(r)]
        if not kept:
            raise InvalidRequestError(f"--loss-on {args.loss_on}: no record's answer chooses "
                                      "a region")
        if len(kept) < len(records):
            print(f"--loss-on {args.loss_on}: {len(records) - len(kept)} of {len(records)} "
                  "records choose no region and are left out", file=sys.stderr)
        records = kept
    use_cpu = args.device == "cpu" or not torch.cuda.is_available()
    vlm, _ = load_model(args.model, dtype=torch.float32, device="cpu",
                        attn_implementation="sdpa")
    tokenizer = load_tokenizer(args.model)
    shared_words = share_word_rows(vlm, tokenizer, args.share_word_rows)
    preprocessor = ImagePreprocessor(Qwen2VLImageProcessorPil.from_pretrained(args.model),
                                     vlm.config.aux_image_aspect_ratio)
    builder = SampleBuilder(tokenizer, preprocessor, "",  # read_records joined the dirs
                            loss_on=args.loss_on)
    builder.build(records[0])  # fail fast on a bad first record, before any process forks
    shortlist = None
    negatives = NEGATIVES if args.loss_negatives is None else args.loss_negatives
    if args.loss_vocab == "data":
        shortlist = data_shortlist(records, builder, tokenizer)
        print(f"--loss-vocab data: the loss's softmax runs over {len(shortlist)} of "
              f"{vlm.config.text_config.vocab_size} vocabulary rows", file=sys.stderr)
    plan = apply_stage(vlm, args.stage, tokenizer, lora=bool(args.lora))
    if args.lora:
        from .lora import add_lora

        vlm = add_lora(vlm, rank=args.lora, alpha=args.lora_alpha)
    if args.gradient_checkpointing:
        set_activation_checkpointing(vlm, True)
    vlm.train()
    training_args = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr or DEFAULT_LR[args.stage],
        num_train_epochs=args.epochs, max_steps=args.max_steps, warmup_steps=args.warmup,
        lr_scheduler_type=args.scheduler, weight_decay=args.weight_decay,
        adam_beta2=args.adam_beta2, optim=args.optim,
        max_grad_norm=args.max_grad_norm, seed=args.seed, data_seed=args.seed, bf16=args.bf16,
        save_strategy="steps", save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        logging_steps=args.logging_steps, report_to=args.report_to,
        dataloader_num_workers=args.workers, remove_unused_columns=False, use_cpu=use_cpu,
        deepspeed=args.deepspeed, fsdp=args.fsdp or "", disable_tqdm=False,
        ddp_find_unused_parameters=False)
    info = {"stage": args.stage, "lr_scales": lr_scales, "loss_on": args.loss_on,
            "adam_beta2": args.adam_beta2, "optim": args.optim, "loss_vocab": args.loss_vocab,
            "loss_vocab_rows": None if shortlist is None else len(shortlist),
            "loss_negatives": None if shortlist is None else negatives,
            "command": " ".join(argv or sys.argv), "seed": args.seed,
            "data": " ".join(os.path.basename(d) for d in args.data),
            "data_sha256": " ".join(file_sha256(d) for d in args.data),
            "num_records": len(records), "start_model": os.path.abspath(args.model)}
    if shared_words:
        info["shared_word_rows"] = shared_words
    trainer = VLXSeekTrainer(model=TrainingModel(vlm, shortlist, negatives), args=training_args,
                             train_dataset=RecordDataset(records, builder),
                             data_collator=collate_samples, freeze_plan=plan,
                             source_dir=args.model, lora=bool(args.lora), training_info=info,
                             lr_scales=lr_scales,
                             callbacks=[StopEarly(args.max_minutes, args.stop_at_step)])
    resume = args.resume
    if resume == "latest":
        resume = _latest_checkpoint(args.out)
    output = trainer.train(resume_from_checkpoint=resume)
    if trainer.args.should_save:
        final = trainer._export_vlm()
        dtype = torch.bfloat16 if args.save_dtype == "bfloat16" else None
        info.update(global_step=int(trainer.state.global_step),
                    train_runtime_s=output.metrics.get("train_runtime"),
                    train_steps_per_second=output.metrics.get("train_steps_per_second"),
                    final_loss=last_loss(trainer.state.log_history),
                    peak_memory=_peak_memory(), device=_device_name())
        export_model(final, args.out, args.model, dtype=dtype, training_info=info)
    return args.out


def _peak_memory() -> dict:
    """Peak memory of this process: CUDA allocator peak (GiB) and peak RSS (GiB)."""
    import resource

    out = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if torch.cuda.is_available():
        out["cuda_max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
