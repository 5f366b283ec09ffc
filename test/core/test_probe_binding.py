"""benchmarks/probe_binding.py: per-head attention of the region-binding circuit."""
import os

import numpy as np

from vlxseek_core import cli


def test_detect_all_records_are_probed_per_layer_and_head(train_model_dir, tmp_path, capsys):
    from benchmarks import probe_binding
    from vlxseek_core.checkpoint import load_model

    scenes = str(tmp_path / "scn")
    assert cli.main(["make-scenes", scenes, "--train", "1", "--heldout", "3", "--seed", "2",
                     "--size", "112", "--max-objects", "3", "--max-copies", "1",
                     "--max-distractors", "0", "--tasks", "detect_all", "refer",
                     "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    data = os.path.join(scenes, "heldout.jsonl")
    out = probe_binding.main(["--model", train_model_dir, "--data", data, "--images",
                              os.path.join(scenes, "images"), "--task", "detect_all"])
    config = load_model(train_model_dir)[0].config.text_config
    shape = (config.num_hidden_layers, config.num_attention_heads)
    for key in ("prev", "target", "others"):
        assert out[key].shape == shape
        assert np.all((out[key] >= 0) & (out[key] <= 1))
    # attention to one row and to the others cannot exceed all attention together
    assert np.all(out["target"] + out["others"] <= 1 + 1e-5)
    # records of another task are probed apart: refer gives other numbers
    refer = probe_binding.main(["--model", train_model_dir, "--data", data, "--images",
                                os.path.join(scenes, "images")])
    assert not np.allclose(refer["target"], out["target"])
