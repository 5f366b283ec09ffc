"""Fine-tuning on transformers' ``Trainer`` (issue 9 §3–5).

The engine is transformers' ``Trainer`` (accelerate underneath): the same script runs on one
CPU, one GPU, or several processes under ``torchrun`` / ``accelerate launch`` (DDP; FSDP and
DeepSpeed through ``TrainingArguments``). vlxseek adds only what the method needs:

* the batch forward and answer-only loss (:class:`~.model.TrainingModel`),
* the stage's freezing (:mod:`.freezing`), optional LoRA (:mod:`.lora`),
* checkpoints in the reference format: every save (``checkpoint-N`` and the final one) is a
  directory that ``VLXSeek.from_pretrained``, ``vlxseek inspect`` and the node load — reference
  state_dict names, ``config.json``, tokenizer, ``preprocessor_config.json``,
  ``generation_config.json`` — and a run resumes from any ``checkpoint-N``.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Optional

import torch
from transformers import Trainer

from ..checkpoint import WEIGHTS_NAME, iter_reference_tensors, save_model
from ..davit import reference_to_florence
from ..errors import CheckpointError
from .freezing import FreezePlan

CHECKPOINT_SIDE_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt",
                         "added_tokens.json", "special_tokens_map.json", "chat_template.jinja",
                         "chat_template.json", "preprocessor_config.json",
                         "generation_config.json", "qwen.tiktoken")


def copy_side_files(source_dir: str, target_dir: str) -> None:
    """Copy tokenizer, processor and generation files of a checkpoint (weights excluded)."""
    os.makedirs(target_dir, exist_ok=True)
    for name in CHECKPOINT_SIDE_FILES:
        path = os.path.join(source_dir, name)
        if os.path.isfile(path):
            shutil.copy2(path, os.path.join(target_dir, name))


def export_model(vlm, directory: str, source_dir: str, dtype: Optional[torch.dtype] = None,
                 training_info: Optional[dict] = None) -> None:
    """Write ``vlm`` as a reference-format checkpoint directory.

    Args:
        vlm: a ``VLMFO1ForCausalLM`` (LoRA adapters must be merged first, see
            :func:`~.lora.merged_model`).
        directory: output directory.
        source_dir: the checkpoint training started from (tokenizer/processor files).
        dtype: cast the saved weights (e.g. ``torch.bfloat16``); ``None`` keeps them.
        training_info: written to ``vlxseek_training.json`` (command, data, seed, ...).
    """
    if dtype is not None and any(p.dtype != dtype for p in vlm.parameters()):
        import copy

        vlm = copy.deepcopy(vlm).to(dtype)
    vlm.config.vlxseek_random_weights = False
    save_model(vlm, directory)
    copy_side_files(source_dir, directory)
    if training_info is not None:
        with open(os.path.join(directory, "vlxseek_training.json"), "w", encoding="utf-8") as fh:
            json.dump(training_info, fh, indent=2, sort_keys=True)


def load_weights_into(vlm, directory: str) -> None:
    """Load a reference-format checkpoint's weights into an existing model (strict).

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys.
    """
    state = vlm.state_dict()
    loaded = set()
    with torch.no_grad():
        for ref_key, tensor in iter_reference_tensors(directory):
            key = reference_to_florence(ref_key)
            if key not in state or tuple(state[key].shape) != tuple(tensor.shape):
                raise CheckpointError(f"{directory}: key {ref_key} does not fit the model")
            state[key].copy_(tensor.to(state[key].dtype))
            loaded.add(key)
    missing = [k for k in state if k not in loaded
               and not (k == "lm_head.weight" and vlm.config.tie_word_embeddings)]
    if missing:
        raise CheckpointError(f"{directory}: missing keys {missing[:5]}")


class VLXSeekTrainer(Trainer):
    """``Trainer`` whose checkpoints are reference-format model directories.

    Args (beyond ``Trainer``'s):
        freeze_plan: the stage's :class:`FreezePlan` (kept alive for its gradient hook, and its
            ``no_decay`` parameters get no weight decay).
        source_dir: the starting checkpoint (tokenizer/processor files are copied from it).
        lora: the LLM carries LoRA adapters (merged into the saved weights).
        training_info: metadata written into every saved checkpoint.
    """

    def __init__(self, *args, freeze_plan: FreezePlan, source_dir: str, lora: bool = False,
                 training_info: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.freeze_plan = freeze_plan
        self.source_dir = source_dir
        self.lora = lora
        self.training_info = training_info or {}

    def get_decay_parameter_names(self, model) -> list:
        names = super().get_decay_parameter_names(model)
        blocked = {f"vlm.{n}" for n in self.freeze_plan.no_decay}
        return [n for n in names if n not in blocked]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def _export_vlm(self):
        vlm = self.accelerator.unwrap_model(self.model).vlm
        if self.lora:
            from .lora import merged_model

            vlm = merged_model(vlm)
        return vlm

    def _save(self, output_dir: Optional[str] = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        info = dict(self.training_info, global_step=int(self.state.global_step))
        export_model(self._export_vlm(), output_dir, self.source_dir, training_info=info)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if not os.path.isfile(os.path.join(resume_from_checkpoint, WEIGHTS_NAME)):
            raise CheckpointError(f"{resume_from_checkpoint} holds no {WEIGHTS_NAME}")
        target = (model or self.model)
        vlm = self.accelerator.unwrap_model(target).vlm
        if self.lora:
            raise CheckpointError("resuming a LoRA run is not supported: its checkpoints hold "
                                  "merged weights; start a new LoRA run from that checkpoint")
        load_weights_into(vlm, resume_from_checkpoint)
