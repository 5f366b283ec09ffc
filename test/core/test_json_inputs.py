"""JSON files that the json module cannot hold: nesting deeper than Python's recursion limit
(``json`` raises RecursionError, not JSONDecodeError) and bytes that are not UTF-8. Every
reader of user files answers with the project's error naming the file, never a traceback."""
import shutil

import pytest

from vlxseek_core.errors import CheckpointError, InvalidRequestError, VLXSeekError
from vlxseek_core.evaluation.coco import load_coco
from vlxseek_core.evaluation.common import load_records
from vlxseek_core.training.converters import (coco_to_records, llava_to_records, load_proposals,
                                              refcoco_to_records)
from vlxseek_core.training.records import TrainingRecord
from vlxseek_core.training.run import read_records

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("json_inputs")
    (d / "deep.jsonl").write_text(DEEP + "\n")
    (d / "deep.json").write_text(DEEP)
    (d / "binary.json").write_bytes(bytes(range(128, 256)) * 8)
    return {"deep_jsonl": str(d / "deep.jsonl"), "deep_json": str(d / "deep.json"),
            "binary": str(d / "binary.json")}


READERS = {
    "read_records": (lambda p: read_records([p], ["."]), InvalidRequestError),
    "coco_to_records": (coco_to_records, InvalidRequestError),
    "refcoco_to_records": (refcoco_to_records, InvalidRequestError),
    "llava_to_records": (llava_to_records, InvalidRequestError),
    "load_proposals": (load_proposals, InvalidRequestError),
    "eval load_records": (load_records, VLXSeekError),
    "eval load_coco": (load_coco, VLXSeekError),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("kind", ["deep_jsonl", "deep_json", "binary"])
def test_every_reader_refuses_with_its_error_naming_the_file(bad_files, reader, kind):
    read, error = READERS[reader]
    with pytest.raises(error) as caught:
        read(bad_files[kind])
    assert "json_inputs" in str(caught.value)  # the file's folder: the path is named
    assert not isinstance(caught.value, RecursionError)


def test_a_record_string_nested_too_deep():
    with pytest.raises(InvalidRequestError, match="invalid JSON record"):
        TrainingRecord.from_json(DEEP)


@pytest.mark.parametrize("name", ["tokenizer_config.json", "model.safetensors.index.json"])
def test_inspect_reports_a_deep_checkpoint_file_as_a_failure(tiny_model_dir, tmp_path, name):
    from vlxseek_core.inspect_checkpoint import inspect_checkpoint

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, folder)
    (folder / name).write_text(DEEP)
    report = inspect_checkpoint(str(folder))
    failures = [line for line in report.format().splitlines() if "FAIL" in line]
    assert any(name in line and "RecursionError" in line for line in failures), failures


def test_inspect_reports_a_tokenizer_config_that_is_not_an_object(tiny_model_dir, tmp_path):
    from vlxseek_core.inspect_checkpoint import inspect_checkpoint

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "tokenizer_config.json").write_text("[1, 2]")
    report = inspect_checkpoint(str(folder))
    assert any("tokenizer_config.json: not a JSON object" in line
               for line in report.format().splitlines())


def test_checkpoint_config_nested_too_deep(tiny_model_dir, tmp_path):
    from vlxseek_core.checkpoint import load_model

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").write_text(DEEP)
    with pytest.raises(CheckpointError, match="config.json: RecursionError"):
        load_model(str(folder))
