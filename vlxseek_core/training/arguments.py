"""The ``vlxseek train`` options (issue 9 §6), apart from the training code: building the
``vlxseek`` parser must not import torch and transformers, which take seconds that every
other subcommand (``make-scenes``, ``make-text-regions``, ``--help``) would pay.
"""
from __future__ import annotations

import argparse

LOSS_ON = ("answer", "regions", "choices")
"""What a sample's loss covers (see :class:`~vlxseek_core.training.samples.SampleBuilder`)."""
LOSS_VOCAB = ("full", "data")
"""``vlxseek train --loss-vocab`` choices: all rows, or the data's shortlist."""
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")
"""``vlxseek train --optim`` choices (transformers ``TrainingArguments.optim`` names)."""


def _number(kind, low: float, low_open: bool = False, high: float = None, high_open=False,
            also=()):
    """An argparse ``type`` that takes a ``kind`` (int or float) in the given range (or one of
    ``also``), so that a value no run can use is refused before the model loads."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}:"
                                             f" {text!r}") from None
        if value in also:
            return value
        ok = (value > low if low_open else value >= low) and value == value  # NaN fails
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
        if not ok:
            span = (f"{'(' if low_open else '['}{low:g}, "
                    f"{'inf)' if high is None else f'{high:g}' + (')' if high_open else ']')}")
            extra = f" or {', '.join(map(str, also))}" if also else ""
            raise argparse.ArgumentTypeError(f"must be in {span}{extra}, got {text!r}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT = _number(int, 1)
NON_NEGATIVE_INT = _number(int, 0)
POSITIVE = _number(float, 0, low_open=True)
NON_NEGATIVE = _number(float, 0)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``vlxseek train`` options (numbers outside their range are refused by argparse,
    exit status 2, before anything loads)."""
    a = parser.add_argument
    a("--stage", type=int, required=True, choices=(0, 1, 2),
      help="1: region-language alignment, 2: perception instruction tuning (paper §3.3); "
           "0: everything trains (models trained from random initialisation)")
    a("--model", required=True, help="checkpoint directory to start from")
    a("--data", required=True, nargs="+",
      help="training records (JSONL); several files are concatenated (a data mix)")
    a("--images", default=["."], nargs="+",
      help="directory that record image paths are relative to: one for all --data files, "
           "or one per file")
    a("--out", required=True, help="output directory (checkpoint-N/ and the final model)")
    a("--lr", type=POSITIVE, default=None,
      help="learning rate (default: 1e-3 stage 0/1, 1e-5 stage 2)")
    a("--epochs", type=POSITIVE, default=1.0,
      help="passes over the data when --max-steps is not given")
    a("--max-steps", type=_number(int, 1, also=(-1,)), default=-1,
      help="stop after this many optimiser steps (default -1: --epochs passes)")
    a("--max-minutes", type=POSITIVE, default=None,
      help="also stop (and save) after this much training time; the step reached is recorded "
           "in vlxseek_training.json, so --stop-at-step reproduces the run")
    a("--stop-at-step", type=POSITIVE_INT, default=None,
      help="stop (and save) at this step; the schedule still spans --max-steps")
    a("--batch-size", type=POSITIVE_INT, default=8, help="per-device batch size")
    a("--grad-accum", type=POSITIVE_INT, default=1)
    a("--warmup", type=NON_NEGATIVE, default=0.03,
      help="warm-up steps (an integer) or fraction of all steps (below 1)")
    a("--scheduler", default="cosine", help="transformers scheduler name")
    a("--weight-decay", type=NON_NEGATIVE, default=0.0)
    a("--adam-beta2", type=float, default=0.999,
      help="AdamW beta2 (0.99 when training the LLM from random initialisation: with the "
           "default 0.999 and the 151,936-token softmax the region binding did not form; "
           "docs/scene-model-notes.md 'What forms it')")
    a("--max-grad-norm", type=NON_NEGATIVE, default=1.0, help="0: no clipping")
    a("--optim", default="adamw_torch", choices=OPTIMIZERS,
      help="AdamW as one loop over the parameters (adamw_torch), or as one fused kernel per "
           "step (adamw_torch_fused: the same update, several times faster on a CPU when the "
           "151,936-row embedding trains; README 'Fused AdamW')")
    a("--lr-scale", action="append", default=[], metavar="GROUP=X",
      help="learning-rate multiplier of a module group: towers, hfre, connector or llm "
           "(repeatable; e.g. towers=0.1 hfre=0.1 connector=0.1 when training from random "
           "initialisation, see README 'Procedural scenes and the scene model')")
    a("--loss-on", default="answer", choices=LOSS_ON,
      help="answer: every answer token (paper); regions: only the <regionK> / None choices; "
           "choices: those and the grounded phrases "
           "(binding curriculum of models trained from scratch, README)")
    a("--loss-vocab", default="full", choices=LOSS_VOCAB,
      help="full: the loss's softmax over every vocabulary row (paper); data: over the "
           "tokens of the training records and the added tokens only (vocabulary shortlist: "
           "about half the step time of a small model trained from scratch; README)")
    a("--loss-negatives", type=NON_NEGATIVE_INT, default=None, metavar="N",
      help="with --loss-vocab data: rows off the shortlist drawn per step for the softmax "
           "column that stands for them (default 4096; 0: no such column, the softmax over "
           "the data's tokens alone; docs/scene-model-notes.md 'The sampled column')")
    a("--share-word-rows", nargs="+", default=[], metavar="WORD",
      help="stage 0: before training, set the embedding row of each word's space-prefixed "
           "token (' red') to its bare token's row ('red'), as a pretrained LLM has them "
           "close; 'scene' stands for every make-scenes word (docs/scene-model-notes.md "
           "'Shared embedding rows carry the lookup over'); a resumed run takes its "
           "checkpoint's rows")
    a("--seed", type=int, default=0)
    a("--bf16", action="store_true", help="bf16 mixed precision (autocast; fp32 master weights)")
    a("--gradient-checkpointing", action="store_true", help="recompute LLM layers in backward")
    a("--lora", type=NON_NEGATIVE_INT, default=0, metavar="R",
      help="stage 2 only: LoRA rank on the LLM (0 = full fine-tuning); merged on save")
    a("--lora-alpha", type=POSITIVE_INT, default=None, help="LoRA alpha (default 2 × rank)")
    a("--save-steps", type=POSITIVE_INT, default=500)
    a("--save-total-limit", type=POSITIVE_INT, default=2)
    a("--logging-steps", type=POSITIVE_INT, default=10)
    a("--resume", nargs="?", const="latest", default=None,
      help="resume from OUT's latest checkpoint-N (or the given checkpoint directory)")
    a("--workers", type=NON_NEGATIVE_INT, default=0, help="data-loader worker processes")
    a("--device", default="auto", help="auto, cpu or cuda (single-process runs)")
    a("--report-to", default="none", help="none, tensorboard, ...")
    a("--deepspeed", default=None, help="DeepSpeed JSON config (e.g. config/training/zero2.json)")
    a("--fsdp", default="", help='FSDP mode string, e.g. "full_shard auto_wrap"')
    a("--save-dtype", default="float32", choices=("float32", "bfloat16"),
      help="dtype of the saved final model")
