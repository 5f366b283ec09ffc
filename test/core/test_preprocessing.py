"""Regression pin of the preprocessing chain on a real photo of odd size (spec §4.1, §7.5)."""
import numpy as np
import pytest
import torch
from skimage import data

from vlxseek_core.errors import InvalidImageError
from vlxseek_core.preprocessing import (ImagePreprocessor, aux_target_size, capped_size,
                                        to_pil_rgb)
from vlxseek_core.tiny import QWEN25_VL_PREPROCESSOR

BOXES = np.array([[100.5, 20.25, 300.0, 400.0], [0, 0, 640, 427], [-10, 50, 700, 60]],
                 np.float32)
VT_BOXES = [[101.12810, 19.91800, 301.875, 393.44260], [0.0, 0.0, 644.0, 420.0],
            [0.0, 49.18030, 644.0, 59.01640]]


@pytest.fixture(scope="module")
def qwen_processor():
    from transformers import Qwen2VLImageProcessorPil

    kwargs = {k: v for k, v in QWEN25_VL_PREPROCESSOR.items() if k != "image_processor_type"}
    return Qwen2VLImageProcessorPil(**kwargs)


@pytest.mark.parametrize("mode,aux_shape,aux_boxes", [
    ("squash", (768, 768), [[120.6, 36.4215, 360.0, 719.43799], [0, 0, 768, 768],
                            [0.0, 89.92970, 768.0, 107.91570]]),
    ("dynamic", (427, 640), [[100.5, 20.25, 300.0, 400.0], [0, 0, 640, 427],
                             [0, 50, 640, 60]]),
    ("dynamic_square", (512, 512), [[80.4, 24.281, 240.0, 479.62521], [0, 0, 512, 512],
                                    [0.0, 59.95320, 512.0, 71.94380]]),
])
def test_rocket_chain_is_pinned(qwen_processor, mode, aux_shape, aux_boxes):
    img = data.rocket()
    assert img.shape == (427, 640, 3)
    p = ImagePreprocessor(qwen_processor, mode)(img, BOXES)
    assert p.original_size == (427, 640) and p.capped_size == (427, 640)
    # Qwen smart resize: 427→420, 640→644 (multiples of 28) → 30×46 patches.
    assert p.image_grid_thw.tolist() == [[1, 30, 46]]
    assert tuple(p.pixel_values.shape) == (1380, 1176) and p.pixel_values.dtype == torch.float32
    assert tuple(p.aux_pixel_values.shape) == (1, 3) + aux_shape
    assert np.allclose(p.aux_boxes.numpy(), aux_boxes, atol=1e-3)
    assert np.allclose(p.vt_boxes.numpy(), VT_BOXES, atol=1e-3)
    assert np.allclose(p.pixel_values[0, :4].numpy(), [-1.54409] * 4, atol=1e-4)
    assert np.allclose(p.aux_pixel_values[0, :, 0, 0].numpy(), [-1.82678, -1.45798, -0.79355],
                       atol=1e-4)


def test_long_side_cap_scales_boxes(qwen_processor):
    big = np.repeat(np.repeat(data.rocket(), 5, axis=0), 5, axis=1)  # 2135 × 3200
    p = ImagePreprocessor(qwen_processor, "squash")(big, BOXES * 5)
    assert p.capped_size == (1366, 2048)  # int(2135 * 0.64) = 1366
    assert p.image_grid_thw.tolist() == [[1, 98, 146]]
    assert np.allclose(p.vt_boxes[0].numpy(), [320.972, 65.066, 958.125, 1285.246], atol=1e-2)


@pytest.mark.parametrize("w,h,expected", [
    (640, 427, (640, 427)), (3200, 2135, (2048, 1366)), (2135, 3200, (1366, 2048)),
    (10, 5, (28, 28)), (5000, 20, (2048, 28)),
])
def test_capped_size(w, h, expected):
    assert capped_size(w, h) == expected


def test_aux_target_sizes():
    assert aux_target_size(640, 427, "squash") == (768, 768)
    assert aux_target_size(640, 427, "dynamic") == (640, 427)
    assert aux_target_size(640, 427, "dynamic_square") == (512, 512)
    assert aux_target_size(2048, 1366, "dynamic_square") == (1792, 1792)
    with pytest.raises(ValueError):
        aux_target_size(1, 1, "letterbox")


def test_pil_and_numpy_inputs_agree(qwen_processor):
    img = data.coffee()
    pre = ImagePreprocessor(qwen_processor, "squash")
    a = pre(img, BOXES)
    b = pre(to_pil_rgb(img), BOXES)
    assert torch.equal(a.pixel_values, b.pixel_values)
    assert torch.equal(a.aux_boxes, b.aux_boxes)
    with pytest.raises(InvalidImageError):
        to_pil_rgb(np.zeros((5, 5, 2), np.uint8))
    empty = pre(img, np.zeros((0, 4), np.float32))  # the image alone (spec §3.2)
    assert empty.aux_boxes.shape == (0, 4) and empty.vt_boxes.shape == (0, 4)
    assert torch.equal(empty.pixel_values, a.pixel_values)
    with pytest.raises(ValueError):
        pre(img, np.zeros(3, np.float32))  # not [N, 4]


def test_to_pil_rgb_copies_only_when_converting():
    from PIL import Image

    rgb = Image.fromarray(data.coffee())
    assert to_pil_rgb(rgb) is rgb
    gray = Image.fromarray(data.camera())
    out = to_pil_rgb(gray)
    assert out.mode == "RGB" and out.size == gray.size
    assert np.array_equal(np.asarray(out)[..., 0], data.camera())


def test_small_image_boxes_are_rescaled_with_the_image(qwen_processor):
    """20×60 (w×h): the 28 px floor widens the image by 28/20; the boxes follow it.

    The reference's ``load_image`` enlarges the image but leaves the boxes in the 20 px frame
    (a documented difference, README); here a box keeps covering the same content.
    """
    img = np.zeros((60, 20, 3), np.uint8)
    img[10:30, 5:15] = 255  # the object: x 5..15, y 10..30
    boxes = np.array([[5, 10, 15, 30], [0, 0, 20, 60]], np.float32)
    p = ImagePreprocessor(qwen_processor, "dynamic")(img, boxes)
    assert p.original_size == (60, 20) and p.capped_size == (60, 28)
    # aux = capped frame in `dynamic` mode: x scaled by 28/20 (the reference keeps [5, 10, 15, 30])
    assert np.allclose(p.aux_boxes.numpy(), [[7, 10, 21, 30], [0, 0, 28, 60]])
    # Qwen smart resize of 60×28 (h×w): 3136 min pixels → 84×56, grid 6×4
    assert p.image_grid_thw.tolist() == [[1, 6, 4]]
    assert np.allclose(p.vt_boxes.numpy(), [[14, 14, 42, 42], [0, 0, 56, 84]])
    # The object sits inside the rescaled box of the aux image, not in the reference's box.
    aux = p.aux_pixel_values[0].mean(dim=0).numpy()  # [60, 28], bright = object
    bright = aux > aux.mean()
    ys, xs = np.nonzero(bright)
    assert 9 <= ys.min() and ys.max() <= 30 and 6 <= xs.min() and xs.max() <= 21
    assert xs.max() > 15  # beyond the right edge of the unscaled (reference) box


def test_small_side_is_enlarged_before_the_cap_as_the_reference(qwen_processor):
    """5000×20: reference ``load_image`` → 5000×28, then the 2048 cap → 2048×28 (BICUBIC)."""
    from PIL import Image

    from vlxseek_core.preprocessing import cap_image

    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, (20, 5000, 3), dtype=np.uint8))
    reference = pil.resize((5000, 28), Image.BICUBIC).resize((2048, 28), Image.BICUBIC)
    capped = cap_image(pil)
    assert capped.size == (2048, 28)
    assert np.array_equal(np.asarray(capped), np.asarray(reference))
    p = ImagePreprocessor(qwen_processor, "dynamic")(pil, np.array([[1000, 5, 2500, 15]]))
    # x by 2048/5000, y by 28/20 (reference: y unscaled, 5..15)
    assert np.allclose(p.aux_boxes.numpy(), [[409.6, 7.0, 1024.0, 21.0]], atol=1e-3)
