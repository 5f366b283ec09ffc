"""VLX-Seek 1.5 with the built-in proposal sources (issue 12 item 4): WeDetect (its reference
source) and OmDet-Turbo feed a 1.5 pipeline exactly as the same boxes given by the caller do,
also with ``mm_bbox_order_mode: raster`` (results index the source's proposals)."""
import numpy as np
import pytest

from vlxseek_core.proposals import write_tiny_omdet_turbo, write_tiny_wedetect
from vlxseek_core.types import Proposals


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module", params=["wedetect", "omdet_turbo"])
def source_pipeline(request, tiny15_raster_dir, tmp_path_factory):
    from vlxseek_core.pipeline import VLXSeek

    writer = write_tiny_wedetect if request.param == "wedetect" else write_tiny_omdet_turbo
    detector = writer(tmp_path_factory.mktemp(f"tiny_{request.param}"))
    return VLXSeek.from_pretrained(tiny15_raster_dir, device="cpu", dtype="float32",
                                   proposal_source=request.param, proposal_model=str(detector),
                                   proposal_min_score=0.0, max_new_tokens=16)


@pytest.mark.parametrize("task,text", [("detect", "person; flag"), ("count", "person")])
def test_source_proposals_equal_caller_boxes(source_pipeline, astronaut, task, text):
    from_source = source_pipeline.query(astronaut, text, task=task)
    props = from_source.proposals
    assert 0 < len(props) <= 100
    h, w = astronaut.shape[:2]
    assert np.all(props.boxes[:, 0] >= 0) and np.all(props.boxes[:, 2] <= w)
    assert np.all(props.boxes[:, 1] >= 0) and np.all(props.boxes[:, 3] <= h)
    given = source_pipeline.query(astronaut, text, task=task,
                                  proposals=Proposals(props.boxes.copy(), props.scores.copy()))
    assert given.answer == from_source.answer
    assert given.groundings == from_source.groundings
    assert from_source.detections  # constrained decoding names at least one region here
    for det in from_source.detections:
        assert 0 <= det.region_index < len(props)
        assert np.array_equal(det.box, props.boxes[det.region_index])
        assert det.score == pytest.approx(float(props.scores[det.region_index]))
