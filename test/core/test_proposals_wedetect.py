"""WeDetect-Base-Uni proposal source (spec vlx-seek-1.5.md §5): letterbox geometry and box
back-mapping, the per-prompt selection, the network's decoding, and end-to-end runs on a real
photo with random weights (tiny size; the full size runs in test_proposals_wedetect_ckpt.py,
with the checkpoint-layout tests).

Expected numbers are worked out by hand in the comments.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlxseek_core.errors import CheckpointError, InvalidImageError
from vlxseek_core.proposals import (DEFAULT_MODELS, PROPOSAL_KINDS, ProposalSource,
                                    WeDetectProposals, build_proposal_source,
                                    reference_thresholds, write_tiny_wedetect)
from vlxseek_core.proposals.wedetect import letterbox, letterbox_to_image, select_detections
from vlxseek_core.proposals.wedetect_model import TINY_CONFIG, WeDetectConfig, WeDetectUni


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_wedetect(tmp_path_factory.mktemp("tiny_wedetect"))


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return data.coffee()[:399, :601]  # 601 x 399: odd sizes, letterboxed top/bottom


# ------------------------------------------------------------------ letterbox geometry

@pytest.mark.parametrize("w, h, resized, offset, pad", [
    # r = 640/601; 399·r = 424.89 → 425; dh = 215 → top ⌊107.5⌋ = 107, pad 107.5
    (601, 399, (640, 425), (0, 107), (0.0, 107.5)),
    # r = 640/1001; 333·r = 212.91 → 213; dw = 427 → left 213, pad 213.5
    (333, 1001, (213, 640), (213, 0), (213.5, 0.0)),
    # upscaling: r = 640/15 = 42.67; 7·r = 298.67 → 299; dh = 341 → top 170, pad 170.5
    (15, 7, (640, 299), (0, 170), (0.0, 170.5)),
    # r = 0.5, 401·r = 200.5 → Python's round: 200 (half to even); dh = 440 → 220, 220.0
    (1280, 401, (640, 200), (0, 220), (0.0, 220.0)),
    (640, 640, (640, 640), (0, 0), (0.0, 0.0)),
])
def test_letterbox_geometry(w, h, resized, offset, pad):
    img = np.full((h, w, 3), 200, np.uint8)
    lb = letterbox(img, 640)
    assert lb.ratio == min(640 / w, 640 / h)
    assert (lb.resized, lb.offset, lb.pad) == (resized, offset, pad)
    assert lb.image.shape == (640, 640, 3) and lb.image.dtype == np.uint8
    (left, top), (nw, nh) = lb.offset, lb.resized
    inside = np.zeros((640, 640), bool)
    inside[top:top + nh, left:left + nw] = True
    assert (lb.image[inside] == 200).all()          # a constant image stays constant
    assert (lb.image[~inside] == 114).all()         # (114, 114, 114) everywhere else


def test_letterbox_content_and_errors():
    img = np.zeros((3, 5, 3), np.uint8)
    img[:, :, 0] = 255                               # pure red survives the bilinear resize
    lb = letterbox(img, 640)                          # r = 128: 640 × 384 at top 128
    assert lb.offset == (0, 128) and lb.resized == (640, 384)
    assert (lb.image[128:512, :, 0] == 255).all() and (lb.image[128:512, :, 1] == 0).all()
    thin = letterbox(np.zeros((10000, 1, 3), np.uint8), 640)  # 1 · 0.064 → 0 → kept at 1
    assert thin.resized == (1, 640)
    with pytest.raises(InvalidImageError):
        letterbox(np.zeros((4, 4), np.uint8))
    with pytest.raises(InvalidImageError):
        letterbox(np.zeros((4, 4, 3), np.float32))


def test_box_back_mapping_half_pixel():
    lb = letterbox(np.zeros((399, 601, 3), np.uint8), 640)   # r = 640/601, pad (0, 107.5)
    boxes = torch.tensor([[64.0, 171.5, 128.0, 300.0],        # inside the image
                          [-10.0, 50.0, 700.0, 600.0],        # beyond every side → clamped
                          [0.0, 108.0, 10.0, 109.0]],         # the pasted row 107 + 1 pixel
                         dtype=torch.float32)
    out = letterbox_to_image(boxes, lb, (399, 601))
    k = 601 / 640                                             # 1 / r
    expected = [[64 * k, 64 * k, 128 * k, 192.5 * k],         # 60.1, 60.1, 120.2, 180.7695
                [0.0, 0.0, 601.0, 399.0],
                # the reference subtracts the float pad 107.5 although the paste is at 107:
                # the first image row (letterbox y 107..108) maps to y ∈ [-0.47, 0.47]
                [0.0, 0.5 * k, 10 * k, 1.5 * k]]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-4)
    assert out.dtype == torch.float32 and boxes[0, 0] == 64.0  # input left untouched


# ------------------------------------------------------------------ selection

def _hand_made():
    boxes = torch.tensor([[0, 0, 10, 10],        # a0
                          [0, 0, 10, 11],        # a1: IoU(a0, a1) = 100/110 = 0.91 > 0.7
                          [50, 50, 60, 60],      # a2
                          [100, 100, 110, 110]],  # a3
                         dtype=torch.float32)
    scores = torch.tensor([[0.90, 0.80],
                           [0.85, 0.00],         # exactly 0: fails "score > 0"
                           [0.70, 0.95],
                           [0.00, 0.00]])
    return scores, boxes


def test_select_per_prompt_nms_and_order():
    scores, boxes = _hand_made()
    b, s, p = select_detections(scores, boxes)
    # prompt 0: a0 (0.9) suppresses a1 (0.85), a2 (0.7) stays; prompt 1: a2 (0.95), a0 (0.8).
    # a0 and a2 each survive under both prompts; rows in score order.
    np.testing.assert_array_equal(s.numpy(), np.float32([0.95, 0.90, 0.80, 0.70]))
    np.testing.assert_array_equal(p.numpy(), [1, 0, 1, 0])
    np.testing.assert_array_equal(b.numpy(), boxes[[2, 0, 0, 2]].numpy())
    assert s.dtype == b.dtype == torch.float32 and p.dtype == torch.int64


def test_select_cuts_and_thresholds():
    scores, boxes = _hand_made()
    b, s, _ = select_detections(scores, boxes, max_detections=3)
    np.testing.assert_array_equal(s.numpy(), np.float32([0.95, 0.90, 0.80]))
    # only the 2 best pairs reach NMS
    _, s, _ = select_detections(scores, boxes, pre_nms_topk=2)
    np.testing.assert_array_equal(s.numpy(), np.float32([0.95, 0.90]))
    # strict threshold: 0.8 itself is dropped; a1 (0.85) is still suppressed by a0
    _, s, p = select_detections(scores, boxes, min_score=0.8)
    np.testing.assert_array_equal(s.numpy(), np.float32([0.95, 0.90]))
    # without suppression (IoU threshold 1) a1 survives
    _, s, _ = select_detections(scores, boxes, nms_iou=1.0)
    np.testing.assert_array_equal(s.numpy(), np.float32([0.95, 0.90, 0.85, 0.80, 0.70]))
    b, s, p = select_detections(torch.zeros(4, 2), boxes)
    assert b.shape == (0, 4) and s.shape == (0,) and p.shape == (0,)


def test_select_top_100_ties_and_garbage():
    # 300 disjoint boxes, two prompts, all with the same score: ties keep (anchor, prompt)
    # order; the cut is at 100
    xs = torch.arange(300, dtype=torch.float32) * 20
    boxes = torch.stack([xs, xs * 0, xs + 10, xs * 0 + 10], 1)
    b, s, p = select_detections(torch.full((300, 2), 0.5), boxes)
    assert len(b) == 100
    np.testing.assert_array_equal(b[::2, 0].numpy(), xs[:50].numpy())
    np.testing.assert_array_equal(p.numpy(), [0, 1] * 50)
    boxes[0, 2] = float("nan")                       # a non-finite box is dropped
    b, _, _ = select_detections(torch.full((300, 1), 0.5), boxes)
    assert torch.isfinite(b).all() and b[0, 0] == 20


# ------------------------------------------------------------------ network decoding

def test_decoding_priors_dfl_and_contrast():
    """With hand-set head weights the network's output is known in closed form."""
    torch.manual_seed(0)
    net = WeDetectUni(TINY_CONFIG).eval()
    head = net.bbox_head.head_module
    cfg = TINY_CONFIG
    emb = torch.randn(cfg.num_prompts, cfg.embed_dims) * 0.3       # norms ≠ 1: used as is
    cls_bias = torch.randn(cfg.embed_dims)
    with torch.no_grad():
        net.embeddings.copy_(emb)
        for level in range(3):
            for branch, bias in ((head.cls_preds[level], cls_bias),
                                 (head.reg_preds[level], torch.zeros(4 * cfg.reg_max))):
                branch[2].weight.zero_()
                branch[2].bias.copy_(bias)
            head.reg_preds[level][2].bias.view(4, cfg.reg_max)[:, 2] = 60.0  # bin 2 wins
            c = head.cls_contrasts[level]
            c.logit_scale.fill_(math.log(0.5))
            c.bias.fill_(0.25 * level)
        scores, boxes = net(torch.rand(1, 3, 64, 64))
    assert scores.shape == (1, 64 + 16 + 4, cfg.num_prompts) and boxes.shape == (1, 84, 4)
    # BN in eval with running stats (0, 1): x / sqrt(1 + 1e-3)
    logits = (cls_bias / math.sqrt(1 + 1e-3)) @ emb.T * 0.5
    for level, first in enumerate((0, 64, 80)):
        torch.testing.assert_close(scores[0, first], torch.sigmoid(logits + 0.25 * level))
    # distance = 2 bins × stride on every side; centres at (col + 0.5) · stride
    torch.testing.assert_close(boxes[0, 0], torch.tensor([4 - 16, 4 - 16, 4 + 16, 4 + 16.]))
    # row-major: anchor 1 is (col 1, row 0), anchor 9 is (col 1, row 1) of the 8 × 8 grid
    torch.testing.assert_close(boxes[0, 1], torch.tensor([12 - 16, 4 - 16, 12 + 16, 4 + 16.]))
    torch.testing.assert_close(boxes[0, 9], torch.tensor([12 - 16, 12 - 16, 12 + 16, 12 + 16.]))
    torch.testing.assert_close(boxes[0, 64], torch.tensor([8 - 32, 8 - 32, 8 + 32, 8 + 32.]))
    torch.testing.assert_close(boxes[0, 83], torch.tensor([48 - 64, 48 - 64, 48 + 64, 48 + 64.]))


def test_config_validation():
    with pytest.raises(ValueError, match="neck inputs"):
        WeDetectConfig(dims=(16, 32, 64, 128))            # base neck expects 128…1024
    with pytest.raises(ValueError, match="unknown"):
        WeDetectConfig.from_dict({"dims": [1], "colour": 1})
    assert WeDetectConfig.from_dict(TINY_CONFIG.to_dict()) == TINY_CONFIG
    assert TINY_CONFIG.head_channels == (16, 32, 64)


# ------------------------------------------------------------------ the proposal source

def test_registered_by_name(tiny_dir):
    assert "wedetect" in PROPOSAL_KINDS and DEFAULT_MODELS["wedetect"] == "fushh7/WeDetect"
    assert reference_thresholds("WeDetect") == (0.0, 0.7)
    assert reference_thresholds("omdet_turbo") == (0.3, 0.8)
    src = build_proposal_source("WeDetect", str(tiny_dir))
    assert isinstance(src, WeDetectProposals) and isinstance(src, ProposalSource)
    assert src.name == f"wedetect:{tiny_dir}"
    assert src.thresholds == {"min_score": 0.0, "nms_iou": 0.7, "max_proposals": 100}
    src = build_proposal_source("wedetect", tiny_dir, min_score=0.5, nms_iou=0.5,
                                max_proposals=7)
    assert src.thresholds == {"min_score": 0.5, "nms_iou": 0.5, "max_proposals": 7}


def test_tiny_end_to_end(tiny_dir, photo):
    src = WeDetectProposals(tiny_dir)
    boxes, scores, prompts = src.detect(photo)
    assert 0 < len(boxes) <= 100 and boxes.dtype == scores.dtype == np.float32
    h, w = photo.shape[:2]
    assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= w).all()
    assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= h).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert (np.diff(scores) <= 0).all() and ((scores > 0) & (scores <= 1)).all()
    assert ((prompts >= 0) & (prompts < TINY_CONFIG.num_prompts)).all()
    props = src.propose(photo)
    np.testing.assert_array_equal(props.boxes, boxes)     # deterministic
    src.set_thresholds(max_proposals=5)
    assert len(src.propose(photo)) == 5
    with pytest.raises(InvalidImageError):
        src.propose(photo.astype(np.float32))


def test_locations(tmp_path, tiny_dir):
    with pytest.raises(CheckpointError, match="do not exist"):
        WeDetectProposals(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="neither model.safetensors"):
        WeDetectProposals(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "x"}')
    (tmp_path / "wedetect_base_uni.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="'wedetect' architecture"):
        WeDetectProposals(tmp_path)
    # a hub id that is not cached, with the network forbidden
    with pytest.raises(CheckpointError, match="cannot get wedetect_base_uni.pth"):
        WeDetectProposals("nobody-here/not-a-wedetect-repo", local_files_only=True)
    # a weights file alone means the base architecture: the tiny file does not fit it
    with pytest.raises(CheckpointError, match="shape mismatch"):
        WeDetectProposals(tiny_dir / "model.safetensors")
    # …unless the architecture is given
    src = WeDetectProposals(tiny_dir / "model.safetensors", config=TINY_CONFIG)
    assert src.config == TINY_CONFIG


def test_pipeline_uses_wedetect_thresholds(tiny_model_dir, tiny_dir, astronaut):
    from vlxseek_core.pipeline import VLXSeek

    pipe = VLXSeek.from_pretrained(tiny_model_dir, device="cpu", dtype="float32",
                                   proposal_source="wedetect", proposal_model=str(tiny_dir),
                                   max_new_tokens=8)
    assert pipe.proposal_source.thresholds == {"min_score": 0.0, "nms_iou": 0.7,
                                               "max_proposals": 100}
    res = pipe.query(astronaut, "person", task="detect")
    assert 0 < len(res.proposals) <= 100
    assert (res.proposals.boxes <= 512).all() and (res.proposals.boxes >= 0).all()
