"""Property-based tests: arbitrary inputs raise only the documented errors, valid parts kept."""
import numpy as np
from hypothesis import given, settings, strategies as st

from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.parsing import extract_count, parse_answer
from vlxseek_core.prompts import TASKS, parts_to_text, task_parts
from vlxseek_core.proposals import validate_user_boxes

TAGS = ["<ground>", "</ground>", "<objects>", "</objects>", "<object>", "</object>",
        "<region0>", "<region1>", "<region7>", "<region99>", "<region123>", "<|im_end|>", " ",
        "\n", "cat", "red cup", "<", ">", "region", "3"]
markup = st.lists(st.sampled_from(TAGS), max_size=40).map("".join)
any_text = st.one_of(markup, st.text(max_size=200))


@settings(max_examples=300, deadline=None)
@given(text=any_text, num_regions=st.integers(0, 120))
def test_parser_never_raises_and_keeps_only_valid_indices(text, num_regions):
    parsed = parse_answer(text, num_regions)
    for g in parsed.groundings:
        assert all(0 <= i < num_regions for i in g.region_indices)
        assert g.region_indices == sorted(set(g.region_indices))
    assert all(i >= num_regions for i in parsed.dropped_indices)
    assert isinstance(extract_count(text), int)


@settings(max_examples=200, deadline=None)
@given(label=st.text(alphabet=st.characters(blacklist_characters="<>"), min_size=1,
                     max_size=20).filter(lambda s: s.strip()),
       indices=st.lists(st.integers(0, 150), min_size=1, max_size=10),
       num_regions=st.integers(1, 100), noise=markup)
def test_parser_keeps_valid_parts_of_well_formed_blocks(label, indices, num_regions, noise):
    block = (f"<ground>{label}</ground><objects>"
             + "".join(f"<region{i}>" for i in indices) + "</objects>")
    parsed = parse_answer(block + noise, num_regions)
    first = parsed.groundings[0]
    assert first.phrase == label.strip()
    assert set(first.region_indices) >= {i for i in indices if i < num_regions}


@settings(max_examples=300, deadline=None)
@given(task=st.one_of(st.sampled_from(list(TASKS) + ["", "bogus"]), st.text(max_size=10)),
       query=st.one_of(st.text(max_size=300), st.binary(max_size=50).map(
           lambda b: b.decode("utf-8", "replace"))),
       regions=st.lists(st.integers(0, 99), max_size=5))
def test_request_validator_raises_only_invalid_request(task, query, regions):
    try:
        parts = task_parts(task, query, regions)
    except InvalidRequestError:
        return
    text = parts_to_text(parts)
    assert isinstance(text, str) and text
    if (task or "detect") in ("refer", "count", "vqa", "reason"):
        assert query.strip() in text


finite = st.floats(-1e4, 1e4, allow_nan=False)
box_value = st.one_of(finite, st.sampled_from([float("nan"), float("inf"), -float("inf")]))


@settings(max_examples=300, deadline=None)
@given(boxes=st.lists(st.lists(box_value, min_size=4, max_size=4), max_size=130),
       h=st.integers(1, 2000), w=st.integers(1, 2000))
def test_user_box_validator_raises_only_invalid_request(boxes, h, w):
    try:
        proposals, warnings = validate_user_boxes(np.array(boxes, dtype=np.float64), (h, w))
    except InvalidRequestError:
        return
    assert 1 <= len(proposals) <= 100
    b = proposals.boxes
    assert np.isfinite(b).all()
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    if len(boxes) > 100:
        assert warnings
