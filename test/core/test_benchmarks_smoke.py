"""Smoke test of benchmarks/: every benchmark's main() at its smallest size, tiny model, CPU."""
import math

import pytest
import torch

from benchmarks import bench_decode, bench_queries, bench_stages, bench_tokens, common
from benchmarks.answers import (coordinate_answer, coordinate_answer_json, region_answer,
                                sample_objects)
from benchmarks.configs import build_config, build_random_model
from benchmarks.llm import KVDecoder

RUN = ["--repeats", "1", "--warmup", "0", "--threads", "1"]


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
    decoder.prefill()
    ours = decoder.greedy(6)
    ref = model.generate(inputs_embeds=embeds, position_ids=positions,
                         attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                         max_new_tokens=6, min_new_tokens=6, do_sample=False, num_beams=1,
                         eos_token_id=None, pad_token_id=0, temperature=None, top_p=None,
                         top_k=None)
    assert ours == ref[0].tolist()
    decoder.reset()
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
