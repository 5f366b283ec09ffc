"""WeDetect-Uni checkpoint layout and strict loading (spec vlx-seek-1.5.md §5).

``wedetect_base_uni_keys.json`` lists every key → shape of the released
``wedetect_base_uni.pth`` in the file's own spelling, derived from the reference's module
definition (see its ``derived_from``). A random state_dict of exactly that layout must load
strictly; one missing or one extra key must be refused. The full-size model then runs once end
to end on a real photo from a ``.pth`` saved the way mmengine saves it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlxseek_core.errors import CheckpointError, StateDictMismatchError
from vlxseek_core.proposals import WeDetectProposals, write_tiny_wedetect
from vlxseek_core.proposals.wedetect_checkpoint import (CLASSIFIER_KEYS, checkpoint_key_to_model,
                                                        expected_checkpoint_shapes,
                                                        load_checkpoint_state,
                                                        model_key_to_checkpoint,
                                                        read_state_dict)
from vlxseek_core.proposals.wedetect_model import BASE_CONFIG, TINY_CONFIG, WeDetectUni

FIXTURE = Path(__file__).with_name("wedetect_base_uni_keys.json")


@pytest.fixture(scope="module")
def released_layout():
    doc = json.loads(FIXTURE.read_text())
    assert doc["num_keys"] == len(doc["keys"]) == 910
    return doc


def _random_state(shapes, seed=0):
    """Random tensors of the given layout; BN statistics plausible, counters int64."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    return state


@pytest.fixture(scope="module")
def base_state(released_layout):
    return _random_state(released_layout["keys"])


@pytest.fixture(scope="module")
def base_model():
    return WeDetectUni(BASE_CONFIG).eval()


def test_layout_matches_the_released_checkpoint(released_layout):
    # our module structure, spelled as the file, is exactly the reference-derived list
    assert expected_checkpoint_shapes(BASE_CONFIG) == released_layout["keys"]
    assert tuple(released_layout["optional_keys"]) == CLASSIFIER_KEYS
    keys = released_layout["keys"]
    assert keys["embeddings"] == [256, 768]
    assert keys["bbox_head.head_module.cls_contrasts.2.logit_scale"] == []
    assert keys["bbox_head.head_module.reg_preds.0.2.weight"] == [64, 64, 1, 1]
    assert keys["neck.Rep_n4.m.block.4.alpha"] == [1]
    assert keys["backbone.image_model.model.stages.2.26.gamma"] == [512]


def test_backbone_renaming_round_trip(base_model):
    for key in base_model.state_dict():
        assert checkpoint_key_to_model(model_key_to_checkpoint(key)) == key
    assert checkpoint_key_to_model(
        "backbone.image_model.model.stages.2.26.pwconv1.weight") == \
        "backbone.stages_2.blocks.26.mlp.fc1.weight"
    assert checkpoint_key_to_model(
        "backbone.image_model.model.downsample_layers.0.1.bias") == "backbone.stem_1.bias"
    assert checkpoint_key_to_model(
        "backbone.image_model.model.downsample_layers.3.0.weight") == \
        "backbone.stages_3.downsample.0.weight"
    # only the file's spelling is accepted for the backbone
    assert checkpoint_key_to_model("backbone.stem_0.weight") is None
    assert checkpoint_key_to_model("neck.Rep_p3.cv1.block.conv.weight") == \
        "neck.Rep_p3.cv1.block.conv.weight"


def test_strict_load_of_the_released_layout(base_model, base_state):
    load_checkpoint_state(base_model, base_state)
    sd = base_model.state_dict()
    p = "backbone.image_model.model."
    for ours, theirs in (("backbone.stem_0.weight", "downsample_layers.0.0.weight"),
                         ("backbone.stages_3.blocks.2.gamma", "stages.3.2.gamma")):
        torch.testing.assert_close(sd[ours], base_state[p + theirs])
    torch.testing.assert_close(sd["embeddings"], base_state["embeddings"])
    name = "bbox_head.head_module.reg_preds.1.1.bn.running_var"
    torch.testing.assert_close(sd[name], base_state[name])
    # the unused classifier is optional
    load_checkpoint_state(base_model, {k: v for k, v in base_state.items()
                                       if k not in CLASSIFIER_KEYS})


def _refused(model, state):
    with pytest.raises(StateDictMismatchError) as info:
        load_checkpoint_state(model, state, source="test.pth")
    assert isinstance(info.value, CheckpointError) and "test.pth" in str(info.value)
    return info.value


def test_missing_and_unexpected_keys_are_refused(base_model, base_state):
    gone = "neck.Rep_p4.m.conv1.alpha"
    extra = "neck.Rep_p4.m.conv1.beta"
    state = dict(base_state)
    del state[gone]
    err = _refused(base_model, state)
    assert err.missing == [gone] and err.unexpected == [] and "1 missing key(s)" in str(err)

    state = dict(base_state, **{extra: torch.ones(1)})
    err = _refused(base_model, state)
    assert err.unexpected == [extra] and err.missing == [] and extra in str(err)

    state = dict(base_state, **{extra: torch.ones(1)})
    del state[gone]
    err = _refused(base_model, state)
    assert (err.missing, err.unexpected) == ([gone], [extra])

    # the backbone under timm's names is not the file's spelling: refused both ways
    p = "backbone.image_model.model."
    state = dict(base_state)
    state["backbone.stem_0.weight"] = state.pop(p + "downsample_layers.0.0.weight")
    err = _refused(base_model, state)
    assert (err.missing, err.unexpected) == ([p + "downsample_layers.0.0.weight"],
                                             ["backbone.stem_0.weight"])


def test_shape_mismatches_are_refused(base_model, base_state):
    state = dict(base_state, embeddings=torch.zeros(512, 768))
    err = _refused(base_model, state)
    assert err.mismatched == [("embeddings", [512, 768], [256, 768])] and not err.missing
    state = dict(base_state)
    state[CLASSIFIER_KEYS[2]] = torch.zeros(1000, 512)          # head.weight [K, C4]
    assert _refused(base_model, state).mismatched[0][0] == CLASSIFIER_KEYS[2]
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_checkpoint_state(base_model, dict(base_state, embeddings=[1.0]))


def test_weights_files(tmp_path):
    tiny = write_tiny_wedetect(tmp_path / "tiny")
    state = read_state_dict(tiny / "model.safetensors")
    assert set(state) == set(expected_checkpoint_shapes(TINY_CONFIG, classifier_rows=10))
    # mmengine layout: {"meta": …, "state_dict": …} read with weights_only=True
    torch.save({"meta": {"epoch": 4, "mmengine_version": "0.10.4"}, "state_dict": state},
               tmp_path / "w.pth")
    again = read_state_dict(tmp_path / "w.pth")
    assert set(again) == set(state) and torch.equal(again["embeddings"], state["embeddings"])
    # pickled Python objects are not executed: weights_only refuses them
    torch.save({"state_dict": state, "hook": np.random.default_rng(0)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(tmp_path / "bad.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_state_dict(tmp_path / "junk.safetensors")
    torch.save({}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no state_dict"):
        read_state_dict(tmp_path / "empty.pth")


def test_full_size_end_to_end(tmp_path_factory, base_state):
    """The released architecture (random weights, ~108 M parameters) on CPU, once: a ~430 MB
    .pth written the way mmengine does, loaded with weights_only, run on a real photo."""
    from skimage import data

    path = tmp_path_factory.mktemp("wedetect_base") / "wedetect_base_uni.pth"
    torch.save({"meta": {"note": "random"}, "state_dict": base_state}, path)
    src = WeDetectProposals(path)
    assert src.config == BASE_CONFIG
    photo = data.coffee()[:399, :601]
    boxes, scores, prompts = src.detect(photo)
    h, w = photo.shape[:2]
    assert 0 < len(boxes) <= 100 and np.isfinite(boxes).all()
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all()
    assert (np.diff(scores) <= 0).all() and ((prompts >= 0) & (prompts < 256)).all()
