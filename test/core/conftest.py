"""Shared fixtures of the core tests: one tiny random checkpoint per session."""
import numpy as np
import pytest
from training_fixtures import builder, images_dir, train_model_dir  # noqa: F401 (fixtures)
from checkpoint_fixtures import ckpt, module_checkpoint  # noqa: F401 (fixtures)
from validation_fixtures import fast_pipeline, one_thread, small_image  # noqa: F401 (fixtures)
from vlx15_fixtures import tiny15_dir, tiny15_pipeline, tiny15_raster_dir  # noqa: F401


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from vlxseek_core.tiny import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny_vlm_fo1")), seed=0)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir):
    from vlxseek_core.pipeline import VLXSeek

    return VLXSeek.from_pretrained(tiny_model_dir, device="cpu", dtype="float32",
                                   proposal_source="none", max_new_tokens=48)


@pytest.fixture(scope="session")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_boxes():
    """Hand-placed boxes on skimage's astronaut (512x512): face, flag, helmet, whole."""
    return np.array([[170, 30, 320, 200], [370, 0, 512, 140], [150, 10, 340, 240],
                     [0, 0, 512, 512]], dtype=np.float32)
