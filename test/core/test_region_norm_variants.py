"""Region LayerNorm × vt-only region features (spec §2.6, reference ``HFREModule``).

Reference behaviour (``hybrid_finegrained_region_encoder.py``): with
``mm_apply_region_layer_norm`` it creates ``vt_region_norm`` when vt features are used and
``aux_region_norm`` unless ``mm_use_vt_region_feature_only``; the vt-only forward path applies
no LayerNorm (the hybrid path applies both).
"""
import json
import os

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from vlxseek_core.checkpoint import load_model, model_state_names, save_model
from vlxseek_core.config import VLMFO1Config
from vlxseek_core.errors import CheckpointError
from vlxseek_core.hfre import box_sine_embedding
from vlxseek_core.tiny import TINY_DAVIT, TINY_SIMPLE_FPN_CHANNELS, tiny_config_dict

AUX = sum(TINY_DAVIT["embed_dim"])
VT = 4 * TINY_SIMPLE_FPN_CHANNELS
PREFIX = "model.object_vp_extractor."


def tiny_config(vt_only: bool, norm: bool, use_vt: bool = True) -> VLMFO1Config:
    fused = (VT if use_vt else 0) + (0 if vt_only else AUX)
    return VLMFO1Config(**{**tiny_config_dict(), "mm_use_vt_region_feature_only": vt_only,
                           "mm_apply_region_layer_norm": norm,
                           "mm_use_vision_tower_region_feature": use_vt,
                           "mm_region_hidden_size": fused})


def norm_keys(config) -> set:
    from vlxseek_core.modeling import VLMFO1ForCausalLM

    with torch.device("meta"):
        names = model_state_names(VLMFO1ForCausalLM(config))
    return {k[len(PREFIX):] for k in names if k.startswith(PREFIX) and "region_norm" in k}


VT_NORM = {"vt_region_norm.weight", "vt_region_norm.bias"}
AUX_NORM = {"aux_region_norm.weight", "aux_region_norm.bias"}


@pytest.mark.parametrize("vt_only,norm,use_vt,expected", [
    (False, False, True, set()),
    (False, True, True, VT_NORM | AUX_NORM),
    (False, True, False, AUX_NORM),
    (True, False, True, set()),
    (True, True, True, VT_NORM),  # no aux_region_norm; vt_region_norm exists, never applied
])
def test_region_norm_modules_follow_the_reference(vt_only, norm, use_vt, expected):
    assert norm_keys(tiny_config(vt_only, norm, use_vt)) == expected


def test_vt_only_without_vt_features_is_refused():
    # The reference's vt-only path reads vt maps that it never gathers (it crashes).
    with pytest.raises(CheckpointError, match="mm_use_vt_region_feature_only"):
        norm_keys(tiny_config(True, True, use_vt=False))


def test_3b_vt_only_region_norm_keys_and_spec_comparison_skipped():
    from test_checkpoint import REAL_3B, meta_names, spec_keys

    from vlxseek_core.inspect_checkpoint import spec_expected_keys

    got = meta_names(mm_use_vt_region_feature_only=True, mm_apply_region_layer_norm=True,
                     mm_region_hidden_size=2048)
    assert got[PREFIX + "vt_region_norm.weight"] == (2048,)
    assert not any("aux_region_norm" in k for k in got)
    assert got["model.mm_projector_aux.0.weight"] == (2048, 2048)
    config = VLMFO1Config(**{**tiny_config_dict(), **REAL_3B,
                             "mm_use_vt_region_feature_only": True,
                             "mm_apply_region_layer_norm": True, "mm_region_hidden_size": 2048})
    keys, why = spec_expected_keys(spec_keys(), config)
    assert keys is None and "mm_use_vt_region_feature_only" in why


def _randomise_norms(model) -> None:
    hfre = model.model.object_vp_extractor
    with torch.no_grad():
        for name in ("vt_region_norm", "aux_region_norm"):
            if hasattr(hfre, name):
                getattr(hfre, name).weight.uniform_(0.5, 1.5)
                getattr(hfre, name).bias.uniform_(-0.5, 0.5)


@pytest.fixture(scope="module")
def vt_only_dir(module_checkpoint, tmp_path_factory):
    """The tiny checkpoint (tokenizer, processor files) with vt-only + region-norm weights."""
    from checkpoint_fixtures import fresh_copy

    from vlxseek_core.modeling import VLMFO1ForCausalLM

    directory = fresh_copy(module_checkpoint, str(tmp_path_factory.mktemp("vt_only") / "ck"))
    for name in ("config.json", "model.safetensors"):
        os.remove(os.path.join(directory, name))  # hard links: never write through them
    torch.manual_seed(1)
    model = VLMFO1ForCausalLM(tiny_config(vt_only=True, norm=True)).eval()
    _randomise_norms(model)
    save_model(model, directory)
    return directory


def test_vt_only_checkpoint_loads_strictly_without_aux_norm(vt_only_dir):
    from safetensors import safe_open

    from vlxseek_core.inspect_checkpoint import FAIL, inspect_checkpoint

    with safe_open(os.path.join(vt_only_dir, "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    assert not any("aux_region_norm" in k for k in keys)
    assert {PREFIX + k for k in VT_NORM} <= keys
    with open(os.path.join(vt_only_dir, "config.json"), encoding="utf-8") as fh:
        assert json.load(fh)["mm_use_vt_region_feature_only"] is True
    model, report = load_model(vt_only_dir)  # strict: raises on any missing/unexpected key
    assert report.clean
    assert not hasattr(model.model.object_vp_extractor, "aux_region_norm")
    inspected = inspect_checkpoint(vt_only_dir)
    assert [c for c in inspected.checks if c.status == FAIL] == [], inspected.format()


def test_vt_only_region_features_are_not_normalised(vt_only_dir):
    model, _ = load_model(vt_only_dir)
    hfre = model.model.object_vp_extractor
    norm = hfre.vt_region_norm
    assert not torch.allclose(norm.weight, torch.ones_like(norm.weight))  # randomised, saved
    hidden = model.config.vision_config.hidden_size
    gh, gw = 6, 8
    torch.manual_seed(0)
    vt_map = torch.randn(1, hidden, gh, gw)
    vt_boxes = torch.tensor([[3.0, 5.0, 60.0, 70.0], [20.0, 0.0, 112.0, 84.0]])
    vt_size = (gh * 14, gw * 14)
    aux_maps = [torch.randn(1, c, 4, 4) for c in TINY_DAVIT["embed_dim"]]  # unused in vt-only
    with torch.no_grad():
        feats = hfre(aux_maps, vt_boxes * 0.5, [vt_map], vt_boxes, vt_size)
        levels = hfre.simple_fpn(vt_map)
        pooled = [roi_align(level, [vt_boxes], output_size=7, spatial_scale=scale,
                            sampling_ratio=-1, aligned=False).mean(dim=(2, 3))
                  for level, scale in zip(levels, (1 / 3.5, 1 / 7, 1 / 14, 1 / 28))]
        raw = torch.cat(pooled, dim=1)
    assert feats.shape == (2, VT)
    expected = raw + box_sine_embedding(vt_boxes, vt_size[1], vt_size[0], VT)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-5)
    normalised = torch.nn.functional.layer_norm(raw, (VT,), norm.weight, norm.bias, norm.eps)
    assert not torch.allclose(feats, normalised + expected - raw, atol=1e-3)


def test_hybrid_mode_still_normalises_both_branches():
    """Control: without vt-only the hybrid path applies both norms (reference)."""
    from vlxseek_core.hfre import HFREModule

    torch.manual_seed(0)
    hfre = HFREModule(tiny_config(vt_only=False, norm=True))
    plain = HFREModule(tiny_config(vt_only=False, norm=False))
    plain.load_state_dict(hfre.state_dict(), strict=False)
    with torch.no_grad():
        for norm in (hfre.vt_region_norm, hfre.aux_region_norm):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    vt_map = torch.randn(1, tiny_config(False, False).vision_config.hidden_size, 6, 8)
    aux_maps = [torch.randn(1, c, 16 // 2 ** i, 16 // 2 ** i)
                for i, c in enumerate(TINY_DAVIT["embed_dim"])]
    boxes = torch.tensor([[3.0, 5.0, 60.0, 70.0], [0.0, 0.0, 40.0, 30.0]])
    with torch.no_grad():
        got = hfre(aux_maps, boxes * 0.5, [vt_map], boxes, (84, 112))
        raw = plain(aux_maps, boxes * 0.5, [vt_map], boxes, (84, 112))
    pos = box_sine_embedding(boxes, 112, 84, AUX + VT)
    aux_raw, vt_raw = (raw - pos).split([AUX, VT], dim=1)
    expected = torch.cat([
        torch.nn.functional.layer_norm(aux_raw, (AUX,), hfre.aux_region_norm.weight,
                                       hfre.aux_region_norm.bias, hfre.aux_region_norm.eps),
        torch.nn.functional.layer_norm(vt_raw, (VT,), hfre.vt_region_norm.weight,
                                       hfre.vt_region_norm.bias, hfre.vt_region_norm.eps),
    ], dim=1) + pos
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_vt_only_checkpoint_answers_a_query(vt_only_dir):
    from skimage import data

    from vlxseek_core.pipeline import VLXSeek

    pipe = VLXSeek.from_pretrained(vt_only_dir, device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=6)
    image = data.astronaut()[::4, ::4]
    res = pipe.query(image, "person", task="detect",
                     boxes=np.array([[10, 10, 60, 60], [0, 0, 128, 128]], dtype=np.float32))
    assert isinstance(res.answer, str)
