"""VLX-Seek 1.5 HFRE (``object_vp_extractor``, vlx-seek-1.5.md §2.3-2.4).

One object feature per box from the C-RADIO maps (aux branch) and the stride-32 Qwen3.5 merger
map (primary branch), fused by ``mean`` or ``concat`` (``*_aux_pos``: box embedding from the aux
frame), plus the ``[cy, cx, w, h]`` sine box embedding. Shared with VLM-FO1 (spec §6): the
SimpleFP module (:mod:`vlxseek_core.simple_fp`), RoIAlign + mean (``roi_mean``), the box
embedding (``box_sine_embedding``) and the projector builder (:mod:`vlxseek_core.hfre`).
RoIAlign, concatenation and the box embedding run in fp32; SimpleFP and the MLPs in their
parameter dtype (bf16 in the reference).
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ...hfre import box_sine_embedding, build_projector, roi_mean
from ...simple_fp import SimpleFP
from .config import (AUX_SIMPLE_FPN_CHANNELS, SEPARATE_MLP_IN, SEPARATE_MLP_OUT,
                     VLXSeek15Config, object_feature_dims, radio_dims)

PRIMARY_STRIDE = 32
"""Stride of the merger map in pixels of the Qwen-resized image (patch 16 × merge 2, §2.2)."""


class ObjectEncoder(nn.Module):
    """``HybridFineGrainedRegionEncoder`` of the reference, for one image.

    Submodules (present per config, reference names): ``vision_tower_object_feature_projector``
    (mean fusion; Linear vt→D, GELU, Linear D→D; built even when SimpleFP leaves it unused),
    ``simple_fpn`` (primary SimpleFP: scales 8/4/2/1, stride 32, ``simfp_2…5``),
    ``simple_fpn_aux`` (last aux layer, 1024 channels, scales 4/2/1/0.5, stride 16),
    ``object_mlp``/``aux_object_mlp`` (``mm_use_separate_mlp_for_object``, 2048→1024→1024).

    Raises:
        CheckpointError: a configuration :func:`.config.object_feature_dims` refuses.
    """

    def __init__(self, config: VLXSeek15Config):
        super().__init__()
        mm = config.mm
        dims = object_feature_dims(config)
        self.fused_dim = dims["fused"]
        self.output_size = int(mm("mm_roi_output_size"))
        self.aligned = bool(mm("mm_roi_algined"))
        self.add_pos_embed = bool(mm("mm_add_pos_embed"))
        self.combination = str(mm("mm_object_feature_combination"))
        self.vt_only = bool(mm("mm_use_vt_object_feature_only"))
        aux_dims = radio_dims(config)
        self.aux_stride = aux_dims["patch_size"]
        self.vision_tower_object_feature_projector: Optional[nn.Module] = None
        self.simple_fpn: Optional[SimpleFP] = None
        self.simple_fpn_aux: Optional[SimpleFP] = None
        if self.combination.startswith("mean"):
            self.vision_tower_object_feature_projector = build_projector(
                "mlp2x_gelu", dims["vt_projector_in"], self.fused_dim)
        if mm("mm_use_simpleFPN_for_vt"):
            self.simple_fpn = SimpleFP(config.vision_config.out_hidden_size,
                                       int(mm("mm_simpleFPN_out_channels_for_vt")),
                                       (8.0, 4.0, 2.0, 1.0), PRIMARY_STRIDE, None)
        if mm("mm_use_simpleFPN_for_vt_aux"):
            self.simple_fpn_aux = SimpleFP(aux_dims["embed_dim"], AUX_SIMPLE_FPN_CHANNELS,
                                           (4.0, 2.0, 1.0, 0.5), self.aux_stride, None)
        self.separate_mlp = bool(mm("mm_use_separate_mlp_for_object"))
        if self.separate_mlp:
            self.object_mlp = build_projector("mlp2x_gelu", SEPARATE_MLP_IN, SEPARATE_MLP_OUT)
            self.aux_object_mlp = build_projector("mlp2x_gelu", SEPARATE_MLP_IN,
                                                  SEPARATE_MLP_OUT)

    def primary_features(self, vt_map: torch.Tensor, vt_boxes: torch.Tensor) -> torch.Tensor:
        """``[N, vt width]`` fp32 from the ``[1, out_hidden, h, w]`` merger map and boxes in
        pixels of the Qwen-resized image (§2.4 step 2)."""
        if self.simple_fpn is not None:
            levels = self.simple_fpn(vt_map.to(self.simple_fpn.first_weight.dtype))
            return torch.cat([roi_mean(level, vt_boxes, self.output_size, scale, self.aligned)
                              for level, scale in
                              zip(levels, self.simple_fpn.roi_spatial_scales)], dim=1)
        feats = roi_mean(vt_map, vt_boxes, self.output_size, 1 / PRIMARY_STRIDE, self.aligned)
        proj = self.vision_tower_object_feature_projector
        if proj is not None:
            feats = proj(feats.to(proj[0].weight.dtype)).float()
        return feats

    def aux_levels(self, aux_maps: List[torch.Tensor]):
        """``(maps, spatial scales)`` the aux branch pools from: the aux SimpleFP pyramid of
        the last map, or the four maps resized to the largest one and concatenated (§2.4)."""
        if self.simple_fpn_aux is not None:
            last = aux_maps[-1].to(self.simple_fpn_aux.first_weight.dtype)
            return self.simple_fpn_aux(last), self.simple_fpn_aux.roi_spatial_scales
        height = max(m.shape[-2] for m in aux_maps)
        width = max(m.shape[-1] for m in aux_maps)
        # the C-RADIO maps have one size, so this resize never runs; kept as in the reference
        maps = [m.float() if m.shape[-2:] == (height, width) else
                F.interpolate(m.float(), size=(height, width), mode="bilinear",
                              align_corners=False) for m in aux_maps]
        return [torch.cat(maps, dim=1)], (1 / self.aux_stride,)

    def forward(self, aux_maps: List[torch.Tensor], aux_boxes: torch.Tensor,
                vt_map: torch.Tensor, vt_boxes: torch.Tensor) -> torch.Tensor:
        """Object features before ``mm_projector_aux`` (§2.4 steps 1-4).

        Args:
            aux_maps: the four C-RADIO maps ``[1, C, H16/16, W16/16]`` (tower dtype).
            aux_boxes: float32 ``[N, 4]`` xyxy in pixels of the original image (the aux image;
                not rescaled to the rounded aux size, as in the reference).
            vt_map: ``[1, out_hidden, grid_h/2, grid_w/2]`` merger map.
            vt_boxes: float32 ``[N, 4]`` = ``aux_boxes`` × (W_vt/W, H_vt/H, …), see
                :func:`.modeling.vt_boxes_from_original`.

        Returns:
            float32 ``[N, mm_object_hidden_size]``.
        """
        vt = self.primary_features(vt_map, vt_boxes)
        vt_size = (vt_map.shape[-2] * PRIMARY_STRIDE, vt_map.shape[-1] * PRIMARY_STRIDE)
        if self.vt_only:
            feats, pos_boxes, frame = vt, vt_boxes, vt_size
        else:
            levels, scales = self.aux_levels(aux_maps)
            aux = torch.cat([roi_mean(level, aux_boxes, self.output_size, scale, self.aligned)
                             for level, scale in zip(levels, scales)], dim=1)
            if self.combination.startswith("mean"):
                feats = (aux + vt) / 2
            else:
                if self.separate_mlp:
                    vt = self.object_mlp(vt.to(self.object_mlp[0].weight.dtype)).float()
                    aux = self.aux_object_mlp(
                        aux.to(self.aux_object_mlp[0].weight.dtype)).float()
                feats = torch.cat([aux, vt], dim=1)
            if self.combination.endswith("_aux_pos"):
                # The reference normalises by the largest map it pooled from × 16: with the aux
                # SimpleFP that is the stride-4 level, i.e. 4 × the aux image (kept as is).
                frame = (max(m.shape[-2] for m in levels) * self.aux_stride,
                         max(m.shape[-1] for m in levels) * self.aux_stride)
                pos_boxes = aux_boxes
            else:
                pos_boxes, frame = vt_boxes, vt_size
        if self.add_pos_embed:
            feats = feats + box_sine_embedding(pos_boxes, frame[1], frame[0], self.fused_dim)
        return feats
