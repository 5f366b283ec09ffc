"""Constrained decoding keeps answers well-formed without deciding them (rejection, empty answer).

The grammar (``vlxseek_core.decoding``): ``<|im_end|>`` alone, or blocks
``<ground>label</ground><objects>(<regionK>+ | None)</objects>``, then (counting) text, then
``<|im_end|>``. :func:`scan` below is an independent token-level reading of it; the property tests
check that greedy decoding through the processor reproduces every well-formed answer the logits
ask for, and turns every other token sequence into a well-formed answer (within the budget).
"""
import functools
import random
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from vlxseek_core.answer_format import format_answer
from vlxseek_core.decoding import RegionAnswerLogitsProcessor
from vlxseek_core.parsing import parse_answer, read_count
from vlxseek_core.tokens import QWEN25_FIRST_SPECIAL_ID

VOCAB = 151936  # the logits' width in Qwen2.5-VL (padded beyond the tokenizer's 151771 ids)
FIRST_SPECIAL = QWEN25_FIRST_SPECIAL_ID


@functools.lru_cache(maxsize=None)
def real_tokenizer():
    from vlxseek_core.tokenizer import build_qwen25_vl_tokenizer

    return build_qwen25_vl_tokenizer()


class SplitRejectionTokenizer:
    """The real tokenizer, except that "None" tokenizes as two tokens ("N", "one")."""

    def __init__(self, tok):
        self.tok = tok
        self.none_ids = tok.convert_tokens_to_ids(["N", "one"])

    def convert_tokens_to_ids(self, tokens):
        return self.tok.convert_tokens_to_ids(tokens)

    def __call__(self, text, add_special_tokens=False):
        if text == "None":
            return {"input_ids": list(self.none_ids)}
        return self.tok(text, add_special_tokens=add_special_tokens)

    def decode(self, ids):
        return self.tok.decode(ids)


def tokenizer(split: bool):
    tok = real_tokenizer()
    return SplitRejectionTokenizer(tok) if split else tok


def ids_of(tok):
    conv = tok.convert_tokens_to_ids
    return SimpleNamespace(
        ground_open=conv("<ground>"), ground_close=conv("</ground>"),
        objects_open=conv("<objects>"), objects_close=conv("</objects>"),
        im_end=conv("<|im_end|>"), end_of_text=conv("<|endoftext|>"),
        think=conv("<think>"), region=[conv(f"<region{k}>") for k in range(100)],
        rejection=list(tok("None", add_special_tokens=False)["input_ids"]))


def scan(ids, c, num_regions, trailing, max_label):
    """``"complete"``, ``"prefix"`` (can still become complete) or ``"invalid"``."""
    def text(t):
        return 0 <= t < FIRST_SPECIAL

    regions = {tid: k for k, tid in enumerate(c.region[:num_regions])}
    i, n, blocks = 0, len(ids), 0
    while True:
        if i == n:
            return "prefix"
        if ids[i] == c.im_end:
            return "complete" if i == n - 1 else "invalid"
        if ids[i] != c.ground_open:
            if not (blocks and trailing and text(ids[i])):
                return "invalid"
            while i < n and text(ids[i]):
                i += 1
            if i == n:
                return "prefix"
            return "complete" if ids[i] == c.im_end and i == n - 1 else "invalid"
        i += 1
        start = i
        while i < n and text(ids[i]) and i - start < max_label:
            i += 1
        if i == n:
            return "prefix"
        if ids[i] != c.ground_close or i == start:
            return "invalid"
        i += 1
        if i == n:
            return "prefix"
        if ids[i] != c.objects_open:
            return "invalid"
        i += 1
        if i == n:
            return "prefix"
        if ids[i] in regions:
            used = set()
            while i < n and ids[i] in regions:
                if ids[i] in used:
                    return "invalid"
                used.add(ids[i])
                i += 1
        elif ids[i] == c.rejection[0]:
            for expected in c.rejection:
                if i == n:
                    return "prefix"
                if ids[i] != expected:
                    return "invalid"
                i += 1
        else:
            return "invalid"
        if i == n:
            return "prefix"
        if ids[i] != c.objects_close:
            return "invalid"
        i += 1
        blocks += 1


def greedy(proc, favoured, max_steps, im_end, rng):
    """Greedy decoding through ``proc`` with logits whose argmax is ``favoured(step)``."""
    ids = []
    for step in range(max_steps):
        scores = torch.randn(1, VOCAB, generator=rng)
        scores[0, FIRST_SPECIAL:] += 3.0  # specials are the runners-up
        scores[0, favoured(step)] = 100.0
        ids.append(int(proc(torch.tensor([ids], dtype=torch.long), scores).argmax()))
        if ids[-1] == im_end:
            break
    return ids


# ----------------------------------------------------------------------------- allowed sets

def allowed(proc, prefix):
    return set(torch.nonzero(proc.allowed_ids(prefix, VOCAB)).flatten().tolist())


def test_allowed_tokens_per_state():
    tok = real_tokenizer()
    c = ids_of(tok)
    none = c.rejection
    assert len(none) == 1
    proc = RegionAnswerLogitsProcessor(tok, 3, max_label_tokens=4)
    text = set(range(FIRST_SPECIAL))
    regions = set(c.region[:3])
    label = [c.ground_open, 1000]
    block = label + [c.ground_close, c.objects_open]
    assert allowed(proc, []) == {c.ground_open, c.im_end}  # the empty answer is allowed
    assert allowed(proc, [c.ground_open]) == text
    assert allowed(proc, label) == text | {c.ground_close}
    assert allowed(proc, [c.ground_open] + [7] * 4) == {c.ground_close}  # label cap
    assert allowed(proc, label + [c.ground_close]) == {c.objects_open}
    assert allowed(proc, block) == regions | {none[0]}  # found or absent: the model says
    assert allowed(proc, block + [c.region[1]]) == {c.region[0], c.region[2], c.objects_close}
    assert allowed(proc, block + c.region[:3]) == {c.objects_close}
    assert allowed(proc, block + none) == {c.objects_close}
    done = block + none + [c.objects_close]
    assert allowed(proc, done) == {c.ground_open, c.im_end}
    assert allowed(proc, done + [c.im_end]) == {c.im_end}
    count = RegionAnswerLogitsProcessor(tok, 3, trailing_text=True)
    assert allowed(count, done) == {c.ground_open, c.im_end} | text
    assert allowed(count, done + [15]) == text | {c.im_end}
    # no regions shown: rejection is the only way to fill <objects>
    assert allowed(RegionAnswerLogitsProcessor(tok, 0), block) == {none[0]}


def test_rejection_of_several_tokens_is_forced_to_its_end():
    tok = tokenizer(split=True)
    c = ids_of(tok)
    assert len(c.rejection) == 2
    proc = RegionAnswerLogitsProcessor(tok, 2)
    cup = list(tok("cup", add_special_tokens=False)["input_ids"])
    block = [c.ground_open, *cup, c.ground_close, c.objects_open]
    assert allowed(proc, block) == set(c.region[:2]) | {c.rejection[0]}
    assert allowed(proc, block + c.rejection[:1]) == {c.rejection[1]}
    assert allowed(proc, block + c.rejection) == {c.objects_close}
    # logits that want to stop right after "N" still get "None</objects><|im_end|>"
    wanted = block + c.rejection[:1] + [c.im_end]
    out = greedy(proc, lambda s: wanted[min(s, len(wanted) - 1)], 20, c.im_end,
                 torch.Generator().manual_seed(0))
    assert out == block + c.rejection + [c.objects_close, c.im_end]
    assert parse_answer(tok.decode(out), 2).rejected == ["cup"]


def test_logits_that_favour_rejection_give_rejection_and_empty_answers():
    tok = real_tokenizer()
    c = ids_of(tok)
    proc = RegionAnswerLogitsProcessor(tok, 4, max_new_tokens=64)
    gen = torch.Generator().manual_seed(1)
    # the model ends at once: the empty answer, not a forced <ground>
    assert greedy(proc, lambda s: c.im_end, 64, c.im_end, gen) == [c.im_end]
    knife = tok("knife", add_special_tokens=False)["input_ids"]
    wanted = [c.ground_open, *knife, c.ground_close, c.objects_open] + c.rejection + [
        c.objects_close, c.im_end]
    out = greedy(proc, lambda s: wanted[s], len(wanted), c.im_end, gen)
    assert out == wanted
    text = tok.decode(out)
    assert text == "<ground>knife</ground><objects>None</objects><|im_end|>"
    parsed = parse_answer(text, 4)
    assert parsed.rejected == ["knife"] and parsed.groundings == []


@pytest.mark.parametrize("split", [False, True])
def test_an_empty_objects_block_closes_with_none_when_the_budget_is_tight(split):
    tok = tokenizer(split)
    c = ids_of(tok)
    # text-loving logits: labels would run on; the budget closes them, and "None" is text
    for budget in range(1, 16):
        proc = RegionAnswerLogitsProcessor(tok, 0, max_new_tokens=budget)
        out = greedy(proc, lambda s: 1000 if s else c.ground_open, budget, c.im_end,
                     torch.Generator().manual_seed(2))
        assert out[-1] == c.im_end and len(out) <= budget
        assert scan(out, c, 0, False, 64) == "complete"
        shortest = 7 + len(c.rejection) - 1  # <ground> x </ground> <objects> None </objects> end
        assert (out == [c.im_end]) == (budget < shortest)


# ----------------------------------------------------------------------------- properties

def block_strategy(num_regions, max_label):
    label = st.lists(st.integers(0, FIRST_SPECIAL - 1), min_size=1, max_size=max_label)
    inner = st.just(None)
    if num_regions:
        regions = st.lists(st.integers(0, num_regions - 1), min_size=1,
                           max_size=min(num_regions, 6), unique=True)
        inner = st.one_of(inner, regions)
    return st.tuples(label, inner)


@st.composite
def well_formed_answers(draw):
    split = draw(st.booleans())
    num_regions = draw(st.integers(0, 100))
    max_label = draw(st.integers(1, 6))
    trailing = draw(st.booleans())
    blocks = draw(st.lists(block_strategy(num_regions, max_label), max_size=4))
    tail = draw(st.lists(st.integers(0, FIRST_SPECIAL - 1), max_size=4)) \
        if trailing and blocks else []
    return split, num_regions, max_label, trailing, blocks, tail


def answer_ids(c, blocks, tail):
    ids = []
    for label, inner in blocks:
        ids += [c.ground_open, *label, c.ground_close, c.objects_open]
        ids += c.rejection if inner is None else [c.region[k] for k in inner]
        ids.append(c.objects_close)
    return ids + list(tail) + [c.im_end]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=well_formed_answers(), extra_budget=st.one_of(st.none(), st.integers(0, 5)),
       seed=st.integers(0, 2**31 - 1))
def test_well_formed_answers_pass_unchanged(answer, extra_budget, seed):
    """Greedy decoding through the processor = plain greedy whenever plain greedy is
    well-formed (and fits the budget): found blocks, rejections, count text, empty answers."""
    split, num_regions, max_label, trailing, blocks, tail = answer
    tok = tokenizer(split)
    c = ids_of(tok)
    wanted = answer_ids(c, blocks, tail)
    assert scan(wanted, c, num_regions, trailing, max_label) == "complete"
    budget = None if extra_budget is None else len(wanted) + extra_budget
    proc = RegionAnswerLogitsProcessor(tok, num_regions, max_label_tokens=max_label,
                                       trailing_text=trailing, max_new_tokens=budget)
    out = greedy(proc, lambda s: wanted[s], len(wanted), c.im_end,
                 torch.Generator().manual_seed(seed))
    assert out == wanted


def pool_tokens(c, num_regions):
    return ([c.ground_open, c.ground_close, c.objects_open, c.objects_close, c.im_end,
             c.end_of_text, c.think, *c.rejection, 15, 1000, 45]
            + c.region[:min(num_regions + 3, 100)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split=st.booleans(), num_regions=st.integers(0, 100), max_label=st.integers(1, 6),
       trailing=st.booleans(), budget=st.one_of(st.none(), st.integers(1, 50)),
       seed=st.integers(0, 2**31 - 1), data=st.data())
def test_ill_formed_sequences_become_well_formed(split, num_regions, max_label, trailing,
                                                 budget, seed, data):
    """Whatever the logits favour (tag soup, regions that do not exist, <|endoftext|>, endless
    text), the output is well-formed, ends within the budget and parses cleanly."""
    tok = tokenizer(split)
    c = ids_of(tok)
    pool = pool_tokens(c, num_regions)
    wanted = data.draw(st.lists(st.sampled_from(pool), max_size=30))
    rng = random.Random(seed)
    proc = RegionAnswerLogitsProcessor(tok, num_regions, max_label_tokens=max_label,
                                       trailing_text=trailing, max_new_tokens=budget)
    steps = budget or 60
    out = greedy(proc, lambda s: wanted[s] if s < len(wanted) else rng.choice(pool), steps,
                 c.im_end, torch.Generator().manual_seed(seed))
    state = scan(out, c, num_regions, trailing, max_label)
    if budget is not None or out[-1] == c.im_end:
        assert out[-1] == c.im_end and state == "complete" and len(out) <= steps
    else:
        assert state == "prefix"
    if state == "complete":
        parsed = parse_answer(tok.decode(out), num_regions)
        assert parsed.malformed == [] and parsed.dropped_indices == []
        assert all(g.region_indices for g in parsed.groundings)
    if scan(wanted, c, num_regions, trailing, max_label) == "complete" and (
            budget is None or len(wanted) <= budget):
        assert out == wanted


words = st.text(alphabet="abcdefghij klmnopqrstuvwxyz", min_size=1, max_size=12).filter(
    lambda s: s.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_regions=st.integers(0, 20), data=st.data(),
       count=st.one_of(st.none(), st.integers(0, 50)))
def test_answer_format_strings_decode_and_parse_back(num_regions, data, count):
    """answer_format's documented strings pass the constraint unchanged and parse back."""
    inner = st.just(())
    if num_regions:
        regions = st.lists(st.integers(0, num_regions - 1), min_size=1, max_size=4,
                           unique=True)
        inner = st.one_of(inner, regions)
    blocks = data.draw(st.lists(st.tuples(words, inner), min_size=1, max_size=3))
    tok = real_tokenizer()
    c = ids_of(tok)
    text = format_answer(blocks, count)
    wanted = list(tok(text, add_special_tokens=False)["input_ids"]) + [c.im_end]
    proc = RegionAnswerLogitsProcessor(tok, num_regions, trailing_text=count is not None)
    out = greedy(proc, lambda s: wanted[s], len(wanted), c.im_end,
                 torch.Generator().manual_seed(3))
    assert out == wanted
    parsed = parse_answer(tok.decode(out[:-1]), num_regions)
    found = {label.strip() for label, idx in blocks if idx}
    absent = [label.strip() for label, idx in blocks if not idx]
    assert parsed.rejected == [p for p in dict.fromkeys(absent) if p not in found]
    assert {g.phrase for g in parsed.groundings} == found
    assert read_count(text) == count
