"""Numerics of the region encoder pieces (spec §2.3–2.7)."""
import copy
import math

import pytest
import torch

from vlxseek_core.hfre import box_sine_embedding, build_projector, roi_mean
from vlxseek_core.simple_fp import ROI_SPATIAL_SCALES, SimpleFP
from vlxseek_core.vision import window_order_to_raster


def test_box_embedding_matches_formula():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 60.0]])
    width, height, dim = 200.0, 100.0, 32
    emb = box_sine_embedding(boxes, width, height, dim)
    assert emb.shape == (1, dim) and emb.dtype == torch.float32
    cx, cy, w, h = 60 / 200, 40 / 100, 100 / 200, 40 / 100
    per = dim // 4
    expected = []
    for v in (cy, cx, w, h):  # y first
        for j in range(per // 2):
            f = 10000 ** (2 * j / per)
            expected += [math.sin(2 * math.pi * v / f), math.cos(2 * math.pi * v / f)]
    assert torch.allclose(emb[0], torch.tensor(expected), atol=1e-6)


def test_box_embedding_rejects_bad_dim():
    with pytest.raises(ValueError):
        box_sine_embedding(torch.zeros(1, 4), 1, 1, 12)


def test_roi_align_box_over_constant_patch_returns_constant():
    # A 40x40 map (stride 4 → 160 px frame) that is 7.0 inside rows/cols 10..29, else noise.
    fmap = torch.randn(1, 3, 40, 40)
    fmap[:, :, 10:30, 10:30] = 7.0
    # Box well inside the patch in image pixels: map cells 12..27 → pixels 48..112.
    box = torch.tensor([[48.0, 48.0, 112.0, 112.0]])
    out = roi_mean(fmap, box, output_size=7, spatial_scale=0.25)
    assert out.shape == (1, 3)
    assert torch.allclose(out, torch.full((1, 3), 7.0), atol=1e-5)
    # The same box on the stride-14 frame of SimpleFP level 3 hits the same cells.
    out14 = roi_mean(fmap, box * 3.5, output_size=7, spatial_scale=ROI_SPATIAL_SCALES[1] / 2)
    assert torch.allclose(out14, torch.full((1, 3), 7.0), atol=1e-5)


def test_roi_align_is_not_aligned_mode():
    # aligned=False: a box [0,0,4,4] at scale 1 averages cells 0..3 inclusive-start sampling.
    fmap = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = roi_mean(fmap, torch.tensor([[0.0, 0.0, 2.0, 2.0]]), output_size=1, spatial_scale=1)
    from torchvision.ops import roi_align

    ref = roi_align(fmap, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])], 1, 1.0, -1, False)
    assert torch.allclose(out, ref.mean((2, 3)))


def test_simple_fp_shapes_and_key_names():
    fpn = SimpleFP(1280, 512)
    keys = {k: tuple(v.shape) for k, v in fpn.state_dict().items()}
    assert keys["simfp_1.0.weight"] == (1280, 640, 2, 2)
    assert keys["simfp_1.1.weight"] == (640,)
    assert keys["simfp_1.3.weight"] == (640, 320, 2, 2)
    assert keys["simfp_1.4.weight"] == (512, 320, 1, 1)
    assert keys["simfp_1.5.norm.bias"] == (512,)
    assert keys["simfp_2.1.weight"] == (512, 640, 1, 1)
    assert keys["simfp_3.0.weight"] == (512, 1280, 1, 1)
    assert keys["simfp_4.2.weight"] == (512, 512, 3, 3)
    assert "simfp_4.0.weight" not in keys  # max-pool has no parameters
    assert len(keys) == 32
    assert sum(v.numel() for v in fpn.state_dict().values()) == 18_623_296
    small = SimpleFP(64, 32)
    outs = small(torch.randn(1, 64, 10, 14))
    shapes = [tuple(o.shape) for o in outs]
    assert shapes == [(1, 32, 40, 56), (1, 32, 20, 28), (1, 32, 10, 14), (1, 32, 5, 7)]


def test_vit_unwindowing_restores_raster_order():
    from transformers.vision_utils import get_vision_window_index

    grid_h, grid_w, m = 12, 20, 2
    grid = torch.tensor([[1, grid_h, grid_w]])
    # Raster value of each patch = y * W + x; put it in processor order, then window order.
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    raster = (ys * grid_w + xs).float()
    proc = raster.reshape(grid_h // m, m, grid_w // m, m).permute(0, 2, 1, 3).reshape(-1)
    window_index, _ = get_vision_window_index(grid, m, 112, 14)
    windowed = proc.reshape(-1, m * m)[window_index].reshape(-1, 1)
    assert not torch.equal(windowed.reshape(-1), raster.reshape(-1))  # really permuted
    restored = window_order_to_raster(windowed, grid, m, 112, 14)
    assert restored.shape == (1, 1, grid_h, grid_w)
    assert torch.equal(restored[0, 0], raster)


@pytest.mark.parametrize("kind,keys", [
    ("identity", []),
    ("linear", ["weight", "bias"]),
    ("mlp2x_gelu", ["0.weight", "0.bias", "2.weight", "2.bias"]),
    ("mlp3x_gelu", ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]),
])
def test_projector_types(kind, keys):
    proj = build_projector(kind, 24, 8)
    assert list(proj.state_dict()) == keys
    out = proj(torch.randn(5, 24 if kind != "identity" else 8))
    assert out.shape == (5, 8)


def test_unknown_projector_raises():
    with pytest.raises(ValueError):
        build_projector("conv", 4, 4)


def test_region_layer_norm_runs_in_fp32_in_a_bf16_model():
    """Reference: ``aux_region_norm.float()(feats)`` on the fp32 RoIAlign output (§2.8)."""
    from vlxseek_core.config import VLMFO1Config
    from vlxseek_core.hfre import HFREModule
    from vlxseek_core.tiny import tiny_config_dict

    config = VLMFO1Config(**{**tiny_config_dict(), "mm_apply_region_layer_norm": True})
    torch.manual_seed(0)
    hfre = HFREModule(config)
    with torch.no_grad():
        hfre.aux_region_norm.weight.uniform_(0.5, 1.5)
        hfre.aux_region_norm.bias.uniform_(-0.5, 0.5)
    hfre = hfre.to(torch.bfloat16)
    channels = hfre.aux_region_norm.normalized_shape[0]
    c0 = channels // 4  # four DaViT levels; only their sum matters to the norm
    maps = [torch.randn(1, c, 16 // 2 ** i, 16 // 2 ** i, dtype=torch.bfloat16)
            for i, c in enumerate([c0, c0, c0, channels - 3 * c0])]
    boxes = torch.tensor([[0.0, 0.0, 30.0, 20.0], [10.0, 5.0, 60.0, 64.0]])
    feats = hfre.aux_region_features(maps, boxes)
    assert feats.dtype == torch.float32 and feats.shape == (2, channels)
    plain = copy.deepcopy(hfre)
    del plain.aux_region_norm
    raw = plain.aux_region_features(maps, boxes)
    norm = hfre.aux_region_norm
    expected = torch.nn.functional.layer_norm(raw, (channels,), norm.weight.float(),
                                              norm.bias.float(), norm.eps)
    torch.testing.assert_close(feats, expected)
