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
from typing import Dict, List, Optional

import torch
from transformers import Trainer

from ..checkpoint import WEIGHTS_NAME, iter_reference_tensors, save_model
from ..davit import reference_to_florence
from ..errors import CheckpointError
from .freezing import FreezePlan
from .record_helpers import written_whole

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
    if training_info is not None:  # last and whole: it marks a finished phase
        with written_whole(os.path.join(directory, "vlxseek_training.json")) as part, \
                open(part, "w", encoding="utf-8") as fh:
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


def model_from_state_dict(live, state_dict: dict):
    """A ``VLMFO1ForCausalLM`` holding the tensors of an engine's full state dict.

    Built on the meta device and filled by assignment (no copy of the tensors); LoRA adapters
    are re-created when ``live`` has them, non-persistent buffers (rotary tables) are shared
    with ``live``.

    Args:
        live: the model being trained (gives config, LoRA settings and buffers).
        state_dict: keys of :class:`~.model.TrainingModel` (``vlm.``-prefixed) or of the model.

    Raises:
        CheckpointError: missing or unexpected keys.
    """
    from ..checkpoint import build_empty_model
    from .lora import add_lora, has_lora, lora_settings

    prefix = "vlm."
    state = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}
    with torch.device("meta"):
        model = build_empty_model(live.config, torch.float32)
    if has_lora(live):
        add_lora(model, **lora_settings(live))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = bool(getattr(live.config, "tie_word_embeddings", False))
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(f"gathered state dict does not fit the model: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    live_buffers = {_unwrapped_name(n): b for n, b in live.named_buffers()}
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            parent, _, leaf = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            owner._buffers[leaf] = live_buffers[name]
    return model


LR_GROUPS = ("towers", "hfre", "connector", "llm")
"""Module groups of ``--lr-scale``: the two vision towers (primary ViT incl. merger, aux
encoder), the HFRE (``object_vp_extractor``, SimpleFP), the region connector
(``mm_projector_aux``, and ``mm_projector`` when it has weights), and the LLM (embeddings,
decoder layers, norm, ``lm_head``, LoRA adapters)."""
_GROUP_MARKERS = (("towers", (".vision_tower.", ".vision_tower_aux.")),
                  ("hfre", (".object_vp_extractor.",)),
                  ("connector", (".mm_projector_aux.", ".mm_projector.")))


def lr_group(name: str) -> str:
    """The :data:`LR_GROUPS` entry of a (possibly wrapped) parameter name."""
    dotted = f".{name}"
    for group, markers in _GROUP_MARKERS:
        if any(m in dotted for m in markers):
            return group
    return "llm"


def parse_lr_scales(items) -> Dict[str, float]:
    """``["towers=0.1", "hfre=0.1"]`` → ``{"towers": 0.1, "hfre": 0.1}``.

    Raises:
        ValueError: not ``GROUP=X``, an unknown group, a repeated group, or ``X`` not a finite
            number ≥ 0.
    """
    out: Dict[str, float] = {}
    for item in items or ():
        group, sep, value = str(item).partition("=")
        if not sep or group not in LR_GROUPS:
            raise ValueError(f"--lr-scale {item!r}: expected GROUP=X with GROUP one of "
                             f"{', '.join(LR_GROUPS)}")
        if group in out:
            raise ValueError(f"--lr-scale: group {group!r} given twice")
        try:
            scale = float(value)
        except ValueError:
            scale = float("nan")
        if not (scale >= 0 and scale != float("inf")):
            raise ValueError(f"--lr-scale {item!r}: the scale must be a finite number >= 0")
        out[group] = scale
    return out


def _unwrapped_name(name: str) -> str:
    """A module-path name without the wrapper segments FSDP / activation checkpointing add."""
    return ".".join(part for part in name.split(".")
                    if part not in ("_fsdp_wrapped_module", "_checkpoint_wrapped_module"))


def last_loss(history: List[dict]) -> Optional[float]:
    """The last logged training loss of a ``Trainer`` log history (``None``: none logged)."""
    losses = [h["loss"] for h in history if "loss" in h]
    return float(losses[-1]) if losses else None


class VLXSeekTrainer(Trainer):
    """``Trainer`` whose checkpoints are reference-format model directories.

    Args (beyond ``Trainer``'s):
        freeze_plan: the stage's :class:`FreezePlan` (kept alive for its gradient hook, and its
            ``no_decay`` parameters get no weight decay).
        source_dir: the starting checkpoint (tokenizer/processor files are copied from it).
        lora: the LLM carries LoRA adapters (merged into the saved weights).
        training_info: metadata written into every saved checkpoint.
        lr_scales: learning-rate multipliers per module group (:data:`LR_GROUPS`) relative to
            ``args.learning_rate``; groups not named keep the base rate.
    """

    def __init__(self, *args, freeze_plan: FreezePlan, source_dir: str, lora: bool = False,
                 training_info: Optional[dict] = None,
                 lr_scales: Optional[Dict[str, float]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.freeze_plan = freeze_plan
        self.source_dir = source_dir
        self.lora = lora
        self.training_info = training_info or {}
        self.lr_scales = dict(lr_scales or {})

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """``Trainer``'s optimizer; with ``lr_scales`` each parameter group is split by module
        group (:data:`LR_GROUPS`), each part at its scaled rate (the scheduler, created
        afterwards, scales every group's own initial rate).

        Why: trained from random initialisation at one rate, the towers' un-normalised outputs
        (spec §2.5, "DaViT stage outputs are used un-normalised"), the HFRE and the connector
        drift until every region feature of an image points the same way (mean cosine 0.99999
        after 400 steps at 2e-3) and the LLM can no longer tell regions apart.
        """
        optimizer = super().create_optimizer(model)
        if not self.lr_scales or self.is_deepspeed_enabled:
            return optimizer
        group_of = {id(p): lr_group(n) for n, p in (model or self.model).named_parameters()}
        groups = []
        for group in optimizer.param_groups:
            for name in LR_GROUPS:
                params = [p for p in group["params"] if group_of[id(p)] == name]
                if params:
                    lr = group["lr"] * self.lr_scales.get(name, 1.0)
                    groups.append({**group, "params": params, "lr": lr})
        optimizer.param_groups.clear()
        for group in groups:
            optimizer.add_param_group(group)
        return optimizer

    def get_decay_parameter_names(self, model) -> list:
        names = super().get_decay_parameter_names(model)
        blocked = {f"vlm.{n}" for n in self.freeze_plan.no_decay}
        return [n for n in names if n not in blocked]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def train(self, resume_from_checkpoint=None, **kwargs):
        """``Trainer.train``; afterwards, when the engine shards the parameters (FSDP,
        DeepSpeed ZeRO-3), the full state dict is gathered on every process (a collective) and
        kept for :meth:`_export_vlm`, which the main process alone calls.

        A checkpoint that already reached ``args.max_steps`` (a run stopped after its last
        checkpoint, before the final save) is loaded and not trained: ``Trainer`` would run
        one step past it.
        """
        finished = self._finished_state(resume_from_checkpoint)
        if finished is not None:
            from transformers.trainer_utils import TrainOutput

            self._load_from_checkpoint(resume_from_checkpoint)
            self.state = finished
            self._gathered_state = None
            return TrainOutput(finished.global_step, last_loss(finished.log_history), {})
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        self._gathered_state = self._gather_state_dict()
        return output

    def _finished_state(self, checkpoint):
        """The ``TrainerState`` of ``checkpoint`` (a ``checkpoint-N`` folder) when it holds the
        run's last step, else ``None``; on one process or DDP only (a sharded engine restores
        its own state in ``train``)."""
        if not isinstance(checkpoint, str) or self.args.max_steps <= 0:
            return None
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return None
        from transformers.trainer_callback import TrainerState

        try:
            state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        except (OSError, ValueError, TypeError):
            return None  # Trainer reports what is wrong with it
        return state if state.global_step >= self.args.max_steps else None

    def _gather_state_dict(self) -> Optional[dict]:
        """The full state dict of a sharded model (on the main process; every process must
        call this), or ``None`` when each process holds all parameters (one process, DDP,
        ZeRO-1/2)."""
        if self.is_fsdp_enabled:
            return self.accelerator.get_state_dict(self.model)
        if self.is_deepspeed_enabled and self.accelerator.deepspeed_config.get(
                "zero_optimization", {}).get("stage") == 3:
            return self.accelerator.get_state_dict(self.deepspeed)
        return None

    def _export_vlm(self, state_dict: Optional[dict] = None):
        """The ``VLMFO1ForCausalLM`` to save, LoRA adapters merged.

        Args:
            state_dict: the engine's full state dict (FSDP ``FULL_STATE_DICT``, ZeRO-3 16-bit
                weights; keys of :class:`~.model.TrainingModel`); ``None`` = the live model's
                own parameters, or the state gathered at the end of :meth:`train` for a
                sharded model.

        Raises:
            CheckpointError: a state dict that does not fit the model.
        """
        vlm = self.accelerator.unwrap_model(self.model).vlm
        if state_dict is None:
            state_dict = getattr(self, "_gathered_state", None)
        if state_dict is not None:
            vlm = model_from_state_dict(vlm, state_dict)
        if self.lora:
            from .lora import merged_model

            vlm = merged_model(vlm)
        return vlm

    def _save(self, output_dir: Optional[str] = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        info = dict(self.training_info, global_step=int(self.state.global_step))
        if state_dict is not None and not state_dict:
            # ZeRO-3 without stage3_gather_16bit_weights_on_model_save: the engine writes its
            # own sharded checkpoint; there are no weights to export here.
            copy_side_files(self.source_dir, output_dir)
            return
        export_model(self._export_vlm(state_dict), output_dir, self.source_dir,
                     training_info=info)
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
