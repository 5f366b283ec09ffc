"""The checkpoint loader refuses bad config values, shard indexes and tokenizer classes with a
CheckpointError naming the key or path (issue 11, item 4)."""
import copy
import json
import os

import pytest
from checkpoint_fixtures import fresh_copy, read_json, write_json, write_text

from vlxseek_core.checkpoint import INDEX_NAME, load_model, safetensors_files
from vlxseek_core.config import MM_DEFAULTS
from vlxseek_core.config_rules import (AUX_RULES, TEXT_RULES, TOP_RULES, VISION_RULES,
                                       check_config_dict)
from vlxseek_core.errors import CheckpointError
from vlxseek_core.tokenizer import TOKENIZER_CLASSES, load_tokenizer


def _set(config, path, value):
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = value


BAD_VALUES = [
    ("mm_roi_output_size", 0), ("mm_roi_output_size", -1), ("mm_roi_output_size", 2.5),
    ("mm_roi_output_size", "7"), ("mm_roi_output_size", True), ("mm_roi_output_size", 65),
    ("mm_projector_aux_type", "foo"), ("mm_projector_type", 3),
    ("mm_use_simpleFPN_for_vt", "false"), ("mm_apply_position_embedding", 1),
    ("mm_use_region_index_token", "true"), ("aux_image_size", 0),
    ("aux_image_aspect_ratio", "wide"), ("mm_region_feature_combination", "sum"),
    ("mm_pos_embedding_strategy", None), ("tokenizer_model_max_length", 0),
    ("vlxseek_simple_fpn_channels", 0), ("vlxseek_aux_vision_config", [1]),
    ("vlxseek_aux_vision_config.embed_dim", [16, 32]),
    ("vlxseek_aux_vision_config.num_heads", [1, 2, 4, 7]),
    ("vlxseek_aux_vision_config.window_size", 12),
    ("mm_hidden_size", 32), ("mm_region_hidden_size", "368"),
    ("image_token_id", 10**7), ("image_token_id", -1), ("vision_start_token_id", "x"),
    ("eos_token_id", [151645, 10**7]), ("tie_word_embeddings", "yes"),
    ("text_config", "x"), ("vision_config", []),
    ("text_config.hidden_size", 0), ("text_config.hidden_size", "64"),
    ("text_config.hidden_size", 64.0), ("text_config.num_hidden_layers", -1),
    ("text_config.num_attention_heads", 3), ("text_config.num_key_value_heads", 3),
    ("text_config.vocab_size", 10), ("text_config.rms_norm_eps", "a"),
    ("text_config.rms_norm_eps", 0), ("text_config.max_position_embeddings", 0),
    ("text_config.rope_parameters.mrope_section", [1, 1, 1]),
    ("text_config.rope_parameters.rope_theta", -1), ("text_config.hidden_act", "nope"),
    ("text_config.layer_types", ["full_attention"]), ("text_config.pad_token_id", 151936),
    ("vision_config.depth", 0), ("vision_config.fullatt_block_indexes", [9]),
    ("vision_config.fullatt_block_indexes", []), ("vision_config.window_size", 8),
    ("vision_config.num_heads", 3), ("vision_config.in_chans", 4),
    ("vision_config.spatial_merge_size", 0), ("vision_config.tokens_per_second", "2"),
]


@pytest.mark.parametrize("path, value", BAD_VALUES)
def test_bad_config_values_are_refused_naming_the_key(ckpt, path, value):
    config = read_json(os.path.join(ckpt, "config.json"))
    _set(config, path, value)
    write_json(os.path.join(ckpt, "config.json"), config)
    with pytest.raises(CheckpointError) as info:
        load_model(ckpt)
    message = str(info.value)
    assert "config.json" in message
    assert path.split(".")[-1] in message, message


def test_reference_layout_keys_on_top_are_checked(ckpt):
    config = read_json(os.path.join(ckpt, "config.json"))
    config["hidden_size"] = "64"  # the reference writes the LLM keys at top level
    assert check_config_dict(config) == ["hidden_size must be an integer in [1, 65536], got '64'"]


@pytest.mark.parametrize("text, needle", [
    ("{", "JSONDecodeError"), ("[]", "must hold a JSON object"), ("", "JSONDecodeError"),
    ("[" * 100000, "RecursionError|JSONDecodeError"),
])
def test_malformed_config_json(ckpt, text, needle):
    write_text(os.path.join(ckpt, "config.json"), text)
    with pytest.raises(CheckpointError, match=needle):
        load_model(ckpt)


def test_config_json_not_utf8(ckpt):
    path = os.path.join(ckpt, "config.json")
    os.remove(path)
    with open(path, "wb") as fh:
        fh.write(b'{"mm_roi_output_size": "\xff"}')
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(ckpt)


def test_the_rule_tables_cover_every_key_the_loader_reads(module_checkpoint):
    from vlxseek_core.inspect_checkpoint import MM_CONFIG_KEYS
    from vlxseek_core.tiny import TINY_DAVIT

    assert set(MM_DEFAULTS) | set(MM_CONFIG_KEYS) <= set(TOP_RULES)
    config = read_json(os.path.join(module_checkpoint, "config.json"))
    ignored = {"architectures", "transformers_version"}  # not read by the loader
    assert set(config) - ignored <= set(TOP_RULES) | set(TEXT_RULES)
    assert set(config["text_config"]) <= set(TEXT_RULES)
    assert set(config["vision_config"]) <= set(VISION_RULES)
    assert set(TINY_DAVIT) == set(AUX_RULES)
    assert check_config_dict(config) == []


def test_real_3b_config_passes():
    from vlxseek_core.config import VLM_FO1_3B_CONFIG

    assert check_config_dict(json.loads(json.dumps(VLM_FO1_3B_CONFIG))) == []


def test_bad_config_through_from_pretrained_and_the_cli(ckpt, capsys):
    from vlxseek_core.cli import main
    from vlxseek_core.pipeline import VLXSeek

    config = read_json(os.path.join(ckpt, "config.json"))
    config["mm_roi_output_size"] = 0
    write_json(os.path.join(ckpt, "config.json"), config)
    with pytest.raises(CheckpointError, match="mm_roi_output_size"):
        VLXSeek.from_pretrained(ckpt, device="cpu")
    assert main(["query", "--model", ckpt, "--image", "x.png", "--query", "cat",
                 "--proposal-source", "none", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlxseek: error: ") and "mm_roi_output_size" in err
    assert err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------ shard index

def _index(ckpt, weight_map, **extra):
    write_json(os.path.join(ckpt, INDEX_NAME), {"metadata": {}, "weight_map": weight_map,
                                                **extra})


def _keys(ckpt):
    from safetensors import safe_open

    with safe_open(os.path.join(ckpt, "model.safetensors"), "pt") as fh:
        return list(fh.keys())


def test_valid_index_loads(ckpt):
    os.rename(os.path.join(ckpt, "model.safetensors"),
              os.path.join(ckpt, "model-00001-of-00001.safetensors"))
    _index(ckpt, {k: "model-00001-of-00001.safetensors" for k in _keys_of_renamed(ckpt)})
    model, report = load_model(ckpt)
    assert report.clean


def _keys_of_renamed(ckpt):
    from safetensors import safe_open

    with safe_open(os.path.join(ckpt, "model-00001-of-00001.safetensors"), "pt") as fh:
        return list(fh.keys())


@pytest.mark.parametrize("content, needle", [
    ("{", "JSONDecodeError"), ("[]", "weight_map"), ('{"weight_map": []}', "weight_map"),
    ('{"weight_map": {}}', "weight_map"), ('{"weight_map": {"a": 3}}', "must be strings"),
    ('{"weight_map": {"a": "model.safetensors"}, "metadata": 1}', "metadata"),
    ('{"weight_map": {"a": "gone.safetensors"}}', "missing shard.*gone.safetensors"),
    ('{"weight_map": {"a": "model.bin"}}', "relative \\*.safetensors"),
    ('{"weight_map": {"a": "../model.safetensors"}}', "relative"),
    ('{"weight_map": {"a": "sub/../model.safetensors"}}', "relative"),
    ('{"weight_map": {"a": "/etc/model.safetensors"}}', "relative"),
    ('{"weight_map": {"a": "..\\\\model.safetensors"}}', "relative"),
    ('{"weight_map": {"a": ""}}', "relative"),
])
def test_bad_index_is_refused(ckpt, content, needle):
    write_text(os.path.join(ckpt, INDEX_NAME), content)
    with pytest.raises(CheckpointError, match=needle) as info:
        load_model(ckpt)
    assert INDEX_NAME in str(info.value)


def test_index_symlink_leaving_the_folder_is_never_followed(ckpt, tiny_model_dir, monkeypatch):
    import safetensors

    outside = os.path.join(tiny_model_dir, "model.safetensors")
    os.symlink(outside, os.path.join(ckpt, "shard.safetensors"))
    _index(ckpt, {k: "shard.safetensors" for k in _keys(ckpt)})
    opened = []
    real_open = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open",
                        lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    with pytest.raises(CheckpointError, match="resolves outside the checkpoint folder"):
        load_model(ckpt)
    assert opened == []
    # a link that stays inside the folder is fine
    os.makedirs(os.path.join(ckpt, "sub"))
    os.symlink(os.path.join(ckpt, "model.safetensors"),
               os.path.join(ckpt, "sub", "in.safetensors"))
    _index(ckpt, {k: "sub/in.safetensors" for k in _keys(ckpt)})
    assert safetensors_files(ckpt) == [os.path.join(ckpt, "sub/in.safetensors")]


def test_hugging_face_cache_snapshot_links_into_blobs(module_checkpoint, tmp_path):
    repo = tmp_path / "models--owner--name"
    snap = repo / "snapshots" / "abc123"
    fresh_copy(module_checkpoint, str(snap))
    os.makedirs(repo / "blobs")
    os.rename(snap / "model.safetensors", repo / "blobs" / "deadbeef")
    os.symlink("../../blobs/deadbeef", snap / "model-00001-of-00001.safetensors")
    keys = _keys_of_renamed(str(snap))
    _index(str(snap), {k: "model-00001-of-00001.safetensors" for k in keys})
    _, report = load_model(str(snap))
    assert report.clean


# ------------------------------------------------------------------ tokenizer class

@pytest.mark.parametrize("name", ["AutoModel", "PreTrainedModel", "os", "__class__",
                                  "Qwen2Tokenizer ", 3, ["Qwen2Tokenizer"], True])
def test_tokenizer_class_outside_the_allow_list_is_refused(ckpt, name, monkeypatch):
    import transformers

    path = os.path.join(ckpt, "tokenizer_config.json")
    data = read_json(path)
    data["tokenizer_class"] = name
    write_json(path, data)
    looked_up = []
    real_getattr = transformers.__class__.__getattr__

    def spy(self, attr):
        looked_up.append(attr)
        return real_getattr(self, attr)

    monkeypatch.setattr(transformers.__class__, "__getattr__", spy)
    with pytest.raises(CheckpointError, match="tokenizer_class.*not an allowed"):
        load_tokenizer(ckpt)
    assert str(name) not in looked_up


@pytest.mark.parametrize("name", sorted(TOKENIZER_CLASSES) + [None])
def test_allowed_tokenizer_classes_load(ckpt, name):
    path = os.path.join(ckpt, "tokenizer_config.json")
    data = copy.deepcopy(read_json(path))
    if name is None:
        data.pop("tokenizer_class")
    else:
        data["tokenizer_class"] = name
    write_json(path, data)
    tok = load_tokenizer(ckpt)
    assert tok.convert_tokens_to_ids("<region0>") == 151665


@pytest.mark.parametrize("text", ["{", "[1]"])
def test_malformed_tokenizer_config(ckpt, text):
    write_text(os.path.join(ckpt, "tokenizer_config.json"), text)
    with pytest.raises(CheckpointError, match="tokenizer_config.json"):
        load_tokenizer(ckpt)
