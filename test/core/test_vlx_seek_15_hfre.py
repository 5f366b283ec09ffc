"""VLX-Seek 1.5 HFRE against a re-statement of the reference's computation (vlx-seek-1.5.md
§2.3-2.4): branch pooling, exact SimpleFP scales, mean/concat fusion, ``*_aux_pos`` frames (incl.
the aux-SimpleFP quirk), vt-only, the vt projector and the separate MLPs. Random maps stand in
for the towers."""
import math

import pytest
import torch
from torchvision.ops import roi_align

from vlxseek_core.errors import CheckpointError
from vlxseek_core.families.vlx_seek_1_5.config import VLXSeek15Config, object_feature_dims
from vlxseek_core.families.vlx_seek_1_5.hfre import ObjectEncoder
from vlxseek_core.families.vlx_seek_1_5.tiny import tiny_config_dict

ORIG_HW = (100, 150)           # original image; aux maps: round(100/16) x round(150/16)
AUX_HW, VT_HW = (6, 9), (3, 5)  # vt grid 6x10 -> Qwen-resized 96x160 -> stride-32 map 3x5
BOXES = torch.tensor([[10.0, 20.0, 60.0, 80.0], [70.0, 5.0, 140.0, 95.0],
                      [0.0, 0.0, 150.0, 100.0]])


def make_config(vision=None, aux=None, **mm):
    raw = tiny_config_dict()
    raw["vision_config"].update(vision or {})
    raw["vlxseek_aux_vision_config"].update(aux or {})
    raw.update(mm)
    return VLXSeek15Config(**raw)


def sine_embed(pos, dim):
    """The reference's gen_sineembed_for_position for [N, 4] (cx, cy, w, h), dim per coord."""
    dim_t = torch.arange(dim, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / dim)
    parts = []
    for c in (1, 0, 2, 3):  # y, x, w, h
        p = pos[:, c, None] * 2 * math.pi / dim_t
        parts.append(torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1))
    return torch.cat(parts, dim=1)


def pos_boxes(boxes, width, height):
    b = boxes.clone().float()
    b[:, [0, 2]] /= width
    b[:, [1, 3]] /= height
    b[:, 2] -= b[:, 0]
    b[:, 3] -= b[:, 1]
    b[:, 0] += b[:, 2] / 2
    b[:, 1] += b[:, 3] / 2
    return b


def pool(fmap, boxes, scale, aligned):
    return roi_align(fmap.float(), [boxes], output_size=7, spatial_scale=scale,
                     sampling_ratio=-1, aligned=aligned).mean(dim=(2, 3))


def reference(enc, cfg, aux_maps, boxes, vt_map, vt_boxes):
    """Re-statement of HybridFineGrainedRegionEncoder.__call__ (§2.4)."""
    mm, aligned = cfg.mm, bool(cfg.mm("mm_roi_algined"))
    combination, D = mm("mm_object_feature_combination"), cfg.mm_object_hidden_size
    if mm("mm_use_simpleFPN_for_vt"):
        levels = enc.simple_fpn(vt_map)
        vt = torch.cat([pool(lv, vt_boxes, 1.0 / (32 / s), aligned)
                        for lv, s in zip(levels, (8.0, 4.0, 2.0, 1.0))], dim=1)
    else:
        vt = pool(vt_map, vt_boxes, 1 / 32, aligned)
        if combination.startswith("mean"):
            vt = enc.vision_tower_object_feature_projector(vt)
    vt_frame = (VT_HW[1] * 32, VT_HW[0] * 32)
    if mm("mm_use_vt_object_feature_only"):
        return vt + sine_embed(pos_boxes(vt_boxes, *vt_frame), D // 4)
    if mm("mm_use_simpleFPN_for_vt_aux"):
        aux_feats = enc.simple_fpn_aux(aux_maps[-1])
        aux = torch.cat([pool(lv, boxes, 1.0 / (16 / s), aligned)
                         for lv, s in zip(aux_feats, (4.0, 2.0, 1.0, 0.5))], dim=1)
    else:
        aux_feats = aux_maps
        aux = pool(torch.cat(aux_maps, dim=1), boxes, 1 / 16, aligned)
    if combination.startswith("mean"):
        feats = (aux + vt) / 2
    else:
        if mm("mm_use_separate_mlp_for_object"):
            vt, aux = enc.object_mlp(vt), enc.aux_object_mlp(aux)
        feats = torch.cat([aux, vt], dim=1)
    if combination.endswith("_aux_pos"):
        frame = (max(f.shape[3] for f in aux_feats) * 16, max(f.shape[2] for f in aux_feats) * 16)
        return feats + sine_embed(pos_boxes(boxes, *frame), D // 4)
    return feats + sine_embed(pos_boxes(vt_boxes, *vt_frame), D // 4)


VARIANTS = {
    "concat_simplefp": dict(),
    "concat_aux_pos_aligned": dict(mm_object_feature_combination="concat_aux_pos",
                                   mm_roi_algined=True),
    "mean_aux_simplefp_aux_pos": dict(
        mm_object_feature_combination="mean_aux_pos", mm_use_simpleFPN_for_vt_aux=True,
        mm_simpleFPN_out_channels_for_vt=1024, mm_object_hidden_size=4096),
    "vt_only_mean_projector": dict(
        vision=dict(hidden_size=16), mm_use_simpleFPN_for_vt=False,
        mm_use_vt_object_feature_only=True, mm_object_hidden_size=64),
    "concat_separate_mlp": dict(
        vision=dict(out_hidden_size=2048), aux=dict(embed_dim=512, num_heads=8, mlp_dim=1024),
        mm_use_simpleFPN_for_vt=False, mm_use_separate_mlp_for_object=True,
        mm_object_hidden_size=2048),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_object_encoder_equals_reference_restatement(name):
    settings = dict(VARIANTS[name])
    cfg = make_config(settings.pop("vision", None), settings.pop("aux", None), **settings)
    torch.manual_seed(0)
    enc = ObjectEncoder(cfg).eval()
    aux_c = cfg.vlxseek_aux_vision_config["embed_dim"]
    aux_maps = [torch.randn(1, aux_c, *AUX_HW) for _ in range(4)]
    vt_map = torch.randn(1, cfg.vision_config.out_hidden_size, *VT_HW)
    vt_boxes = BOXES * torch.tensor([160 / 150, 96 / 100] * 2)
    with torch.no_grad():
        got = enc(aux_maps, BOXES, vt_map, vt_boxes)
        want = reference(enc, cfg, aux_maps, BOXES, vt_map, vt_boxes)
    assert got.dtype == torch.float32
    assert got.shape == (3, cfg.mm_object_hidden_size)
    assert (got - want).abs().max().item() < 1e-5


def test_vt_only_does_not_need_aux_maps():
    settings = dict(VARIANTS["vt_only_mean_projector"])
    cfg = make_config(settings.pop("vision"), **settings)
    enc = ObjectEncoder(cfg)
    out = enc(None, BOXES, torch.randn(1, 64, *VT_HW), BOXES)
    assert out.shape == (3, 64)


def test_simple_fpn_levels_and_exact_scales():
    enc = ObjectEncoder(make_config(mm_use_simpleFPN_for_vt_aux=True,
                                    mm_object_feature_combination="concat",
                                    mm_object_hidden_size=4096 + 64))
    assert enc.simple_fpn.level_names == ["simfp_2", "simfp_3", "simfp_4", "simfp_5"]
    assert enc.simple_fpn.roi_spatial_scales == (1 / 4, 1 / 8, 1 / 16, 1 / 32)
    assert enc.simple_fpn_aux.level_names == ["simfp_2", "simfp_3", "simfp_4", "simfp_5"]
    assert enc.simple_fpn_aux.roi_spatial_scales == (1 / 4, 1 / 8, 1 / 16, 1 / 32)
    levels = enc.simple_fpn(torch.randn(1, 64, 3, 5))
    assert [tuple(lv.shape[-2:]) for lv in levels] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    assert isinstance(enc.simple_fpn_aux.simfp_5[0], torch.nn.MaxPool2d)


@pytest.mark.parametrize("overrides,match", [
    (dict(mm_object_hidden_size=200), "towers give 192"),
    (dict(mm_object_hidden_size=196), "multiple of 8"),
    (dict(mm_object_feature_combination="mean"), "equal widths"),
    (dict(mm_object_feature_combination="max"), "mm_object_feature_combination"),
    (dict(mm_apply_object_layer_norm=True), "mm_apply_object_layer_norm"),
    (dict(mm_use_vision_tower_object_feature=False), "last_feat"),
    (dict(mm_use_simpleFPN_for_vt=False, mm_object_feature_combination="mean",
          mm_object_hidden_size=64), "reference crashes"),
    (dict(mm_use_separate_mlp_for_object=True), "2048"),
])
def test_widths_the_reference_cannot_run_are_refused(overrides, match):
    with pytest.raises(CheckpointError, match=match):
        object_feature_dims(make_config(**overrides))
