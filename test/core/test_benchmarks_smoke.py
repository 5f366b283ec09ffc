"""Smoke test of benchmarks/: every benchmark's main() at its smallest size, tiny model, CPU."""
import math

import pytest
import torch

from benchmarks import bench_decode, bench_queries, bench_stages, bench_tokens, common
from benchmarks.answers import (coordinate_answer, coordinate_answer_json, region_answer,
                                sample_objects)
from benchmarks import configs, vlx15
from benchmarks.configs import build_config, build_random_model
from benchmarks.llm import KVDecoder

RUN = ["--repeats", "1", "--warmup", "0", "--threads", "1"]


def _assert_greedy_equals_generate(decoder, model, embeds, positions, steps=6):
    """KVDecoder's greedy tokens equal ``generate``'s (same positions and cache handling);
    leaves the decoder reset to its prefilled state."""
    decoder.prefill()
    ours = decoder.greedy(steps)
    ref = model.generate(inputs_embeds=embeds, position_ids=positions,
                         attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                         max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                         num_beams=1, eos_token_id=None, pad_token_id=0, temperature=None,
                         top_p=None, top_k=None)
    assert ours == ref[0].tolist()
    decoder.reset()
    return ours


def test_answer_formats():
    objects = sample_objects(3, 1280, 720, num_proposals=10, mixed=False, seed=0)
    region = region_answer(objects)
    refs = "".join(f"<region{i}>" for i in sorted(objects.region_indices))
    assert region == f"<ground>person</ground><objects>{refs}</objects><|im_end|>"
    coords = coordinate_answer(objects)
    assert coords.startswith('```json\n[\n\t{"bbox_2d": [') and coords.endswith("]\n```<|im_end|>")
    parsed = coordinate_answer_json(coords)
    assert [p["label"] for p in parsed] == ["person"] * 3
    for entry in parsed:  # absolute pixels of the 1288x728 Qwen input frame, ordered corners
        x1, y1, x2, y2 = entry["bbox_2d"]
        assert 0 <= x1 < x2 <= 1288 and 0 <= y1 < y2 <= 728


def test_bench_tokens():
    out = bench_tokens.main(["--sizes", "1", "5"])
    rows = out["rows"]
    assert len(rows) == 4  # 2 sizes x (1 label, mixed)
    for row in rows:
        assert 0 < row["region_tokens"] < row["coordinate_tokens"]
        assert row["ratio"] > 1
    single = {r["n"]: r for r in rows if r["case"] == "1 label"}
    assert single[1]["region_tokens"] == 7  # <ground> person </ground> <objects> <regionK> ...
    assert single[5]["region_tokens"] == 11  # ... one more token per extra object
    assert out["machine"]["cpu"] and out["machine"]["torch"] == torch.__version__


def test_bench_decode_tiny():
    out = bench_decode.main(["--sizes", "1", "--frame", "224x224", "--proposals", "10", *RUN])
    (row,) = out["rows"]
    assert 0 < row["region_tokens"] < row["coordinate_tokens"]
    assert row["region_decode_ms"] > 0 and row["coordinate_decode_ms"] > 0
    assert out["prefill_ms"] > 0
    assert row["decode_speedup"] > 1 and row["total_speedup"] > 1
    assert out["device"] == "cpu"


def test_kv_decoder_reproduces_generate():
    """The hand-written prefill/decode loop handles positions and cache as generate does."""
    model, _ = build_random_model("tiny", torch.float32, "cpu", vision_layers=1, seed=1)
    embeds, positions, _ = bench_decode.build_prompt(model, common.qwen_tokenizer(), (224, 224),
                                                     4, "person", seed=1)
    decoder = KVDecoder(model, embeds, positions)
    ours = _assert_greedy_equals_generate(decoder, model, embeds, positions)
    assert decoder.forced(ours) == ours  # forcing the greedy tokens changes nothing


def test_bench_stages_tiny_with_tiny_proposer(tmp_path):
    out = bench_stages.main(["--image-size", "224x168", "--boxes", "3", "--decode-tokens", "2",
                             "--proposals", "tiny-omdet", "--cache-dir", str(tmp_path), *RUN])
    rows = out["rows"]
    assert len(rows) == 8
    assert rows[0]["stage"].startswith("proposals (tiny random OmDet-Turbo)")
    assert all(r["ms"] > 0 for r in rows)
    assert all(r["peak_mib"] > 0 for r in rows)
    assert out["total_ms"] > 0 and out["device"] == "cpu"


def test_bench_queries_tiny(tiny_model_dir):
    out = bench_queries.main(["--ks", "1", "2", "--image-size", "224x168", "--boxes", "3",
                              "--max-new-tokens", "4", "--model", tiny_model_dir, *RUN])
    rows = out["rows"]
    assert [r["k"] for r in rows] == [1, 2]
    assert all(r["without_ms"] > 0 and r["tokens"] > 0 for r in rows)
    if out["cache_available"]:
        assert all(r["with_ms"] > 0 and r["cached_ms"] > 0 for r in rows)
        assert out["same_answers"] is True
    else:
        assert all(r["with_ms"] is None for r in rows)
    assert 0 < out["frame_share"] <= 1 and not math.isnan(out["frame_share"])


def test_real3b_truncation_notes():
    config, notes = build_config("real3b", layers=2, vision_layers=4)
    assert config.text_config.num_hidden_layers == 2
    assert config.vision_config.depth == 4
    assert config.vision_config.fullatt_block_indexes == [3]
    assert any("TRUNCATED" in n for n in notes)
    with pytest.raises(ValueError):
        build_config("real3b", layers=99)


# ----------------------------------------------------------------------------- VLX-Seek 1.5

def test_bench_decode_vlx15_tiny():
    out = bench_decode.main(["--config", "vlxseek15-tiny", "--sizes", "1", "--frame", "224x224",
                             "--proposals", "10", *RUN])
    (row,) = out["rows"]
    assert row["region_tokens"] == 7  # <ground> person </ground> <objects> <objK> ... <|im_end|>
    assert row["region_tokens"] < row["coordinate_tokens"]
    assert row["region_decode_ms"] > 0 and row["coordinate_decode_ms"] > 0
    assert out["prefill_ms"] > 0 and out["device"] == "cpu"
    # 224x224 -> 224x224 (factor 32) -> 14x14 patches -> 49 image pads, + 10 <objfeat>
    assert out["prompt_tokens"] > 49 + 10


def test_kv_decoder_reproduces_generate_vlx15():
    """Same check as for VLM-FO1, through the hybrid cache (gated-delta-net state + attention
    KV) and the 1.5 family's 1-D sequential positions."""
    model, notes = build_random_model("vlxseek15-tiny", torch.float32, "cpu", vision_layers=1,
                                      aux_layers=1, seed=1)
    assert any("gated-delta-net kernels" in n for n in notes)
    embeds, positions, n_image = vlx15.build_prompt(model, vlx15.tokenizer(), (224, 224), 4,
                                                    "person", seed=1)
    length = embeds.shape[1]
    assert n_image == 49 and positions.shape == (4, 1, length)
    decoder = KVDecoder(model, embeds, positions)
    assert decoder.scheme == "sequential"
    assert decoder.step_position_ids(2).reshape(-1).tolist() == [length + 2] * 4
    ours = _assert_greedy_equals_generate(decoder, model, embeds, positions)
    assert decoder.forced(ours) == ours
    with pytest.raises(ValueError, match="0 … L−1"):  # FO1-style positions are refused
        KVDecoder(model, embeds, positions + 1)


def test_bench_stages_vlx15_tiny():
    out = bench_stages.main(["--config", "vlxseek15-tiny", "--image-size", "224x168",
                             "--boxes", "3", "--decode-tokens", "2", *RUN])
    stages = [r["stage"] for r in out["rows"]]
    assert stages[2:5] == ["Qwen3.5 vision tower + mm_projector", "C-RADIO (aux tower)",
                           "HFRE (SimpleFP, RoIAlign, box embedding) + mm_projector_aux"]
    assert stages[-2].startswith("LLM prefill") and stages[-1].startswith("LLM decode")
    assert all(r["ms"] > 0 and r["peak_mib"] > 0 for r in out["rows"])
    assert out["total_ms"] > 0 and out["device"] == "cpu"


def test_vlx15_configs_depths_and_notes():
    config, notes = build_config("vlxseek15-depthcut")
    same, _ = build_config("vlxseek15-10b", layers=4, vision_layers=4, aux_layers=4)
    assert config.to_dict() == same.to_dict()
    text = config.text_config
    assert (text.hidden_size, text.intermediate_size, text.vocab_size) == (4096, 12288, 248320)
    assert text.layer_types == ["linear_attention"] * 3 + ["full_attention"]
    assert config.vision_config.depth == 4 and config.vlxseek_aux_vision_config["depth"] == 4
    assert sum("TRUNCATED" in n for n in notes) == 3
    # a cut without an attention layer keeps one, so both cache kinds are exercised
    cut, _ = build_config("vlxseek15-10b", layers=2)
    assert cut.text_config.layer_types == ["linear_attention", "full_attention"]
    full, full_notes = build_config("vlxseek15-10b")
    assert full.text_config.num_hidden_layers == 32 and not any("TRUNC" in n for n in full_notes)
    with pytest.raises(ValueError, match="--aux-layers"):
        build_config("vlxseek15-10b", aux_layers=28)
    with pytest.raises(ValueError, match="--aux-layers"):
        build_config("real3b", aux_layers=2)


def test_vlx15_10b_builds_on_meta_and_is_refused_without_memory():
    config, _ = build_config("vlxseek15-10b")
    sizes = configs.require_memory("vlxseek15-10b", config, torch.bfloat16, "cpu",
                                   available={"cpu": 2 ** 40})
    assert sizes["total"] // 2 == 10_018_034_656  # spec §1.4 (+ the zero aux patch bias)
    assert sizes["lm_head"] == 248320 * 4096 * 2  # untied, bf16
    with pytest.raises(configs.InsufficientMemory, match=r"37\.3 GiB .*float32.*meta device"):
        configs.require_memory("vlxseek15-10b", config, torch.float32, "cpu",
                               available={"cpu": 20 * 2 ** 30})


def test_vlx15_10b_on_a_small_host_exits_with_the_memory_message():
    if configs.free_bytes("cpu") >= 40 * 2 ** 30:
        pytest.skip("this host could hold the 10B in fp32")
    with pytest.raises(SystemExit, match="needs .* GiB .*vlxseek15-depthcut"):
        bench_decode.main(["--config", "vlxseek15-10b", "--dtype", "float32", *RUN])


def test_fo1_meta_count_matches_built_model():
    config, _ = build_config("tiny")
    sizes = configs.require_memory("tiny", config, torch.float32, "cpu")
    model, _ = build_random_model("tiny", torch.float32, "cpu")
    assert sizes["total"] == configs.parameter_bytes(model)


def test_cache_dir_is_created_once(tmp_path):
    calls = []

    def make(directory):
        calls.append(directory)
        open(f"{directory}/marker", "w").close()

    target = str(tmp_path / "cache" / "thing")
    assert common._cached_dir(target, "marker", make) == target
    assert common._cached_dir(target, "marker", make) == target
    assert len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["thing"]  # no leftovers


def test_vlx15_benchmark_uses_the_family_preprocessing(tiny15_dir):
    """The benchmark times the family's preprocessor (same tensors as a checkpoint's), and
    keeps no copy of its pixel budget or resize rule."""
    import inspect as pyinspect

    import numpy as np

    from vlxseek_core.families import family_of_checkpoint
    from vlxseek_core.families.vlx_seek_1_5 import preprocessing

    source = pyinspect.getsource(vlx15)
    for copied in ("smart_resize", "MIN_PIXELS", "MAX_PIXELS", "Qwen2VLImageProcessor("):
        assert copied not in source
    image = np.random.default_rng(0).integers(0, 255, (168, 224, 3), dtype=np.uint8)
    boxes = np.array([[100, 10, 200, 100], [5, 5, 60, 80], [20, 90, 150, 160]], np.float64)
    model_dir_prep = family_of_checkpoint(tiny15_dir).build_preprocessor(
        tiny15_dir, build_random_model("vlxseek15-tiny", torch.float32, "cpu", vision_layers=1,
                                       aux_layers=1, seed=1)[0])
    ours = vlx15.preprocessor(model_dir_prep.order_mode)(image, boxes)
    ref = model_dir_prep(image, boxes)
    for name in ("pixel_values", "image_grid_thw", "aux_pixel_values", "aux_boxes", "vt_boxes"):
        assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    assert vlx15.resized_size(224, 168) == preprocessing.resized_size(
        model_dir_prep.qwen, 224, 168) == tuple(int(v) * 16 for v in ref.image_grid_thw[0, [2, 1]])
