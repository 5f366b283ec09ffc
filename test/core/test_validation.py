"""Every public entry point refuses bad arguments with the project's errors, naming the
argument, before any model work (issue 11, item 4)."""
import json

import numpy as np
import pytest
import torch
from validation_fixtures import SMALL_BOXES

from vlxseek_core.errors import InvalidImageError, InvalidRequestError
from vlxseek_core.types import Proposals, QueryResult

B = SMALL_BOXES.tolist()


@pytest.fixture
def no_model_work(fast_pipeline, monkeypatch):
    """Fail the test if the towers or the LLM run."""
    def boom(*args, **kwargs):
        raise AssertionError("model work before validation")

    monkeypatch.setattr(fast_pipeline, "_encode_frame", boom)
    monkeypatch.setattr(fast_pipeline, "_generate", boom)
    return fast_pipeline


@pytest.mark.parametrize("value", [
    np.array([1]), np.array([0, 2], dtype=np.uint8), (np.int64(1),), [np.int32(0), 2],
    range(2), torch.tensor([1]), [],
])
def test_region_indices_accept_integer_array_likes(fast_pipeline, small_image, value):
    res = fast_pipeline.query(small_image, task="caption", boxes=B, region_indices=value)
    assert isinstance(res, QueryResult)
    want = list(range(3)) if len(value) == 0 else [int(v) for v in value]
    assert res.prompt_text.count("<region") == len(want)


@pytest.mark.parametrize("value, needle", [
    ([True], r"region_indices\[0\] must be an integer"),
    (np.array([True]), "region_indices must hold integers"),
    ([1.0], r"region_indices\[0\] must be an integer"),
    (np.array([1.5]), "region_indices must hold integers, got dtype float64"),
    (np.array([[1]]), "region_indices must be 1-D"),
    ([[1]], r"region_indices\[0\] must be an integer"),
    ("1", "region_indices must be a 1-D sequence"),
    (1, "region_indices must be a 1-D sequence"),
    ({1}, "region_indices must be a 1-D sequence"),
    ([None], r"region_indices\[0\]"),
    ([-1], r"region_indices\[0\] must be an integer >= 0"),
    (np.array(["a"]), "region_indices must hold integers"),
    (list(range(101)), "region_indices has 101 entries"),
    ([5], r"region_indices\[0\]: region index 5 out of range; there are 3 regions"),
])
def test_bad_region_indices(no_model_work, small_image, value, needle):
    with pytest.raises(InvalidRequestError, match=needle):
        no_model_work.query(small_image, task="caption", boxes=B, region_indices=value,
                            reuse_frame=False)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(boxes=np.zeros((0, 4))), "boxes is empty.*boxes=None"),
    (dict(boxes=[]), "boxes is empty.*boxes=None"),
    (dict(boxes=[[1, 2, 3, 4], [1, 2, 3]]), "boxes must be a numeric array"),
    (dict(boxes=[["a", "b", "c", "d"]]), "boxes must hold numbers"),
    (dict(boxes=[[1, None, 3, 4]]), "boxes must hold numbers.*None"),
    (dict(boxes=np.array([[1, 2, 3, 4]], dtype=object)), "boxes must hold numbers"),
    (dict(boxes=[[True, False, True, True]]), "boxes must hold numbers"),
    (dict(boxes="[[1, 2, 3, 4]]"), "boxes must be a numeric array"),
    (dict(boxes=[1, 2, 3, 4]), r"boxes must have shape \[K, 4\]"),
    (dict(boxes=[[1, 2, 3]]), r"boxes must have shape \[K, 4\]"),
    (dict(boxes=[[1, 2, float("nan"), 4]]), "boxes contain NaN"),
    (dict(boxes=[[5, 5, 1, 1]]), "boxes must satisfy x2 > x1"),
    (dict(box_scores=[1.0]), "box_scores given without boxes"),
    (dict(boxes=B, box_scores=[1.0]), r"box_scores must have shape \[3\]"),
    (dict(boxes=B, box_scores=[1, 2, float("inf")]), "box_scores must be finite"),
    (dict(boxes=B, box_scores="abc"), "box_scores must be a numeric array"),
    (dict(boxes=B, proposals=Proposals(SMALL_BOXES, np.ones(3))), "not both"),
    (dict(proposals=SMALL_BOXES), "proposals must be a vlxseek_core.Proposals"),
    (dict(proposals=Proposals(np.float32([[5, 5, 1, 1]]), [1])), "proposals: boxes must"),
    (dict(boxes=B, max_new_tokens=0), r"max_new_tokens must be an integer in \[1, 32768\]"),
    (dict(boxes=B, max_new_tokens=-3), "max_new_tokens"),
    (dict(boxes=B, max_new_tokens=True), "max_new_tokens .*got bool"),
    (dict(boxes=B, max_new_tokens=2.0), "max_new_tokens .*got float"),
    (dict(boxes=B, max_new_tokens=10**9), "max_new_tokens .*max_position_embeddings"),
    (dict(boxes=B, max_new_tokens="8"), "max_new_tokens"),
    (dict(boxes=B, reuse_frame=1), "reuse_frame must be True or False"),
    (dict(boxes=B, reuse_frame="yes"), "reuse_frame"),
    (dict(boxes=B, text=None), "text must be a str"),
    (dict(boxes=B, text=b"cat"), "text must be a str"),
    (dict(boxes=B, text="ca\ud800t"), "text is not valid Unicode"),
    (dict(boxes=B, text="x" * 5000), "text: query is 5000 characters"),
    (dict(boxes=B, text="", task="refer"), "text: task 'refer' needs a non-empty query"),
    (dict(boxes=B, task=3), "task must be a str"),
    (dict(boxes=B, task=None), "task must be a str"),
    (dict(boxes=B, task="bogus"), "task='bogus' is not a known task"),
    (dict(task="caption", proposals=Proposals(SMALL_BOXES, np.ones(3))),
     "task 'caption' needs regions"),
    (dict(), "boxes: no regions given and no proposal detector"),
])
def test_bad_query_arguments(no_model_work, small_image, kwargs, needle):
    kwargs = {"text": "cat", **kwargs}
    with pytest.raises(InvalidRequestError, match=needle):
        no_model_work.query(small_image, **kwargs)


@pytest.mark.parametrize("image, needle", [
    (None, "image must be a numpy array or PIL image"),
    (np.zeros((4, 4, 3), np.float32), "image dtype must be uint8"),
    (np.zeros((0, 4, 3), np.uint8), "image has zero"),
    (np.zeros((4, 4, 2), np.uint8), "image must be HxWx3"),
    (np.zeros(5, np.uint8), "image must be HxWx3"),
    ([[[0, 0, 0]]], "image must be a numpy array"),
])
def test_bad_images(no_model_work, image, needle):
    for call in (lambda: no_model_work.query(image, "cat", boxes=B),
                 lambda: no_model_work.encode(image, B),
                 lambda: no_model_work.propose(image, B)):
        with pytest.raises(InvalidImageError, match=needle):
            call()


@pytest.mark.parametrize("queries, needle", [
    ("cat", "queries must be a list"),
    (("cat", "refer"), "queries must be a list"),
    (None, "queries must be a list"),
    ((q for q in ["cat"]), "queries must be a list"),
    ([("cat",)], r"queries\[0\] must be a text or a \(text, task\) pair, got tuple of length 1"),
    (["ok", ("cat", "refer", "x")], r"queries\[1\] .*length 3"),
    ([3], r"queries\[0\] must be a text"),
    ([{"text": "cat"}], r"queries\[0\] must be a text"),
    ([(3, "detect")], r"queries\[0\]\[0\] must be a str"),
    ([("cat", 3)], r"queries\[0\]\[1\] must be a str"),
    ([("cat", "bogus")], r"queries\[0\]\[1\]='bogus' is not a known task"),
    ([("", "refer")], r"queries\[0\]\[0\]: task 'refer' needs a non-empty query"),
    (["cat", ("", "caption")], None),  # fine: the boxes are its regions
])
def test_bad_query_many_specs(no_model_work, small_image, queries, needle):
    if needle is None:
        with pytest.raises(AssertionError, match="model work"):  # validated, then would run
            no_model_work.query_many(small_image, queries, boxes=B, reuse_frame=False)
        return
    with pytest.raises(InvalidRequestError, match=needle):
        no_model_work.query_many(small_image, queries, boxes=B)


def test_query_many_specs_and_empty_list(fast_pipeline, small_image):
    out = fast_pipeline.query_many(small_image, ["cat", ("dog", None), ["the cat", "refer"]],
                                   task="count", boxes=B)
    assert [r.task for r in out] == ["count", "count", "refer"]
    assert [r.query for r in out] == ["cat", "dog", "the cat"]
    assert fast_pipeline.query_many(small_image, [], boxes=B) == []
    with pytest.raises(InvalidImageError):  # an empty list still checks the other arguments
        fast_pipeline.query_many(None, [])
    with pytest.raises(InvalidRequestError, match="boxes is empty"):
        fast_pipeline.query_many(small_image, [], boxes=[])


def test_answer_encode_propose_validate(no_model_work, fast_pipeline, small_image):
    with pytest.raises(InvalidRequestError, match="enc must be a FrameEncoding"):
        fast_pipeline.answer("frame", "cat")
    with pytest.raises(InvalidRequestError, match="boxes is empty"):
        fast_pipeline.encode(small_image, np.zeros((0, 4)))
    with pytest.raises(InvalidRequestError, match="reuse_frame"):
        fast_pipeline.encode(small_image, B, reuse_frame=None)
    with pytest.raises(InvalidRequestError, match="box_scores"):
        fast_pipeline.propose(small_image, box_scores=[1])
    props, warnings = fast_pipeline.propose(small_image, np.array(B, np.int64))
    assert props.boxes.dtype == np.float32 and warnings == []


def test_answer_validates_on_an_encoding(fast_pipeline, small_image):
    enc = fast_pipeline.encode(small_image, B)
    for kwargs, needle in [(dict(task="x"), "task='x'"), (dict(text=1), "text must be a str"),
                           (dict(region_indices=[3]), "out of range"),
                           (dict(max_new_tokens=0), "max_new_tokens"),
                           (dict(user_boxes="yes"), "user_boxes must be True or False")]:
        with pytest.raises(InvalidRequestError, match=needle):
            fast_pipeline.answer(enc, **{"text": "cat", **kwargs})
    res = fast_pipeline.answer(enc, task="caption", user_boxes=True)
    assert res.prompt_text.count("<region") == 3


@pytest.mark.parametrize("kwargs, needle", [
    (dict(min_score="x"), "min_score must be a finite number"),
    (dict(min_score=float("nan")), "min_score"),
    (dict(nms_iou=True), "nms_iou must be a finite number, got bool"),
    (dict(max_proposals=0), r"max_proposals must be an integer in \[1, 100\]"),
    (dict(max_proposals=101), "max_proposals"),
    (dict(max_proposals=5.0), "max_proposals .*float"),
])
def test_set_proposal_thresholds(fast_pipeline, kwargs, needle):
    with pytest.raises(InvalidRequestError, match=needle):
        fast_pipeline.set_proposal_thresholds(**kwargs)
    fast_pipeline.set_proposal_thresholds(min_score=0.2, nms_iou=np.float32(0.5),
                                          max_proposals=np.int64(50))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(model_path=3), "model_path must be a non-empty"),
    (dict(model_path=""), "model_path"),
    (dict(device="gpu"), "device='gpu' is unknown"),
    (dict(device="cudaX"), "device='cudax' is unknown"),
    (dict(device=0), "device must be a str"),
    (dict(dtype="int8"), "dtype='int8' is unknown"),
    (dict(dtype=32), "dtype must be a str"),
    (dict(proposal_source="yolo"), "proposal_source='yolo' is not a known proposal kind"),
    (dict(proposal_source=None), "proposal_source must be a str"),
    (dict(proposal_model=5), "proposal_model must be"),
    (dict(proposal_min_score="0.3"), "proposal_min_score must be a finite number"),
    (dict(proposal_nms_iou=None), "proposal_nms_iou must be given"),
    (dict(max_proposals=0), "max_proposals must be an integer in"),
    (dict(allow_key_mismatch="no"), "allow_key_mismatch must be True or False"),
    (dict(attn_implementation="fast"), "attn_implementation='fast' is not one of"),
    (dict(compile_towers=1), "compile_towers must be a str"),
    (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
    (dict(constrained_decoding=None), "constrained_decoding must be True or False"),
    (dict(frame_cache_size=-1), "frame_cache_size"),
    (dict(max_tokens=8), "unknown keyword argument.*max_tokens"),
])
def test_from_pretrained_arguments(tiny_model_dir, monkeypatch, kwargs, needle):
    from vlxseek_core import pipeline
    from vlxseek_core.families import vlm_fo1

    def boom(*args, **kw):
        raise AssertionError("loaded before the arguments were checked")

    # the first reads of the checkpoint: its family (config.json), then the family's loader
    monkeypatch.setattr(pipeline, "family_of_checkpoint", boom)
    monkeypatch.setattr(vlm_fo1, "load_model", boom)
    kwargs = {"model_path": tiny_model_dir, "device": "cpu", **kwargs}
    with pytest.raises(InvalidRequestError, match=needle):
        pipeline.VLXSeek.from_pretrained(**kwargs)


def test_from_pretrained_caps_max_new_tokens_at_the_context(tiny_model_dir):
    from vlxseek_core.pipeline import VLXSeek

    with pytest.raises(InvalidRequestError, match=r"max_new_tokens .*\[1, 32768\]"):
        VLXSeek.from_pretrained(tiny_model_dir, device="cpu", max_new_tokens=40000)


def test_cli_prints_one_line_errors(fast_pipeline, tmp_path, capsys, small_image, monkeypatch):
    from PIL import Image

    from vlxseek_core.cli import main
    from vlxseek_core.pipeline import VLXSeek

    # the pipeline's checks are under test, not loading (test_checkpoint_validation loads)
    monkeypatch.setattr(VLXSeek, "from_pretrained", lambda *a, **k: fast_pipeline)

    path = tmp_path / "img.png"
    Image.fromarray(small_image).save(path)
    base = ["query", "--model", str(tmp_path), "--image", str(path), "--device", "cpu",
            "--proposal-source", "none", "--query", "cat"]
    for extra, needle in [(["--boxes", "[]"], "boxes is empty"),
                          (["--boxes", json.dumps([[1, 2, 3]])], "boxes must have shape"),
                          (["--boxes", "[[1, 2"], "--boxes must be a JSON list"),
                          (["--boxes", json.dumps(B), "--regions", "a,b"], "--regions must be"),
                          (["--boxes", json.dumps(B), "--max-new-tokens", "0"],
                           "max_new_tokens must be"),
                          (["--image", str(tmp_path / "missing.png")], "cannot read image")]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("vlxseek: error: ") and needle in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
