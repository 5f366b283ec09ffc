"""The VLX-Seek 1.5 model with the reference's module names (vlx-seek-1.5.md §1.2, §1.6, §2).

``VLXSeek15ForCausalLM`` = ``model`` (``language_model`` = stock ``Qwen3_5TextModel``,
``vision_tower.visual``, ``mm_projector``, ``vision_tower_aux``, ``object_vp_extractor``,
``mm_projector_aux``) + an untied ``lm_head``, so the state_dict keys are the reference's except
below ``model.vision_tower_aux.`` (timm names inside, mapped on load/save by
:mod:`.checkpoint`).

Interface shared with :class:`vlxseek_core.modeling.VLMFO1ForCausalLM` (so the pipeline can
treat both families alike): :meth:`~VLXSeek15ForCausalLM.encode_frame` → the same
:class:`~vlxseek_core.modeling.EncodedFrame`; :meth:`~VLXSeek15ForCausalLM.build_inputs_embeds`
→ ``(inputs_embeds [1, L, hidden], position_ids, rope_delta)``; ``splice``; ``tower_dtype``;
``forward`` with the KV cache under :data:`~vlxseek_core.modeling.CACHE_KWARG` (read with
:func:`~vlxseek_core.modeling.output_cache`); ``model(inputs_embeds=…, position_ids=…,
use_cache=True)`` for prefix prefill; ``model.embed_tokens``. Differences: the ids passed to
``build_inputs_embeds`` are already *expanded* (``<|image_pad|>`` × t·h·w/4 and one
``<objfeat>`` per box, from :func:`.expansion.expand_placeholders`), not FO1's −200/−300; the
positions are **1-D sequential for every token** (§2.6: ``[4, 1, L]``, all rows ``0…L−1``,
``rope_delta`` 0; ``generate`` continues ``L, L+1, …``), not Qwen's image M-RoPE; the aux image
is the original image in ``[0, 1]`` (no resize, no normalisation) and boxes are in its pixels.
"""
from __future__ import annotations

import warnings
from typing import List, Optional

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.qwen3_5.modeling_qwen3_5 import (Qwen3_5PreTrainedModel,
                                                          Qwen3_5TextModel)

from ...hfre import build_projector
from ...modeling import CACHE_KWARG, EncodedFrame, output_cache
from .config import (IMAGE_TOKEN_ID, OBJECT_FEATURE_TOKEN_ID, VLXSeek15Config,
                     projector_dims)
from .hfre import ObjectEncoder
from .towers import PrimaryTower, RadioAuxTower

IMAGE_INPUTS = ("pixel_values", "image_grid_thw", "aux_pixel_values", "boxes")
"""``forward``/``generate`` keyword arguments that carry the image; used on the first step only."""


def sequential_position_ids(length: int, start: int = 0, batch: int = 1,
                            device=None) -> torch.Tensor:
    """Positions of the reference's generation path (§2.6): long ``[4, batch, length]``, every
    row ``start … start+length−1`` (text row + the three M-RoPE rows, all equal)."""
    pos = torch.arange(start, start + length, dtype=torch.long, device=device)
    return pos.view(1, 1, -1).expand(4, batch, -1)


def vt_boxes_from_original(boxes: torch.Tensor, image_hw, grid_thw: torch.Tensor,
                           patch_size: int) -> torch.Tensor:
    """Boxes in pixels of the Qwen-resized image, as the reference computes them (§2.4).

    Args:
        boxes: ``[N, 4]`` xyxy in pixels of the original (= aux) image.
        image_hw: ``(H, W)`` of the original image.
        grid_thw: ``[1, 3]`` long; the resized image is ``grid_h·patch × grid_w·patch``.

    Returns:
        float32 ``[N, 4]`` = ``boxes × (W_vt/W, H_vt/H, W_vt/W, H_vt/H)`` (scales in float32).
    """
    h_vt, w_vt = (int(v) * patch_size for v in grid_thw.reshape(-1)[1:3])
    scale = torch.tensor([w_vt / image_hw[1], h_vt / image_hw[0]] * 2, dtype=torch.float32,
                         device=boxes.device)
    return boxes.to(torch.float32) * scale


class VLXSeek15Model(nn.Module):
    """``VLXSeek1_5Model``: the Qwen3.5 text model plus the vision and region modules (§1.2).

    ``forward`` runs the language model only (prefill from ``inputs_embeds``), like the FO1
    ``model`` the pipeline calls; ``embed_tokens`` is the LLM's embedding.
    """

    def __init__(self, config: VLXSeek15Config):
        super().__init__()
        self.language_model = Qwen3_5TextModel._from_config(config.text_config)
        proj = projector_dims(config)
        self.vision_tower = PrimaryTower(config.vision_config)
        self.mm_projector = build_projector(*proj["image"])
        self.vision_tower_aux = RadioAuxTower(config)
        self.object_vp_extractor = ObjectEncoder(config)
        self.mm_projector_aux = build_projector(*proj["object"])

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.language_model.embed_tokens

    def forward(self, **kwargs):
        """``language_model(**kwargs)`` (a ``BaseModelOutputWithPast`` with the cache)."""
        return self.language_model(**kwargs)


class VLXSeek15ForCausalLM(Qwen3_5PreTrainedModel, GenerationMixin):
    """``VLXSeek1_5ForCausalLM`` of the reference (inference; untied ``lm_head``)."""

    config_class = VLXSeek15Config
    config: VLXSeek15Config
    base_model_prefix = ""
    _tied_weights_keys = {}
    _no_split_modules = ["Qwen3_5DecoderLayer", "Qwen3_5VisionBlock"]

    def __init__(self, config: VLXSeek15Config):
        super().__init__(config)
        self.model = VLXSeek15Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size,
                                 bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.language_model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.language_model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    @property
    def tower_dtype(self) -> torch.dtype:
        return self.model.vision_tower.visual.dtype

    def forward(self, input_ids: Optional[torch.LongTensor] = None,
                attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.LongTensor] = None,
                cache=None, inputs_embeds: Optional[torch.Tensor] = None,
                use_cache: Optional[bool] = None, logits_to_keep: int = 0,
                pixel_values: Optional[torch.Tensor] = None,
                image_grid_thw: Optional[torch.LongTensor] = None,
                aux_pixel_values: Optional[torch.Tensor] = None,
                boxes: Optional[torch.Tensor] = None, **kwargs) -> CausalLMOutputWithPast:
        """Language-model step over ids or pre-spliced embeddings.

        With ``pixel_values`` (first step of ``generate(input_ids=expanded ids, …)``, as the
        reference runs) the frame is encoded and spliced into the ``[1, L]`` expanded ids here;
        later steps get no image inputs. ``position_ids`` default to sequential positions
        continuing the cache (§2.6); ``[B, L]`` or ``[4, B, L]`` are accepted. ``cache`` is the
        KV/recurrent cache (``past_key_values`` accepted too); the output carries it in the
        field :data:`CACHE_KWARG`.

        Raises:
            ValueError: image inputs with ``inputs_embeds``, a batch of more than one prompt,
                or placeholder counts that do not match the frame (:meth:`splice`).
        """
        legacy = kwargs.pop("past_key_values", None)
        cache = legacy if cache is None else cache
        if pixel_values is not None:
            if inputs_embeds is not None or input_ids is None or input_ids.shape[0] != 1:
                raise ValueError("image inputs need input_ids of one prompt [1, L] "
                                 "(expanded ids) and no inputs_embeds")
            frame = self.encode_frame(pixel_values, image_grid_thw, aux_pixel_values,
                                      boxes if boxes is not None else
                                      torch.zeros(0, 4, device=input_ids.device))
            ids = input_ids[0]
            inputs_embeds = self.splice(ids, self.model.embed_tokens(ids), frame)[None]
            input_ids = None
        out = self.model.language_model(input_ids=input_ids, attention_mask=attention_mask,
                                        position_ids=position_ids, inputs_embeds=inputs_embeds,
                                        use_cache=use_cache, **{CACHE_KWARG: cache}, **kwargs)
        hidden = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if logits_to_keep else slice(None)
        logits = self.lm_head(hidden[:, keep, :])
        return CausalLMOutputWithPast(logits=logits, **{CACHE_KWARG: output_cache(out)})

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None,
                                      attention_mask=None, inputs_embeds=None,
                                      is_first_iteration: bool = False, **kwargs):
        """As GenerationMixin's, but the image inputs go to the first step only (the
        reference drops them once the cache holds the prompt)."""
        if not is_first_iteration:
            for key in IMAGE_INPUTS:
                kwargs.pop(key, None)
        return super().prepare_inputs_for_generation(
            input_ids, next_sequence_length=next_sequence_length, attention_mask=attention_mask,
            inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs)

    # ---------------------------------------------------------------- encoders

    def encode_frame(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor,
                     aux_pixel_values: torch.Tensor, aux_boxes: torch.Tensor,
                     vt_boxes: Optional[torch.Tensor] = None) -> EncodedFrame:
        """Run both towers, the HFRE and the connectors for one image (§2.1-2.5, §3).

        Args:
            pixel_values: ``[grid_h·grid_w, 1536]`` Qwen2VL processor rows (patch 16).
            image_grid_thw: long ``[1, 3]``.
            aux_pixel_values: ``[1, 3, H, W]`` RGB in ``[0, 1]`` at the original size.
            aux_boxes: ``[N, 4]`` xyxy in original-image pixels (model order).
            vt_boxes: ``[N, 4]`` in pixels of the Qwen-resized image; default
                :func:`vt_boxes_from_original` (the reference's computation).

        ``N = 0``: the aux tower and the HFRE do not run, ``region_embeds`` is ``[0, hidden]``.

        Returns:
            :class:`~vlxseek_core.modeling.EncodedFrame`: ``image_embeds [t·h·w/4, hidden]``,
            ``region_embeds [N, hidden]``, ``image_grid_thw``.
        """
        m = self.model
        tokens, maps = m.vision_tower(pixel_values, image_grid_thw)
        image_embeds = m.mm_projector(tokens[0])
        if aux_boxes.shape[0] == 0:
            return EncodedFrame(image_embeds, image_embeds.new_zeros(0, image_embeds.shape[-1]),
                                image_grid_thw)
        boxes = aux_boxes.to(torch.float32)
        if vt_boxes is None:
            vt_boxes = vt_boxes_from_original(boxes, aux_pixel_values.shape[-2:],
                                              image_grid_thw, m.vision_tower.config.patch_size)
        hfre = m.object_vp_extractor
        # vt-only never reads the aux maps (the reference computes and discards them)
        aux_maps = None if hfre.vt_only else m.vision_tower_aux(aux_pixel_values)
        feats = hfre(aux_maps, boxes, maps[0], vt_boxes.to(torch.float32))
        weight = next(m.mm_projector_aux.parameters(), m.embed_tokens.weight)
        region_embeds = m.mm_projector_aux(feats.to(weight.dtype))
        return EncodedFrame(image_embeds, region_embeds, image_grid_thw)

    def build_inputs_embeds(self, input_ids: List[int], frame: EncodedFrame):
        """Prompt embeddings with the frame's rows spliced in (§1.6, §2.6).

        Args:
            input_ids: the expanded prompt ids (``<|image_pad|>`` and ``<objfeat>`` already
                repeated, :func:`.expansion.expand_placeholders`), one prompt.
            frame: the encoded image and regions.

        Returns:
            ``(inputs_embeds [1, L, hidden], position_ids [4, 1, L] sequential, 0)``.

        Raises:
            ValueError: unexpanded placeholders (negative ids) or counts that do not match.
        """
        device = self.model.embed_tokens.weight.device
        ids = torch.tensor(input_ids, dtype=torch.long, device=device)
        if bool((ids < 0).any()):
            raise ValueError("input_ids hold unexpanded placeholders (-200/-300); expand them "
                             "with families.vlx_seek_1_5.expansion.expand_placeholders")
        embeds = self.splice(ids, self.model.embed_tokens(ids), frame)
        return embeds[None], sequential_position_ids(ids.shape[0], device=device), 0

    @staticmethod
    def splice(ids: torch.Tensor, text_embeds: torch.Tensor,
               frame: EncodedFrame) -> torch.Tensor:
        """Write the frame's rows into the pad positions of one prompt (§1.6).

        Args:
            ids: long ``[L]`` expanded ids.
            text_embeds: ``[L, hidden]`` embeddings of ``ids``.
            frame: image rows (one per ``<|image_pad|>``, 248056) and region rows (one per
                ``<objfeat>``, 248181, in box order).

        Returns:
            ``[L, hidden]`` in ``text_embeds``' dtype (differentiable in all inputs).

        Raises:
            ValueError: image pads ≠ image rows, or fewer region rows than ``<objfeat>``
                tokens. More region rows are cut with a ``UserWarning``; no region rows leave
                the ``<objfeat>`` embeddings as they are (both as in the reference).
        """
        dtype = text_embeds.dtype
        is_img = ids == IMAGE_TOKEN_ID
        if int(is_img.sum()) != frame.image_embeds.shape[0]:
            raise ValueError(f"prompt has {int(is_img.sum())} image pad tokens; the frame has "
                             f"{frame.image_embeds.shape[0]} image rows")
        embeds = text_embeds.masked_scatter(is_img[:, None], frame.image_embeds.to(dtype))
        is_obj = ids == OBJECT_FEATURE_TOKEN_ID
        n_obj, regions = int(is_obj.sum()), frame.region_embeds
        if regions.shape[0] == 0:
            return embeds
        if regions.shape[0] < n_obj:
            raise ValueError(f"prompt has {n_obj} <objfeat> tokens; the frame has only "
                             f"{regions.shape[0]} region rows")
        if regions.shape[0] > n_obj:
            warnings.warn(f"{regions.shape[0]} region rows for {n_obj} <objfeat> tokens; the "
                          "extra rows are dropped", UserWarning, stacklevel=2)
            regions = regions[:n_obj]
        return embeds.masked_scatter(is_obj[:, None], regions.to(dtype))
