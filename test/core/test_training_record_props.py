"""Property: a training record with any JSON values in any of its fields is either accepted or
refused with the project's error by both record checks (``TrainingRecord.from_json``, the
converters' and writers' check, and ``samples.check_record``, what ``vlxseek train`` runs on
every line before its first step); never a TypeError or KeyError from inside."""
from hypothesis import given, settings, strategies as st
from training_fixtures import TASK_EXAMPLES, make_record

from vlxseek_core.errors import InvalidRequestError, VLXSeekError
from vlxseek_core.prompts import task_parts
from vlxseek_core.training.records import TrainingRecord
from vlxseek_core.training.samples import check_record
from vlxseek_core.training.text_regions import (check_text_region_record,
                                                make_text_region_records)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(["<region0>", "<region99>", "<ground>", "None", "detect", "<image>\n"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["from", "value", "id", "x"]) | st.text(max_size=4), inner, max_size=4),
    max_leaves=12)
FIELDS = ["id", "image", "task", "query", "region_indices", "bbox_list", "conversations",
          "score_list", "meta", "text_regions"]


@settings(max_examples=400, deadline=None)
@given(task=st.sampled_from(sorted(TASK_EXAMPLES)),
       changes=st.dictionaries(st.sampled_from(FIELDS), JSON, min_size=1, max_size=3),
       dropped=st.lists(st.sampled_from(FIELDS), max_size=2))
def test_any_field_values_give_a_record_or_the_projects_error(task, changes, dropped):
    record = dict(make_record(task), **changes)
    for key in dropped:
        record.pop(key, None)
    for check in (TrainingRecord.from_json, check_record):
        try:
            check(record)
        except VLXSeekError:
            pass


def test_the_unchanged_records_pass_both_checks():
    for task in TASK_EXAMPLES:
        record = make_record(task)
        check_record(record)
        assert TrainingRecord.from_json(record).task == task


TEXT_RECORDS = make_text_region_records(8, 0, tasks=["detect", "refer", "caption", "detect_all"])


@settings(max_examples=300, deadline=None)
@given(base=st.sampled_from(TEXT_RECORDS),
       changes=st.dictionaries(st.sampled_from(FIELDS), JSON, min_size=1, max_size=3))
def test_text_region_records_with_any_field_values(base, changes):
    record = dict(base, **changes)
    for check in (check_record, check_text_region_record):
        try:
            check(record)
        except VLXSeekError:
            pass


@settings(max_examples=300, deadline=None)
@given(task=JSON | st.sampled_from(sorted(TASK_EXAMPLES)), query=JSON | st.just("cat"),
       regions=JSON)
def test_task_parts_of_any_values_give_parts_or_the_projects_error(task, query, regions):
    try:
        task_parts(task, query, regions)
    except InvalidRequestError:
        pass


def test_task_parts_region_indices():
    import numpy as np

    parts = task_parts("caption", "", np.array([3], dtype=np.int64))
    assert parts[1].text == "<region3>"
    for bad in ([1.0], [True], ["1"], "12", [100], [-1], 5):
        try:
            task_parts("caption", "", bad)
        except InvalidRequestError as exc:
            assert "region indices must be integers in [0, 100)" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
