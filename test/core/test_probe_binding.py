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
                     "--max-distractors", "0", "--tasks", "detect_all", "refer", "detect",
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
    for key in ("same_first", "same_last"):  # rows sharing one word of the label, or none
        assert out[key].shape == shape
        assert np.all(np.isnan(out[key])) or np.all((out[key] >= 0) & (out[key] <= 1))
    # records of another task are probed apart: refer gives other numbers
    refer = probe_binding.main(["--model", train_model_dir, "--data", data, "--images",
                                os.path.join(scenes, "images")])
    assert not np.allclose(refer["target"], out["target"])
    detect = probe_binding.main(["--model", train_model_dir, "--data", data, "--images",
                                 os.path.join(scenes, "images"), "--task", "detect"])
    assert detect["target"].shape == shape
    assert np.all(detect["target"] + detect["others"] <= 1 + 1e-5)


def test_first_region_choice_skips_a_leading_none_block(train_model_dir):
    """A detect answer may open with an absent category's ``None`` block: the scored position
    is the ``<objects>`` before the first region token, and K comes from that token."""
    import pytest

    from benchmarks.probe_binding import first_region_choice
    from vlxseek_core.tokenizer import load_tokenizer
    from vlxseek_core.tokens import region_token

    tok = load_tokenizer(train_model_dir)
    region_of = {tok.convert_tokens_to_ids(region_token(k)): k for k in range(100)}
    answer = "<ground>cup</ground><objects>None</objects><ground>cat</ground><objects>" \
             "<region2><region4></objects>"
    ids = tok.encode(answer, add_special_tokens=False)
    offset, k = first_region_choice(ids, region_of)
    assert k == 2 and ids[offset] == tok.convert_tokens_to_ids("<objects>")
    assert ids[offset + 1] == tok.convert_tokens_to_ids(region_token(2))
    assert ids[:offset].count(tok.convert_tokens_to_ids("<objects>")) == 1  # the None block
    assert first_region_choice(tok.encode("<ground>cat</ground><objects><region0>",
                                          add_special_tokens=False), region_of)[1] == 0
    with pytest.raises(ValueError, match="no region"):
        first_region_choice(tok.encode("<ground>cup</ground><objects>None</objects>",
                                       add_special_tokens=False), region_of)


def test_rows_sharing_one_word_of_the_target_label():
    from benchmarks.probe_binding import region_words, word_sharing_rows
    from vlxseek_core.parsing import parse_answer

    answer = ("<ground>the red circle</ground><objects><region3></objects>"
              "<ground>red square</ground><objects><region0><region5></objects>"
              "<ground>blue circle</ground><objects><region1></objects>"
              "<ground>cat</ground><objects><region2></objects>"
              "<ground>blue square</ground><objects><region4></objects>")
    labels = region_words(parse_answer(answer, 6))
    assert labels == {3: ["red", "circle"], 0: ["red", "square"], 5: ["red", "square"],
                      1: ["blue", "circle"], 2: ["cat"], 4: ["blue", "square"]}
    assert word_sharing_rows(labels, 3) == {"same_first": [0, 5], "same_last": [1]}
    assert word_sharing_rows(labels, 4) == {"same_first": [1], "same_last": [0, 5]}
    # a one-word target (a photo) or a region no block names: nothing to split
    assert word_sharing_rows(labels, 2) == {"same_first": [], "same_last": []}
    assert word_sharing_rows(labels, 6) == {"same_first": [], "same_last": []}
