"""Training path: samples equal inference prompts, batched encoding equals per-frame encoding,
exact freezing per stage, reference-format save / load / resume (issue 9 §2, §3, §5)."""
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from training_fixtures import BOXES, make_record

from vlxseek_core.answer_format import format_answer
from vlxseek_core.prompts import TASKS


@pytest.fixture(scope="module")
def pipe(train_model_dir):
    from vlxseek_core.pipeline import VLXSeek

    return VLXSeek.from_pretrained(train_model_dir, device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=2,
                                   constrained_decoding=False)


@pytest.mark.parametrize("task,boxes", [(t, BOXES) for t in sorted(TASKS)] + [("vqa", [])])
def test_training_prompt_equals_inference_prompt(task, boxes, builder, pipe, images_dir):
    """The ids the pipeline feeds the model for a question equal the sample's prompt ids
    (also for a box-less vqa record and a query without regions, spec §3.2)."""
    record = make_record(task, boxes=boxes)
    seen = []
    original = pipe.model.build_inputs_embeds

    def spy(ids, frame):
        seen.append(list(ids))
        return original(ids, frame)

    pipe.model.build_inputs_embeds = spy
    try:
        img = np.asarray(Image.open(os.path.join(images_dir, "img0.png")).convert("RGB"))
        res = pipe.query(img, record["query"], task=task,
                         boxes=np.array(boxes) if boxes else None,
                         region_indices=record["region_indices"] or None, reuse_frame=False)
    finally:
        del pipe.model.build_inputs_embeds
    assert len(res.proposals) == len(boxes) and "generate" in res.timings_ms
    sample = builder.build(record)
    prompt_len = int((sample.labels == -100).sum())
    assert seen[-1] == sample.input_ids[:prompt_len].tolist()
    assert seen[-1].count(-300) == len(boxes)
    answer = builder.answer_ids(record["conversations"][1]["value"])
    assert sample.input_ids[prompt_len:].tolist() == answer
    assert sample.labels[prompt_len:].tolist() == answer
    assert answer[-1] == builder.im_end


def test_answer_markup_tokens_are_single_ids(builder):
    tok = builder.prompt_tokenizer.tokenizer
    ids = builder.answer_ids(format_answer([("red circle", [3, 7]), ("knife", [])]))
    names = tok.convert_ids_to_tokens(ids)
    for special in ("<ground>", "</ground>", "<objects>", "</objects>", "<region3>",
                    "<region7>", "<|im_end|>"):
        assert special in names
    assert tok.decode(ids) == ("<ground>red circle</ground><objects><region3><region7>"
                               "</objects><ground>knife</ground><objects>None</objects>"
                               "<|im_end|>")


def test_answers_hold_no_special_token_but_the_vlm_fo1_markup(builder):
    """Checked against the tokenizer's own added tokens, not a pattern: every Qwen2 special
    token is refused in an answer, every VLM-FO1 one is kept as one id."""
    from vlxseek_core.errors import InvalidRequestError
    from vlxseek_core.tokens import VLM_FO1_ADDED_TOKENS

    vocab = builder.prompt_tokenizer.tokenizer.get_added_vocab()
    foreign = sorted(set(vocab) - set(VLM_FO1_ADDED_TOKENS))
    assert {"<|im_start|>", "<|im_end|>", "<tool_call>", "<|box_start|>"} <= set(foreign)
    for token in foreign:
        with pytest.raises(InvalidRequestError, match=re.escape(repr(token))):
            builder.answer_ids(f"a cat {token}")
    ids = builder.answer_ids("<think>x</think>" + format_answer([("cat", [99])]))
    assert vocab["<region99>"] in ids and vocab["</think>"] in ids


def test_batched_encoding_equals_per_frame(train_model_dir, builder):
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.training.model import TrainingModel
    from vlxseek_core.training.samples import collate_samples

    vlm, _ = load_model(train_model_dir)
    records = [make_record("detect_all", f"img{i}.png", BOXES[: 1 + i]) for i in range(3)]
    records.insert(1, make_record("vqa", "img1.png", boxes=[]))  # no regions (spec §3.2)
    samples = [builder.build(r) for r in records]
    batch = collate_samples(samples)
    with torch.no_grad():
        frames = TrainingModel(vlm).encode_frames(
            batch["pixel_values"], batch["image_grid_thw"], batch["aux_pixel_values"],
            batch["aux_boxes"], batch["vt_boxes"])
        for s, frame in zip(samples, frames):
            ref = vlm.encode_frame(s.image.pixel_values, s.image.image_grid_thw,
                                   s.image.aux_pixel_values, s.image.aux_boxes,
                                   s.image.vt_boxes)
            torch.testing.assert_close(frame.image_embeds, ref.image_embeds)
            torch.testing.assert_close(frame.region_embeds, ref.region_embeds,
                                       rtol=1e-4, atol=1e-5)
    assert [len(f.region_embeds) for f in frames] == [1, 0, 2, 3]


def test_batch_loss_equals_mean_of_single_losses(train_model_dir, builder):
    """Padding and batching do not change a sample's loss; samples weigh equally."""
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.training.model import TrainingModel
    from vlxseek_core.training.samples import collate_samples

    vlm, _ = load_model(train_model_dir)
    model = TrainingModel(vlm)
    samples = [builder.build(make_record(t, f"img{i}.png"))
               for i, t in enumerate(["detect", "count", "caption"])]
    with torch.no_grad():
        batch = float(model(**collate_samples(samples))["loss"])
        singles = [float(model(**collate_samples([s]))["loss"]) for s in samples]
    assert batch == pytest.approx(np.mean(singles), rel=1e-4)


def _trainable_step(train_model_dir, builder, stage, fused=False):
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.training.freezing import apply_stage
    from vlxseek_core.training.model import TrainingModel
    from vlxseek_core.training.samples import collate_samples

    vlm, _ = load_model(train_model_dir)
    vlm.train()
    plan = apply_stage(vlm, stage, builder.prompt_tokenizer.tokenizer)
    before = {k: v.detach().clone() for k, v in vlm.named_parameters()}
    params = [p for p in vlm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0, fused=fused)
    batch = collate_samples([builder.build(make_record(t, f"img{i}.png"))
                             for i, t in enumerate(["detect", "refer", "count"])])
    model = TrainingModel(vlm)
    for _ in range(2):
        model(**batch)["loss"].backward()
        opt.step()
        opt.zero_grad()
    after = dict(vlm.named_parameters())
    return plan, before, after


@pytest.mark.parametrize("stage, fused", [(1, False), (2, False), (1, True), (2, True)])
def test_stage_freezing_is_exact(stage, fused, train_model_dir, builder):
    """Frozen tensors and rows bit-identical after optimiser steps, with AdamW as a loop and
    fused (``--optim adamw_torch_fused``)."""
    plan, before, after = _trainable_step(train_model_dir, builder, stage, fused)
    for name in plan.frozen:
        assert torch.equal(before[name], after[name]), f"frozen {name} changed"
    changed = {n for n in plan.trainable if not torch.equal(before[n], after[n])}
    assert changed == set(plan.trainable), set(plan.trainable) - changed
    names = set(plan.trainable)
    assert not any(n.startswith("model.vision_tower.") for n in names)
    if stage == 1:
        assert names <= {n for n in before if n.startswith(("model.object_vp_extractor.",
                                                            "model.mm_projector_aux."))} | {
            "model.embed_tokens.weight"}
        assert not any(n.startswith(("model.layers.", "model.vision_tower_aux.")) for n in names)
        emb_before, emb_after = before["model.embed_tokens.weight"], after[
            "model.embed_tokens.weight"]
        rows = torch.tensor(plan.trainable_rows)
        keep = torch.ones(emb_before.shape[0], dtype=torch.bool)
        keep[rows] = False
        assert torch.equal(emb_before[keep], emb_after[keep])  # original vocabulary rows
        # the answer's markup tokens moved (they carry gradient in every sample)
        assert not torch.equal(emb_before[rows], emb_after[rows])
        assert "lm_head.weight" not in after  # still tied: one shared tensor
    else:
        assert any(n.startswith("model.vision_tower_aux.") for n in names)
        assert any(n.startswith("model.layers.") for n in names)


def test_train_cli_saves_reference_format_and_resumes(train_model_dir, images_dir, tmp_path,
                                                      capsys):
    from vlxseek_core.checkpoint import iter_reference_tensors, load_model
    from vlxseek_core.cli import main
    from vlxseek_core.pipeline import VLXSeek

    data = tmp_path / "train.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for i, task in enumerate(["detect", "refer", "count", "caption"] * 2):
            fh.write(json.dumps(make_record(task, f"img{i % 3}.png")) + "\n")
    out = tmp_path / "run"
    common = ["train", "--stage", "2", "--model", train_model_dir, "--data", str(data),
              "--images", images_dir, "--out", str(out), "--batch-size", "2", "--lr", "1e-3",
              "--save-steps", "2", "--logging-steps", "1", "--device", "cpu", "--seed", "3"]
    assert main(common + ["--max-steps", "2"]) == 0
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    ref_keys = {k for k, _ in iter_reference_tensors(train_model_dir)}
    assert {k for k, _ in iter_reference_tensors(str(out))} == ref_keys
    assert main(common + ["--max-steps", "4", "--resume"]) == 0
    state = json.load(open(out / "checkpoint-4" / "trainer_state.json"))
    assert state["global_step"] == 4
    info = json.load(open(out / "vlxseek_training.json"))
    assert info["stage"] == 2 and info["global_step"] == 4 and len(info["data_sha256"]) == 64
    assert not (out / "vlxseek_training.json.tmp").exists()
    # a run stopped while saving checkpoint-6 (no trainer_state.json, written last) resumes
    # from checkpoint-4 and saves checkpoint-6 whole
    shutil.copytree(out / "checkpoint-4", out / "checkpoint-6")
    (out / "checkpoint-6" / "trainer_state.json").unlink()
    assert main(common + ["--max-steps", "6", "--resume"]) == 0
    assert "checkpoint-6 is incomplete" in capsys.readouterr().err
    assert json.load(open(out / "checkpoint-6" / "trainer_state.json"))["global_step"] == 6
    assert json.load(open(out / "vlxseek_training.json"))["global_step"] == 6
    # a run stopped after its last checkpoint, before the final save, resumes to the same step
    # (Trainer alone would train a seventh) and saves that checkpoint's weights
    (out / "vlxseek_training.json").unlink()
    (out / "model.safetensors").unlink()
    assert main(common + ["--max-steps", "6", "--resume"]) == 0
    info = json.load(open(out / "vlxseek_training.json"))
    assert info["global_step"] == 6 and not (out / "checkpoint-7").exists()
    history = json.load(open(out / "checkpoint-6" / "trainer_state.json"))["log_history"]
    assert info["final_loss"] == [h["loss"] for h in history if "loss" in h][-1]
    final, last = dict(iter_reference_tensors(str(out))), dict(
        iter_reference_tensors(str(out / "checkpoint-6")))
    assert final.keys() == last.keys()
    assert all(torch.equal(final[k], last[k]) for k in final)
    # the saved model loads everywhere a released checkpoint does
    model, report = load_model(str(out))
    assert report.clean
    pipe = VLXSeek.from_pretrained(str(out), device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=8)
    img = np.asarray(Image.open(os.path.join(images_dir, "img0.png")).convert("RGB"))
    result = pipe.query(img, "red circle", task="detect", boxes=np.array(BOXES))
    assert result.answer.startswith("<ground>")


def test_bad_training_data_is_a_clean_error(train_model_dir, tmp_path, capsys):
    from vlxseek_core.cli import main

    data = tmp_path / "bad.jsonl"
    data.write_text("[1, 2]\n")
    rc = main(["train", "--stage", "1", "--model", train_model_dir, "--data", str(data),
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "cannot read training data" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [
    ("--max-steps", "0"), ("--max-steps", "-2"), ("--batch-size", "0"), ("--lr", "-1"),
    ("--lr", "nan"), ("--epochs", "0"), ("--grad-accum", "0"), ("--warmup", "-1"),
    ("--save-steps", "0"), ("--logging-steps", "0"), ("--workers", "-1"),
    ("--stop-at-step", "0"), ("--max-minutes", "0"), ("--lora", "-3"),
    ("--loss-negatives", "-1"), ("--save-total-limit", "0"), ("--batch-size", "two")])
def test_out_of_range_numbers_are_refused_before_anything_loads(option, value, tmp_path,
                                                                capsys):
    """A number no run can use (``--max-steps 0`` would silently train a whole epoch) is an
    argparse error, exit status 2, naming the option; nothing is read or written."""
    from vlxseek_core.cli import main

    out = tmp_path / "o"
    rc = main(["train", "--stage", "2", "--model", str(tmp_path / "no-model"), "--data",
               str(tmp_path / "no-data.jsonl"), "--out", str(out), option, value])
    err = capsys.readouterr().err
    assert rc == 2 and f"argument {option}" in err and value in err
    assert not out.exists()


def test_out_that_is_a_file_or_the_model_folder_is_refused(train_model_dir, tmp_path, capsys):
    """The final save must not overwrite the starting checkpoint, nor a file stand where the
    run's folder goes; both are refused before the model loads, and nothing is changed."""
    from vlxseek_core.cli import main

    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    before = {p.name: p.stat().st_mtime_ns for p in Path(train_model_dir).iterdir()}
    for out, message in ((str(afile), "is a file"),
                         (train_model_dir, "is the --model folder"),
                         (str(Path(train_model_dir) / ".." / Path(train_model_dir).name),
                          "is the --model folder")):
        rc = main(["train", "--stage", "1", "--model", train_model_dir, "--data",
                   str(tmp_path / "no-data.jsonl"), "--out", out, "--max-steps", "1"])
        assert rc == 2 and message in capsys.readouterr().err
    assert afile.read_text() == "keep me"
    assert {p.name: p.stat().st_mtime_ns for p in Path(train_model_dir).iterdir()} == before


@pytest.mark.parametrize("stage", ["0", "1"])
def test_lora_outside_stage_2_is_refused_before_the_model_loads(stage, train_model_dir,
                                                                tmp_path, capsys):
    """Stage 1 keeps the LLM frozen and trains the added tokens' rows: LoRA adapters would
    train the LLM and leave those rows frozen, so ``--lora`` is refused there (and in stage 0,
    which trains the whole LLM anyway)."""
    from vlxseek_core.cli import main

    out = tmp_path / "o"
    rc = main(["train", "--stage", stage, "--model", train_model_dir, "--data",
               str(tmp_path / "no-data.jsonl"), "--out", str(out), "--lora", "4"])
    assert rc == 2 and "--lora is a stage-2 option" in capsys.readouterr().err
    assert not out.exists()


def test_deepspeed_config_and_package_are_checked_before_the_model_loads(
        train_model_dir, tmp_path, capsys):
    import importlib.util

    from vlxseek_core.cli import main

    def run(config):
        return main(["train", "--stage", "2", "--model", train_model_dir, "--data",
                     str(tmp_path / "no-data.jsonl"), "--out", str(tmp_path / "o"),
                     "--deepspeed", config])

    assert run(str(tmp_path / "none.json")) == 2
    assert "--deepspeed config" in capsys.readouterr().err
    if importlib.util.find_spec("deepspeed") is None:  # this project's CI: not installed
        repo = Path(__file__).resolve().parents[2]
        assert run(str(repo / "config" / "training" / "zero2.json")) == 2
        assert "needs the deepspeed package" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_expand_image_placeholder_aligns_values_with_the_spliced_sequence():
    from vlxseek_core.tokens import IMAGE_PLACEHOLDER_ID
    from vlxseek_core.training.model import expand_image_placeholder

    ids = torch.tensor([5, 6, IMAGE_PLACEHOLDER_ID, 7, 8])
    labels = torch.tensor([-100, -100, -100, 7, 8])
    out = expand_image_placeholder(labels, ids, 3, -100)
    assert out.tolist() == [-100, -100, -100, -100, -100, 7, 8] and out.dtype == labels.dtype
    assert expand_image_placeholder(ids, ids, 2, IMAGE_PLACEHOLDER_ID).tolist() == \
        [5, 6, IMAGE_PLACEHOLDER_ID, IMAGE_PLACEHOLDER_ID, 7, 8]
