"""A run snapshot carries a recipe run to another machine: byte for byte, or, where every
vocabulary row drifted, with the drift at low rank (issue 9 §7)."""
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlxseek_core import cli
from vlxseek_core.errors import CheckpointError
from vlxseek_core.training.ship import lineage
from vlxseek_core.training.snapshot import INIT_ARGS, main, restore_snapshot, save_snapshot

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--preset", "tiny", "--seed", "0"]
EMBED = "model.embed_tokens.weight"


def _phase(run, name, start, change, dtype=torch.float32):
    """A finished phase folder: ``start``'s model changed by ``change(weights)``."""
    out = run / name
    shutil.copytree(start, out, ignore=shutil.ignore_patterns("lookup_*"))
    weights = load_file(str(out / "model.safetensors"))
    change(weights)
    save_file({k: v.to(dtype) for k, v in weights.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    info = {"command": f"vlxseek train --model {start} --out {out}", "start_model": str(start)}
    (out / "vlxseek_training.json").write_text(json.dumps(info))
    return out


def _first_layer(weights):
    return next(k for k in sorted(weights) if ".layers.0." in k and k.endswith("weight"))


def _change_a(weights):
    weights[EMBED][[5, 9]] += 1.0  # two vocabulary rows trained, the rest as initialised
    weights[_first_layer(weights)] *= 2.0  # a tensor trained as a whole


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    assert cli.main(["make-tiny-model", str(run / "init")] + TINY) == 0
    a = _phase(run, "stage_a", run / "init", _change_a)
    (a / "lookup_formed.json").write_text(json.dumps({str(a): {"all": {"first": 0.9}}}))
    (run / "stage_a.stalled_seed0").mkdir()  # set aside: not in the lineage
    _phase(run, "stage_b", a, lambda w: w[EMBED][7].mul_(3.0), dtype=torch.bfloat16)
    return run


def test_snapshot_keeps_only_what_training_changed(run, tmp_path):
    manifest = save_snapshot(str(run), "stage_b", str(tmp_path / "snap"), TINY)
    assert manifest["phases"] == ["stage_a", "stage_b"] and manifest["init"]["args"] == TINY
    kinds = {k: t["kind"] for k, t in manifest["tensors"].items()}
    weights = load_file(str(run / "stage_b" / "model.safetensors"))
    assert set(kinds) == set(weights)
    assert kinds[EMBED] == "rows" and manifest["tensors"][EMBED]["rows"] == 3  # 5, 7, 9
    assert manifest["exact"] is True
    assert kinds[_first_layer(weights)] == "whole"
    assert {manifest["tensors"][k]["dtype"] for k in kinds} == {"bfloat16"}
    # the rest equal the init in bfloat16: stored as nothing
    assert list(kinds.values()).count("init") == len(kinds) - 2
    stored = load_file(str(tmp_path / "snap" / "weights.safetensors"))
    assert sorted(stored) == sorted([f"{EMBED}/index", f"{EMBED}/rows", _first_layer(weights)])
    assert stored[f"{EMBED}/index"].tolist() == [5, 7, 9]
    # no model weights, tokenizer or set-aside attempts travel
    files = sorted(str(p.relative_to(tmp_path / "snap")) for p in (tmp_path / "snap").rglob("*")
                   if p.is_file())
    assert files == ["SNAPSHOT.json", "config.json", "generation_config.json",
                     "phases/stage_a/lookup_formed.json", "phases/stage_a/vlxseek_training.json",
                     "phases/stage_b/vlxseek_training.json", "preprocessor_config.json",
                     "tokenizer_config.json", "weights.safetensors"]
    # run paths are portable
    info = json.loads((tmp_path / "snap" / "phases" / "stage_b" / "vlxseek_training.json")
                      .read_text())
    assert info == {"command": "vlxseek train --model RUN/stage_a --out RUN/stage_b",
                    "start_model": "RUN/stage_a"}


def test_restore_rebuilds_the_phase_byte_for_byte_on_a_fresh_run_folder(run, tmp_path):
    save_snapshot(str(run), "stage_b", str(tmp_path / "snap"), TINY)
    new = tmp_path / "elsewhere" / "run"
    # no init there: restore writes it with make-tiny-model and the recorded options
    assert restore_snapshot(str(tmp_path / "snap"), str(new)) == str(new / "stage_b")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (new / "stage_b" / name).read_bytes() == (run / "stage_b" / name).read_bytes()
    # the earlier phase: its finished-phase markers only, its paths in the new folder
    assert sorted(p.name for p in (new / "stage_a").iterdir()) == [
        "lookup_formed.json", "vlxseek_training.json"]
    info = json.loads((new / "stage_a" / "vlxseek_training.json").read_text())
    assert info["start_model"] == str(new / "init")
    assert info["command"] == f"vlxseek train --model {new}/init --out {new}/stage_a"
    probe = json.loads((new / "stage_a" / "lookup_formed.json").read_text())
    assert list(probe) == [str(new / "stage_a")]
    assert [Path(p).name for p in lineage(str(new / "stage_b"))] == ["stage_a", "stage_b"]
    # the rebuilt model loads and equals the phase's
    from vlxseek_core.pipeline import VLXSeek

    pipe = VLXSeek.from_pretrained(str(new / "stage_b"), device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=4)
    assert torch.equal(pipe.model.get_input_embeddings().weight[7],
                       load_file(str(run / "stage_b" / "model.safetensors"))[EMBED][7].float())


def _drift_all(weights):
    """The sampled column's mark: every vocabulary row a little lower along one direction
    (per-row scales), a little noise, and the data's rows (5, 9) moved far."""
    gen = torch.Generator().manual_seed(0)
    embed = weights[EMBED]
    scale = torch.rand(len(embed), 1, generator=gen) * 0.1 + 0.05
    direction = torch.randn(1, embed.shape[1], generator=gen) / embed.shape[1] ** 0.5
    embed += scale * direction + 1e-4 * torch.randn(embed.shape, generator=gen)
    embed[[5, 9]] += 1.0


def test_an_embedding_whose_every_row_drifted_is_kept_at_low_rank(run, tmp_path):
    _phase(run, "stage_c", run / "stage_a", _drift_all)
    manifest = save_snapshot(str(run), "stage_c", str(tmp_path / "snap"), TINY)
    info = manifest["tensors"][EMBED]
    assert (info["kind"], info["rows"], info["rank"]) == ("drift", 2, 16)
    assert 0 < info["residual"] < 0.05 and manifest["exact"] is False
    size = sum(p.stat().st_size for p in (tmp_path / "snap").rglob("*"))
    assert size < 0.2 * (run / "stage_c" / "model.safetensors").stat().st_size
    new = tmp_path / "new"
    restore_snapshot(str(tmp_path / "snap"), str(new))  # no bit-for-bit check: it is close
    before = load_file(str(run / "stage_c" / "model.safetensors"))
    after = load_file(str(new / "stage_c" / "model.safetensors"))
    assert torch.equal(after[EMBED][[5, 9]], before[EMBED][[5, 9]])  # the data's rows: exact
    drift = before[EMBED] - load_file(str(run / "init" / "model.safetensors"))[EMBED]
    error = (after[EMBED] - before[EMBED]).norm() / drift.norm()
    assert 0 < error < 0.05
    assert all(torch.equal(after[k], before[k]) for k in before if k != EMBED)


def test_restore_refuses_another_init(run, tmp_path):
    save_snapshot(str(run), "stage_b", str(tmp_path / "snap"), TINY)
    other = tmp_path / "other"
    assert cli.main(["make-tiny-model", str(other / "init"), "--preset", "tiny",
                     "--seed", "1"]) == 0
    with pytest.raises(CheckpointError, match="not the init the snapshot was taken from"):
        restore_snapshot(str(tmp_path / "snap"), str(other))
    assert not (other / "stage_b").exists()
    with pytest.raises(CheckpointError, match="not a run snapshot"):
        restore_snapshot(str(tmp_path / "nothing"), str(other))
    stored = load_file(str(tmp_path / "snap" / "weights.safetensors"))
    save_file({k: v for k, v in stored.items() if not k.endswith("/rows")},
              str(tmp_path / "snap" / "weights.safetensors"))
    with pytest.raises(CheckpointError, match="does not rebuild on its init"):
        restore_snapshot(str(tmp_path / "snap"), str(tmp_path / "third"))


def test_save_refuses_an_unfinished_phase_or_a_foreign_lineage(run, tmp_path):
    with pytest.raises(CheckpointError, match="not a trained phase"):
        save_snapshot(str(run), "stage_a.stalled_seed0", str(tmp_path / "snap"), TINY)
    other = tmp_path / "other"
    shutil.copytree(run, other)  # its phases still name the first folder's init
    with pytest.raises(CheckpointError, match="not at"):
        save_snapshot(str(other), "stage_b", str(tmp_path / "snap"), TINY)


def test_cli_reports_errors_on_one_line(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["restore", str(tmp_path / "nothing"), str(run)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("snapshot: ")
    assert main(["save", str(run), "stage_b", str(tmp_path / "snap"),
                 "--init-args", " ".join(TINY)]) == 0
    assert "1 by rows, 1 whole" in capsys.readouterr().out
    assert main(["restore", str(tmp_path / "snap"), str(tmp_path / "new")]) == 0


def test_init_args_are_the_recipe_scripts():
    script = (ROOT / "scripts" / "train_small_model.sh").read_text()
    line = re.search(r'make-tiny-model "\$\{OUT\}/init" (.*?)\n\s*(.*?)\n', script)
    words = (line.group(1).rstrip("\\ ") + " " + line.group(2)).split()
    assert words == [w if w != "small" else '"${PRESET:-small}"' for w in INIT_ARGS]


COMMITTED = sorted((ROOT / "runs").glob("*/SNAPSHOT.json"))


@pytest.mark.parametrize("manifest", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_snapshots_rebuild_their_phase(manifest, tmp_path):
    """The run snapshots in runs/ rebuild on this machine (``restore`` checks the init's
    SHA-256, and the phase's where the snapshot is exact) and load."""
    from vlxseek_core.pipeline import VLXSeek

    phase = restore_snapshot(str(manifest.parent), str(tmp_path / "run"))
    assert Path(phase).name == json.loads(manifest.read_text())["phase"]
    VLXSeek.from_pretrained(phase, device="cpu", dtype="float32", proposal_source="none")
