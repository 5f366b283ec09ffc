"""``vlxseek query``, ``inspect`` and ``eval`` on VLX-Seek 1.5 checkpoints (issue 12 item 1,
point 3): the same commands as for VLM-FO1, the family chosen by ``config.json``."""
import json
import os
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vlxseek_core.cli import main
from vlxseek_core.evaluation import EvalError, build_protocol, run_eval
from vlxseek_core.families import family_for_model_type
from vlxseek_core.inspect_checkpoint import FAIL, OK, SKIP, inspect_checkpoint

SPEC_KEYS = (Path(__file__).resolve().parents[2].parent / "shared" / "spec"
             / "vlx-seek-1.5-10b-keys.json")
COUNT_QUESTION = ("How many {} are there in the image? Count each instance of the target "
                  "object. Locate them with object indexes and then answer the question with "
                  "the number of objects.")
BOXES = [[170, 30, 320, 200], [370, 0, 512, 140], [0, 0, 512, 512]]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image
    from skimage import data

    directory = tmp_path_factory.mktemp("photo15")
    Image.fromarray(data.astronaut()).save(directory / "astronaut.png")
    return str(directory)


def test_query_prints_caller_indices(tiny15_dir, photo, capsys):
    code = main(["query", "--model", tiny15_dir, "--image", f"{photo}/astronaut.png",
                 "--query", "person; flag", "--boxes", json.dumps(BOXES), "--device", "cpu",
                 "--proposal-source", "none", "--max-new-tokens", "16", "--compact"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt_text"] == "Detect all the instances of: person; flag."
    assert out["proposals"]["boxes_xyxy"] == BOXES
    for det in out["detections"]:
        assert det["box_xyxy"] == BOXES[det["region_index"]]
    code = main(["query", "--model", tiny15_dir, "--image", f"{photo}/astronaut.png",
                 "--task", "ground", "--boxes", json.dumps(BOXES), "--device", "cpu",
                 "--proposal-source", "none"])
    assert code == 2
    assert "not supported by the VLX-Seek 1.5 family" in capsys.readouterr().err


def test_inspect_tiny_checkpoint(tiny15_dir, capsys):
    report = inspect_checkpoint(tiny15_dir)
    assert report.ok, report.format()
    facts = report.facts
    assert facts["model_type"] == "vlx_seek_1_5" and facts["mm_bbox_order_mode"] == "none"
    assert facts["token_ids"]["<objfeat>"] == 248181 and facts["num_object_tokens"] == 100
    assert main(["inspect", tiny15_dir]) == 0
    text = capsys.readouterr().out
    for line in ("[weights]", "all 189 tensor names and shapes match the model built from "
                 "config.json", "<|image_pad|> = 248056", "RESULT: OK"):
        assert line in text
    if SPEC_KEYS.is_file():
        assert main(["inspect", tiny15_dir, "--spec", str(SPEC_KEYS), "--json"]) == 0
        spec = [c for c in json.loads(capsys.readouterr().out)["checks"]
                if c["section"] == "spec"]
        assert [c["status"] for c in spec] == [SKIP]
        assert "not the 10B ones" in spec[0]["message"]


def test_inspect_finds_missing_config_keys_and_bad_ids(tiny15_dir, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(tiny15_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["mm_object_hidden_size"], config["mm_bbox_order_mode"]
    (folder / "config.json").write_text(json.dumps(config))
    report = inspect_checkpoint(str(folder))
    failed = [c.message for c in report.checks if c.status == FAIL]
    assert "mm_object_hidden_size missing (required, spec vlx-seek-1.5 §1.3)" in failed
    assert any("mm_bbox_order_mode missing: the reference default 'none'" in c.message
               for c in report.checks)


def _sparse_10b(directory: Path, tiny15_dir: str, drop=()):
    """A header-only (sparse) checkpoint with the 10B config and the spec file's keys."""
    from vlxseek_core.families.vlx_seek_1_5.config import (VLX_SEEK_15_10B_CONFIG,
                                                           VLXSeek15Config)

    directory.mkdir()
    VLXSeek15Config(**VLX_SEEK_15_10B_CONFIG).save_pretrained(str(directory))
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
                 "generation_config.json"):
        shutil.copy(os.path.join(tiny15_dir, name), directory)
    header, offset = {}, 0
    for key, shape in json.loads(SPEC_KEYS.read_text())["keys"].items():
        if key in drop:
            continue
        dtype, size = ("I64", 8) if key.endswith("summary_idxs") else ("BF16", 2)
        nbytes = size * int(np.prod(shape, dtype=np.int64))
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(directory / "model.safetensors", "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.truncate(8 + len(blob) + offset)
    return str(directory)


def test_inspect_10b_keys_against_the_spec_file(tiny15_dir, tmp_path):
    if not SPEC_KEYS.is_file():
        pytest.skip(f"spec file {SPEC_KEYS} not present")
    good = _sparse_10b(tmp_path / "good", tiny15_dir)
    report = inspect_checkpoint(good, str(SPEC_KEYS))
    assert report.ok, report.format()
    spec = [c for c in report.checks if c.section == "spec"]
    assert [c.status for c in spec] == [OK, OK]
    assert "all 1090 tensor names" in spec[0].message and "all 46" in spec[1].message
    assert report.facts["num_parameters"] == 10_018_033_512
    bad = _sparse_10b(tmp_path / "bad", tiny15_dir, drop=("model.mm_projector_aux.0.bias",))
    report = inspect_checkpoint(bad, str(SPEC_KEYS))
    assert not report.ok
    failed = {c.section: c.details for c in report.checks if c.status == FAIL}
    assert failed["weights"] == failed["spec"] == ["model.mm_projector_aux.0.bias"]


# ----------------------------------------------------------------------------- eval


class Scripted15:
    """A VLX-Seek 1.5 stand-in for ``run_eval``: answers ``<objK>`` markup by task."""

    def __init__(self, answers):
        self.family = family_for_model_type("vlx_seek_1_5")
        self.tasks = self.family.tasks
        self.answers = answers
        self.calls = []
        self.proposal_source = None

    def query(self, image, text, task="detect", boxes=None, box_scores=None,
              max_new_tokens=None):
        from vlxseek_core.types import Proposals

        self.calls.append((text, task))
        return SimpleNamespace(answer=self.answers[task], warnings=[],
                               proposals=Proposals(np.float32(boxes), np.float32(box_scores)))


def _write(path, records):
    Path(path).write_text(json.dumps(records))
    return str(path)


def test_counting_and_refcoco_use_the_templates(photo, tmp_path):
    pipe = Scripted15({"count": "<ground>people</ground><objects><obj1><obj0></objects>2",
                       "refer": "<ground>the man</ground><objects><obj1></objects>"})
    count = _write(tmp_path / "count.json", [
        {"question": COUNT_QUESTION.format("people"), "answer": 2, "image": "astronaut.png",
         "bboxes": BOXES[:2]},
        {"question": "Count the people.", "category": "persons", "answer": 1,
         "image": "astronaut.png", "bboxes": BOXES[:2]},
        {"question": "Count the people.", "answer": 1, "image": "astronaut.png",
         "bboxes": BOXES[:2]}])
    summary = run_eval(build_protocol("countbench", count, photo), pipe, str(tmp_path / "c"),
                       progress=False, print_table=False)
    assert pipe.calls == [("people", "count"), ("persons", "count")]
    assert summary["num_errors"] == 1 and "cannot be asked with the counting template" in \
        summary["errors"][0]["error"]
    entries = [json.loads(line) for line in open(tmp_path / "c" / "records.jsonl")]
    assert [e.get("pred") for e in entries[:2]] == [2, 2]  # "<obj1><obj0>2" counts 2, not 1
    assert entries[0]["answer"].endswith("<obj0></objects>2")  # stored as the model wrote it
    pipe.calls.clear()
    ref = _write(tmp_path / "ref.json", [
        {"image": "astronaut.png", "expression": "the man", "bbox": [370, 0, 142, 140],
         "bbox_list": BOXES},
        {"image": "astronaut.png", "bbox": [370, 0, 142, 140], "bbox_list": BOXES,
         "conversations": [{"value": "<image>\nPlease detect the flag in this image. Answer "
                                     "the question with object indexes."}]}])
    summary = run_eval(build_protocol("refcoco", ref, photo), pipe, str(tmp_path / "r"),
                       progress=False, print_table=False)
    assert pipe.calls == [("the man", "refer"), ("the flag", "refer")]
    assert summary["num_errors"] == 0 and summary["metrics"]["acc@0.5"] == 1.0


def test_coco_uses_the_detection_template(photo, tmp_path):
    pytest.importorskip("pycocotools")
    pipe = Scripted15({"detect": "<ground>person</ground><objects><obj0></objects>"})
    ann = _write(tmp_path / "ann.json", {
        "images": [{"id": 1, "file_name": "astronaut.png", "width": 512, "height": 512}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [170, 30, 150, 170],
                         "area": 25500, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "cup"}]})
    data = tmp_path / "props.jsonl"
    data.write_text(json.dumps({"id": 1, "image": "astronaut.png", "bbox_list": BOXES,
                                "score_list": [0.9, 0.5, 0.4]}) + "\n")
    summary = run_eval(build_protocol("coco", str(data), photo, annotations=ann), pipe,
                       str(tmp_path / "o"), progress=False, print_table=False)
    assert pipe.calls == [("person; cup", "detect")]
    assert summary["metrics"]["AP"] == pytest.approx(1.0)


def test_a_protocol_without_a_template_is_refused(tmp_path):
    from vlxseek_core.evaluation.common import EvalProtocol

    class Other(EvalProtocol):
        name = "other"

    with pytest.raises(EvalError, match="other: no VLX-Seek 1.5 task template maps this "
                                        "benchmark"):
        run_eval(Other(None, str(tmp_path)), Scripted15({}), str(tmp_path / "o"),
                 progress=False, print_table=False)


def test_eval_cli_with_the_tiny_checkpoint(tiny15_dir, tiny15_pipeline, photo, tmp_path,
                                           capsys, monkeypatch):
    from vlxseek_core.pipeline import VLXSeek

    # cmd_eval turns constraints off on the pipeline it loads: restore the shared one after
    monkeypatch.setattr(tiny15_pipeline, "constrained_decoding",
                        tiny15_pipeline.constrained_decoding)
    monkeypatch.setattr(VLXSeek, "from_pretrained",
                        staticmethod(lambda path, **kwargs: tiny15_pipeline))
    count = _write(tmp_path / "count.json", [
        {"question": COUNT_QUESTION.format("flags"), "answer": 1, "image": "astronaut.png",
         "bboxes": BOXES}])
    code = main(["eval", "countbench", "--model", tiny15_dir, "--data", count, "--images",
                 photo, "--out", str(tmp_path / "out"), "--max-new-tokens", "8",
                 "--no-progress"])
    assert code == 0 and "vlxseek eval countbench" in capsys.readouterr().out
    assert tiny15_pipeline.constrained_decoding is False  # the reference decodes plainly
    entry = json.loads((tmp_path / "out" / "records.jsonl").read_text().splitlines()[0])
    assert entry["ok"] and isinstance(entry["pred"], int)


def test_query_with_boxes_loads_no_detector(tiny15_dir, photo, capsys, monkeypatch):
    """``--boxes`` replace the proposals, so without ``--proposal-source`` no detector is built
    (offline, the default OmDet-Turbo hub id could not even be resolved)."""
    from vlxseek_core import cli

    built = []
    import vlxseek_core.pipeline as pipeline

    real = pipeline.build_proposal_source
    monkeypatch.setattr(pipeline, "build_proposal_source",
                        lambda kind, *a, **k: built.append(kind) or real(kind, *a, **k))
    code = main(["query", "--model", tiny15_dir, "--image", f"{photo}/astronaut.png",
                 "--task", "caption", "--regions", "1", "--boxes", json.dumps(BOXES),
                 "--device", "cpu", "--max-new-tokens", "4", "--compact"])
    assert code == 0 and built == ["none"]
    assert json.loads(capsys.readouterr().out)["proposals"]["boxes_xyxy"] == BOXES
    no_boxes = SimpleNamespace(proposal_source=None, boxes=None)
    assert cli._query_proposal_source(no_boxes) == "omdet_turbo"
    assert cli._query_proposal_source(SimpleNamespace(proposal_source="wedetect",
                                                      boxes="[[0, 0, 1, 1]]")) == "wedetect"
