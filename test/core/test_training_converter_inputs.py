"""make-train-data on malformed annotation files: one InvalidRequestError naming the file and
the entry, never another exception type, and no output file; a JSONL file of one line is a
file of one entry."""
import copy
import json

import pytest

from vlxseek_core import cli
from vlxseek_core.errors import InvalidRequestError
from vlxseek_core.training.converters import (coco_to_records, load_proposals,
                                              refcoco_to_records)

REF = {"image": "a.jpg", "expression": "the cat", "bbox": [2, 3, 20, 30], "width": 100,
       "height": 80}
COCO = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}


def _write(path, entries):
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return str(path)


@pytest.mark.parametrize("lines", [1, 3])
def test_refcoco_jsonl_of_one_line_is_one_entry(tmp_path, lines):
    # one line parses as one JSON document, an object: it is an entry, not MDETR's form
    path = _write(tmp_path / "refs.jsonl", [dict(REF, id=f"r{i}") for i in range(lines)])
    recs = refcoco_to_records(path, seed=0)
    assert [r.id for r in recs] == [f"r{i}" for i in range(lines)]
    target = [2.0, 3.0, 20.0, 30.0]
    assert all(target in r.bbox_list for r in recs)
    assert recs[0].answer.startswith("<ground>the cat</ground><objects><region")


@pytest.mark.parametrize("change, message", [
    ({"bbox": [0, 0, "x", 10]}, r"bad RefCOCO entry 1: could not convert"),
    ({"bbox": [0, 0, 10]}, r"bad RefCOCO entry 1: a box has 4 numbers"),
    ({"bbox": "abcd"}, r"bad RefCOCO entry 1: could not convert"),
    ({"bbox": None}, r"bad RefCOCO entry 1: 'NoneType'"),
    ({"width": -100}, r"bad RefCOCO entry 1: width and height must be positive"),
    ({"width": "big"}, r"bad RefCOCO entry 1: width and height must be positive"),
    ({"width": True}, r"bad RefCOCO entry 1: width and height must be positive"),
    ({"image": 5}, r"bad RefCOCO entry 1: the image must be a file name"),
    ({"image": ""}, r"bad RefCOCO entry 1: the image must be a file name"),
    ({"image": None}, r"bad RefCOCO entry 1: the image must be a file name"),
])
def test_refcoco_bad_entry_is_named(tmp_path, change, message):
    path = _write(tmp_path / "refs.jsonl", [REF, dict(REF, **change)])
    with pytest.raises(InvalidRequestError, match=message):
        refcoco_to_records(path)


def test_refcoco_bad_documents(tmp_path):
    path = _write(tmp_path / "refs.jsonl", [REF, {k: v for k, v in REF.items() if k != "image"}])
    with pytest.raises(InvalidRequestError, match="RefCOCO entry 1 has no 'image'"):
        refcoco_to_records(path)
    bad = tmp_path / "bad.json"
    for doc, message in (([REF, 7], "bad RefCOCO entry 1: not a JSON object"),
                         ({"images": {}, "annotations": []}, "'images' and 'annotations' lists"),
                         ({"images": [], "annotations": [5]},
                          "bad RefCOCO annotation 0: not a JSON object"),
                         ({"images": [{"id": 1, "file_name": "a.jpg", "caption": "x"}],
                           "annotations": [{"image_id": 1, "bbox": [1, 1, "q", 3]}]},
                          "bad RefCOCO image 0: could not convert")):
        bad.write_text(json.dumps(doc))
        with pytest.raises(InvalidRequestError, match=message):
            refcoco_to_records(str(bad))


def _coco(tmp_path, edit):
    doc = copy.deepcopy(COCO)
    edit(doc)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"][0].update(bbox=[1, 1, "x", 20]), "bad COCO annotation 0"),
    (lambda d: d["annotations"][0].update(bbox=[1, 1, 20]), "annotation 0: a box has 4"),
    (lambda d: d["annotations"][0].update(bbox=None), "bad COCO annotation 0"),
    (lambda d: d["annotations"][0].pop("category_id"), "annotation 0 has no 'category_id'"),
    (lambda d: d["annotations"][0].update(category_id=99), "category_id 99 is not a category"),
    (lambda d: d["annotations"][0].update(image_id=[1]), "bad COCO annotation 0"),
    (lambda d: d["annotations"].append("x"), "annotation 1: not a JSON object"),
    (lambda d: d["images"][0].update(width="big"), "bad COCO image 0: could not convert"),
    (lambda d: d["images"][0].update(file_name=7), "image 0: the image must be a file name"),
    (lambda d: d["images"].append(5), "bad COCO image 1: not a JSON object"),
    (lambda d: d["categories"].append({"id": 3}), "COCO category 2 has no 'name'"),
    (lambda d: d.update(annotations={}), "must be lists"),
])
def test_coco_bad_entry_is_named(tmp_path, edit, message):
    path = _coco(tmp_path, edit)
    with pytest.raises(InvalidRequestError, match=message):
        coco_to_records(path)
    out = tmp_path / "out.jsonl"  # the CLI: one line, exit status 2, nothing written
    assert cli.main(["make-train-data", "coco", "--annotations", path, "--out", str(out)]) == 2
    assert not out.exists()


def test_coco_well_formed_file_still_converts(tmp_path):
    recs = coco_to_records(_coco(tmp_path, lambda d: None), seed=0)
    assert sorted(r.task for r in recs) == ["caption", "count", "detect"]
    assert all([1.0, 1.0, 21.0, 21.0] in r.bbox_list for r in recs)


@pytest.mark.parametrize("bbox_list, message", [
    ([[0, 0, "x", 3]], "proposal entry 0: bbox_list is not a list of numbers"),
    ([[0, 0, 3]], r"proposal entry 0: bbox_list must be \[K, 4\]"),
    (5, r"proposal entry 0: bbox_list must be \[K, 4\]"),
    ([[0, 0, 3, 4], [1, 2]], "proposal entry 0: bbox_list is not a list of numbers"),
])
def test_bad_proposals_are_named(tmp_path, bbox_list, message):
    path = _write(tmp_path / "props.jsonl", [{"image": "a.jpg", "bbox_list": bbox_list}])
    with pytest.raises(InvalidRequestError, match=message):
        load_proposals(path)


def test_proposals_jsonl_of_one_line_and_empty_list(tmp_path):
    path = _write(tmp_path / "props.jsonl", [{"image": "dir/a.jpg", "bbox_list": []}])
    props = load_proposals(path)
    assert props["dir/a.jpg"].shape == (0, 4) and props["a.jpg"].shape == (0, 4)
