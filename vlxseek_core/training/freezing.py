"""What each training stage trains (paper §3.3; issue 9 §3).

* **Stage 1, region-language alignment**: HFRE (``object_vp_extractor``, SimpleFP included) and
  the connector ``mm_projector_aux`` train, plus the embedding rows of the added VLM-FO1 tokens
  (``<region0..99>``, grounding and think tags). Everything else is frozen: both towers,
  ``mm_projector``, the LLM and every original vocabulary row — also through a tied ``lm_head``,
  which shares the embedding matrix.
* **Stage 2, perception instruction tuning**: auxiliary DaViT, HFRE, connector and the LLM
  (all embedding rows) train; the primary ViT (with its merger) and ``mm_projector`` stay
  frozen. With LoRA the LLM's base weights stay frozen instead and adapters train.
* **Stage 0** (vlxseek's documented extra stage for models trained from random
  initialisation, where no pre-trained VLM exists): everything trains.

Row freezing is exact: a gradient hook zeroes the frozen rows' gradient, and the embedding is
kept out of weight decay, so AdamW leaves those rows bit-identical (zero gradient → zero
moments → zero update).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from ..tokens import VLM_FO1_ADDED_TOKENS

STAGES = (0, 1, 2)

_TRAINABLE_PREFIXES: Dict[int, Sequence[str]] = {
    0: ("",),
    1: ("model.object_vp_extractor.", "model.mm_projector_aux."),
    2: ("model.vision_tower_aux.", "model.object_vp_extractor.", "model.mm_projector_aux.",
        "model.embed_tokens.", "model.layers.", "model.norm.", "lm_head."),
}
EMBEDDING = "model.embed_tokens.weight"


@dataclass
class FreezePlan:
    """The result of :func:`apply_stage`.

    Attributes:
        stage: 0, 1 or 2.
        trainable: parameter names (module names of the wrapped model) that train.
        frozen: parameter names that do not.
        trainable_rows: embedding rows that train when only some do (stage 1), else ``None``.
        no_decay: parameter names that must get no weight decay (row-frozen embedding).
    """

    stage: int
    trainable: List[str] = field(default_factory=list)
    frozen: List[str] = field(default_factory=list)
    trainable_rows: Optional[List[int]] = None
    no_decay: List[str] = field(default_factory=list)
    _hook: Optional[torch.utils.hooks.RemovableHandle] = None


def added_token_ids(tokenizer) -> List[int]:
    """Ids of the VLM-FO1 added tokens in ``tokenizer`` (spec §3.1), sorted.

    Raises:
        ValueError: the tokenizer lacks one of them.
    """
    ids = []
    for token in VLM_FO1_ADDED_TOKENS:
        idx = tokenizer.convert_tokens_to_ids(token)
        if idx is None or idx == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token!r}; not a VLM-FO1 tokenizer")
        ids.append(int(idx))
    return sorted(ids)


def apply_stage(vlm, stage: int, tokenizer, lora: bool = False) -> FreezePlan:
    """Set ``requires_grad`` on ``vlm`` (a ``VLMFO1ForCausalLM``) for ``stage``.

    Args:
        vlm: the model, before any LoRA wrapping.
        stage: 0, 1 or 2 (see the module docstring).
        tokenizer: gives the added-token ids whose rows train in stage 1.
        lora: stage 2 with LoRA adapters: the LLM's own weights stay frozen (the adapters,
            added afterwards by :func:`~vlxseek_core.training.lora.add_lora`, train).

    Returns:
        :class:`FreezePlan` (keep it: its hook implements the row freezing).

    Raises:
        ValueError: unknown stage, or a stage-1 tokenizer without the added tokens.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; stages are {STAGES}")
    prefixes = _TRAINABLE_PREFIXES[stage]
    if lora:
        prefixes = tuple(p for p in prefixes if p not in (
            "model.embed_tokens.", "model.layers.", "model.norm.", "lm_head."))
    plan = FreezePlan(stage)
    for name, param in vlm.named_parameters():
        train = any(name.startswith(p) for p in prefixes)
        param.requires_grad_(train)
        (plan.trainable if train else plan.frozen).append(name)
    if stage == 1:
        embedding = vlm.get_input_embeddings().weight
        embedding.requires_grad_(True)
        plan.trainable_rows = added_token_ids(tokenizer)
        mask = torch.zeros(embedding.shape[0], 1, dtype=embedding.dtype,
                           device=embedding.device)
        mask[plan.trainable_rows] = 1
        plan._hook = embedding.register_hook(lambda grad: grad * mask.to(grad.dtype))
        plan.no_decay.append(EMBEDDING)
        for name in (EMBEDDING, "lm_head.weight"):
            if name in plan.frozen:
                plan.frozen.remove(name)
        plan.trainable.append(EMBEDDING)
    return plan
