"""Hybrid Fine-grained Region Encoder (``object_vp_extractor``, spec §2.6) and connectors (§2.7).

One region token per box: RoIAlign on the auxiliary DaViT maps and on the SimpleFP pyramid of the
primary ViT, mean over bins, concat ``[aux | vt]``, add the ``[cy, cx, w, h]`` sine-cosine box
embedding, then the connector ``mm_projector_aux``. RoIAlign, interpolation and the embedding run
in fp32 (spec §2.8).
"""
from __future__ import annotations

import math
import re
from typing import List, Optional

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert, roi_align

from .config import VLMFO1Config, region_feature_dims, simple_fpn_channels
from .simple_fp import NOMINAL_STRIDE, ROI_SPATIAL_SCALES, SimpleFP

AUX_ROI_SPATIAL_SCALE = 0.25
"""Aux maps are resized to the stride-4 level before one RoIAlign (spec §2.6.1)."""


def box_sine_embedding(boxes_xyxy: torch.Tensor, width: float, height: float,
                       dim: int) -> torch.Tensor:
    """Sine-cosine box embedding (spec §2.6.5).

    Args:
        boxes_xyxy: ``[N, 4]`` boxes in pixels of a ``width`` × ``height`` frame.
        width, height: frame size in pixels (the boxes are divided by it).
        dim: output width, divisible by 8; ``D = dim / 4`` values per coordinate.

    Returns:
        float32 ``[N, dim]``: blocks for ``[cy, cx, w, h]`` (y first), each the interleaved
        ``[sin(2πv/f_0), cos(2πv/f_0), sin(2πv/f_1), …]`` with ``f_j = 10000^(2j/D)``.

    Raises:
        ValueError: ``dim`` not divisible by 8.
    """
    if dim % 8:
        raise ValueError(f"box embedding dim {dim} must be divisible by 8")
    per_coord = dim // 4
    scale = boxes_xyxy.new_tensor([width, height, width, height], dtype=torch.float32)
    norm = box_convert(boxes_xyxy.float() / scale, "xyxy", "cxcywh")
    coords = norm[:, [1, 0, 2, 3]]  # cy, cx, w, h
    j = torch.arange(per_coord // 2, dtype=torch.float32, device=boxes_xyxy.device)
    freqs = 10000.0 ** (2 * j / per_coord)
    angles = 2 * math.pi * coords[:, :, None] / freqs  # [N, 4, D/2]
    emb = torch.stack([angles.sin(), angles.cos()], dim=-1)  # interleave sin/cos
    return emb.reshape(boxes_xyxy.shape[0], dim)


def roi_mean(feature: torch.Tensor, boxes: torch.Tensor, output_size: int,
             spatial_scale: float, aligned: bool = False) -> torch.Tensor:
    """torchvision RoIAlign (``sampling_ratio=-1``) then mean over bins.

    Args:
        feature: ``[B, C, H, W]`` maps (cast to fp32 here).
        boxes: ``[N, 4]`` xyxy in the pixel frame that ``spatial_scale`` maps onto the map
            (``B == 1``), or a list of ``B`` such tensors, one per map.
        aligned: RoIAlign's half-pixel shift; VLM-FO1 always ``False``, VLX-Seek 1.5
            ``mm_roi_algined`` (vlx-seek-1.5.md §2.4).

    Returns:
        float32 ``[N_total, C]``, boxes of map 0 first.
    """
    per_map = boxes if isinstance(boxes, (list, tuple)) else [boxes]
    pooled = roi_align(feature.float(), [b.float() for b in per_map], output_size=output_size,
                       spatial_scale=spatial_scale, sampling_ratio=-1, aligned=aligned)
    return pooled.mean(dim=(2, 3))


class HFREModule(nn.Module):
    """``object_vp_extractor`` of the reference.

    Submodules (present per config): ``simple_fpn`` (SimpleFP), and with
    ``mm_apply_region_layer_norm`` the LayerNorms ``vt_region_norm`` (when vt features are
    used) and ``aux_region_norm`` (unless ``mm_use_vt_region_feature_only``), as in the
    reference. In vt-only mode the reference's forward takes a separate path that applies no
    LayerNorm at all, so ``vt_region_norm`` then exists (its keys are in such a checkpoint)
    but is never applied.
    """

    def __init__(self, config: VLMFO1Config):
        super().__init__()
        dims = region_feature_dims(config)
        self.roi_output_size = int(config.mm("mm_roi_output_size"))
        self.use_vt = bool(config.mm("mm_use_vision_tower_region_feature"))
        self.vt_only = bool(config.mm("mm_use_vt_region_feature_only"))
        self.apply_position_embedding = bool(config.mm("mm_apply_position_embedding"))
        self.fused_dim = dims["fused"]
        self.simple_fpn: Optional[SimpleFP] = None
        if self.use_vt and config.mm("mm_use_simpleFPN_for_vt"):
            self.simple_fpn = SimpleFP(config.vision_config.hidden_size,
                                       simple_fpn_channels(config))
        if config.mm("mm_apply_region_layer_norm"):
            if self.use_vt:
                self.vt_region_norm = nn.LayerNorm(dims["vt"])
            if not self.vt_only:
                self.aux_region_norm = nn.LayerNorm(dims["aux"])

    def vt_levels(self, num_fullatt_blocks: int) -> tuple:
        """Indices into ``fullatt_block_indexes`` whose ViT outputs this module reads (§2.3):
        none without vt features, the last one with SimpleFP, otherwise all of them."""
        if not self.use_vt:
            return ()
        if self.simple_fpn is not None:
            return (num_fullatt_blocks - 1,)
        return tuple(range(num_fullatt_blocks))

    def aux_region_features(self, aux_maps: List[torch.Tensor],
                            aux_boxes: torch.Tensor) -> torch.Tensor:
        """``[N, sum(aux channels)]`` fp32 from the four DaViT maps and aux-frame boxes."""
        base = aux_maps[0].float()
        resized = [base] + [F.interpolate(m.float(), size=base.shape[-2:], mode="bilinear",
                                          align_corners=False) for m in aux_maps[1:]]
        feats = roi_mean(torch.cat(resized, dim=1), aux_boxes, self.roi_output_size,
                         AUX_ROI_SPATIAL_SCALE)
        if hasattr(self, "aux_region_norm"):
            feats = _layer_norm_fp32(self.aux_region_norm, feats)
        return feats

    def vt_region_features(self, vt_maps: List[torch.Tensor],
                           vt_boxes: torch.Tensor) -> torch.Tensor:
        """``[N, vt channels]`` fp32 from the primary ViT map(s) and vt-frame boxes.

        With SimpleFP ``vt_maps`` is ``[block-31 map]``; without, the maps of every
        full-attention block (concatenated, RoIAlign at 1/14). ``vt_region_norm`` is applied
        only in the hybrid mode (not with ``mm_use_vt_region_feature_only``, as in the
        reference).
        """
        if self.simple_fpn is not None:
            levels = self.simple_fpn(vt_maps[-1])
            feats = torch.cat([roi_mean(level, vt_boxes, self.roi_output_size, scale)
                               for level, scale in zip(levels, ROI_SPATIAL_SCALES)], dim=1)
        else:
            feats = roi_mean(torch.cat(vt_maps, dim=1), vt_boxes, self.roi_output_size,
                             1 / NOMINAL_STRIDE)
        if hasattr(self, "vt_region_norm") and not self.vt_only:
            feats = _layer_norm_fp32(self.vt_region_norm, feats)
        return feats

    def forward(self, aux_maps: List[torch.Tensor], aux_boxes: torch.Tensor,
                vt_maps: List[torch.Tensor], vt_boxes: torch.Tensor,
                vt_size: tuple) -> torch.Tensor:
        """Region features before the connector.

        Args:
            aux_maps: four DaViT stage outputs ``[1, C_i, H_i, W_i]``.
            aux_boxes: ``[N, 4]`` xyxy in aux-image pixels.
            vt_maps: primary ViT maps ``[1, hidden, grid_h, grid_w]``.
            vt_boxes: ``[N, 4]`` xyxy in pixels of the Qwen-resized image.
            vt_size: ``(H_vt, W_vt)`` = grid × 14, the frame of ``vt_boxes``.

        Several images of one size go in one call (training batches): maps ``[B, C, H, W]``
        and ``aux_boxes``/``vt_boxes`` as lists of ``B`` tensors; rows come image by image.

        Returns:
            float32 ``[N, mm_region_hidden_size]``.
        """
        parts = []
        if not self.vt_only:
            parts.append(self.aux_region_features(aux_maps, aux_boxes))
        if self.use_vt:
            parts.append(self.vt_region_features(vt_maps, vt_boxes))
        feats = torch.cat(parts, dim=1)
        if self.apply_position_embedding:
            boxes = torch.cat(vt_boxes) if isinstance(vt_boxes, (list, tuple)) else vt_boxes
            feats = feats + box_sine_embedding(boxes, vt_size[1], vt_size[0], self.fused_dim)
        return feats


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """Connector by reference type name (spec §2.7): ``identity``, ``linear``, ``mlp{N}x_gelu``.

    ``mlpNx_gelu`` is ``Linear(in, out)`` then ``N-1`` × (GELU, ``Linear(out, out)``), so keys are
    ``0.*, 2.*, …``.

    Raises:
        ValueError: unknown type.
    """
    if kind == "identity":
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if match:
        layers: List[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(int(match.group(1)) - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        return nn.Sequential(*layers)
    raise ValueError(f"unknown projector type {kind!r} (identity, linear, mlpNx_gelu)")


def _layer_norm_fp32(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm`` applied in fp32 whatever the model dtype: the reference calls
    ``region_norm.float()(x)`` on the fp32 RoIAlign output (§2.8 dtype policy)."""
    weight = None if norm.weight is None else norm.weight.float()
    bias = None if norm.bias is None else norm.bias.float()
    return F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps)
