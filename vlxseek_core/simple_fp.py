"""SimpleFP: a ViTDet-style simple feature pyramid on the primary ViT map (spec §2.4).

Module indices reproduce the reference state_dict names
(``object_vp_extractor.simple_fpn.simfp_{1..4}.{i}.*``).
"""
from __future__ import annotations

import math
from typing import List

import torch
from torch import nn
from torch.nn import functional as F

SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)
NOMINAL_STRIDE = 14
ROI_SPATIAL_SCALES = (1 / 3.5, 1 / 7, 1 / 14, 1 / 28)
"""Hard-coded RoIAlign scales of the four levels (not derived from the int strides)."""


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


class SimpleFP(nn.Module):
    """Four-level pyramid (strides 3.5, 7, 14, 28 px of the Qwen-resized image).

    Args:
        in_dim: ViT hidden size (1280 for Qwen2.5-VL).
        out_channels: channels per level (reference 512).
    """

    def __init__(self, in_dim: int, out_channels: int = 512):
        super().__init__()
        half, quarter = in_dim // 2, in_dim // 4
        for scale in SCALE_FACTORS:
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(in_dim, half, 2, 2), LayerNorm2d(half), nn.GELU(),
                          nn.ConvTranspose2d(half, quarter, 2, 2)]
                width = quarter
            elif scale == 2.0:
                layers, width = [nn.ConvTranspose2d(in_dim, half, 2, 2)], half
            elif scale == 1.0:
                layers, width = [], in_dim
            else:
                layers, width = [nn.MaxPool2d(2, 2)], in_dim
            layers += [ConvNorm(width, out_channels, 1), ConvNorm(out_channels, out_channels, 3)]
            stride = int(NOMINAL_STRIDE / scale)
            self.add_module(f"simfp_{int(math.log2(stride))}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``x`` ``[1, in_dim, h, w]`` → maps ``[1, C, 4h, 4w]``, ``[.., 2h, 2w]``,
        ``[.., h, w]``, ``[.., h//2, w//2]`` (simfp_1…simfp_4)."""
        return [getattr(self, f"simfp_{i}")(x) for i in range(1, 5)]
