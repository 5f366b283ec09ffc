"""SimpleFP: a ViTDet-style simple feature pyramid on one ViT map, shared by both families.

VLM-FO1 (vlm-fo1.md §2.4): in 1280, scales ``[4, 2, 1, 0.5]``, nominal stride 14, levels
``simfp_1…4``, hard-coded RoIAlign scales ``1/3.5 … 1/28``. VLX-Seek 1.5 (vlx-seek-1.5.md §2.3):
primary pyramid in 4096, scales ``[8, 4, 2, 1]``, stride 32, levels ``simfp_2…5``, exact scales
``1/4 … 1/32``; aux pyramid in 1152, scales ``[4, 2, 1, 0.5]``, stride 16, ``simfp_2…5``. One
module builds all three: the level name is ``simfp_{int(log2(int(stride / scale)))}`` and the
layer pattern (ConvTranspose/LN/GELU ladder, then Conv1×1+LN, Conv3×3+LN) is the same, so the
module indices reproduce the reference state_dict names in every case.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)
NOMINAL_STRIDE = 14
ROI_SPATIAL_SCALES = (1 / 3.5, 1 / 7, 1 / 14, 1 / 28)
"""VLM-FO1's hard-coded RoIAlign scales of the four levels (not derived from the int strides)."""


class LayerNorm2d(nn.Module):
    """Channel LayerNorm on NCHW: per pixel, mean/biased variance over C, eps 1e-6, affine."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class ConvNorm(nn.Conv2d):
    """Conv without bias followed by :class:`LayerNorm2d` stored as ``.norm`` (no activation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                         bias=False)
        self.norm = LayerNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


def _upsampler(in_dim: int, steps: int) -> List[nn.Module]:
    """``steps`` ConvTranspose2d(k2, s2) halving the channels, with LN + GELU between them."""
    layers: List[nn.Module] = []
    width = in_dim
    for i in range(steps):
        if i:
            layers += [LayerNorm2d(width), nn.GELU()]
        layers.append(nn.ConvTranspose2d(width, width // 2, 2, 2))
        width //= 2
    return layers


class SimpleFP(nn.Module):
    """Four-level pyramid on one ``[B, in_dim, h, w]`` map.

    Args:
        in_dim: input channels (FO1 1280, 1.5 primary 4096, 1.5 aux 1152).
        out_channels: channels per level (FO1 512; 1.5 ``mm_simpleFPN_out_channels_for_vt`` or
            1024 for the aux pyramid).
        scale_factors: per level, one of 8, 4, 2, 1, 0.5 (×8 = three ConvTranspose, ×0.5 =
            MaxPool2d(2, 2) at index 0).
        nominal_stride: stride of the input map in pixels (14, 32 or 16).
        roi_spatial_scales: RoIAlign scale per level; ``None`` = exact ``scale / stride``
            (VLX-Seek 1.5). FO1 passes its hard-coded :data:`ROI_SPATIAL_SCALES` (the default
            arguments build FO1's pyramid).

    Attributes:
        level_names: ``simfp_N`` per level, in output order.
        roi_spatial_scales: tuple of floats, one per level.

    Raises:
        ValueError: an unsupported scale factor, or a scale list of another length.
    """

    def __init__(self, in_dim: int, out_channels: int = 512,
                 scale_factors: Sequence[float] = SCALE_FACTORS,
                 nominal_stride: float = NOMINAL_STRIDE,
                 roi_spatial_scales: Optional[Sequence[float]] = ROI_SPATIAL_SCALES):
        super().__init__()
        steps = {8.0: 3, 4.0: 2, 2.0: 1, 1.0: 0}
        self.level_names = []
        for scale in scale_factors:
            if scale == 0.5:
                layers, width = [nn.MaxPool2d(2, 2)], in_dim
            elif float(scale) in steps:
                layers = _upsampler(in_dim, steps[float(scale)])
                width = in_dim // 2 ** steps[float(scale)]
            else:
                raise ValueError(f"SimpleFP scale factor {scale} is not one of 8, 4, 2, 1, 0.5")
            layers += [ConvNorm(width, out_channels, 1), ConvNorm(out_channels, out_channels, 3)]
            # The reference names a level by int(log2(int(stride / scale))): FO1's 3.5 px level
            # is simfp_1, 1.5's 4 px level simfp_2.
            name = f"simfp_{int(math.log2(int(nominal_stride / scale)))}"
            self.add_module(name, nn.Sequential(*layers))
            self.level_names.append(name)
        if roi_spatial_scales is None:
            roi_spatial_scales = [1.0 / (nominal_stride / s) for s in scale_factors]
        if len(roi_spatial_scales) != len(scale_factors):
            raise ValueError("one RoIAlign scale per SimpleFP level is needed")
        self.roi_spatial_scales = tuple(float(s) for s in roi_spatial_scales)

    @property
    def first_weight(self) -> torch.Tensor:
        """A parameter of the first level (its dtype is the pyramid's compute dtype)."""
        return next(getattr(self, self.level_names[0]).parameters())

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``x`` ``[B, in_dim, h, w]`` → one ``[B, out_channels, s·h, s·w]`` map per scale
        factor ``s`` (``⌊h/2⌋`` for 0.5), in level order (FO1: simfp_1…simfp_4, strides
        3.5/7/14/28 px; 1.5: simfp_2…simfp_5, strides 4/8/16/32 px)."""
        return [getattr(self, name)(x) for name in self.level_names]
