"""Property-based tests of every public argument of ``query``, ``query_many`` and ``encode``:
junk of many types raises only InvalidRequestError / InvalidImageError, valid values work."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from validation_fixtures import SMALL_BOXES

from vlxseek_core.errors import InvalidImageError, InvalidRequestError
from vlxseek_core.frames import FrameEncoding
from vlxseek_core.prompts import TASKS
from vlxseek_core.types import Proposals, QueryResult

OURS = (InvalidRequestError, InvalidImageError)
JUNK = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
FAST = settings(JUNK, max_examples=40)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
    st.complex_numbers(allow_nan=True), st.text(max_size=8), st.binary(max_size=8),
    st.sampled_from([np.int64(1), np.float32(0.5), np.bool_(True), np.str_("x"), Ellipsis,
                     object(), float("nan"), -0.0]))
nested = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.tuples(inner, inner), st.tuples(inner, inner, inner, inner),
    st.dictionaries(st.text(max_size=3), inner, max_size=2), st.sets(st.integers(), max_size=3),
    st.frozensets(st.integers(), max_size=2)), max_leaves=12)
arrays = hnp.arrays(
    dtype=st.sampled_from([np.int8, np.uint8, np.int64, np.float16, np.float32, np.float64,
                           np.bool_, np.complex64, np.dtype("U3"), np.dtype(object)]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    elements=None)
tensors = st.builds(lambda a: torch.from_numpy(np.ascontiguousarray(a)), hnp.arrays(
    dtype=st.sampled_from([np.int64, np.float32, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4)))
junk = st.one_of(scalars, nested, arrays, tensors)
box_rows = st.lists(st.lists(st.one_of(st.floats(-50, 80), st.sampled_from(
    [float("nan"), float("inf"), 1e39])), min_size=4, max_size=4), min_size=0, max_size=6)
junk_boxes = st.one_of(junk, box_rows, box_rows.map(np.array))


def _proposals(rows):
    with np.errstate(over="ignore"):  # 1e39 overflows float32: the pipeline must refuse it
        return Proposals(np.array(rows, np.float64).reshape(-1, 4), np.ones(len(rows)))


junk_proposals = st.one_of(junk, st.builds(_proposals, box_rows))


def _ok_or_ours(call):
    try:
        return call()
    except OURS as exc:
        assert str(exc)
        return exc


def _query(pipe, image, **overrides):
    kwargs = dict(text="cat", task="detect", boxes=SMALL_BOXES, max_new_tokens=2)
    kwargs.update(overrides)
    return pipe.query(image, **kwargs)


@pytest.mark.parametrize("arg", ["text", "task", "boxes", "box_scores", "region_indices",
                                 "max_new_tokens", "reuse_frame", "proposals", "progress"])
@settings(JUNK)
@given(data=st.data())
def test_query_argument_junk(fast_pipeline, small_image, monkeypatch, arg, data):
    value = data.draw({"boxes": junk_boxes, "proposals": junk_proposals}.get(arg, junk))
    overrides = {arg: value}
    if arg == "proposals":
        overrides["boxes"] = None
    if arg == "region_indices":
        overrides["task"] = "caption"
    if arg == "max_new_tokens":  # a huge valid budget must not decode for minutes
        seen = []
        monkeypatch.setattr(fast_pipeline, "_generate",
                            lambda enc, parts, spec, res, timer, budget, progress=None:
                            seen.append(budget))
    out = _ok_or_ours(lambda: _query(fast_pipeline, small_image, **overrides))
    if isinstance(out, QueryResult) and arg == "max_new_tokens":
        assert seen and (seen[0] is None or 1 <= seen[0] <= fast_pipeline.max_new_tokens_limit)
    if isinstance(out, Exception) and arg != "proposals":
        assert arg.split("_")[0] in str(out) or "region" in str(out), str(out)


images = st.one_of(
    junk,
    hnp.arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
               shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=24)),
    st.builds(lambda mode, w, h: Image.new(mode, (w, h)),
              st.sampled_from(["1", "L", "P", "RGB", "RGBA", "CMYK", "I", "F", "LA", "HSV",
                               "I;16", "YCbCr"]), st.integers(0, 24), st.integers(0, 24)))


@settings(JUNK)
@given(image=images)
def test_image_junk(fast_pipeline, image):
    out = _ok_or_ours(lambda: _query(fast_pipeline, image, boxes=[[0, 0, 1, 1]]))
    assert isinstance(out, (QueryResult, InvalidRequestError, InvalidImageError))


specs = st.one_of(junk, st.lists(st.one_of(
    st.text(max_size=12), junk,
    st.tuples(st.one_of(st.text(max_size=12), junk),
              st.one_of(st.sampled_from(list(TASKS) + ["", "bogus"]), st.none(), junk)),
    st.lists(st.text(max_size=5), max_size=3)), max_size=4))


@settings(JUNK)
@given(queries=specs, task=st.one_of(st.sampled_from(list(TASKS)), junk))
def test_query_many_junk(fast_pipeline, small_image, queries, task):
    out = _ok_or_ours(lambda: fast_pipeline.query_many(small_image, queries, task=task,
                                                       boxes=SMALL_BOXES, max_new_tokens=1))
    if isinstance(out, list):
        assert len(out) == len(queries) and all(isinstance(r, QueryResult) for r in out)


@pytest.mark.parametrize("arg", ["image", "boxes", "box_scores", "reuse_frame", "proposals"])
@settings(JUNK)
@given(data=st.data())
def test_encode_argument_junk(fast_pipeline, small_image, arg, data):
    value = data.draw({"image": images, "boxes": junk_boxes,
                       "proposals": junk_proposals}.get(arg, junk))
    kwargs = dict(image=small_image, boxes=SMALL_BOXES)
    kwargs.update({arg: value})
    if arg == "proposals":
        kwargs["boxes"] = None
    out = _ok_or_ours(lambda: fast_pipeline.encode(**kwargs))
    assert isinstance(out, (FrameEncoding, InvalidRequestError, InvalidImageError))


# ----------------------------------------------------------------- valid values work

ints_below = st.integers(0, 2)
valid_indices = st.one_of(
    st.lists(ints_below, min_size=1, max_size=4), st.lists(ints_below, min_size=1).map(tuple),
    hnp.arrays(st.sampled_from([np.int8, np.uint8, np.int32, np.int64]),
               st.integers(1, 4), elements=ints_below),
    st.lists(ints_below.map(np.int64), min_size=1, max_size=3))


def _box(x, y, w, h):
    return [x, y, min(x + w, 40), min(y + h, 30)]


valid_boxes = st.lists(st.builds(_box, st.integers(0, 38), st.integers(0, 28),
                                 st.integers(1, 20), st.integers(1, 20)), min_size=1, max_size=5)


@settings(FAST)
@given(indices=valid_indices)
def test_valid_region_indices_work(fast_pipeline, small_image, indices):
    res = _query(fast_pipeline, small_image, task="caption", text="", region_indices=indices)
    assert res.prompt_text.count("<region") == len(indices)


@settings(FAST)
@given(boxes=valid_boxes, as_array=st.sampled_from([None, np.float32, np.int64, np.float64]),
       scored=st.booleans())
def test_valid_boxes_work(fast_pipeline, small_image, boxes, as_array, scored):
    given_boxes = boxes if as_array is None else np.array(boxes, as_array)
    scores = np.linspace(0.1, 1, len(boxes)) if scored else None
    res = _query(fast_pipeline, small_image, boxes=given_boxes, box_scores=scores)
    assert np.array_equal(res.proposals.boxes, np.array(boxes, np.float32))


@settings(FAST)
@given(text=st.text(min_size=1, max_size=60).filter(str.strip),
       task=st.sampled_from(sorted(TASKS)), budget=st.one_of(st.none(), st.integers(1, 3)),
       reuse=st.booleans())
def test_valid_text_task_budget_and_flag_work(fast_pipeline, small_image, text, task, budget,
                                              reuse):
    res = _query(fast_pipeline, small_image, text=text, task=task, max_new_tokens=budget,
                 reuse_frame=reuse)
    assert res.task == task and res.num_generated_tokens <= (budget or 4)


@settings(FAST)
@given(image=st.one_of(
    hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40),
                                   st.sampled_from([3, 4]))),
    hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)))))
def test_valid_images_work(fast_pipeline, image):
    h, w = image.shape[:2]
    res = _query(fast_pipeline, image, boxes=[[0, 0, w, h]], max_new_tokens=1)
    assert res.image_size == (h, w)


@settings(FAST)
@given(queries=st.lists(st.one_of(
    st.text(min_size=1, max_size=20).filter(str.strip),
    st.tuples(st.text(min_size=1, max_size=20).filter(str.strip),
              st.one_of(st.none(), st.sampled_from(sorted(TASKS))))), max_size=3))
def test_valid_query_many_specs_work(fast_pipeline, small_image, queries):
    out = fast_pipeline.query_many(small_image, queries, boxes=SMALL_BOXES, max_new_tokens=1)
    assert len(out) == len(queries)
    for spec, res in zip(queries, out):
        assert res.query == (spec if isinstance(spec, str) else spec[0])
