"""Parsing rejection answers (``<objects>None</objects>``) and the linear-time block scanner."""
import re
import time

import pytest
from hypothesis import given, settings, strategies as st

from vlxseek_core.answer_format import format_answer
from vlxseek_core.parsing import (_grounded_blocks, extract_count, extract_reasoning,
                                  parse_answer, read_count)
from vlxseek_core.types import Grounding


def test_rejection_block_is_a_rejected_phrase_without_grounding():
    parsed = parse_answer("<ground>knife</ground><objects>None</objects>", 5)
    assert parsed.rejected == ["knife"]
    assert parsed.groundings == [] and parsed.region_indices == []
    assert parsed.malformed == [] and parsed.dropped_indices == [] and parsed.warnings() == []


def test_rejection_tolerates_whitespace_and_the_object_spelling():
    text = ("<ground> knife </ground>\n<objects> None\n</objects>"
            "<ground>fork</ground> <object>None</object>")
    assert parse_answer(text, 5).rejected == ["knife", "fork"]


def test_rejections_mixed_with_found_blocks_keep_answer_order():
    text = ("<ground>knife</ground><objects>None</objects>"
            "<ground>cup</ground><objects><region2><region0></objects>"
            "<ground>spoon</ground><objects>None</objects>"
            "<ground>knife</ground><objects>None</objects>")
    parsed = parse_answer(text, 3)
    assert parsed.groundings == [Grounding("cup", [0, 2])]
    assert parsed.rejected == ["knife", "spoon"]


def test_valid_regions_elsewhere_win_over_a_rejection():
    text = ("<ground>cup</ground><objects>None</objects>"
            "<ground>cup</ground><objects><region1></objects>")
    parsed = parse_answer(text, 3)
    assert parsed.groundings == [Grounding("cup", [1])] and parsed.rejected == []
    # regions that do not exist are no finding: the phrase stays rejected, the index dropped
    text = ("<ground>cup</ground><objects><region7></objects>"
            "<ground>cup</ground><objects>None</objects>")
    parsed = parse_answer(text, 3)
    assert parsed.groundings == [] and parsed.rejected == ["cup"]
    assert parsed.dropped_indices == [7]


def test_none_next_to_regions_or_other_text_is_not_a_rejection():
    parsed = parse_answer("<ground>cup</ground><objects>None<region1></objects>", 3)
    assert parsed.groundings == [Grounding("cup", [1])] and parsed.rejected == []
    parsed = parse_answer("<ground>cup</ground><objects>none</objects>", 3)
    assert parsed.groundings == [Grounding("cup", [])] and parsed.rejected == []


def test_rejection_answers_do_not_turn_stray_regions_into_bare_references():
    parsed = parse_answer("<ground>cup</ground><objects>None</objects> see <region1>", 3)
    assert parsed.groundings == [] and parsed.rejected == ["cup"]


def test_count_after_a_rejection_and_answers_without_a_number():
    text = format_answer([("knife", [])], count=0)
    assert text == "<ground>knife</ground><objects>None</objects>0"
    assert read_count(text) == 0 and extract_count(text) == 0
    assert read_count("<ground>knife</ground><objects>None</objects>") is None
    assert extract_count("<ground>knife</ground><objects>None</objects>") == 0
    assert read_count("<ground>cat</ground><objects><region12></objects>3 cats") == 3


def test_huge_numbers_never_raise():
    digits = "9" * 5000  # int() refuses more than 4300 digits
    parsed = parse_answer(f"<ground>a</ground><objects><region{digits}></objects>", 5)
    assert parsed.groundings == [Grounding("a", [])] and parsed.dropped_indices[0] >= 10**4000
    assert parse_answer(f"<region{digits}>", 5).dropped_indices[0] >= 10**4000
    assert parsed.warnings()  # the dropped index prints
    assert read_count(digits) >= 10**4000 and read_count("0" * 5000 + "7") == 7


def test_parsing_is_linear_time_on_unclosed_blocks():
    # the former regex took ~13 s for 8000 repetitions (quadratic); now milliseconds
    for unit in ("<ground>a</ground><objects>", "<ground>a</ground>", "<think>",
                 "<ground>a</ground><objects>None"):
        text = unit * 40000
        start = time.perf_counter()
        parse_answer(text, 5)
        extract_reasoning(text)
        assert time.perf_counter() - start < 3.0, unit


_REFERENCE = re.compile(  # the former parser's regex, quadratic on unclosed blocks
    r"<ground>((?:(?!</?ground>).)*?)</ground>\s*<(objects?)>(.*?)</\2>", re.DOTALL)
TAGS = ["<ground>", "</ground>", "<objects>", "</objects>", "<object>", "</object>", " ",
        "\n", "\u2003", "a", "None", "<region1>", "<", ">", "s>", "</", "<ground", "<think>",
        "</think>", "<answer>", "</answer>"]


@settings(max_examples=1000, deadline=None)
@given(text=st.lists(st.sampled_from(TAGS), max_size=30).map("".join))
def test_block_scanner_finds_what_the_reference_regex_finds(text):
    expected = [(m.start(), m.end(), m.group(1), m.group(3)) for m in _REFERENCE.finditer(text)]
    assert list(_grounded_blocks(text)) == expected
    think = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    answer = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    assert extract_reasoning(text) == (think.group(1).strip() if think else None,
                                       answer.group(1).strip() if answer else None)


def test_only_ascii_digits_are_region_indices_or_counts():
    from vlxseek_core.parsing import extract_count, parse_answer

    arabic_three = "\u0663"
    parsed = parse_answer(f"<ground>cat</ground><objects><region{arabic_three}>"
                          "<region1></objects>", 5)
    assert [g.region_indices for g in parsed.groundings] == [[1]]
    assert parse_answer(f"<region{arabic_three}>", 5).groundings == []
    assert extract_count(f"there are {arabic_three} cats") == 0
    assert extract_count("there are 3 cats") == 3


@pytest.mark.parametrize("label", ["the <region1>", "cup<ground>", "a </objects> b", "<think>",
                                   "<|im_end|>", "<tool_call>", "<regionfeat>", "<image>",
                                   "<region1> and <region2>"])
def test_labels_holding_markup_are_refused(label):
    """A training answer is tokenized with its markup as special tokens: a label holding markup
    would teach a region choice or a turn's end inside the label. Only a visual prompt's label,
    region tokens alone, is markup by design."""
    with pytest.raises(ValueError, match="plain text, not markup"):
        format_answer([(label, [0])])
    assert format_answer([("a < b", [0])]) == "<ground>a < b</ground><objects><region0></objects>"
    assert format_answer([("<region1><region4>", [0])]) == (
        "<ground><region1><region4></ground><objects><region0></objects>")
