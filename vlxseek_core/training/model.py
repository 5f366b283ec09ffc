"""The training forward pass: a batch of samples → the answer-token loss (issue 9 §2).

:class:`TrainingModel` wraps a :class:`~vlxseek_core.modeling.VLMFO1ForCausalLM` without
changing it: the same towers, HFRE, connectors, splicing (``splice`` / ``rope_index``) and LLM
as inference, batched where inference handles one frame. The loss is the mean over samples of
each sample's mean cross-entropy on its answer tokens, so every sample weighs the same whatever
its answer length, and data-parallel gradient averaging over equal per-process batches equals
the single-process gradient of the global batch.
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling import EncodedFrame, VLMFO1ForCausalLM
from ..tokens import IMAGE_PLACEHOLDER_ID
from .samples import IGNORE_INDEX
from .shortlist import NEGATIVES, shortlist_logits, shortlist_targets


def _frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


class TrainingModel(nn.Module):
    """``forward(**collate_samples(...)) -> {"loss", "num_answer_tokens"}``.

    Args:
        vlm: the model to train (its ``requires_grad`` flags say what trains; see
            :mod:`vlxseek_core.training.freezing`).
        shortlist: long ``[V']`` sorted token ids: the loss's softmax runs over these rows
            only (:mod:`~vlxseek_core.training.shortlist`); ``None`` = all rows.
        negatives: with a ``shortlist``, the rows off it drawn per step for the column that
            stands for them (:func:`~vlxseek_core.training.shortlist.shortlist_logits`; 0:
            no such column, the softmax over the shortlist alone).

    Frozen towers run under ``no_grad`` (no activations are kept for them).
    """

    def __init__(self, vlm: VLMFO1ForCausalLM, shortlist: Optional[torch.Tensor] = None,
                 negatives: int = NEGATIVES):
        super().__init__()
        self.vlm = vlm
        self.negatives = negatives
        # a buffer so that it follows .to(device); not persistent: checkpoints stay the model's
        self.register_buffer("shortlist", shortlist, persistent=False)

    @property
    def config(self):
        return self.vlm.config

    def encode_frames(self, pixel_values: List[Optional[torch.Tensor]],
                      image_grid_thw: List[Optional[torch.Tensor]],
                      aux_pixel_values: List[Optional[torch.Tensor]],
                      aux_boxes: List[Optional[torch.Tensor]],
                      vt_boxes: List[Optional[torch.Tensor]]) -> List[Optional[EncodedFrame]]:
        """:meth:`VLMFO1ForCausalLM.encode_frame` for a batch: one primary-ViT call for all
        images, one aux-tower call per group of equal-sized aux images, one connector call.

        Samples without an image (text-region records: every entry ``None``) get ``None``;
        the others are encoded together.

        Samples without boxes (general VQA, spec §3.2) get ``[0, hidden]`` region rows and
        skip the aux tower and the HFRE, unless no sample of the batch has a box: then the
        first one runs them on its empty box list, so that every trainable parameter of the
        region path stays in the autograd graph with a zero gradient (the trainer's DDP runs
        with ``find_unused_parameters=False``). A batch without any image gets that from
        :meth:`forward` instead.

        Args: per sample, as ``encode_frame`` (``aux_boxes``/``vt_boxes`` may be ``[0, 4]``).

        Returns:
            one :class:`EncodedFrame` per sample, ``None`` for samples without an image.
        """
        with_image = [i for i, p in enumerate(pixel_values) if p is not None]
        out: List[Optional[EncodedFrame]] = [None] * len(pixel_values)
        if with_image:
            pick = lambda values: [values[i] for i in with_image]  # noqa: E731
            frames = self._encode_image_frames(pick(pixel_values), pick(image_grid_thw),
                                               pick(aux_pixel_values), pick(aux_boxes),
                                               pick(vt_boxes))
            for i, frame in zip(with_image, frames):
                out[i] = frame
        return out

    def _encode_image_frames(self, pixel_values: List[torch.Tensor],
                             image_grid_thw: List[torch.Tensor],
                             aux_pixel_values: List[torch.Tensor], aux_boxes: List[torch.Tensor],
                             vt_boxes: List[torch.Tensor]) -> List[EncodedFrame]:
        """:meth:`encode_frames` for samples that all have an image (see there)."""
        m = self.vlm.model
        hfre = m.object_vp_extractor
        levels = hfre.vt_levels(len(m.vision_tower.config.fullatt_block_indexes))
        grids = torch.cat(image_grid_thw, dim=0)
        with torch.no_grad() if _frozen(m.vision_tower) else contextlib.nullcontext():
            tokens, vt_maps = m.vision_tower.encode_many(torch.cat(pixel_values, dim=0), grids,
                                                         levels)
        image_embeds = [m.mm_projector(t) for t in tokens]
        regional = [i for i, b in enumerate(aux_boxes) if len(b)] or [0]
        aux_maps = self._aux_maps(aux_pixel_values, regional)
        patch = m.vision_tower.config.patch_size
        # Images of one size (aux and primary) share one HFRE call: RoIAlign takes a box list
        # per map, SimpleFP a batch of maps.
        groups: Dict[tuple, List[int]] = {}
        for i in regional:
            key = (tuple(aux_maps[i][0].shape), tuple(grids[i].tolist()))
            groups.setdefault(key, []).append(i)
        feats = [image_embeds[0].new_zeros(0, hfre.fused_dim, dtype=torch.float32)
                 for _ in pixel_values]
        for (_, (_, grid_h, grid_w)), idx in groups.items():
            vt_size = (grid_h * patch, grid_w * patch)
            maps = [torch.cat(level) for level in zip(*(vt_maps[i] for i in idx))]
            if maps and hfre.simple_fpn is not None:
                maps = [maps[-1].to(hfre.simple_fpn.simfp_1[0].weight.dtype)]
            aux = [torch.cat(level) for level in zip(*(aux_maps[i] for i in idx))]
            out = hfre(aux, [aux_boxes[i] for i in idx], maps, [vt_boxes[i] for i in idx],
                       vt_size)
            for i, rows in zip(idx, out.split([len(aux_boxes[i]) for i in idx])):
                feats[i] = rows
        counts = [f.shape[0] for f in feats]
        dtype = aux_maps[regional[0]][0].dtype
        regions = m.mm_projector_aux(torch.cat(feats).to(dtype)).split(counts)
        return [EncodedFrame(img, reg, grids[i:i + 1])
                for i, (img, reg) in enumerate(zip(image_embeds, regions))]

    def _aux_maps(self, aux_pixel_values: List[torch.Tensor],
                  which: List[int]) -> List[Optional[List[torch.Tensor]]]:
        """Aux-tower maps of the samples ``which`` (``None`` for the others), one tower call
        per group of equal-sized images."""
        tower = self.vlm.model.vision_tower_aux
        dtype = tower.image_tower.dtype
        out: List[Optional[List[torch.Tensor]]] = [None] * len(aux_pixel_values)
        groups: Dict[tuple, List[int]] = {}
        for i in which:
            groups.setdefault(tuple(aux_pixel_values[i].shape), []).append(i)
        with torch.no_grad() if _frozen(tower) else contextlib.nullcontext():
            for idx in groups.values():
                maps = tower(torch.cat([aux_pixel_values[i] for i in idx]).to(dtype))
                for j, i in enumerate(idx):
                    out[i] = [level[j:j + 1] for level in maps]
        return out

    def forward(self, input_ids: List[torch.Tensor], answer_labels: List[torch.Tensor],
                pixel_values: List[Optional[torch.Tensor]],
                image_grid_thw: List[Optional[torch.Tensor]],
                aux_pixel_values: List[Optional[torch.Tensor]],
                aux_boxes: List[Optional[torch.Tensor]],
                vt_boxes: List[Optional[torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Loss of a batch (lists as produced by :func:`~.samples.collate_samples`).

        Returns:
            ``{"loss": scalar, "num_answer_tokens": long scalar}``.
        """
        hidden, label_mat, frames = self.hidden_states(
            input_ids, answer_labels, pixel_values, image_grid_thw, aux_pixel_values,
            aux_boxes, vt_boxes)
        out = answer_loss(self.vlm.lm_head, hidden, label_mat, self.shortlist,
                          self.negatives)
        if all(frame is None for frame in frames):
            out["loss"] = out["loss"] + self._unused_vision_term()
        return out

    def hidden_states(self, input_ids, answer_labels, pixel_values, image_grid_thw,
                      aux_pixel_values, aux_boxes, vt_boxes):
        """The LLM's last hidden states of a batch (arguments as :meth:`forward`).

        Returns:
            ``(hidden [B, L, hidden], labels long [B, L] aligned with it (not shifted,
            :data:`IGNORE_INDEX` on prompt, image rows and padding), frames)``.
        """
        vlm = self.vlm
        frames = self.encode_frames(pixel_values, image_grid_thw, aux_pixel_values, aux_boxes,
                                    vt_boxes)
        lengths = [len(ids) for ids in input_ids]
        all_ids = torch.cat(input_ids)
        text = vlm.model.embed_tokens(all_ids.clamp(min=0)).split(lengths)
        rows, labels, positions = [], [], []
        for ids, lab, emb, frame in zip(input_ids, answer_labels, text, frames):
            if frame is None:  # text-region record: plain text, 1-D positions (as M-RoPE's)
                rows.append(emb)
                labels.append(lab)
                positions.append(torch.arange(len(ids), device=emb.device).expand(3, -1))
                continue
            seq, types = vlm.splice(ids, emb, frame)
            pos, _ = vlm.rope_index(types[None], frame.image_grid_thw)
            rows.append(seq)
            labels.append(expand_image_placeholder(lab, ids, frame.image_embeds.shape[0],
                                                   IGNORE_INDEX))
            positions.append(pos[:, 0])
        embeds = nn.utils.rnn.pad_sequence(rows, batch_first=True)
        label_mat = nn.utils.rnn.pad_sequence(labels, batch_first=True,
                                              padding_value=IGNORE_INDEX)
        position_ids = nn.utils.rnn.pad_sequence(
            [p.T for p in positions], batch_first=True).permute(2, 0, 1)
        attention_mask = nn.utils.rnn.pad_sequence(
            [torch.ones(len(r), dtype=torch.long, device=embeds.device) for r in rows],
            batch_first=True)
        hidden = vlm.model(inputs_embeds=embeds, attention_mask=attention_mask,
                           position_ids=position_ids, use_cache=False).last_hidden_state
        return hidden, label_mat, frames

    def _unused_vision_term(self) -> torch.Tensor:
        """``0 ×`` the sum of the trainable vision-side parameters: a batch without images
        leaves them out of the graph, and DDP without ``find_unused_parameters`` needs every
        trainable parameter to get a gradient (zero here) on every process and step."""
        m = self.vlm.model
        params = [p for module in (m.vision_tower, m.vision_tower_aux, m.mm_projector,
                                   m.mm_projector_aux, m.object_vp_extractor)
                  for p in module.parameters() if p.requires_grad]
        zero = self.vlm.lm_head.weight.new_zeros(())
        return zero + sum((p.sum() * 0.0 for p in params), zero)


def expand_image_placeholder(values: torch.Tensor, ids: torch.Tensor, rows: int,
                             fill: int) -> torch.Tensor:
    """``values`` aligned with the prompt ids ``ids`` (``[L_ids]``, one image placeholder)
    made aligned with the spliced sequence of :meth:`VLMFO1ForCausalLM.splice`: the
    placeholder's entry becomes ``rows`` entries of ``fill`` (``[L_ids - 1 + rows]``, dtype of
    ``values``)."""
    at = int((ids == IMAGE_PLACEHOLDER_ID).nonzero()[0, 0])
    return torch.cat([values[:at], values.new_full((rows,), fill), values[at + 1:]])


def set_activation_checkpointing(vlm, enabled: bool) -> None:
    """Gradient (activation) checkpointing of the LLM's decoder layers on or off, non-reentrant
    (the reentrant variant drops the gradients of inputs that need none, e.g. frozen rows).

    transformers 5.24 renamed ``gradient_checkpointing_enable`` to
    ``activation_checkpointing_enable`` (the old name warns, and goes in 6); 5.23 has only the
    old one, so the new name is used where it exists.
    """
    llm = vlm.model
    if enabled:
        enable = getattr(llm, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            llm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(llm, "activation_checkpointing_disable", None)
        (disable or llm.gradient_checkpointing_disable)()


def answer_loss(lm_head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor,
                shortlist: Optional[torch.Tensor] = None,
                negatives: int = NEGATIVES) -> Dict[str, torch.Tensor]:
    """Per-sample mean next-token cross-entropy on labelled positions, averaged over samples.

    Logits are computed only where a label follows (the full ``[B, L, 151936]`` logits of a
    batch would take gigabytes), in fp32.

    Args:
        lm_head: the output projection.
        hidden: ``[B, L, hidden]`` last hidden states.
        labels: long ``[B, L]``, :data:`IGNORE_INDEX` where there is no loss (not shifted).
        shortlist: long ``[V']`` sorted token ids: the softmax runs over these rows only
            (:mod:`~vlxseek_core.training.shortlist`); ``None`` = every row.
        negatives: with a ``shortlist``, the rows off it drawn for the column that stands
            for them (0: the softmax over the shortlist alone).

    Returns:
        ``{"loss": scalar, "num_answer_tokens": long scalar}``.

    Raises:
        ValueError: a sample without any labelled token.
        InvalidRequestError: a label outside ``shortlist``.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    per_sample = mask.sum(dim=1)
    if bool((per_sample == 0).any()):
        raise ValueError("every training sample needs at least one answer token")
    rows, wanted = hidden[:, :-1][mask], targets[mask]
    if shortlist is None:
        logits = lm_head(rows).float()
    else:
        logits = shortlist_logits(lm_head, rows, shortlist, negatives).float()
        wanted = shortlist_targets(shortlist, wanted)
    token_loss = F.cross_entropy(logits, wanted, reduction="none")
    sample_of = torch.arange(len(labels), device=labels.device)[:, None].expand_as(mask)[mask]
    sums = torch.zeros(len(labels), device=token_loss.device).index_add(0, sample_of, token_loss)
    loss = (sums / per_sample.to(sums.dtype)).mean()
    return {"loss": loss, "num_answer_tokens": per_sample.sum()}
