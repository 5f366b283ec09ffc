"""Checkpoint names, shapes, round trip and refusals (spec §2.9, vlm-fo1-3b-keys.json)."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vlxseek_core.checkpoint import load_model, model_state_names
from vlxseek_core.config import VLM_FO1_3B_CONFIG, VLMFO1Config
from vlxseek_core.errors import CheckpointError

SPEC_KEYS = Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "vlm-fo1-3b-keys.json"

REAL_3B = VLM_FO1_3B_CONFIG


def spec_keys():
    if not SPEC_KEYS.is_file():
        pytest.skip(f"spec file {SPEC_KEYS} not present")
    return json.loads(SPEC_KEYS.read_text())


def meta_names(**overrides):
    from vlxseek_core.modeling import VLMFO1ForCausalLM

    config = VLMFO1Config(**{**REAL_3B, **overrides})
    with torch.device("meta"):
        model = VLMFO1ForCausalLM(config)
    return model_state_names(model)


def stock_text_names():
    """Text keys of stock transformers Qwen2.5-VL-3B, renamed to the reference layout."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = {k: v for k, v in REAL_3B.items() if not k.startswith(("mm_", "aux_"))}
    with torch.device("meta"):
        stock = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg))
    names = {}
    for key, t in stock.state_dict().items():
        if key.startswith("model.language_model."):
            names["model." + key[len("model.language_model."):]] = tuple(t.shape)
    return names


def test_real_3b_names_and_shapes_equal_spec_plus_stock_text():
    spec = spec_keys()
    expected = {k: tuple(v) for k, v in spec["real_3b_likely_config"]["keys"].items()}
    expected.update(stock_text_names())
    got = meta_names()
    assert set(got) - set(expected) == set()
    assert set(expected) - set(got) == set()
    assert got == expected


@pytest.mark.parametrize("variant,overrides", [
    ("real_3b_extra_keys_if_mm_apply_region_layer_norm", {"mm_apply_region_layer_norm": True}),
    ("real_3b_variant_no_simpleFPN_keys_that_differ",
     {"mm_use_simpleFPN_for_vt": False, "mm_region_hidden_size": 8960}),
    ("real_3b_variant_linear_projectors_keys_that_differ",
     {"mm_projector_type": "linear", "mm_projector_aux_type": "linear"}),
])
def test_spec_variants(variant, overrides):
    spec = spec_keys()
    base = {k: tuple(v) for k, v in spec["real_3b_likely_config"]["keys"].items()}
    got = meta_names(**overrides)
    for key, shape in spec[variant].items():
        assert got.get(key) == tuple(shape), key
    if variant.endswith("no_simpleFPN_keys_that_differ"):
        assert not any(".simple_fpn." in k for k in got)
    if variant.endswith("linear_projectors_keys_that_differ"):
        assert "model.mm_projector_aux.0.weight" not in got
    untouched = {k for k in base if ".simple_fpn." not in k and "mm_projector" not in k}
    assert untouched <= set(got)


def test_region_hidden_size_mismatch_is_refused():
    with pytest.raises(CheckpointError, match="mm_region_hidden_size"):
        meta_names(mm_region_hidden_size=4096)


def test_tiny_round_trip_has_no_key_mismatch(tiny_model_dir):
    model, report = load_model(tiny_model_dir)
    assert report.clean, report.summary()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    from safetensors import safe_open

    with safe_open(os.path.join(tiny_model_dir, "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    # Reference DaViT names on disk, not transformers' Florence-2 names.
    assert "model.vision_tower_aux.image_tower.convs.0.proj.weight" in keys
    block = "model.vision_tower_aux.image_tower.blocks.0.0."
    assert block + "spatial_block.window_attn.fn.qkv.weight" in keys
    assert block + "channel_block.ffn.fn.net.fc1.weight" in keys
    assert not any(".conv1.weight" in k or "norm1" in k for k in keys if "vision_tower_aux" in k)
    config = json.loads(Path(tiny_model_dir, "config.json").read_text())
    assert config["model_type"] == "omchat_qwen2_5_vl" and config["vlxseek_random_weights"]


def test_resave_and_reload_gives_identical_answers(tmp_path, tiny_model_dir, tiny_pipeline,
                                                   astronaut, astronaut_boxes):
    from vlxseek_core.checkpoint import save_model
    from vlxseek_core.pipeline import VLXSeek

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    os.remove(copy / "model.safetensors")
    save_model(tiny_pipeline.model, str(copy))
    again = VLXSeek.from_pretrained(str(copy), device="cpu", dtype="float32",
                                    proposal_source="none", max_new_tokens=48)
    for task, text in (("detect", "person; flag"), ("caption", "")):
        a = tiny_pipeline.query(astronaut, text, task=task, boxes=astronaut_boxes)
        b = again.query(astronaut, text, task=task, boxes=astronaut_boxes)
        assert a.answer == b.answer and a.num_generated_tokens == b.num_generated_tokens
        # random weights may caption with blanks, and may end a region answer at once (the
        # constraint allows the empty answer): then the warnings must say so
        assert a.answer or task == "caption" or "empty answer" in " ".join(a.warnings)
        assert a.rejected == b.rejected and a.warnings == b.warnings
        assert [d.region_index for d in a.detections] == [d.region_index for d in b.detections]


def test_missing_keys_are_refused_unless_allowed(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, copy)
    state = load_file(str(copy / "model.safetensors"))
    state.pop("model.mm_projector_aux.0.weight")
    state["model.extra.weight"] = torch.zeros(1)
    save_file(state, str(copy / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        load_model(str(copy))
    assert "model.mm_projector_aux.0.weight" in str(info.value)
    assert "model.extra.weight" in str(info.value)
    _, report = load_model(str(copy), allow_key_mismatch=True)
    assert report.missing == ["model.mm_projector_aux.0.weight"]
    assert report.unexpected == ["model.extra.weight"]


def test_pickle_only_checkpoint_is_refused(tmp_path, tiny_model_dir):
    copy = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, copy)
    os.remove(copy / "model.safetensors")
    torch.save({"x": torch.zeros(1)}, copy / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors only"):
        load_model(str(copy))


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist|no config.json"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(str(tmp_path))


def test_bf16_load_keeps_rotary_in_fp32(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, dtype=torch.bfloat16)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert np.isfinite(model.model.rotary_emb.inv_freq.numpy()).all()


def test_attention_choice(tiny_model_dir, monkeypatch):
    from vlxseek_core.checkpoint import choose_attn_implementation

    assert choose_attn_implementation("cpu", torch.float32) == "sdpa"
    assert choose_attn_implementation("cpu", torch.float32, "eager") == "eager"
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert choose_attn_implementation("cuda", torch.bfloat16) == "flash_attention_2"
    assert choose_attn_implementation("cuda", torch.float32) == "sdpa"
    with pytest.raises(ValueError):
        choose_attn_implementation("cpu", torch.float32, "fast")
    monkeypatch.undo()
    model, _ = load_model(tiny_model_dir, attn_implementation="eager")
    assert model.model.config._attn_implementation == "eager"
    assert model.model.vision_tower.image_tower.config._attn_implementation == "eager"
    assert model.model.vision_tower_aux.image_tower.config._attn_implementation == "eager"


@pytest.mark.parametrize("overrides,levels", [
    ({}, (3,)),  # SimpleFP reads only the last full-attention block (spec §2.3)
    ({"mm_use_simpleFPN_for_vt": False, "mm_region_hidden_size": 8960}, (0, 1, 2, 3)),
    ({"mm_use_vision_tower_region_feature": False, "mm_region_hidden_size": 3840}, ()),
])
def test_hfre_reads_the_right_vit_levels(overrides, levels):
    from vlxseek_core.hfre import HFREModule

    with torch.device("meta"):
        hfre = HFREModule(VLMFO1Config(**{**REAL_3B, **overrides}))
    assert hfre.vt_levels(4) == levels
