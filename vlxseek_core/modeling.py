"""The VLM-FO1 model with the reference's module names (spec §2.1, §3.3).

``VLMFO1ForCausalLM`` = ``model`` (Qwen2.5-VL text model + ``vision_tower``, ``mm_projector``,
``vision_tower_aux``, ``object_vp_extractor``, ``mm_projector_aux``) + ``lm_head``, so the
state_dict keys are the reference's (``model.embed_tokens.weight``, ``model.layers.*``,
``model.vision_tower.image_tower.*``, ``model.object_vp_extractor.simple_fpn.*``, …; DaViT keys
are renamed on load/save, see :mod:`vlxseek_core.davit`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VLModel, Qwen2_5_VLPreTrainedModel, Qwen2_5_VLTextModel)

from .config import VLMFO1Config, davit_config, region_feature_dims
from .davit import AuxVisionTower
from .hfre import HFREModule, build_projector
from .tokens import IMAGE_PLACEHOLDER_ID, REGION_FEATURE_PLACEHOLDER_ID
from .vision import PrimaryVisionTower


def _cache_kwarg() -> str:
    params = inspect.signature(Qwen2_5_VLTextModel.forward).parameters  # follows the wrappers
    return "cache" if "cache" in params else "past_key_values"


CACHE_KWARG = _cache_kwarg()
"""The installed transformers' name of the KV cache argument and output field: ``cache``
from 5.24 on (``past_key_values`` is deprecated there, with a ``FutureWarning``, and removed in
6), ``past_key_values`` in 5.23. Pass caches as ``**{CACHE_KWARG: cache}`` and read them with
:func:`output_cache`."""


def output_cache(output):
    """The KV cache of a transformers model output (field :data:`CACHE_KWARG`), or ``None``."""
    return getattr(output, CACHE_KWARG, None)


@dataclass
class EncodedFrame:
    """Per-frame encoder outputs, independent of the question.

    Attributes:
        image_embeds: ``[grid_h*grid_w/4, hidden]`` image tokens after ``mm_projector``.
        region_embeds: ``[N, hidden]`` region tokens after ``mm_projector_aux``.
        image_grid_thw: ``[1, 3]`` long.
    """

    image_embeds: torch.Tensor
    region_embeds: torch.Tensor
    image_grid_thw: torch.Tensor


class VLMFO1Model(Qwen2_5_VLTextModel):
    """``OmChatQwen25VLModel``: the text model plus the region-encoding modules (spec §2.1)."""

    def __init__(self, config: VLMFO1Config):
        super().__init__(config.text_config)
        hidden = config.text_config.hidden_size
        self.vision_tower = PrimaryVisionTower(config.vision_config)
        mm_hidden = getattr(config, "mm_hidden_size", None) or config.vision_config.out_hidden_size
        self.mm_projector = build_projector(config.mm("mm_projector_type"), mm_hidden, hidden)
        self.vision_tower_aux = AuxVisionTower(davit_config(config))
        self.object_vp_extractor = HFREModule(config)
        self.mm_projector_aux = build_projector(config.mm("mm_projector_aux_type"),
                                                region_feature_dims(config)["fused"], hidden)


class _RopeIndexHost:
    """Minimal ``self`` for the stock ``Qwen2_5_VLModel.get_rope_index`` (needs ``config``)."""

    get_vision_position_ids = Qwen2_5_VLModel.get_vision_position_ids

    def __init__(self, config):
        self.config = config


class VLMFO1ForCausalLM(Qwen2_5_VLPreTrainedModel, GenerationMixin):
    """``OmChatQwen25VLForCausalLM`` of the reference (inference only)."""

    config_class = VLMFO1Config
    config: VLMFO1Config
    base_model_prefix = ""
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _no_split_modules = ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]

    def __init__(self, config: VLMFO1Config):
        super().__init__(config)
        self.model = VLMFO1Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size,
                                 bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, input_ids: Optional[torch.LongTensor] = None,
                attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.LongTensor] = None,
                cache=None, inputs_embeds: Optional[torch.Tensor] = None,
                use_cache: Optional[bool] = None, logits_to_keep: int = 0,
                **kwargs) -> CausalLMOutputWithPast:
        """Language-model step over text ids or pre-spliced embeddings.

        ``position_ids`` are ``[3, B, L]`` M-RoPE positions for a spliced prompt (see
        :meth:`build_inputs_embeds`); ``generate`` extends them by one per new token.
        ``cache`` is the KV cache (``transformers.Cache``); the older name
        ``past_key_values`` is accepted too (transformers 5.23's ``generate`` uses it). The
        output carries the cache in the field :data:`CACHE_KWARG` (read it with
        :func:`output_cache`).
        """
        legacy = kwargs.pop("past_key_values", None)
        if cache is None:
            cache = legacy
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, inputs_embeds=inputs_embeds,
                         use_cache=use_cache, **{CACHE_KWARG: cache}, **kwargs)
        hidden = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if logits_to_keep else slice(None)
        logits = self.lm_head(hidden[:, keep, :])
        return CausalLMOutputWithPast(logits=logits, **{CACHE_KWARG: output_cache(out)})

    # ---------------------------------------------------------------- encoders

    @property
    def tower_dtype(self) -> torch.dtype:
        return self.model.vision_tower.image_tower.dtype

    def encode_frame(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor,
                     aux_pixel_values: torch.Tensor, aux_boxes: torch.Tensor,
                     vt_boxes: torch.Tensor) -> EncodedFrame:
        """Run both towers, the HFRE and the connectors for one image (spec §2.3–2.8).

        Args:
            pixel_values: ``[grid_h*grid_w, 1176]`` Qwen processor output (fp32).
            image_grid_thw: ``[1, 3]`` long.
            aux_pixel_values: ``[1, 3, H_aux, W_aux]`` ImageNet-normalised (fp32).
            aux_boxes: ``[N, 4]`` float32 xyxy in aux-image pixels.
            vt_boxes: ``[N, 4]`` float32 xyxy in pixels of the Qwen-resized image
                (``grid × 14``).

        ``N = 0`` (the image alone, spec §3.2): the auxiliary tower and the HFRE do not run
        and ``region_embeds`` is ``[0, hidden]``.

        Returns:
            :class:`EncodedFrame` in the model dtype.
        """
        m = self.model
        hfre = m.object_vp_extractor
        if aux_boxes.shape[0] == 0:
            image_tokens, _ = m.vision_tower(pixel_values, image_grid_thw)
            image_embeds = m.mm_projector(image_tokens)
            return EncodedFrame(image_embeds, image_embeds.new_zeros(0, image_embeds.shape[-1]),
                                image_grid_thw)
        levels = hfre.vt_levels(len(m.vision_tower.config.fullatt_block_indexes))
        image_tokens, vt_maps = m.vision_tower(pixel_values, image_grid_thw, levels)
        image_embeds = m.mm_projector(image_tokens)
        aux_maps = m.vision_tower_aux(aux_pixel_values.to(m.vision_tower_aux.image_tower.dtype))
        patch = m.vision_tower.config.patch_size
        vt_size = (int(image_grid_thw[0, 1]) * patch, int(image_grid_thw[0, 2]) * patch)
        if vt_maps and hfre.simple_fpn is not None:
            vt_maps = [vt_maps[-1].to(hfre.simple_fpn.simfp_1[0].weight.dtype)]
        feats = hfre(aux_maps, aux_boxes, vt_maps, vt_boxes, vt_size)
        region_embeds = m.mm_projector_aux(feats.to(aux_maps[0].dtype))
        return EncodedFrame(image_embeds, region_embeds, image_grid_thw)

    def build_inputs_embeds(self, input_ids: List[int], frame: EncodedFrame):
        """Splice image and region rows into the prompt embeddings (spec §3.3).

        Args:
            input_ids: prompt ids with one ``-200`` (image) and one ``-300`` per region.
            frame: the encoded image and regions.

        Returns:
            ``(inputs_embeds [1, L, hidden], position_ids [3, 1, L], rope_delta int)``.

        Raises:
            ValueError: placeholder counts do not match the frame.
        """
        device = self.model.embed_tokens.weight.device
        ids = torch.tensor(input_ids, dtype=torch.long, device=device)
        text_embeds = self.model.embed_tokens(ids.clamp(min=0))
        inputs_embeds, types = self.splice(ids, text_embeds, frame)
        position_ids, deltas = self.rope_index(types[None], frame.image_grid_thw)
        inputs_embeds = inputs_embeds[None]
        max_len = self.config.mm("tokenizer_model_max_length")
        if max_len and inputs_embeds.shape[1] > int(max_len):
            # The reference silently truncates the prompt end (spec §3.3); keep that behaviour.
            inputs_embeds = inputs_embeds[:, :int(max_len)]
            position_ids = position_ids[..., :int(max_len)]
        return inputs_embeds, position_ids, int(deltas.reshape(-1)[0])

    @staticmethod
    def splice(ids: torch.Tensor, text_embeds: torch.Tensor, frame: EncodedFrame):
        """Replace the placeholders of one prompt by the frame's rows (spec §3.3).

        One embedding lookup serves the whole prompt (training batches look up all prompts at
        once): a lookup per text run would build one dense 151,936-row gradient per run.

        Args:
            ids: long ``[L_ids]`` prompt ids with one ``-200`` and one ``-300`` per region
                (none for a frame without regions).
            text_embeds: ``[L_ids, hidden]`` embeddings of ``ids`` (placeholder rows ignored).
            frame: the encoded image and regions.

        Returns:
            ``(embeds [L, hidden], token_types int [L])``: ``L = L_ids - 1 + image tokens``;
            type 1 marks image rows (3-D M-RoPE positions), 0 everything else.

        Raises:
            ValueError: placeholder counts do not match the frame.
        """
        is_img = ids == IMAGE_PLACEHOLDER_ID
        is_reg = ids == REGION_FEATURE_PLACEHOLDER_ID
        n_img, n_reg = int(is_img.sum()), int(is_reg.sum())
        if n_img != 1 or n_reg != frame.region_embeds.shape[0]:
            raise ValueError(f"prompt has {n_img} image and {n_reg} region placeholders; frame "
                             f"has 1 image and {frame.region_embeds.shape[0]} regions")
        dtype = text_embeds.dtype
        rows = torch.where(is_reg[:, None],
                           _scatter_rows(is_reg, frame.region_embeds.to(dtype)), text_embeds)
        at = int(is_img.nonzero()[0, 0])
        image = frame.image_embeds.to(dtype)
        embeds = torch.cat([rows[:at], image, rows[at + 1:]], dim=0)
        types = torch.zeros(embeds.shape[0], dtype=torch.int, device=embeds.device)
        types[at:at + image.shape[0]] = 1
        return embeds, types

    def rope_index(self, token_types: torch.Tensor, image_grid_thw: torch.Tensor):
        """Stock Qwen2.5-VL ``get_rope_index`` for spliced rows (spec §3.3).

        Args:
            token_types: int ``[B, L]``, 1 on image rows (one image per row of the batch).
            image_grid_thw: long ``[B, 3]``.

        Returns:
            ``(position_ids [3, B, L], rope_deltas [B, 1])``.
        """
        dummy_ids = torch.zeros_like(token_types, dtype=torch.long)
        return Qwen2_5_VLModel.get_rope_index(_RopeIndexHost(self.config), dummy_ids,
                                              token_types, image_grid_thw=image_grid_thw)


def _scatter_rows(mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``[len(mask), C]`` with ``rows`` at the True places of ``mask`` (zeros elsewhere).

    Always an ``index_copy``, also for ``[0, C]`` rows: the result then stays in ``rows``'
    autograd graph, so a training batch without any region still gives the region path a
    (zero) gradient, as DDP without ``find_unused_parameters`` requires.
    """
    out = rows.new_zeros(mask.shape[0], rows.shape[-1])
    return out.index_copy(0, mask.nonzero()[:, 0], rows)
