"""VLX-Seek 1.5 model: 10B key names/shapes (vlx-seek-1.5-10b-keys.json), config refusals,
tiny checkpoint round trip, splicing, 1-D positions in ``generate`` (vlx-seek-1.5.md §1-2)."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vlxseek_core.cli import build_parser, main
from vlxseek_core.errors import CheckpointError
from vlxseek_core.families.vlx_seek_1_5.checkpoint import (load_model, model_state_names,
                                                           save_model)
from vlxseek_core.families.vlx_seek_1_5.config import (VLX_SEEK_15_10B_CONFIG, VLXSeek15Config,
                                                       validate_config)
from vlxseek_core.families.vlx_seek_1_5.modeling import VLXSeek15ForCausalLM
from vlxseek_core.modeling import EncodedFrame

SPEC_KEYS = (Path(__file__).resolve().parents[2].parent / "shared" / "spec"
             / "vlx-seek-1.5-10b-keys.json")
BOXES = torch.tensor([[10.0, 20.0, 60.0, 80.0], [70.0, 5.0, 140.0, 95.0]])


def meta_names(**overrides):
    config = VLXSeek15Config(**{**VLX_SEEK_15_10B_CONFIG, **overrides})
    with torch.device("meta"):
        return model_state_names(VLXSeek15ForCausalLM(config))


def test_10b_names_and_shapes_equal_spec():
    if not SPEC_KEYS.is_file():
        pytest.skip(f"spec file {SPEC_KEYS} not present")
    spec = json.loads(SPEC_KEYS.read_text())
    expected = {k: tuple(v) for k, v in spec["keys"].items()}
    got = meta_names()
    assert set(got) - set(expected) == set()
    assert set(expected) - set(got) == set()
    assert got == expected
    assert sum(math.prod(s) for s in got.values()) == spec["total_params"] == 10_018_033_512


def test_10b_llm_keys_are_stock_qwen35():
    from transformers import Qwen3_5ForConditionalGeneration

    with torch.device("meta"):
        stock = Qwen3_5ForConditionalGeneration(VLXSeek15Config(**VLX_SEEK_15_10B_CONFIG))
    want = {k: tuple(v.shape) for k, v in stock.state_dict().items()
            if k.startswith("model.language_model.") or k == "lm_head.weight"}
    got = meta_names()
    assert {k: v for k, v in got.items() if k in want} == want
    assert len(want) == 427  # embed + 424 layer keys + norm + lm_head (§1.4)


def test_mean_variant_parameter_counts():
    got = meta_names(mm_object_feature_combination="mean", mm_use_simpleFPN_for_vt_aux=True,
                     mm_simpleFPN_out_channels_for_vt=1024, mm_object_hidden_size=4096)

    def params(prefix):
        return sum(math.prod(s) for k, s in got.items() if k.startswith(prefix))
    assert params("model.object_vp_extractor.simple_fpn.") == 165_186_048
    assert params("model.object_vp_extractor.simple_fpn_aux.") == 46_983_712
    assert params("model.object_vp_extractor.vision_tower_object_feature_projector.") == \
        33_562_624
    assert got["model.mm_projector_aux.0.weight"] == (4096, 4096)


@pytest.mark.parametrize("overrides,match", [
    (dict(image_token_id=151655), "image_token_id"),
    (dict(mm_vision_tower_aux="davit-large"), "radio"),
    (dict(mm_vision_tower="Qwen2.5-VL-3B"), "Qwen3.5"),
    (dict(mm_vitdet_window_size=14), "VitDet"),
    (dict(mm_projector_aux_type="linear"), "top-level hidden_size"),
    (dict(mm_projector_type="linear"), "top-level hidden_size"),
    (dict(mm_hidden_size=1024), "mm_hidden_size"),
    (dict(vision_aux_config=None), "vision_aux_config is required"),
    (dict(vision_aux_config={**VLX_SEEK_15_10B_CONFIG["vision_aux_config"],
                             "version": "radio_v2.5-h"}), "c-radio_v4-so400m"),
    (dict(mm_apply_object_layer_norm=True), "crashes"),
])
def test_config_refusals(overrides, match):
    problems = validate_config(VLXSeek15Config(**{**VLX_SEEK_15_10B_CONFIG, **overrides}))
    assert any(match in p for p in problems), problems


def test_10b_config_is_accepted_and_linear_needs_top_level_hidden():
    assert validate_config(VLXSeek15Config(**VLX_SEEK_15_10B_CONFIG)) == []
    cfg = VLXSeek15Config(**{**VLX_SEEK_15_10B_CONFIG, "mm_projector_aux_type": "linear",
                             "hidden_size": 4096})
    assert validate_config(cfg) == []


def test_cli_default_family_stays_fo1():
    assert build_parser().parse_args(["make-tiny-model", "x"]).family == "vlm_fo1"


# ----------------------------------------------------------------------------- tiny checkpoint

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tiny15"))
    assert main(["make-tiny-model", directory, "--family", "vlx_seek_1_5"]) == 0
    return directory


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from transformers import Qwen2Tokenizer, Qwen2VLImageProcessor
    from PIL import Image

    from vlxseek_core.families.vlx_seek_1_5.expansion import (expand_placeholders,
                                                              tokenize_prompt)
    from vlxseek_core.families.vlx_seek_1_5.prompts import render_prompt

    model, report = load_model(tiny_dir)
    assert report.clean
    tok = Qwen2Tokenizer.from_pretrained(tiny_dir)
    proc = Qwen2VLImageProcessor.from_pretrained(tiny_dir, min_pixels=56 * 56,
                                                 max_pixels=2048 * 2048)
    image = np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)
    inputs = proc(images=Image.fromarray(image), return_tensors="pt")
    aux = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    ids = tokenize_prompt(render_prompt("Detect all the instances of: cat.", 2), tok)
    expanded = expand_placeholders(ids, tok, inputs["image_grid_thw"], 2).input_ids
    return dict(model=model, tok=tok, pixel_values=inputs["pixel_values"],
                grid=inputs["image_grid_thw"], aux=aux, ids=expanded)


def encode(t):
    with torch.no_grad():
        return t["model"].encode_frame(t["pixel_values"], t["grid"], t["aux"], BOXES)


def test_tiny_files_keys_and_token_ids(tiny_dir, tiny):
    from safetensors import safe_open

    assert sorted(os.listdir(tiny_dir)) == [
        "config.json", "generation_config.json", "model.safetensors",
        "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"]
    with safe_open(os.path.join(tiny_dir, "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
        assert fh.get_tensor("lm_head.weight").dtype == torch.bfloat16
    assert keys == set(model_state_names(tiny["model"]))
    assert "model.vision_tower_aux.image_tower.radio_model.model.patch_generator.pos_embed" \
        in keys
    assert not any(".vit." in k for k in keys)
    tok = tiny["tok"]
    assert tok.convert_tokens_to_ids("<|image_pad|>") == 248056
    assert tok.convert_tokens_to_ids("<objfeat>") == 248181
    assert tok.convert_tokens_to_ids("<|im_end|>") == 248046
    assert tok.convert_tokens_to_ids("<obj99>") == 248180
    assert json.load(open(os.path.join(tiny_dir, "config.json")))["model_type"] == "vlx_seek_1_5"


def test_generate_paths_agree_and_positions_are_sequential(tiny):
    model, ids = tiny["model"], tiny["ids"]
    frame = encode(tiny)
    assert frame.image_embeds.shape == (15, 64) and frame.region_embeds.shape == (2, 64)
    embeds, positions, delta = model.build_inputs_embeds(ids, frame)
    length = len(ids)
    assert positions.shape == (4, 1, length) and delta == 0
    assert torch.equal(positions, torch.arange(length).expand(4, 1, -1))
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["position_ids"].clone()), with_kwargs=True)
    try:
        with torch.no_grad():
            mask = torch.ones(1, length, dtype=torch.long)
            by_embeds = model.generate(inputs_embeds=embeds, position_ids=positions,
                                       attention_mask=mask, max_new_tokens=4, do_sample=False)
            steps = len(seen)
            input_ids = torch.tensor([ids])
            by_ids = model.generate(input_ids=input_ids, attention_mask=mask,
                                    pixel_values=tiny["pixel_values"],
                                    image_grid_thw=tiny["grid"], aux_pixel_values=tiny["aux"],
                                    boxes=BOXES, max_new_tokens=4, do_sample=False)
    finally:
        hook.remove()
    assert torch.equal(by_ids[:, length:], by_embeds)
    for run in (seen[:steps], seen[steps:]):
        assert torch.equal(run[0].reshape(-1, length)[-1], torch.arange(length))
        for i, pos in enumerate(run[1:]):
            assert pos.reshape(-1).unique().tolist() == [length + i]  # all rows: L, L+1, ...


def test_save_reload_identical_logits(tiny, tmp_path):
    model, ids = tiny["model"], tiny["ids"]
    with torch.no_grad():
        embeds, positions, _ = model.build_inputs_embeds(ids, encode(tiny))
        before = model(inputs_embeds=embeds, position_ids=positions).logits
        save_model(model, str(tmp_path))
        again, report = load_model(str(tmp_path))
        assert report.clean
        frame = again.encode_frame(tiny["pixel_values"], tiny["grid"], tiny["aux"], BOXES)
        embeds2, positions2, _ = again.build_inputs_embeds(ids, frame)
        after = again(inputs_embeds=embeds2, position_ids=positions2).logits
    assert torch.equal(before, after)


def test_strict_load_refuses_missing_and_unexpected_keys(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(os.path.join(tiny_dir, "model.safetensors"))
    for name, change in (("missing", lambda t: t.pop(
            "model.vision_tower_aux.image_tower.radio_model.summary_idxs")),
            ("unexpected", lambda t: t.__setitem__("model.extra.weight", torch.zeros(1)))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(Path(tiny_dir, "config.json").read_text())
        changed = dict(tensors)
        change(changed)
        save_file(changed, str(folder / "model.safetensors"))
        with pytest.raises(CheckpointError, match=f"1 {name} keys"):
            load_model(str(folder))
        model, report = load_model(str(folder), allow_key_mismatch=True)
        assert not report.clean


def test_splice_counts(tiny):
    model, ids = tiny["model"], tiny["ids"]
    frame = encode(tiny)
    ids_t = torch.tensor(ids)
    text = model.model.embed_tokens(ids_t)
    with pytest.raises(ValueError, match="image pad"):
        model.splice(ids_t, text, EncodedFrame(frame.image_embeds[:-1], frame.region_embeds,
                                               frame.image_grid_thw))
    with pytest.raises(ValueError, match="region rows"):
        model.splice(ids_t, text, EncodedFrame(frame.image_embeds, frame.region_embeds[:1],
                                               frame.image_grid_thw))
    with pytest.warns(UserWarning, match="dropped"):
        extra = torch.cat([frame.region_embeds, frame.region_embeds[:1]])
        out = model.splice(ids_t, text, EncodedFrame(frame.image_embeds, extra,
                                                     frame.image_grid_thw))
    rows = out[ids_t == 248181]
    assert torch.equal(rows, frame.region_embeds)
    with pytest.raises(ValueError, match="unexpanded"):
        model.build_inputs_embeds([1, -200, 2], frame)


def test_no_boxes_encodes_the_image_only(tiny):
    with torch.no_grad():
        frame = tiny["model"].encode_frame(tiny["pixel_values"], tiny["grid"], tiny["aux"],
                                           torch.zeros(0, 4))
    assert frame.region_embeds.shape == (0, 64)


def test_bf16_load_encode_generate(tiny_dir, tiny):
    """The reference's dtype: bf16 towers (the aux resize falls back to fp32 on CPU only)."""
    model, _ = load_model(tiny_dir, dtype=torch.bfloat16)
    assert model.model.vision_tower_aux.summary_idxs.dtype == torch.int64
    with torch.no_grad():
        frame = model.encode_frame(tiny["pixel_values"], tiny["grid"], tiny["aux"], BOXES)
        embeds, positions, _ = model.build_inputs_embeds(tiny["ids"], frame)
        out = model.generate(inputs_embeds=embeds, position_ids=positions,
                             attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                             max_new_tokens=2, do_sample=False)
    assert frame.region_embeds.dtype == torch.bfloat16
    assert torch.isfinite(frame.region_embeds.float()).all() and out.shape == (1, 2)


def test_prefix_cache_generation_equals_plain_generation(tiny):
    """The pipeline's use: prefill the prompt prefix once through ``model.model`` and reuse
    its (attention + gated-delta-net) cache for the question suffix."""
    import copy

    from vlxseek_core.modeling import CACHE_KWARG, output_cache

    model, ids = tiny["model"], tiny["ids"]
    with torch.no_grad():
        embeds, positions, _ = model.build_inputs_embeds(ids, encode(tiny))
        prefix = len(ids) - 8
        cache = output_cache(model.model(inputs_embeds=embeds[:, :prefix],
                                         position_ids=positions[..., :prefix], use_cache=True))
        kwargs = dict(inputs_embeds=embeds, position_ids=positions, max_new_tokens=5,
                      attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                      do_sample=False, output_scores=True, return_dict_in_generate=True)
        plain = model.generate(**kwargs)
        cached = model.generate(**kwargs, **{CACHE_KWARG: copy.deepcopy(cache)})
    assert torch.equal(plain.sequences, cached.sequences)
    assert max((a - b).abs().max().item() for a, b in zip(plain.scores, cached.scores)) < 1e-4
