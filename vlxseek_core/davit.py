"""Auxiliary encoder: DaViT via transformers' Florence-2 vision backbone (spec §2.5, §8).

transformers' ``Florence2VisionBackbone`` computes the reference DaViT exactly (spec §8); only the
parameter names differ. :func:`reference_to_florence` / :func:`florence_to_reference` map names
under ``model.vision_tower_aux.image_tower.`` both ways, so checkpoints keep the reference names.
"""
from __future__ import annotations

import itertools
import re
from typing import List

import torch
from torch import nn
from transformers.models.florence2.modeling_florence2 import Florence2VisionBackbone

AUX_PREFIX = "model.vision_tower_aux.image_tower."

# (reference regex, florence replacement) on the key after AUX_PREFIX; order matters.
_TO_FLORENCE = [
    (r"^convs\.(\d+)\.proj\.", r"convs.\1.conv."),
    (r"\.(conv[12])\.fn\.dw\.", r".\1."),
    (r"\.window_attn\.norm\.", r".norm1."),
    (r"\.channel_attn\.norm\.", r".norm1."),
    (r"\.(window_attn|channel_attn)\.fn\.", r".\1."),
    (r"\.ffn\.norm\.", r".norm2."),
    (r"\.ffn\.fn\.net\.(fc[12])\.", r".ffn.\1."),
]
_TO_REFERENCE = [
    (r"^convs\.(\d+)\.conv\.", r"convs.\1.proj."),
    (r"\.(conv[12])\.", r".\1.fn.dw."),
    (r"\.spatial_block\.norm1\.", r".spatial_block.window_attn.norm."),
    (r"\.channel_block\.norm1\.", r".channel_block.channel_attn.norm."),
    (r"\.(window_attn|channel_attn)\.(qkv|proj)\.", r".\1.fn.\2."),
    (r"\.norm2\.", r".ffn.norm."),
    (r"\.ffn\.(fc[12])\.", r".ffn.fn.net.\1."),
]


def _rewrite(key: str, rules) -> str:
    if not key.startswith(AUX_PREFIX):
        return key
    tail = key[len(AUX_PREFIX):]
    for pattern, repl in rules:
        tail = re.sub(pattern, repl, tail)
    return AUX_PREFIX + tail


def reference_to_florence(key: str) -> str:
    """Reference DaViT key → this implementation's key (other keys unchanged)."""
    return _rewrite(key, _TO_FLORENCE)


def florence_to_reference(key: str) -> str:
    """This implementation's DaViT key → reference key (other keys unchanged)."""
    return _rewrite(key, _TO_REFERENCE)


class AuxVisionTower(nn.Module):
    """``vision_tower_aux`` of the reference; holds the DaViT as ``image_tower``."""

    def __init__(self, florence_vision_config):
        super().__init__()
        self.image_tower = Florence2VisionBackbone(florence_vision_config)
        depths = florence_vision_config.depths
        self._stage_ends = list(itertools.accumulate(depths))

    @property
    def channels(self) -> List[int]:
        return list(self.image_tower.config.embed_dim)

    def forward(self, pixel_values: torch.Tensor) -> List[torch.Tensor]:
        """``[1, 3, H, W]`` normalised image → the four stage outputs, NCHW, strides 4/8/16/32
        (un-normalised, tower dtype)."""
        out = self.image_tower(pixel_values, output_hidden_states=True)
        return [out.hidden_states[i] for i in self._stage_ends]
