"""Fixtures of the argument-validation tests: a fast pipeline on the session's tiny model.

Test modules import the fixtures (``from validation_fixtures import fast_pipeline,
one_thread  # noqa: F401``). The pipeline shares the session model and tokenizer; its aux
image keeps the input size (``dynamic``), so a small frame encodes in milliseconds, and the
module runs torch on one thread: on a busy 2-core machine two threads make each tiny
inference ~100x slower.
"""
import numpy as np
import pytest
import torch

SMALL_BOXES = np.array([[1, 1, 20, 20], [5, 5, 30, 25], [0, 0, 40, 30]], np.float32)


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fast_pipeline(tiny_pipeline, one_thread):
    from vlxseek_core.pipeline import VLXSeek
    from vlxseek_core.preprocessing import ImagePreprocessor

    pre = ImagePreprocessor(tiny_pipeline.preprocessor.qwen, "dynamic")
    return VLXSeek(tiny_pipeline.model, tiny_pipeline.tokenizer, pre, max_new_tokens=4,
                   frame_cache_size=4)


@pytest.fixture(scope="module")
def small_image():
    """A 30x40 RGB frame (``SMALL_BOXES`` lie inside it)."""
    return np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
