"""``vlxseek inspect`` (header-only checkpoint checks) and hub download/resolve, offline only."""
import json
import os
import shutil
import socket
import struct
from pathlib import Path

import pytest

from vlxseek_core.cli import main
from vlxseek_core.inspect_checkpoint import (FAIL, expected_state_names, inspect_checkpoint,
                                             read_safetensors_header,
                                             tokenizer_json_added_tokens)

SPEC_KEYS = Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "vlm-fo1-3b-keys.json"


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def copy_checkpoint(src, dst, skip=()):
    """Copy a checkpoint directory (hard links for big files where possible)."""
    os.makedirs(dst)
    for name in os.listdir(src):
        if name in skip:
            continue
        try:
            os.link(os.path.join(src, name), os.path.join(dst, name))
        except OSError:
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    return str(dst)


ITEM_BYTES = {"F32": 4, "BF16": 2}


def write_sparse_checkpoint(directory, names, dtype="F32"):
    """A safetensors file with a real header for ``names`` (key → shape) and sparse data.

    ``inspect`` reads headers only, so this stands for a checkpoint of any size in no time.
    """
    header, offset = {}, 0
    for key, shape in names.items():
        size = ITEM_BYTES[dtype]
        for d in shape:
            size *= d
        header[key] = {"dtype": dtype, "shape": list(shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(os.path.join(directory, "model.safetensors"), "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.truncate(8 + len(blob) + offset)


def edited_checkpoint(src, dst, edit):
    """Copy of ``src`` whose weights' names/shapes are ``edit(names)`` (key → shape)."""
    directory = copy_checkpoint(src, dst, skip=("model.safetensors",))
    tensors, _, _ = read_safetensors_header(os.path.join(src, "model.safetensors"))
    names = {k: t.shape for k, t in tensors.items()}
    edit(names)
    write_sparse_checkpoint(directory, names)
    return directory


def failures(report):
    return [c for c in report.checks if c.status == FAIL]


def test_tiny_checkpoint_passes(tiny_model_dir, capsys):
    report = inspect_checkpoint(tiny_model_dir)
    assert report.ok, report.format()
    facts = report.facts
    assert facts["model_type"] == "omchat_qwen2_5_vl"
    assert facts["mm_projector_type"] == "identity"
    assert facts["mm_projector_aux_type"] == "mlp2x_gelu"
    assert facts["mm_roi_output_size"] == 7 and facts["aux_image_aspect_ratio"] == "squash"
    assert facts["token_ids"]["<region0>"] == 151665
    assert facts["token_ids"]["<region99>"] == 151764
    assert facts["token_ids"]["</objects>"] == 151768
    assert main(["inspect", tiny_model_dir]) == 0
    text = capsys.readouterr().out
    for section in ("[files]", "[config]", "[tokenizer]", "[weights]", "RESULT: OK"):
        assert section in text
    assert main(["inspect", tiny_model_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


@pytest.mark.parametrize("edit, message, item", [
    (lambda n: n.pop("model.mm_projector_aux.0.bias"), "missing from the checkpoint",
     "model.mm_projector_aux.0.bias"),
    (lambda n: n.__setitem__("model.surprise.weight", (64,)), "unexpected",
     "model.surprise.weight"),
    (lambda n: n.__setitem__("model.mm_projector_aux.2.bias", (63,)), "wrong shape",
     "model.mm_projector_aux.2.bias: checkpoint [63], expected [64]"),
], ids=["removed", "extra", "shape"])
def test_weight_mismatches_fail(tiny_model_dir, tmp_path, capsys, edit, message, item):
    broken = edited_checkpoint(tiny_model_dir, tmp_path / "broken", edit)
    report = inspect_checkpoint(broken)
    failed = failures(report)
    assert len(failed) == 1 and failed[0].section == "weights"
    assert message in failed[0].message and failed[0].details == [item]
    assert main(["inspect", broken]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and item in out and "RESULT: FAIL" in out


def test_missing_added_token_fails(tiny_model_dir, tmp_path):
    broken = copy_checkpoint(tiny_model_dir, tmp_path / "tok", skip=("tokenizer.json",))
    tokens = tokenizer_json_added_tokens(os.path.join(tiny_model_dir, "tokenizer.json"))
    # inspect reads only "added_tokens" from tokenizer.json; the vocabulary is left out here
    Path(broken, "tokenizer.json").write_text(json.dumps(
        {"added_tokens": [t for t in tokens if t["content"] != "<ground>"]}))
    failed = failures(inspect_checkpoint(broken))
    assert len(failed) == 1 and failed[0].section == "tokenizer"
    assert "required added tokens missing" in failed[0].message
    assert failed[0].details == ["<ground>"]


def test_pickle_only_directory_fails_with_safetensors_message(tiny_model_dir, tmp_path, capsys):
    pickled = copy_checkpoint(tiny_model_dir, tmp_path / "bin", skip=("model.safetensors",))
    Path(pickled, "pytorch_model.bin").write_bytes(b"not loaded")
    failed = failures(inspect_checkpoint(pickled))
    assert len(failed) == 1 and "safetensors only" in failed[0].message
    assert "pytorch_model.bin" in failed[0].message
    assert main(["inspect", pickled, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
    assert not inspect_checkpoint(str(tmp_path / "nowhere")).ok


def test_truncated_shard_fails(tiny_model_dir, tmp_path):
    cut = copy_checkpoint(tiny_model_dir, tmp_path / "cut", skip=("model.safetensors",))
    src = os.path.join(tiny_model_dir, "model.safetensors")
    with open(src, "rb") as fh, open(os.path.join(cut, "model.safetensors"), "wb") as out:
        out.write(fh.read(os.path.getsize(src) - 1000))
    failed = failures(inspect_checkpoint(cut))
    assert len(failed) == 1 and "truncated" in failed[0].message


def test_3b_config_is_compared_with_the_spec_key_file(tiny_model_dir, tmp_path):
    """A 3B-shaped checkpoint (header only, sparse data) against vlm-fo1-3b-keys.json."""
    from test_checkpoint import REAL_3B

    from vlxseek_core.config import VLMFO1Config
    from vlxseek_core.tiny import tiny_config_dict

    if not SPEC_KEYS.is_file():
        pytest.skip(f"spec file {SPEC_KEYS} not present")
    config = {k: v for k, v in tiny_config_dict().items() if not k.startswith("vlxseek_")}
    config.update(REAL_3B)
    directory = copy_checkpoint(tiny_model_dir, tmp_path / "fake3b",
                                skip=("model.safetensors", "config.json"))
    Path(directory, "config.json").write_text(json.dumps(config))
    names = expected_state_names(VLMFO1Config(**config))
    write_sparse_checkpoint(directory, names, dtype="BF16")
    tensors, _, needed = read_safetensors_header(os.path.join(directory, "model.safetensors"))
    assert len(tensors) == len(names) and needed > 7e9  # a 3B-sized file, read in an instant
    report = inspect_checkpoint(directory, spec_path=str(SPEC_KEYS))
    assert report.ok, report.format()
    spec = [c for c in report.checks if c.section == "spec"]
    assert spec[0].status == "OK" and "826" in spec[0].message
    # A wrong SimpleFP shape fails both against the built model and against the spec file.
    key = "model.object_vp_extractor.simple_fpn.simfp_3.0.weight"
    write_sparse_checkpoint(directory, {**names, key: (512, 1024, 1, 1)}, dtype="BF16")
    failed = failures(inspect_checkpoint(directory, spec_path=str(SPEC_KEYS)))
    assert {c.section for c in failed} == {"weights", "spec"}
    assert all(c.details == [f"{key}: checkpoint [512, 1024, 1, 1], expected [512, 1280, 1, 1]"]
               for c in failed)
    # The tiny config is not the 3B one: the spec comparison is skipped, not failed.
    tiny = inspect_checkpoint(tiny_model_dir, spec_path=str(SPEC_KEYS))
    assert tiny.ok and [c.status for c in tiny.checks if c.section == "spec"] == ["SKIP"]


# ------------------------------------------------------------------------------------ hub


def test_resolve_model_path_returns_local_dir_unchanged(tiny_model_dir, monkeypatch,
                                                        no_network):
    import huggingface_hub

    from vlxseek_core.hub import HubError, looks_like_repo_id, resolve_model_path

    def fail(*args, **kwargs):
        raise AssertionError("the hub must not be asked for a local directory")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    assert resolve_model_path(tiny_model_dir) == tiny_model_dir
    assert looks_like_repo_id("omlab/VLM-FO1_Qwen2.5-VL-3B-v01")
    assert not looks_like_repo_id("/abs/path") and not looks_like_repo_id("a/b/c")
    assert not looks_like_repo_id("../x")
    with pytest.raises(HubError, match="neither an existing directory"):
        resolve_model_path("/no/such/dir")
    with pytest.raises(HubError, match="is a file"):
        resolve_model_path(os.path.join(tiny_model_dir, "config.json"))


def test_download_patterns_and_revision(monkeypatch, tmp_path, no_network):
    import huggingface_hub

    from vlxseek_core.hub import DEFAULT_REPO_ID, download

    seen = {}

    def fake_snapshot_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert download(revision="abc123", local_dir=str(tmp_path)) == str(tmp_path)
    assert seen["repo_id"] == DEFAULT_REPO_ID and seen["revision"] == "abc123"
    allow = seen["allow_patterns"]
    assert "*.safetensors" in allow and "model.safetensors.index.json" in allow
    assert {"config.json", "tokenizer.json", "preprocessor_config.json",
            "generation_config.json"} <= set(allow)
    assert not any(p.endswith((".bin", ".pt", ".pth")) or p == "*" for p in allow)
    assert "*.bin" in seen["ignore_patterns"]


@pytest.fixture
def offline(monkeypatch, tmp_path, no_network):
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    return str(tmp_path / "hf_home" / "hub")


def test_offline_download_is_a_clear_one_line_error(offline, tmp_path, capsys):
    from vlxseek_core.hub import HubError, download, resolve_model_path

    with pytest.raises(HubError) as err:
        download(cache_dir=offline)
    message = str(err.value)
    assert "offline" in message and "HF_HUB_OFFLINE" in message and "\n" not in message
    with pytest.raises(HubError, match="offline"):
        resolve_model_path("someone/some-model", cache_dir=offline)
    code = main(["download", "--dir", str(tmp_path / "ckpt"), "--revision", "v1"])
    captured = capsys.readouterr()
    assert code != 0
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlxseek: error:") and "offline" in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_local_files_only_without_cache_is_a_clear_error(tmp_path, no_network):
    from vlxseek_core.hub import HubError, download

    with pytest.raises(HubError, match="local_files_only"):
        download("someone/some-model", cache_dir=str(tmp_path), local_files_only=True)
