"""A rejection answer (``<objects>None</objects>``) over ROS: success, no detections, the reason.

The fake pipeline of ``node_harness.py`` returns results filled by the real
``VLXSeek._fill_answer`` from a fixed answer text, so the response shows what the node makes of
the pipeline's ``rejected``/``warnings`` for absent targets and empty answers.
"""
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")

from node_harness import BOXES, FakePipeline, Harness, frame  # noqa: E402
from vlxseek_core.pipeline import VLXSeek  # noqa: E402
from vlxseek_core.types import Proposals, QueryResult  # noqa: E402


class AnsweringPipeline(FakePipeline):
    """Answers every query with ``self.answer``, parsed as the real pipeline parses it."""

    def __init__(self, answer: str):
        super().__init__()
        self.answer = answer

    def query(self, image, text, task="detect", boxes=None, max_new_tokens=None,
              region_indices=None, proposals=None, progress=None):
        super().query(image, text, task, boxes, max_new_tokens, region_indices, proposals,
                      progress)
        result = QueryResult(task=task, query=text, prompt_text="", answer="", groundings=[],
                             detections=[],
                             proposals=Proposals(BOXES, np.array([0.9, 0.5], np.float32)),
                             image_size=image.shape[:2])
        VLXSeek._fill_answer(result, self.answer)
        return result


@pytest.fixture
def answering():
    pipeline = AnsweringPipeline("")
    harness = Harness(pipeline)
    yield harness, pipeline
    harness.close()


def test_rejection_is_a_success_without_detections_and_says_why(answering):
    harness, pipeline = answering
    pipeline.answer = "<ground>knife</ground><objects>None</objects>"
    res = harness.call("knife", image=frame())
    assert res.success
    assert list(res.detections.detections) == [] and list(res.groundings) == []
    assert res.message == "absent: 'knife' (the model answered None)"
    assert res.answer == pipeline.answer and res.count == -1
    assert len(res.proposals.detections) == 2  # the regions the model looked at


def test_partial_rejection_keeps_the_found_phrase(answering):
    harness, pipeline = answering
    pipeline.answer = ("<ground>cup</ground><objects><region1></objects>"
                       "<ground>knife</ground><objects>None</objects>")
    res = harness.call("cup; knife", image=frame())
    assert res.success and res.message == "absent: 'knife' (the model answered None)"
    assert [(d.id, d.results[0].hypothesis.class_id) for d in res.detections.detections] == [
        ("1", "cup")]
    assert [g.phrase for g in res.groundings] == ["cup"]


def test_count_rejection_counts_zero(answering):
    harness, pipeline = answering
    pipeline.answer = "<ground>knife</ground><objects>None</objects>0"
    res = harness.call("knife", image=frame(), task="count")
    assert res.success and res.count == 0 and list(res.detections.detections) == []
    assert res.message == "absent: 'knife' (the model answered None)"


def test_empty_answer_is_a_success_that_says_nothing_was_found(answering):
    harness, pipeline = answering
    pipeline.answer = ""
    res = harness.call("knife", image=frame())
    assert res.success and list(res.detections.detections) == []
    assert res.message == "the model found nothing (empty answer)"
