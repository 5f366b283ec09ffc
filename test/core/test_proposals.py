"""Tests of the proposal stage: shared post-processing, user boxes, zero-shot detector sources.

Everything runs offline on CPU: detector tests use tiny random checkpoints written into tmp dirs.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vlxseek_core.errors import CheckpointError, InvalidImageError, InvalidRequestError
from vlxseek_core.proposals import (GENERIC_VOCABULARY, PROPOSAL_KINDS, RANDOM_WEIGHTS_KEY,
                                    OmDetTurboProposals, ProposalSource,
                                    ZeroShotDetectorProposals, build_proposal_source,
                                    postprocess_proposals, validate_user_boxes,
                                    write_tiny_omdet_turbo)
from vlxseek_core.types import Proposals


def _grid_boxes(n, size=10.0, step=20.0):
    """n non-overlapping boxes in a row-major grid (10 per row)."""
    i = np.arange(n)
    x1, y1 = (i % 10) * step, (i // 10) * step
    return np.stack([x1, y1, x1 + size, y1 + size], axis=1).astype(np.float32)


def _upn_filter_reference(boxes, scores, min_score, nms_value):
    """Literal restatement of the reference ``UPNWrapper.filter`` + ``[:100]`` (spec §3.5)."""
    keep = scores >= min_score
    boxes, scores = boxes[keep], scores[keep]
    if len(boxes) == 0:
        return np.zeros((0, 4), np.int32), np.zeros(0, np.float32)
    tb = torch.tensor(boxes, dtype=torch.float32)
    ts = torch.tensor(scores, dtype=torch.float32)
    idx = torchvision.ops.nms(tb, ts, nms_value) if nms_value > 0 else torch.arange(len(tb))
    fb = tb[idx].numpy().astype(np.int32)
    fs = ts[idx].numpy()
    order = np.argsort(fs)[::-1]
    fb, fs = fb[order], fs[order]
    fs = np.array([round(s, 2) for s in fs], dtype=np.float32)
    return fb[:100], fs[:100]


# --------------------------------------------------------------------------------------------
# postprocess_proposals
# --------------------------------------------------------------------------------------------
class TestPostprocess:
    def test_threshold_is_inclusive(self):
        boxes = _grid_boxes(3)
        p = postprocess_proposals(boxes, [0.29, 0.3, 0.31], min_score=0.3)
        np.testing.assert_array_equal(p.scores, np.float32([0.31, 0.3]))
        np.testing.assert_array_equal(p.boxes, boxes[[2, 1]])

    def test_nms_removes_lower_scored_overlap_above_threshold(self):
        # IoU([0,0,10,10], [0,0,10,9]) = 0.9 > 0.8: the lower-scored one goes, whatever the order.
        boxes = np.float32([[0, 0, 10, 9], [0, 0, 10, 10]])
        p = postprocess_proposals(boxes, [0.5, 0.9], nms_iou=0.8)
        np.testing.assert_array_equal(p.boxes, [[0, 0, 10, 10]])
        np.testing.assert_array_equal(p.scores, np.float32([0.9]))
        p = postprocess_proposals(boxes, [0.9, 0.5], nms_iou=0.8)
        np.testing.assert_array_equal(p.boxes, [[0, 0, 10, 9]])

    @pytest.mark.parametrize("second, thr", [([0, 0, 10, 7.5], 0.8), ([0, 0, 10, 5], 0.5)])
    def test_nms_keeps_overlap_at_or_below_threshold(self, second, thr):
        # IoU 0.75 <= 0.8, and IoU exactly 0.5 (exact in float32) at threshold 0.5: both kept.
        boxes = np.float32([[0, 0, 10, 10], second])
        p = postprocess_proposals(boxes, [0.9, 0.5], nms_iou=thr, truncate_to_int=False)
        assert len(p) == 2
        np.testing.assert_array_equal(p.boxes, boxes)

    def test_nms_disabled_for_non_positive_iou(self):
        boxes = np.float32([[0, 0, 10, 10], [0, 0, 10, 10]])
        assert len(postprocess_proposals(boxes, [0.9, 0.8], nms_iou=0.0)) == 2
        assert len(postprocess_proposals(boxes, [0.9, 0.8], nms_iou=0.5)) == 1

    def test_int_truncation_toward_zero(self):
        boxes = np.float32([[1.9, 2.5, 10.99, 20.01], [-1.7, -0.5, 5.5, 6.9]])
        p = postprocess_proposals(boxes, [0.9, 0.8])
        assert p.boxes.dtype == np.float32
        np.testing.assert_array_equal(p.boxes, [[1, 2, 10, 20], [-1, 0, 5, 6]])
        p = postprocess_proposals(boxes, [0.9, 0.8], truncate_to_int=False)
        np.testing.assert_allclose(p.boxes, boxes)

    def test_sorted_descending_and_rounded(self):
        boxes = _grid_boxes(4)
        p = postprocess_proposals(boxes, [0.454, 0.7, 0.456, 0.999], min_score=0.0)
        np.testing.assert_array_equal(p.scores, np.float32([1.0, 0.7, 0.46, 0.45]))
        np.testing.assert_array_equal(p.boxes, boxes[[3, 1, 2, 0]])
        p = postprocess_proposals(boxes, [0.454, 0.7, 0.456, 0.999], min_score=0.0,
                                  round_scores=False)
        np.testing.assert_array_equal(p.scores, np.float32([0.999, 0.7, 0.456, 0.454]))

    def test_top_k(self):
        boxes = _grid_boxes(150)
        scores = np.linspace(0.31, 0.99, 150)
        p = postprocess_proposals(boxes, scores)
        assert len(p) == 100
        np.testing.assert_array_equal(p.boxes, boxes[::-1][:100])
        assert len(postprocess_proposals(boxes, scores, max_proposals=7)) == 7
        assert len(postprocess_proposals(boxes, scores, max_proposals=0)) == 0

    @pytest.mark.parametrize("boxes, scores", [(np.zeros((0, 4)), np.zeros(0)), ([], []),
                                               (torch.zeros(0, 4), torch.zeros(0))])
    def test_empty_input(self, boxes, scores):
        p = postprocess_proposals(boxes, scores)
        assert isinstance(p, Proposals) and len(p) == 0
        assert p.boxes.shape == (0, 4) and p.scores.shape == (0,)
        assert p.boxes.dtype == np.float32 and p.scores.dtype == np.float32

    def test_non_finite_and_degenerate_rows_dropped(self):
        boxes = np.array([[0, 0, 10, 10], [np.nan, 0, 10, 10], [20, 20, np.inf, 30],
                          [40, 40, 50, 50], [60, 60, 60, 70], [80, 80, 70, 90],
                          [100, 100, 100.5, 110], [120, 0, 130, 10]], np.float64)
        scores = [0.9, 0.9, 0.9, np.nan, 0.9, 0.9, 0.9, 0.8]
        p = postprocess_proposals(boxes, scores)
        # kept: 0 (finite), 7; dropped: NaN/inf box, NaN score, zero/negative width,
        # and the box whose width truncates to zero.
        np.testing.assert_array_equal(p.boxes, [[0, 0, 10, 10], [120, 0, 130, 10]])

    def test_clip_to_image(self):
        boxes = np.float32([[-5, -5, 20, 20], [90, 40, 120, 60], [200, 200, 300, 300]])
        p = postprocess_proposals(boxes, [0.9, 0.8, 0.7], image_size=(50, 100))
        np.testing.assert_array_equal(p.boxes, [[0, 0, 20, 20], [90, 40, 100, 50]])

    def test_clip_happens_after_nms(self):
        # Unclipped IoU = 100 / 1100: both survive NMS (as in the reference), then both clip to
        # the same box. Clipping before NMS would have removed one.
        boxes = np.float32([[-100, 0, 10, 10], [0, 0, 10, 10]])
        p = postprocess_proposals(boxes, [0.9, 0.8], image_size=(50, 100))
        np.testing.assert_array_equal(p.boxes, [[0, 0, 10, 10], [0, 0, 10, 10]])

    def test_accepts_torch_tensors(self):
        p = postprocess_proposals(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.5]))
        np.testing.assert_array_equal(p.boxes, [[0, 0, 10, 10]])

    @pytest.mark.parametrize("boxes, scores", [
        (np.zeros((2, 3)), np.zeros(2)),        # not [N, 4]
        (np.zeros((2, 4)), np.zeros(3)),        # count mismatch
        (np.zeros((1, 2, 4)), np.zeros(2)),     # 3-D
        ([["a", "b", "c", "d"]], [0.5]),        # not numeric
    ])
    def test_bad_shapes_raise_value_error(self, boxes, scores):
        with pytest.raises(ValueError):
            postprocess_proposals(boxes, scores)

    @pytest.mark.parametrize("kw", [{"min_score": float("nan")}, {"nms_iou": None},
                                    {"max_proposals": -1}, {"max_proposals": 2.5},
                                    {"image_size": (0, 10)}, {"image_size": (10,)}])
    def test_bad_parameters_raise_value_error(self, kw):
        with pytest.raises(ValueError):
            postprocess_proposals(_grid_boxes(1), [0.5], **kw)

    def test_matches_reference_upn_filter(self):
        rng = np.random.default_rng(0)
        n = 400
        xy = rng.uniform(0, 600, (n, 2))
        wh = rng.uniform(1, 200, (n, 2))
        # clustered duplicates so that NMS has work to do
        boxes = np.concatenate([xy, xy + wh], axis=1)
        boxes[n // 2:] = boxes[: n // 2] + rng.normal(0, 2, (n // 2, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
        scores = rng.permutation(np.linspace(0.01, 0.99, n)).astype(np.float32)  # distinct
        ref_b, ref_s = _upn_filter_reference(boxes.astype(np.float32), scores, 0.3, 0.8)
        p = postprocess_proposals(boxes, scores, min_score=0.3, nms_iou=0.8)
        assert len(ref_b) == 100
        np.testing.assert_array_equal(p.boxes, ref_b.astype(np.float32))
        np.testing.assert_array_equal(p.scores, ref_s)


_finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 30),
    data=st.data(),
    min_score=st.floats(-1, 2, allow_nan=False),
    nms_iou=st.floats(-0.5, 1.5, allow_nan=False),
    max_proposals=st.integers(0, 40),
    clip=st.booleans(),
    trunc=st.booleans(),
)
def test_postprocess_property(n, data, min_score, nms_iou, max_proposals, clip, trunc):
    # Mostly well-formed shapes, sometimes a mismatch; values anywhere (incl. NaN/inf/huge).
    n_scores = data.draw(st.sampled_from([n, n, n, n + 1]))
    boxes = data.draw(hnp.arrays(np.float64, (n, data.draw(st.sampled_from([4, 4, 4, 3]))),
                                 elements=_finite_or_not))
    scores = data.draw(hnp.arrays(np.float64, (n_scores,), elements=_finite_or_not))
    image_size = (37, 53) if clip else None
    try:
        p = postprocess_proposals(boxes, scores, min_score=min_score, nms_iou=nms_iou,
                                  max_proposals=max_proposals, image_size=image_size,
                                  truncate_to_int=trunc)
    except ValueError:
        assert boxes.shape[1] != 4 or n_scores != n
        return
    assert boxes.shape[1] == 4 and n_scores == n
    assert len(p) <= max_proposals
    assert p.boxes.shape == (len(p), 4) and p.boxes.dtype == np.float32
    assert np.isfinite(p.boxes).all() and np.isfinite(p.scores).all()
    assert (np.diff(p.scores) <= 0).all()
    assert (p.boxes[:, 2] > p.boxes[:, 0]).all() and (p.boxes[:, 3] > p.boxes[:, 1]).all()
    assert (p.scores >= np.float32(min_score) - 0.0051).all()
    if trunc:
        np.testing.assert_array_equal(p.boxes, np.trunc(p.boxes))
    if clip:
        assert (p.boxes >= 0).all() and (p.boxes[:, [0, 2]] <= 53).all()
        assert (p.boxes[:, [1, 3]] <= 37).all()


# --------------------------------------------------------------------------------------------
# validate_user_boxes
# --------------------------------------------------------------------------------------------
class TestUserBoxes:
    def test_valid_boxes_keep_order_and_floats(self):
        boxes = [[10.5, 20.25, 30.75, 40.0], [0, 0, 5, 5], [1, 1, 99, 49]]
        p, warnings = validate_user_boxes(boxes, (50, 100))
        np.testing.assert_array_equal(p.boxes, np.float32(boxes))
        np.testing.assert_array_equal(p.scores, np.ones(3, np.float32))
        assert warnings == []

    @pytest.mark.parametrize("boxes, match", [
        ([[0, 0, np.nan, 10]], "NaN/inf"),
        ([[0, 0, 10, 10], [0, np.inf, 10, 10]], "index 1"),
        ([[10, 0, 5, 10]], "width/height"),
        ([[0, 10, 10, 5]], "width/height"),
        ([[0, 0, 0, 10]], "width/height"),
        ([[0, 0, 10]], r"shape \[K, 4\]"),
        ([0, 0, 10, 10], r"shape \[K, 4\]"),
        (np.zeros((0, 4)), "at least one box"),
        ([[200, 0, 300, 10]], "entirely outside"),
        ([[-20, -20, -5, -5]], "entirely outside"),
        ([[100, 10, 120, 20]], "entirely outside"),  # touches the right edge only
        ([["x", 0, 1, 1]], "numeric"),
    ])
    def test_invalid_boxes_raise(self, boxes, match):
        with pytest.raises(InvalidRequestError, match=match):
            validate_user_boxes(boxes, (50, 100))

    @pytest.mark.parametrize("kw", [{"image_size": (0, 100)}, {"scores": [0.5, 0.5]},
                                    {"scores": [np.nan]}, {"max_boxes": 0}])
    def test_invalid_arguments_raise(self, kw):
        args = {"boxes": [[0, 0, 10, 10]], "image_size": (50, 100)}
        args.update(kw)
        with pytest.raises(InvalidRequestError):
            validate_user_boxes(**args)

    def test_partially_outside_boxes_are_clipped(self):
        p, warnings = validate_user_boxes([[-10, 5, 20, 60], [10, 10, 20, 20]], (50, 100))
        np.testing.assert_array_equal(p.boxes, [[0, 5, 20, 50], [10, 10, 20, 20]])
        assert len(warnings) == 1 and "clipped" in warnings[0] and "1 of 2" in warnings[0]

    def test_more_than_100_boxes_keeps_first_100(self):
        boxes = _grid_boxes(130, size=1.0, step=1.5)
        p, warnings = validate_user_boxes(boxes, (1000, 1000))
        assert len(p) == 100
        np.testing.assert_array_equal(p.boxes, boxes[:100])
        assert any("30 of 130" in w and "dropped" in w for w in warnings)

    def test_more_than_max_keeps_highest_scores_in_original_order(self):
        boxes = _grid_boxes(5)
        p, warnings = validate_user_boxes(boxes, (100, 1000), scores=[0.1, 0.9, 0.5, 0.8, 0.2],
                                          max_boxes=3)
        np.testing.assert_array_equal(p.boxes, boxes[[1, 2, 3]])
        np.testing.assert_array_equal(p.scores, np.float32([0.9, 0.5, 0.8]))
        assert any("2 of 5" in w for w in warnings)

    def test_no_nms_on_user_boxes(self):
        p, _ = validate_user_boxes([[0, 0, 10, 10], [0, 0, 10, 10]], (50, 100))
        assert len(p) == 2


# --------------------------------------------------------------------------------------------
# Proposal sources (tiny random checkpoints, offline)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_omdet(tmp_path_factory):
    return write_tiny_omdet_turbo(tmp_path_factory.mktemp("tiny_omdet"))


@pytest.fixture(scope="module")
def omdet_source(tiny_omdet):
    return OmDetTurboProposals(tiny_omdet, min_score=0.0, max_proposals=100)


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data
    return skimage.data.astronaut()


def test_tiny_writer_files(tiny_omdet):
    names = set(os.listdir(tiny_omdet))
    assert {"config.json", "model.safetensors", "processor_config.json",
            "tokenizer.json"} <= names
    cfg = json.loads((tiny_omdet / "config.json").read_text())
    assert cfg[RANDOM_WEIGHTS_KEY] is True
    assert cfg["model_type"] == "omdet-turbo"
    assert (tiny_omdet / "model.safetensors").stat().st_size < 2_000_000


def test_tiny_tokenizer_covers_vocabulary(omdet_source):
    tok = omdet_source.processor.tokenizer
    for word in GENERIC_VOCABULARY:
        ids = tok(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, word


def test_omdet_round_trip(omdet_source, astronaut):
    h, w = astronaut.shape[:2]
    p = omdet_source.propose(astronaut)
    assert isinstance(p, Proposals)
    assert 0 < len(p) <= 100
    assert p.boxes.dtype == np.float32 and p.boxes.shape == (len(p), 4)
    assert p.scores.dtype == np.float32
    assert (p.boxes[:, [0, 2]] >= 0).all() and (p.boxes[:, [0, 2]] <= w).all()
    assert (p.boxes[:, [1, 3]] >= 0).all() and (p.boxes[:, [1, 3]] <= h).all()
    assert (p.boxes[:, 2] > p.boxes[:, 0]).all() and (p.boxes[:, 3] > p.boxes[:, 1]).all()
    assert (np.diff(p.scores) <= 0).all() and (p.scores >= 0.0).all()
    # deterministic
    p2 = omdet_source.propose(astronaut)
    np.testing.assert_array_equal(p.boxes, p2.boxes)
    np.testing.assert_array_equal(p.scores, p2.scores)


def test_propose_is_detect_raw_plus_postprocess(omdet_source, astronaut):
    raw_b, raw_s = omdet_source.detect_raw(astronaut)
    assert raw_b.dtype == np.float32 and raw_b.shape == (len(raw_s), 4)
    assert len(np.unique(raw_b, axis=0)) == len(raw_b)  # classes merged: one row per box
    expected = postprocess_proposals(raw_b, raw_s, min_score=0.0, nms_iou=0.8,
                                     image_size=astronaut.shape[:2])
    p = omdet_source.propose(astronaut)
    np.testing.assert_array_equal(p.boxes, expected.boxes)
    np.testing.assert_array_equal(p.scores, expected.scores)


def test_set_thresholds(tiny_omdet, astronaut):
    src = OmDetTurboProposals(tiny_omdet, min_score=0.0)
    p_all = src.propose(astronaut)
    src.set_thresholds(max_proposals=3)
    p3 = src.propose(astronaut)
    np.testing.assert_array_equal(p3.boxes, p_all.boxes[:3])
    cut = float(np.median(p_all.scores))
    src.set_thresholds(min_score=cut, max_proposals=100)
    p_cut = src.propose(astronaut)
    assert 0 < len(p_cut) < len(p_all) and (p_cut.scores >= cut).all()
    src.set_thresholds(min_score=1.01, max_proposals=100)
    assert len(src.propose(astronaut)) == 0
    assert src.thresholds == {"min_score": 1.01, "nms_iou": 0.8, "max_proposals": 100}
    with pytest.raises(ValueError):
        src.set_thresholds(max_proposals=-1)
    with pytest.raises(ValueError):
        src.set_thresholds(min_score=float("nan"))


@pytest.mark.parametrize("image", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                   np.zeros((8, 8, 4), np.uint8), np.zeros((0, 8, 3), np.uint8),
                                   "not an image"])
def test_invalid_image(omdet_source, image):
    with pytest.raises(InvalidImageError):
        omdet_source.propose(image)


def test_minimal_subclass_without_init():
    class Fixed(ProposalSource):
        name = "fixed"

        def propose(self, image):
            t = self.thresholds
            return postprocess_proposals(_grid_boxes(5), np.linspace(0.1, 0.9, 5),
                                         min_score=t["min_score"], nms_iou=t["nms_iou"],
                                         max_proposals=t["max_proposals"])

    src = Fixed()
    assert src.thresholds == {"min_score": 0.3, "nms_iou": 0.8, "max_proposals": 100}
    assert len(src.propose(None)) == 4
    src.set_thresholds(max_proposals=2)
    np.testing.assert_array_equal(src.propose(None).scores, np.float32([0.9, 0.7]))
    with pytest.raises(TypeError):
        type("NoPropose", (ProposalSource,), {"name": "x"})()


def test_build_proposal_source(tiny_omdet, astronaut):
    assert build_proposal_source("none", None) is None
    src = build_proposal_source("OmDet-Turbo", str(tiny_omdet), min_score=0.0, max_proposals=5)
    assert isinstance(src, OmDetTurboProposals) and isinstance(src, ProposalSource)
    assert src.name.startswith("omdet_turbo:")
    assert len(src.propose(astronaut)) <= 5
    with pytest.raises(ValueError, match="omdet_turbo, grounding_dino, owlv2, wedetect, none"):
        build_proposal_source("upn", None)
    assert PROPOSAL_KINDS == ("omdet_turbo", "grounding_dino", "owlv2", "wedetect", "none")
    # default thresholds are the kind's reference ones (UPN's for the zero-shot detectors)
    assert build_proposal_source("omdet_turbo", str(tiny_omdet)).thresholds == {
        "min_score": 0.3, "nms_iou": 0.8, "max_proposals": 100}


def test_missing_or_wrong_checkpoint(tmp_path, tiny_omdet):
    with pytest.raises(CheckpointError, match="does not exist"):
        OmDetTurboProposals(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="does not exist"):
        build_proposal_source("omdet_turbo", "/nonexistent/omdet-dir")
    with pytest.raises(CheckpointError, match="config"):
        OmDetTurboProposals(tmp_path)  # empty directory
    with pytest.raises(CheckpointError, match="model_type"):
        build_proposal_source("grounding_dino", tiny_omdet)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        OmDetTurboProposals(tmp_path / "file")


def test_incomplete_checkpoint(tmp_path, tiny_omdet):
    (tmp_path / "config.json").write_text((tiny_omdet / "config.json").read_text())
    with pytest.raises(CheckpointError):
        OmDetTurboProposals(tmp_path)


def _write_tiny_owlv2(directory):
    from transformers import (CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection,
                              Owlv2ImageProcessor, Owlv2Processor)
    from vlxseek_core.proposals.tiny import _build_clip_bpe

    vocab, merges = _build_clip_bpe(GENERIC_VOCABULARY)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}),
                   tokenizer=tok).save_pretrained(directory)
    eot = len(vocab) - 1
    cfg = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                         bos_token_id=eot - 1, eos_token_id=eot, pad_token_id=eot),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=64, patch_size=16),
        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Owlv2ForObjectDetection(cfg).save_pretrained(directory)
    return directory


def test_generic_adapter_with_owlv2(tmp_path, astronaut):
    """The same adapter code path serves another zero-shot detector family."""
    d = _write_tiny_owlv2(tmp_path)
    src = build_proposal_source("owlv2", d, min_score=0.0)
    assert isinstance(src, ZeroShotDetectorProposals) and src.kind == "owlv2"
    p = src.propose(astronaut)
    h, w = astronaut.shape[:2]
    assert 0 < len(p) <= 16  # 16 patches = 16 candidate boxes
    assert (p.boxes >= 0).all() and (p.boxes[:, [0, 2]] <= w).all()
    assert (p.boxes[:, [1, 3]] <= h).all()
    assert (np.diff(p.scores) <= 0).all()
    auto = ZeroShotDetectorProposals(d, min_score=0.0)  # model_class="auto"
    assert auto.kind == "owlv2"
    np.testing.assert_array_equal(auto.propose(astronaut).boxes, p.boxes)


def test_user_box_whose_size_vanishes_in_float32_is_refused():
    """Found by hypothesis: height 7.6e-258 > 0 in float64 but 0 in the float32 result."""
    with pytest.raises(InvalidRequestError, match="zero or negative width/height"):
        validate_user_boxes(np.array([[0.0, 0.0, 1.0, 7.649813497794052e-258]]), (1, 1))
    with pytest.raises(InvalidRequestError, match="float32 range"):
        validate_user_boxes(np.array([[0.0, 0.0, 1e300, 5.0]]), (10, 10))
