"""Shipping a finished run's scene model: lineage, checksums, budget checks (issue 9 §7)."""
import json
import os
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlxseek_core.checkpoint import florence_to_reference
from vlxseek_core.errors import CheckpointError
from vlxseek_core.training.ship import check_shipped, lineage, main, ship_scene_model


def _phase(run, name, start, tiny_model_dir, bf16=False, seed=0):
    """A phase folder as `vlxseek train` leaves it: the model, its training info, a checkpoint."""
    out = run / name
    shutil.copytree(tiny_model_dir, out)
    if bf16:
        weights = load_file(str(out / "model.safetensors"))
        save_file({k: v.to(torch.bfloat16) for k, v in weights.items()},
                  str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "checkpoint-5").mkdir()
    (out / "checkpoint-5" / "optimizer.pt").write_bytes(b"state")
    command = f"/repo/vlxseek_core/cli.py train --model {start} --out {out} --seed {seed}"
    info = {"command": command, "start_model": str(start), "seed": seed}
    (out / "vlxseek_training.json").write_text(json.dumps(info, indent=2))
    return out


@pytest.fixture
def run(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    init = run / "init"
    shutil.copytree(tiny_model_dir, init)
    a = _phase(run, "stage_a", init, tiny_model_dir, seed=1)
    _phase(run, "stage_a.stalled_seed0", init, tiny_model_dir)  # set aside: not in the lineage
    _phase(run, "stage_b", a, tiny_model_dir, bf16=True, seed=2)
    return run


def test_ship_copies_the_model_its_lineage_and_checksums(run, tmp_path):
    dest = tmp_path / "models" / "scene"
    shipped = ship_scene_model(str(run), str(dest), final="stage_b")
    assert shipped == sorted([
        "config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
        "tokenizer.json", "tokenizer_config.json", "training/00_stage_a.json",
        "training/01_stage_b.json", "vlxseek_training.json"])
    assert sorted(os.listdir(dest)) == sorted({n.split("/")[0] for n in shipped} | {"SHA256SUMS"})
    first = json.loads((dest / "training" / "00_stage_a.json").read_text())
    assert first["command"] == "vlxseek train --model RUN/init --out RUN/stage_a --seed 1"
    assert first["start_model"] == "RUN/init" and first["seed"] == 1
    last = json.loads((dest / "vlxseek_training.json").read_text())
    assert last["start_model"] == "RUN/stage_a" and last["seed"] == 2
    shipped_weights = (dest / "model.safetensors").read_bytes()
    assert shipped_weights == (run / "stage_b" / "model.safetensors").read_bytes()
    check_shipped(str(dest))
    # the format of coreutils: a user can check it without this package
    done = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=dest)
    assert done.returncode == 0


def test_the_shipped_model_loads(run, tmp_path):
    from vlxseek_core.pipeline import VLXSeek

    dest = tmp_path / "scene"
    ship_scene_model(str(run), str(dest), final="stage_b")
    pipe = VLXSeek.from_pretrained(str(dest), device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=8)
    shipped = load_file(str(dest / "model.safetensors"))
    loaded = {florence_to_reference(k): v for k, v in pipe.model.state_dict().items()}
    assert len(shipped) > 0
    for key, tensor in shipped.items():  # the bf16 values, upcast exactly
        assert torch.equal(loaded[key], tensor.float()), key


def test_lineage_follows_start_model_to_the_random_initialisation(run):
    assert [os.path.basename(p) for p in lineage(str(run / "stage_b"))] == ["stage_a", "stage_b"]
    with pytest.raises(CheckpointError, match="not a trained phase"):
        lineage(str(run / "init"))
    loop = run / "stage_a" / "vlxseek_training.json"
    loop.write_text(json.dumps({"start_model": str(run / "stage_b")}))
    with pytest.raises(CheckpointError, match="loops"):
        lineage(str(run / "stage_b"))
    for broken in ("{}", "not json", "[1]"):
        loop.write_text(broken)
        with pytest.raises(CheckpointError, match="names no start_model"):
            lineage(str(run / "stage_b"))


def test_ship_refuses_fp32_weights_an_oversized_model_and_an_unfinished_phase(run, tmp_path):
    dest = tmp_path / "scene"
    with pytest.raises(CheckpointError, match="bfloat16"):
        ship_scene_model(str(run), str(dest), final="stage_a")
    with pytest.raises(CheckpointError, match="over the 0.001 MB budget"):
        ship_scene_model(str(run), str(dest), final="stage_b", max_mb=0.001)
    weights = (run / "stage_b" / "model.safetensors").read_bytes()
    (run / "stage_b" / "model.safetensors").write_bytes(weights[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        ship_scene_model(str(run), str(dest), final="stage_b")
    (run / "stage_b" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="not a finished phase: tokenizer.json missing"):
        ship_scene_model(str(run), str(dest), final="stage_b")
    assert not dest.exists()  # nothing half-written


def test_the_command_line_exits_2_with_the_reason(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(run), "--final", "stage_a", "--dest", str(tmp_path / "scene")])
    assert exc.value.code == 2
    assert "bfloat16" in capsys.readouterr().err


def test_check_shipped_finds_a_changed_missing_or_unlisted_file(run, tmp_path):
    dest = tmp_path / "scene"
    ship_scene_model(str(run), str(dest), final="stage_b")
    config = (dest / "config.json").read_bytes()
    (dest / "config.json").write_bytes(config.replace(b"{", b"{ ", 1))
    with pytest.raises(CheckpointError, match="config.json.*does not match"):
        check_shipped(str(dest))
    (dest / "config.json").write_bytes(config)
    check_shipped(str(dest))
    (dest / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="listed in SHA256SUMS but missing"):
        check_shipped(str(dest))
    sums = (dest / "SHA256SUMS").read_text().splitlines()
    (dest / "SHA256SUMS").write_text("".join(f"{s}\n" for s in sums if "tokenizer" not in s))
    with pytest.raises(CheckpointError, match="does not list tokenizer.json"):
        check_shipped(str(dest))
    (dest / "SHA256SUMS").write_text("0123 config.json\n")
    with pytest.raises(CheckpointError, match="line 1 is not"):
        check_shipped(str(dest))


def test_a_new_ship_replaces_the_old_folder_whole(run, tmp_path):
    dest = tmp_path / "scene"
    dest.mkdir()
    (dest / "stale.bin").write_bytes(b"old")
    ship_scene_model(str(run), str(dest), final="stage_b")
    assert not (dest / "stale.bin").exists()
