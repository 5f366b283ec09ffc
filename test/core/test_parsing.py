"""Answer parsing (spec §4.4, §5.2)."""
import pytest

from vlxseek_core.parsing import (extract_count, extract_reasoning, first_region_index,
                                  grounded_blocks, parse_answer, strip_end_tokens)


def as_pairs(parsed):
    return [(g.phrase, g.region_indices) for g in parsed.groundings]


def test_well_formed_multiple_phrases():
    text = ("<ground>orange</ground><objects><region0><region2></objects>"
            "<ground>apple</ground><objects><region1></objects>")
    parsed = parse_answer(text, 3)
    assert as_pairs(parsed) == [("orange", [0, 2]), ("apple", [1])]
    assert parsed.dropped_indices == [] and parsed.warnings() == []
    assert parsed.region_indices == [0, 2, 1]


def test_paper_spelling_whitespace_and_newlines():
    text = "<ground> red cup </ground>\n  <object><region4>\n<region1></object><|im_end|>"
    assert as_pairs(parse_answer(text, 5)) == [("red cup", [1, 4])]


def test_out_of_range_indices_are_dropped_and_reported():
    parsed = parse_answer("<ground>dog</ground><objects><region1><region7></objects>", 3)
    assert as_pairs(parsed) == [("dog", [1])]
    assert parsed.dropped_indices == [7]
    assert "[7]" in parsed.warnings()[0]


def test_phrase_with_only_invalid_indices_keeps_empty_list():
    parsed = parse_answer("<ground>cat</ground><objects><region9></objects>", 2)
    assert as_pairs(parsed) == [("cat", [])]


def test_duplicates_and_repeated_labels_are_unioned():
    text = ("<ground>car</ground><objects><region3><region3><region1></objects>"
            "<ground>car</ground><objects><region0><region3></objects>")
    assert as_pairs(parse_answer(text, 4)) == [("car", [0, 1, 3])]


def test_bare_region_references():
    parsed = parse_answer("The answer is <region2> and <region0>, not <region5>.", 3)
    assert as_pairs(parsed) == [("<region2>", [2]), ("<region0>", [0])]
    assert parsed.dropped_indices == [5]


@pytest.mark.parametrize("text", [
    "<ground>cup</ground><objects><region1>",          # unclosed objects
    "<ground>cup<objects><region1></objects>",         # unclosed ground
    "<ground>cup</ground><objects><region1></object>",  # mismatched closing tag
])
def test_malformed_markup_is_reported_not_raised(text):
    parsed = parse_answer(text, 3)
    assert parsed.malformed
    assert any("unparsed markup" in w for w in parsed.warnings())
    # The bare reference is still recovered.
    assert parsed.region_indices == [1]


def test_empty_and_plain_text():
    assert parse_answer("", 3).groundings == []
    assert parse_answer("There is nothing here.", 3).groundings == []
    with pytest.raises(TypeError):
        parse_answer(None, 3)


def test_count_extraction_matches_reference_rule():
    assert extract_count("<ground>cat</ground><objects><region1><region12></objects>There "
                         "are 2 cats.") == 2
    assert extract_count("<region10><region11> no number") == 0
    assert extract_count("7 apples and 3 pears") == 7


def test_reasoning_split_and_helpers():
    think, answer = extract_reasoning("<think>look at <region1></think><answer>yes</answer>")
    assert (think, answer) == ("look at <region1>", "yes")
    assert extract_reasoning("plain") == (None, None)
    assert strip_end_tokens(" a <|im_end|>") == "a"
    assert first_region_index(parse_answer("<region4><region2>", 5)) == 4
    assert first_region_index(parse_answer("none", 5)) is None


@pytest.mark.parametrize("text", [
    "<ground>a</ground>\n<ground>b</ground><objects><region2></objects>",
    "<ground>a</ground><ground>b</ground><objects><region2></objects>",
])
def test_a_label_never_spans_another_ground_tag(text):
    parsed = parse_answer(text, 3)
    assert [(g.phrase, g.region_indices) for g in parsed.groundings] == [("b", [2])]
    assert parsed.malformed == ["<ground>"]  # the unfinished "a" block is reported


def test_first_region_index_is_the_first_referred_in_answer_order():
    text = ("<ground>the cup</ground><objects><region9><region3><region1></objects>"
            "<ground>the cup</ground><objects><region0></objects>")
    parsed = parse_answer(text, 5)
    assert as_pairs(parsed) == [("the cup", [0, 1, 3])]  # groundings stay sorted
    assert parsed.mentioned_indices == [3, 1, 0]  # region9 is out of range: dropped
    assert parsed.dropped_indices == [9]
    assert first_region_index(parsed) == 3
    assert first_region_index(parse_answer("<ground>a</ground><objects>None</objects>", 5)) \
        is None


def test_grounded_blocks_are_the_blocks_parse_answer_reads():
    text = ("<ground> red cup </ground>\n<object><region4></object>"
            "<ground>a</ground><ground>b</ground><objects><region1></objects> <region2>")
    assert grounded_blocks(text) == [(" red cup ", "<region4>"), ("b", "<region1>")]
    assert grounded_blocks("no markup <region1>") == []
