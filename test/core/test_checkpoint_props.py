"""Property-based tests of the checkpoint loader: mutated ``config.json`` values and shard
indexes give a CheckpointError or load cleanly (and then answer), never another exception."""
import os
import shutil
import tempfile

import pytest
import torch
from checkpoint_fixtures import fresh_copy, read_json, write_json
from hypothesis import HealthCheck, given, settings, strategies as st
from validation_fixtures import SMALL_BOXES

from vlxseek_core.checkpoint import INDEX_NAME, load_model, safetensors_files
from vlxseek_core.errors import CheckpointError
from vlxseek_core.types import QueryResult

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)


def _paths(node, prefix=()):
    """Every key path of a JSON object (objects only, not list items)."""
    for key, value in node.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from _paths(value, prefix + (key,))


def _nearby(value):
    """Values close to a valid one: off by one, zero, negative, other JSON types."""
    out = [None, True, False, 0, -1, "x", [], {}, str(value), [value]]
    if isinstance(value, bool):
        out += [not value, int(value), str(value).lower()]
    elif isinstance(value, (int, float)):
        out += [value + 1, value - 1, value * 2, -value, float(value) + 0.5, value // 2 or 1,
                10**9]
    elif isinstance(value, list) and value:
        bumped = [v + 1 if isinstance(v, int) else v for v in value]
        out += [value[:-1], value + value[-1:], bumped, [str(v) for v in value]]
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mutants"))


def _checkpoint(module_checkpoint, scratch):
    return fresh_copy(module_checkpoint, tempfile.mkdtemp(dir=scratch) + "/ckpt")


def _answers(model, tiny_pipeline, image):
    """A cleanly loaded model must also answer (a config that loads, then fails every query,
    is the bug this guards against)."""
    from vlxseek_core.pipeline import VLXSeek
    from vlxseek_core.preprocessing import ImagePreprocessor

    pre = ImagePreprocessor(tiny_pipeline.preprocessor.qwen, model.config.aux_image_aspect_ratio)
    pipe = VLXSeek(model, tiny_pipeline.tokenizer, pre, max_new_tokens=1)
    image = image if model.config.aux_image_aspect_ratio != "squash" else image[:28, :28]
    res = pipe.query(image, "cat", boxes=SMALL_BOXES[:1], reuse_frame=False)
    assert isinstance(res, QueryResult)


@SETTINGS
@given(data=st.data())
def test_mutated_config_loads_cleanly_or_raises_checkpoint_error(
        module_checkpoint, scratch, tiny_pipeline, one_thread, small_image, data):
    config = read_json(os.path.join(module_checkpoint, "config.json"))
    paths = sorted(_paths(config))
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        path = data.draw(st.sampled_from(paths), label="key")
        node = config
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or path[-1] not in node:
            continue
        how = data.draw(st.sampled_from(["nearby", "junk", "delete"]), label="how")
        if how == "delete":
            del node[path[-1]]
        else:
            node[path[-1]] = data.draw(st.sampled_from(_nearby(node[path[-1]]))
                                       if how == "nearby" else json_values, label="value")
    ckpt = _checkpoint(module_checkpoint, scratch)
    write_json(os.path.join(ckpt, "config.json"), config)
    try:
        model, report = load_model(ckpt)
    except CheckpointError as exc:
        assert str(exc)
        return
    finally:
        shutil.rmtree(os.path.dirname(ckpt), ignore_errors=True)
    assert report.clean
    with torch.inference_mode():
        _answers(model, tiny_pipeline, small_image)


SHARD = "model-00001-of-00001.safetensors"
tricky_names = st.sampled_from([
    SHARD, "model.safetensors", "../" + SHARD, "/tmp/" + SHARD, "sub/../" + SHARD,
    "./" + SHARD, "missing.safetensors", "link-out.safetensors", "link-in.safetensors",
    "dir.safetensors", "", ".", "..", "model.bin", SHARD + "\x00", "a\\..\\" + SHARD])
weight_maps = st.one_of(json_values, st.dictionaries(
    st.text(max_size=10), st.one_of(tricky_names, json_values), max_size=4))
index_values = st.one_of(json_values, st.fixed_dictionaries(
    {"weight_map": weight_maps}, optional={"metadata": json_values}))


@pytest.fixture(scope="module")
def sharded(module_checkpoint, tmp_path_factory, tiny_model_dir):
    """A checkpoint stored as one indexed shard, with links pointing in and out."""
    from safetensors import safe_open

    ckpt = fresh_copy(module_checkpoint, str(tmp_path_factory.mktemp("sharded") / "ckpt"))
    os.rename(os.path.join(ckpt, "model.safetensors"), os.path.join(ckpt, SHARD))
    os.symlink(os.path.join(tiny_model_dir, "model.safetensors"),
               os.path.join(ckpt, "link-out.safetensors"))
    os.symlink(SHARD, os.path.join(ckpt, "link-in.safetensors"))
    os.makedirs(os.path.join(ckpt, "dir.safetensors"))
    with safe_open(os.path.join(ckpt, SHARD), "pt") as fh:
        keys = list(fh.keys())
    return ckpt, keys


@SETTINGS
@given(index=index_values, valid_map=st.booleans(), name=tricky_names)
def test_mutated_index_loads_cleanly_or_raises_checkpoint_error(
        sharded, monkeypatch, index, valid_map, name):
    import safetensors

    ckpt, keys = sharded
    if valid_map:  # a complete map to one (possibly tricky) shard name
        index = {"metadata": {}, "weight_map": {k: name for k in keys}}
    write_json(os.path.join(ckpt, INDEX_NAME), index)
    root = os.path.realpath(ckpt)
    opened = []
    real_open = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open",
                        lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    try:
        files = safetensors_files(ckpt)
        _, report = load_model(ckpt)
    except CheckpointError as exc:
        assert INDEX_NAME in str(exc) or "does not match" in str(exc) or "cannot read" in str(exc)
        files = []
    for path in files + opened:
        assert os.path.commonpath([root, os.path.realpath(path)]) == root, path
    outside = os.path.realpath(os.path.join(ckpt, "link-out.safetensors"))
    assert all(os.path.realpath(p) != outside for p in opened)
