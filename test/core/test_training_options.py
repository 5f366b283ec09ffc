"""Training options: LoRA on the LLM (adapters only, merged export that leaves the live model
alone), gradient checkpointing (same loss and gradients) and bf16 autocast on CPU (issue 9 §3)."""
import json

import pytest
import torch
from training_fixtures import make_record, write_train_data

LLM_LINEAR = ({f"self_attn.{p}_proj" for p in "qkvo"}
              | {f"mlp.{p}_proj" for p in ("gate", "up", "down")})


def _batch(builder, tasks=("detect", "refer", "count")):
    from vlxseek_core.training.samples import collate_samples

    return collate_samples([builder.build(make_record(t, f"img{i}.png"))
                            for i, t in enumerate(tasks)])


def _stage2(train_model_dir, builder, lora_rank=0, checkpointing=False):
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.training.freezing import apply_stage
    from vlxseek_core.training.model import set_activation_checkpointing
    from vlxseek_core.training.lora import add_lora

    vlm, _ = load_model(train_model_dir)
    plan = apply_stage(vlm, 2, builder.prompt_tokenizer.tokenizer, lora=bool(lora_rank))
    if lora_rank:
        assert add_lora(vlm, lora_rank) is vlm
    if checkpointing:
        set_activation_checkpointing(vlm, True)
    vlm.train()
    return vlm, plan


def test_lora_adapts_only_the_llm_linear_layers(train_model_dir, builder):
    from peft.tuners.lora import LoraLayer

    from vlxseek_core.modeling import VLMFO1ForCausalLM
    from vlxseek_core.training.lora import add_lora

    vlm, _ = _stage2(train_model_dir, builder, lora_rank=4)
    assert type(vlm) is VLMFO1ForCausalLM
    adapted = {n for n, m in vlm.named_modules() if isinstance(m, LoraLayer)}
    layers = vlm.config.text_config.num_hidden_layers
    assert adapted == {f"model.layers.{i}.{p}" for i in range(layers) for p in LLM_LINEAR}
    trainable = {n for n, p in vlm.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if ".lora_" in n}
    assert len(lora) == 2 * len(adapted)
    # outside the LLM: exactly what stage 2 trains (DaViT, HFRE, connector)
    assert {n.split(".")[1] for n in trainable - lora} == {
        "vision_tower_aux", "object_vp_extractor", "mm_projector_aux"}
    with pytest.raises(ValueError, match="already"):
        add_lora(vlm, 4)
    with pytest.raises(ValueError, match="rank"):
        add_lora(torch.nn.Linear(2, 2), 0)


def test_lora_training_and_merged_export(train_model_dir, builder):
    """A few AdamW steps move adapters and towers, never the LLM's base weights; the merged
    copy computes the adapted model's logits with reference keys, and training continues."""
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.training.lora import merged_model
    from vlxseek_core.training.model import TrainingModel

    reference_keys = set(load_model(train_model_dir)[0].state_dict())
    vlm, _ = _stage2(train_model_dir, builder, lora_rank=4)
    before = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    model, batch = TrainingModel(vlm), _batch(builder)
    for _ in range(3):
        model(**batch)["loss"].backward()
        opt.step()
        opt.zero_grad()
    after = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    for name, value in after.items():
        moved = not torch.equal(before[name], value)
        if name.startswith(("model.layers.", "model.embed_tokens.", "model.norm.",
                            "model.vision_tower.", "model.mm_projector.")) \
                and ".lora_" not in name:
            assert not moved, f"{name} changed"
        if ".lora_B." in name or name.startswith("model.object_vp_extractor."):
            assert moved, f"{name} did not train"

    merged = merged_model(vlm)
    assert set(merged.state_dict()) == reference_keys
    assert not any("lora_" in k or "base_layer" in k for k in merged.state_dict())
    delta = merged.model.layers[0].self_attn.q_proj.weight - \
        after["model.layers.0.self_attn.q_proj.base_layer.weight"]
    assert float(delta.abs().max()) > 0  # the adapters are in the merged weights
    for name, value in vlm.named_parameters():  # the live model is untouched
        assert torch.equal(value, after[name]), name
    ids = torch.tensor([[151644, 872, 198, 151665, 151666, 30, 151645]])
    vlm.eval()
    with torch.no_grad():
        adapted = vlm(input_ids=ids, use_cache=False).logits
        plain = merged(input_ids=ids, use_cache=False).logits
        torch.testing.assert_close(plain, adapted, rtol=1e-5, atol=1e-5)
        vlm.train()
        torch.testing.assert_close(TrainingModel(merged)(**batch)["loss"],
                                   model(**batch)["loss"], rtol=1e-5, atol=1e-5)
    model(**batch)["loss"].backward()  # training goes on after the export
    opt.step()
    assert not torch.equal(vlm.model.layers[0].self_attn.q_proj.lora_B["default"].weight,
                           after["model.layers.0.self_attn.q_proj.lora_B.default.weight"])


@pytest.mark.filterwarnings("error::FutureWarning")  # no deprecated checkpointing API
def test_gradient_checkpointing_gives_same_loss_and_gradients(train_model_dir, builder):
    from vlxseek_core.training.model import TrainingModel

    batch = _batch(builder)
    results = []
    for checkpointing in (False, True):
        vlm, _ = _stage2(train_model_dir, builder, checkpointing=checkpointing)
        calls = []
        vlm.model.layers[0].self_attn.register_forward_hook(lambda *_: calls.append(1))
        loss = TrainingModel(vlm)(**batch)["loss"]
        loss.backward()
        assert len(calls) == (2 if checkpointing else 1)  # recomputed in backward
        results.append((loss.detach(), {n: p.grad for n, p in vlm.named_parameters()
                                        if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-6, atol=1e-6)
    assert set(grads_a) == set(grads_b) and any(n.startswith("model.layers.") for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def cli_runs(train_model_dir, images_dir, tmp_path_factory):
    """``vlxseek train`` (2 steps, stage 2) as is, with --gradient-checkpointing, with --bf16
    with --lora 4, with --lr-scale and with fused AdamW: ``{name: output dir}``."""
    from vlxseek_core.cli import main

    tmp = tmp_path_factory.mktemp("train_options")
    data = write_train_data(tmp / "train.jsonl", 4)
    runs = {}
    for name, extra in {"plain": [], "checkpointing": ["--gradient-checkpointing"],
                        "bf16": ["--bf16"], "lora": ["--lora", "4"],
                        "lr_scale": ["--lr-scale", "towers=0.1", "--lr-scale", "llm=2"],
                        "fused": ["--optim", "adamw_torch_fused", "--lr-scale", "towers=0.1",
                                  "--lr-scale", "llm=2"]}.items():
        out = tmp / name
        assert main(["train", "--stage", "2", "--model", train_model_dir, "--data", data,
                     "--images", images_dir, "--out", str(out), "--batch-size", "2",
                     "--lr", "1e-3", "--warmup", "0", "--scheduler", "constant",
                     "--save-steps", "2", "--logging-steps", "1", "--device", "cpu",
                     "--seed", "5", "--max-steps", "2", *extra]) == 0
        runs[name] = out
    return runs


def _losses(out):
    state = json.load(open(out / "checkpoint-2" / "trainer_state.json"))
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def test_cli_fused_adamw_is_the_same_update(cli_runs):
    """``--optim adamw_torch_fused`` (split into ``--lr-scale`` groups) gives the loop's losses
    and weights up to float rounding, and is recorded."""
    from safetensors.torch import load_file

    loop, fused = cli_runs["lr_scale"], cli_runs["fused"]
    assert _losses(fused) == pytest.approx(_losses(loop), rel=1e-4)
    a, b = load_file(str(loop / "model.safetensors")), load_file(str(fused / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        # a key bias adds the same to every score of a query: its true gradient is 0, and
        # Adam's normalisation turns the rounding noise that stands for it into whole steps
        if not key.endswith("k_proj.bias"):
            assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
    info = {n: json.load(open(cli_runs[n] / "vlxseek_training.json")) for n in ("plain", "fused")}
    assert info["plain"]["optim"] == "adamw_torch" and info["fused"]["optim"] == \
        "adamw_torch_fused"


@pytest.mark.filterwarnings("error::FutureWarning")  # no deprecated checkpointing API
def test_cli_gradient_checkpointing_and_bf16(cli_runs):
    plain = _losses(cli_runs["plain"])
    assert len(plain) == 2 and plain[0] != plain[1]
    assert _losses(cli_runs["checkpointing"]) == pytest.approx(plain, rel=1e-5)
    bf16 = _losses(cli_runs["bf16"])
    assert bf16 == pytest.approx(plain, rel=2e-2)
    assert bf16 != plain  # autocast did run in bf16
    scaled = _losses(cli_runs["lr_scale"])
    assert scaled[0] == pytest.approx(plain[0], rel=1e-5) and scaled[1] != plain[1]
    info = json.load(open(cli_runs["lr_scale"] / "vlxseek_training.json"))
    assert info["lr_scales"] == {"towers": 0.1, "llm": 2.0}


def test_cli_lora_checkpoint_loads(cli_runs, train_model_dir, images_dir):
    import numpy as np
    from PIL import Image

    from vlxseek_core.checkpoint import iter_reference_tensors, load_model
    from vlxseek_core.pipeline import VLXSeek

    out = cli_runs["lora"]
    start = dict(iter_reference_tensors(train_model_dir))
    for directory in (out, out / "checkpoint-2"):
        saved = dict(iter_reference_tensors(str(directory)))
        assert set(saved) == set(start)
        changed = {k for k in saved if not torch.equal(saved[k], start[k])}
        assert "model.layers.0.self_attn.q_proj.weight" in changed  # merged adapters
        assert "model.embed_tokens.weight" not in changed
        assert not any(k.startswith("model.vision_tower.") for k in changed)
    _, report = load_model(str(out))
    assert report.clean
    pipe = VLXSeek.from_pretrained(str(out), device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=4)
    img = np.asarray(Image.open(f"{images_dir}/img0.png").convert("RGB"))
    boxes = np.array(make_record("detect")["bbox_list"])
    assert pipe.query(img, "red circle", task="detect", boxes=boxes).answer is not None


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_export_from_an_engine_state_dict(lora_rank, train_model_dir, builder, tmp_path):
    """What FSDP (FULL_STATE_DICT) or ZeRO-3 hand to ``_save`` exports the same weights as the
    live model."""
    from transformers import TrainingArguments

    from vlxseek_core.training.model import TrainingModel
    from vlxseek_core.training.trainer import VLXSeekTrainer

    vlm, plan = _stage2(train_model_dir, builder, lora_rank=lora_rank)
    with torch.no_grad():
        for name, param in vlm.named_parameters():
            if ".lora_B." in name:
                param.normal_(std=0.05)
    trainer = VLXSeekTrainer(
        model=TrainingModel(vlm), args=TrainingArguments(str(tmp_path), use_cpu=True,
                                                         report_to="none"),
        freeze_plan=plan, source_dir=train_model_dir, lora=bool(lora_rank))
    direct = trainer._export_vlm().state_dict()
    engine_state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    gathered = trainer._export_vlm(engine_state).state_dict()
    assert set(gathered) == set(direct)
    for key in direct:
        torch.testing.assert_close(gathered[key], direct[key], rtol=0, atol=1e-6)
    with pytest.raises(Exception, match="does not fit"):
        trainer._export_vlm({k: v for k, v in engine_state.items() if "layers.1." not in k})


@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_torch_fused"])
def test_lr_scales_split_every_optimizer_group(optim, train_model_dir, builder, tmp_path):
    """``--lr-scale``: every module group gets its scaled rate (unnamed groups the base rate);
    weight-decay groups, the trainable set and the fused kernel are unchanged (stage 2: aux
    tower, HFRE, connector and LLM train, the primary ViT is frozen)."""
    from transformers import TrainingArguments

    from vlxseek_core.training.model import TrainingModel
    from vlxseek_core.training.trainer import VLXSeekTrainer, lr_group

    vlm, plan = _stage2(train_model_dir, builder)
    trainer = VLXSeekTrainer(
        model=TrainingModel(vlm), args=TrainingArguments(
            str(tmp_path), use_cpu=True, report_to="none", learning_rate=1e-3,
            weight_decay=0.1, optim=optim), freeze_plan=plan, source_dir=train_model_dir,
        lr_scales={"towers": 0.25, "hfre": 0.5, "connector": 0.0})
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    expected = {"towers": 2.5e-4, "hfre": 5e-4, "connector": 0.0, "llm": 1e-3}
    seen, kinds = [], set()
    for group in optimizer.param_groups:
        group_names = [names[id(p)] for p in group["params"]]
        kind = {lr_group(n) for n in group_names}
        assert len(kind) == 1
        kind = kind.pop()
        assert group["lr"] == pytest.approx(expected[kind])
        assert bool(group.get("fused")) == (optim == "adamw_torch_fused")
        kinds.add((kind, group["weight_decay"]))
        seen += group_names
    assert sorted(seen) == sorted(n for n, p in trainer.model.named_parameters()
                                  if p.requires_grad)
    assert {k for k, _ in kinds} == set(expected)
    assert {w for _, w in kinds} == {0.0, 0.1}
    assert lr_group("vlm.model.vision_tower_aux.image_tower.convs.0.proj.weight") == "towers"
    assert lr_group("vlm.model.vision_tower.image_tower.merger.mlp.0.weight") == "towers"
    assert lr_group("vlm.model.object_vp_extractor.simple_fpn.simfp_1.0.weight") == "hfre"
    assert lr_group("vlm.model.mm_projector_aux.0.weight") == "connector"
    assert lr_group("vlm.base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight") \
        == "llm"
    assert not any(n.startswith("vlm.model.vision_tower.") for n in seen)  # frozen in stage 2


@pytest.mark.parametrize("extra, message", [
    (["--lr-scale", "towers=-1"], "finite number >= 0"),
    (["--lr-scale", "towers=nan"], "finite number >= 0"),
    (["--lr-scale", "towers"], "expected GROUP=X"),
    (["--lr-scale", "tower=0.1"], "expected GROUP=X"),
    (["--lr-scale", "hfre=0.1", "--lr-scale", "hfre=0.2"], "given twice"),
    (["--lr-scale", "towers=0.1", "--deepspeed", "zero2.json"], "DeepSpeed config")])
def test_lr_scale_bad_values(extra, message, train_model_dir, images_dir, tmp_path, capsys):
    from vlxseek_core.cli import main

    data = write_train_data(tmp_path / "train.jsonl", 2)
    code = main(["train", "--stage", "0", "--model", train_model_dir, "--data", data,
                 "--images", images_dir, "--out", str(tmp_path / "out"), *extra])
    assert code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_share_word_rows_sets_each_spaced_row_to_the_bare_one(train_model_dir):
    from vlxseek_core.checkpoint import load_model
    from vlxseek_core.tokenizer import load_tokenizer
    from vlxseek_core.training.run import share_word_rows
    from vlxseek_core.training.scenes import SCENE_WORDS

    vlm, _ = load_model(train_model_dir)
    tok = load_tokenizer(train_model_dir)
    before = vlm.get_input_embeddings().weight.detach().clone()
    # "scene" expands to the make-scenes words; repeats count once; two-token words are left
    shared = share_word_rows(vlm, tok, ["red", "scene", "red"])
    assert shared[0] == "red" and len(shared) == len(set(shared))
    assert set(shared) == {w for w in SCENE_WORDS if w not in ("astronaut", "motorcycle")}
    after = vlm.get_input_embeddings().weight.detach()
    ids = {w: (tok(" " + w)["input_ids"][0], tok(w)["input_ids"][0]) for w in shared}
    for spaced, bare in ids.values():
        assert torch.equal(after[spaced], before[bare]) and torch.equal(after[bare], before[bare])
    changed = (after != before).any(dim=1).nonzero().flatten().tolist()
    assert sorted(changed) == sorted(s for s, _ in ids.values())
    assert vlm.get_output_embeddings().weight is vlm.get_input_embeddings().weight  # tied


def test_cli_share_word_rows_is_recorded_and_stage_0_only(train_model_dir, images_dir,
                                                          tmp_path, capsys):
    from vlxseek_core.cli import main

    data = write_train_data(tmp_path / "train.jsonl", 2)
    out = str(tmp_path / "out")
    base = ["train", "--model", train_model_dir, "--data", data, "--images", images_dir,
            "--max-steps", "1", "--batch-size", "2", "--device", "cpu",
            "--share-word-rows", "red", "astronaut", "cat"]
    assert main([*base, "--stage", "0", "--out", out]) == 0
    info = json.load(open(f"{out}/vlxseek_training.json"))
    assert info["shared_word_rows"] == ["red", "cat"]
    assert main([*base, "--stage", "1", "--out", out + "1"]) == 2
    assert "--share-word-rows edits vocabulary rows: stage 0 only" in capsys.readouterr().err


def test_fused_adamw_resumes_a_checkpoint_of_the_loop(train_model_dir, images_dir, tmp_path):
    """The optimiser state of ``adamw_torch`` and ``adamw_torch_fused`` is the same: a run
    switched to the fused kernel goes on from the loop's checkpoint (the forming phases of the
    recipe resume runs of earlier sessions)."""
    from vlxseek_core.cli import main

    data = write_train_data(tmp_path / "train.jsonl", 4)
    out = tmp_path / "out"
    base = ["train", "--stage", "0", "--model", train_model_dir, "--data", data, "--images",
            images_dir, "--out", str(out), "--batch-size", "2", "--device", "cpu",
            "--save-steps", "2", "--logging-steps", "1", "--resume"]
    assert main([*base, "--max-steps", "2"]) == 0
    moments = torch.load(out / "checkpoint-2" / "optimizer.pt", weights_only=False)["state"]
    assert main([*base, "--max-steps", "3", "--optim", "adamw_torch_fused"]) == 0
    info = json.load(open(out / "vlxseek_training.json"))
    assert info["global_step"] == 3 and info["optim"] == "adamw_torch_fused"
    state = json.load(open(out / "checkpoint-3" / "trainer_state.json"))
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 3  # steps 1-2 of the loop, step 3 fused from its moments
    resumed = torch.load(out / "checkpoint-3" / "optimizer.pt", weights_only=False)["state"]
    assert resumed.keys() == moments.keys()
    assert all(float(resumed[k]["step"]) == 3 for k in resumed)
