"""Primary vision encoder: the stock Qwen2.5-VL ViT plus its multi-level features (spec §2.3).

The stock transformers tower gives the image tokens (merger output). For the HFRE we also need
the hidden state after each full-attention block, restored from window order to a raster map.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel)
from transformers.vision_utils import get_vision_window_index


def window_order_to_raster(hidden: torch.Tensor, grid_thw: torch.Tensor, spatial_merge_size: int,
                           window_size: int, patch_size: int) -> torch.Tensor:
    """Restore a ViT hidden state from window order to an NCHW raster map (spec §2.3).

    Args:
        hidden: ``[grid_h * grid_w, C]`` block output in the tower's window order (one image,
            ``grid_t == 1``).
        grid_thw: ``[1, 3]`` long ``(t, grid_h, grid_w)`` in patches.
        spatial_merge_size, window_size, patch_size: from the vision config.

    Returns:
        ``[1, C, grid_h, grid_w]``; pixel ``(y, x)`` is the patch at row ``y``, column ``x`` of
        the Qwen-resized image (stride ``patch_size`` pixels).

    Raises:
        ValueError: more than one image/frame, or a size that does not match the grid.
    """
    t, grid_h, grid_w = (int(v) for v in grid_thw[0])
    if grid_thw.shape[0] != 1 or t != 1:
        raise ValueError(f"expected one image with grid_t=1, got grid_thw={grid_thw.tolist()}")
    if hidden.shape[0] != grid_h * grid_w:
        raise ValueError(f"hidden has {hidden.shape[0]} rows, grid has {grid_h * grid_w}")
    m = spatial_merge_size
    window_index, _ = get_vision_window_index(grid_thw.cpu(), m, window_size, patch_size)
    unit = m * m
    channels = hidden.shape[-1]
    merge_order = hidden.reshape(-1, unit, channels)[torch.argsort(window_index.to(hidden.device))]
    # Processor patch order is (block row, block col, in-block row, in-block col).
    blocks = merge_order.reshape(grid_h // m, grid_w // m, m, m, channels)
    raster = blocks.permute(0, 2, 1, 3, 4).reshape(grid_h, grid_w, channels)
    return raster.permute(2, 0, 1).unsqueeze(0)


class PrimaryVisionTower(nn.Module):
    """``vision_tower`` of the reference; holds the stock ViT as ``image_tower``.

    Attributes:
        image_tower: ``Qwen2_5_VisionTransformerPretrainedModel`` (checkpoint keys
            ``model.vision_tower.image_tower.*`` = the base model's ``visual.*``).
    """

    def __init__(self, vision_config):
        super().__init__()
        self.image_tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(vision_config)

    @property
    def config(self):
        return self.image_tower.config

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                levels: Tuple[int, ...] = ()) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Encode one image.

        Args:
            pixel_values: ``[grid_h * grid_w, 3 * temporal_patch * patch²]`` (processor output).
            grid_thw: ``[1, 3]`` long.
            levels: indices into ``fullatt_block_indexes`` whose outputs to return as maps.

        Returns:
            ``(image_tokens [grid_h*grid_w/4, out_hidden], maps)``; ``maps[i]`` is
            ``[1, hidden, grid_h, grid_w]`` in the tower dtype for ``levels[i]``.
        """
        tokens, maps = self.encode_many(pixel_values, grid_thw, levels)
        return tokens[0], maps[0]

    def encode_many(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                    levels: Tuple[int, ...] = ()):
        """Encode several images in one tower call (the stock ViT keeps images apart through
        its per-image attention windows), e.g. a training batch.

        Args:
            pixel_values: the images' processor outputs concatenated along rows.
            grid_thw: long ``[B, 3]``, one row per image (``grid_t == 1``).
            levels: as :meth:`forward`.

        Returns:
            ``(tokens, maps)``: per image, ``[grid_h*grid_w/4, out_hidden]`` image tokens and the
            list of ``[1, hidden, grid_h, grid_w]`` maps of ``levels``.
        """
        cfg = self.image_tower.config
        captured = {}
        handles = []
        for level in levels:
            block = self.image_tower.blocks[cfg.fullatt_block_indexes[level]]
            handles.append(block.register_forward_hook(
                lambda _m, _i, out, level=level: captured.__setitem__(
                    level, (out[0] if isinstance(out, tuple) else out).clone())))
        try:
            out = self.image_tower(pixel_values.to(self.image_tower.dtype), grid_thw=grid_thw)
        finally:
            for handle in handles:
                handle.remove()
        patches = [int(t * h * w) for t, h, w in grid_thw.tolist()]
        unit = cfg.spatial_merge_size ** 2
        tokens = list(out.pooler_output.split([n // unit for n in patches]))
        per_level = {level: captured[level].split(patches) for level in levels}
        maps = [[window_order_to_raster(per_level[level][i], grid_thw[i:i + 1],
                                        cfg.spatial_merge_size, cfg.window_size, cfg.patch_size)
                 for level in levels] for i in range(len(patches))]
        return tokens, maps
