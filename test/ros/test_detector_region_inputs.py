"""Where the node's regions come from: request ``region_indices`` and proposals on a topic.

In-process with the fake pipeline of ``node_harness`` (it records the regions every query
got); the tiny-model process test covers the same paths end to end.
"""
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import BoundingBox2D, Detection2DArray  # noqa: E402

from node_harness import NS, Harness, detection_array, frame, wait_for  # noqa: E402

# An external detector's output for a 64x48 frame: (x1, y1, x2, y2, score).
RAW = [(10.7, 5.2, 30.9, 25.5, 0.55),     # kept, truncated to (10, 5, 30, 25)
       (11.0, 5.0, 31.0, 25.0, 0.50),     # IoU > 0.8 with the first, lower score: suppressed
       (40.0, 10.0, 60.0, 40.0, 0.95),    # kept, first after sorting by score
       (0.0, 0.0, 8.0, 8.0, 0.10)]        # below proposal_min_score 0.3: dropped
KEPT = np.float32([[40, 10, 60, 40], [10, 5, 30, 25]])
KEPT_SCORES = np.float32([0.95, 0.55])


def proposals_msg(sec, rows=RAW, frame_id="cam"):
    header = Header()
    header.stamp.sec, header.frame_id = sec, frame_id
    return detection_array(header, rows)


class TopicHarness(Harness):
    """The node with ``proposal_source: topic`` and a publisher of proposals."""

    def __init__(self, pipeline, overrides=()):
        super().__init__(pipeline, [Parameter("proposal_source", value="topic"),
                                    Parameter("proposal_wait_s", value=1.0), *overrides])
        self.proposal_pub = self.peer.create_publisher(
            Detection2DArray, f"{NS}/proposals",
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def send_proposals(self, msg, wait=True):
        wait_for(lambda: self.proposal_pub.get_subscription_count() > 0)
        before = self.node.status()["proposals_received"]
        self.proposal_pub.publish(msg)
        if wait:
            wait_for(lambda: self.node.status()["proposals_received"] > before)

    def send_frames(self, *secs):
        """Publish frames one after another, each once the node holds the previous one."""
        for sec in secs:
            self.send_frame(frame(sec=sec))
            wait_for(lambda: self.node._frames.newest_frame() is not None
                     and self.node._frames.newest_frame().msg.header.stamp.sec == sec)


@pytest.fixture
def topic(fake):
    h = TopicHarness(fake)
    yield h
    h.close()


def bbox(x1, y1, x2, y2):
    b = BoundingBox2D()
    b.center.position.x, b.center.position.y = (x1 + x2) / 2, (y1 + y2) / 2
    b.size_x, b.size_y = float(x2 - x1), float(y2 - y1)
    return b


# ------------------------------------------------------------------ region_indices

def test_region_indices_reach_the_pipeline(harness, fake):
    res = harness.call("it", image=frame(), task="caption", region_indices=[1])
    assert res.success
    assert fake.inputs[-1] == {"boxes": None, "region_indices": [1], "proposals": None}
    res = harness.call("it", image=frame(), task="ocr", regions=[bbox(1, 1, 9, 9)],
                       region_indices=[0])
    assert res.success and fake.inputs[-1]["region_indices"] == [0]
    assert fake.inputs[-1]["boxes"].tolist() == [[1, 1, 9, 9]]
    # without indices a region task uses all `regions` (the core's default)
    assert harness.call("it", image=frame(), task="ocr", regions=[bbox(1, 1, 9, 9)]).success
    assert fake.inputs[-1]["region_indices"] is None


def test_region_task_without_regions_or_indices_is_refused(harness, fake):
    res = harness.call("it", image=frame(), task="caption")
    assert not res.success and "neither `regions` boxes nor `region_indices`" in res.message
    res = harness.call("it", image=frame(), task="caption", region_indices=list(range(101)))
    assert not res.success and "101 region_indices" in res.message
    assert fake.calls == []


# ------------------------------------------------------------------ proposals on a topic

def test_topic_proposals_are_paired_by_stamp_and_post_processed(topic, fake):
    topic.send_frames(1, 2, 3)
    topic.send_proposals(proposals_msg(2))
    res = topic.call()
    assert res.success, res.message
    assert res.header.stamp.sec == 2      # the newest frame that has proposals
    given = fake.inputs[-1]["proposals"]
    np.testing.assert_array_equal(given.boxes, KEPT)
    np.testing.assert_allclose(given.scores, KEPT_SCORES)
    assert fake.inputs[-1]["boxes"] is None
    assert [d.id for d in res.proposals.detections] == ["0", "1"]
    assert res.proposals.detections[0].bbox.center.position.x == 50.0
    status = topic.node.status()
    assert status["proposals_received"] == 1 and status["proposal_source"] == "topic"


def test_a_call_waits_for_late_proposals(topic, fake):
    topic.send_frames(5)
    later = threading.Timer(0.3, lambda: topic.send_proposals(proposals_msg(5), wait=False))
    later.start()
    res = topic.call()
    later.join()
    assert res.success and res.header.stamp.sec == 5
    assert len(fake.inputs[-1]["proposals"]) == 2


def test_no_matching_proposals_fails_with_the_stamps(topic, fake):
    topic.node.set_parameters([Parameter("proposal_wait_s", value=0.2)])
    topic.send_frames(6)
    topic.send_proposals(proposals_msg(4))
    res = topic.call()
    assert not res.success
    assert "no recent frame" in res.message
    assert "newest frame stamp 6.000000000" in res.message
    assert "newest proposals stamp 4.000000000" in res.message
    # a tolerance pairs near stamps: 0.9 s is not enough for t=4 and t=6, 1 s pairs t=5 and t=6
    assert topic.node.set_parameters(
        [Parameter("proposal_stamp_tolerance_s", value=0.9)])[0].successful
    assert not topic.call().success
    assert not topic.node.set_parameters(
        [Parameter("proposal_stamp_tolerance_s", value=2.5)])[0].successful  # range [0, 1]
    topic.send_proposals(proposals_msg(5))
    topic.node.set_parameters([Parameter("proposal_stamp_tolerance_s", value=1.0)])
    res = topic.call()
    assert res.success and res.header.stamp.sec == 6
    assert fake.calls and len(fake.inputs[-1]["proposals"]) == 2


def test_request_image_is_matched_by_its_stamp(topic, fake):
    topic.send_proposals(proposals_msg(40))
    res = topic.call(image=frame(sec=40))
    assert res.success and len(fake.inputs[-1]["proposals"]) == 2
    topic.node.set_parameters([Parameter("proposal_wait_s", value=0.1)])
    res = topic.call(image=frame(sec=41))
    assert not res.success
    assert "match the request image's stamp 41.000000000" in res.message
    # request regions need no proposals
    res = topic.call(image=frame(sec=41), regions=[bbox(2, 2, 20, 20)])
    assert res.success and fake.inputs[-1]["proposals"] is None
    assert fake.inputs[-1]["boxes"].tolist() == [[2, 2, 20, 20]]


def test_topic_proposals_follow_threshold_changes_and_report_frame_id(topic, fake):
    topic.send_proposals(proposals_msg(50, frame_id="other_cam"))
    assert topic.node.set_parameters([Parameter("proposal_min_score", value=0.9)])[0].successful
    res = topic.call(image=frame(sec=50))
    assert res.success
    np.testing.assert_array_equal(fake.inputs[-1]["proposals"].boxes, KEPT[:1])
    assert "proposals frame_id 'other_cam' differs from the image's 'cam'" in res.message
    # proposals below every threshold: the pipeline gets an empty set (it answers "no regions")
    topic.send_proposals(proposals_msg(51, rows=[(0, 0, 5, 5, 0.2)]))
    assert topic.call(image=frame(sec=51)).success
    assert len(fake.inputs[-1]["proposals"]) == 0


def test_standing_query_answers_frames_once_their_proposals_arrive(topic, fake):
    assert topic.node.set_parameters([Parameter("standing_query", value="person"),
                                      Parameter("max_rate_hz", value=20.0)])[0].successful
    topic.send_frames(1, 2, 3)
    time.sleep(0.3)
    assert fake.calls == []               # no proposals yet: nothing to answer
    topic.send_proposals(proposals_msg(2))
    wait_for(lambda: len(fake.calls) == 1)
    assert len(fake.inputs[0]["proposals"]) == 2
    topic.send_proposals(proposals_msg(3, rows=RAW[2:3]))
    wait_for(lambda: len(fake.calls) == 2)
    assert len(fake.inputs[1]["proposals"]) == 1
    time.sleep(0.3)
    assert len(fake.calls) == 2           # each frame once, never an older one after a newer
    topic.send_proposals(proposals_msg(1))
    time.sleep(0.3)
    assert len(fake.calls) == 2
