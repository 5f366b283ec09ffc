"""Smoke test of benchmarks/bench_finetune_memory.py: tiny model on CPU, and the computed
(analytic) figures of the released 3B shapes without running it."""
import math

import pytest

from benchmarks import bench_finetune_memory


def test_bench_finetune_memory_tiny_cpu():
    out = bench_finetune_memory.main([
        "--modes", "lora", "--checkpointing", "both", "--no-bf16", "--image-size", "112x112",
        "--boxes", "4", "--answer-objects", "2", "--lora-rank", "4", "--threads", "1"])
    off, on = out["rows"]
    assert (off["checkpointing"], on["checkpointing"]) == (False, True)
    for row in (off, on):
        assert row["mode"] == "stage 2 LoRA r=4"
        assert row["measured_gib"] > row["weights_gib"] > 0
        assert row["activations_gib"] > 0 and row["step_s"] > 0
        assert row["computed_gib"] == pytest.approx(
            row["weights_gib"] + row["grads_gib"] + row["adamw_gib"] + row["activations_gib"])
    assert all(math.isfinite(r["loss"]) for r in (off, on))
    assert out["device"] == "cpu" and out["machine"]["cpu"]


def test_bench_finetune_memory_real3b_analytic():
    out = bench_finetune_memory.main(["--config", "real3b", "--analytic-only",
                                      "--checkpointing", "off"])
    rows = {r["mode"]: r for r in out["rows"]}
    full, stage1, lora = rows["stage 2 full"], rows["stage 1"], rows["stage 2 LoRA r=16"]
    assert all(r["measured_gib"] is None and r["activations_gib"] is None for r in rows.values())
    # fp32 weights of ~4.1B parameters; stage 2 trains all but the ViT and mm_projector
    assert 14 < full["weights_gib"] < 17
    assert 3.3e9 < full["trainable_params"] < 3.6e9
    assert full["adamw_gib"] == pytest.approx(2 * full["grads_gib"])
    # stage 1: HFRE + connector + the (whole, row-masked) embedding matrix
    assert stage1["trainable_params"] < full["trainable_params"] / 8
    # LoRA: DaViT + HFRE + connector + adapters; the base weights stay frozen
    assert lora["trainable_params"] < full["trainable_params"] / 6
    assert lora["weights_gib"] > full["weights_gib"]  # adapters add weights


def test_bench_finetune_memory_count_only():
    out = bench_finetune_memory.main([
        "--modes", "stage1", "--count-only", "--no-bf16", "--image-size", "112x112",
        "--boxes", "4", "--answer-objects", "2", "--threads", "1"])
    off, on = out["rows"]
    assert off["measured_gib"] is None and off["step_s"] is None
    assert 0 < on["activations_gib"] < off["activations_gib"]  # checkpointing saves memory
    assert on["computed_gib"] < off["computed_gib"]
