"""Unit tests of vlxseek_ros.conversions and vlxseek_ros.debug_image (no rclpy node)."""
import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="needs the built workspace: source "
                    "scripts/ros_env.sh")

from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import BoundingBox2D  # noqa: E402

from vlxseek_core.errors import InvalidRequestError  # noqa: E402
from vlxseek_core.types import Detection, Grounding, Proposals, QueryResult  # noqa: E402
from vlxseek_ros import conversions as conv  # noqa: E402
from vlxseek_ros import debug_image  # noqa: E402

BOXES = np.array([[10, 20, 50, 80], [0, 0, 5, 5], [30.5, 40.25, 90.5, 41.25]], np.float32)
SCORES = np.array([0.9, 0.25, 0.5], np.float32)


def _result(**overrides) -> QueryResult:
    fields = dict(
        task="detect", query="cup", prompt_text="...",
        answer="<ground>red cup</ground><objects><region0><region2></objects>",
        groundings=[Grounding("red cup", [0, 2])],
        detections=[Detection(0, "red cup", BOXES[0], float(SCORES[0])),
                    Detection(2, "red cup", BOXES[2], float(SCORES[2]))],
        proposals=Proposals(BOXES, SCORES), image_size=(100, 120),
    )
    fields.update(overrides)
    return QueryResult(**fields)


def _header() -> Header:
    h = Header()
    h.frame_id = "camera_optical"
    h.stamp.sec, h.stamp.nanosec = 1234, 567
    return h


def test_xyxy_to_bbox_centre_and_size():
    b = conv.xyxy_to_bbox([10, 20, 50, 80])
    assert (b.center.position.x, b.center.position.y, b.center.theta) == (30.0, 50.0, 0.0)
    assert (b.size_x, b.size_y) == (40.0, 60.0)


def test_detections_to_msg_values():
    header = _header()
    arr = conv.detections_to_msg(_result(), header)
    assert arr.header == header
    assert [d.id for d in arr.detections] == ["0", "2"]
    for det, idx in zip(arr.detections, (0, 2)):
        assert det.header == header
        x1, y1, x2, y2 = BOXES[idx].astype(float)
        assert det.bbox.center.position.x == pytest.approx((x1 + x2) / 2)
        assert det.bbox.center.position.y == pytest.approx((y1 + y2) / 2)
        assert det.bbox.size_x == pytest.approx(x2 - x1)
        assert det.bbox.size_y == pytest.approx(y2 - y1)
        assert len(det.results) == 1
        assert det.results[0].hypothesis.class_id == "red cup"
        assert det.results[0].hypothesis.score == pytest.approx(float(SCORES[idx]))


def test_proposals_to_msg_values():
    arr = conv.proposals_to_msg(Proposals(BOXES, SCORES), _header())
    assert [d.id for d in arr.detections] == ["0", "1", "2"]
    assert {d.results[0].hypothesis.class_id for d in arr.detections} == {"proposal"}
    assert [d.results[0].hypothesis.score for d in arr.detections] == pytest.approx(
        SCORES.tolist())
    assert arr.detections[2].bbox.size_y == pytest.approx(1.0)
    assert conv.proposals_to_msg(Proposals.empty(), _header()).detections == []


def test_groundings_to_msgs():
    groundings = [Grounding("a", [1, 3]), Grounding("<region2>", [2])]
    msgs = conv.groundings_to_msgs(_result(groundings=groundings))
    assert [(m.phrase, list(m.region_indices)) for m in msgs] == [("a", [1, 3]),
                                                                  ("<region2>", [2])]


def test_fill_response():
    from vlxseek_ros.srv import QueryRegions
    header = _header()
    res = conv.fill_response(QueryRegions.Response(),
                             _result(warnings=["dropped <region9>"], count=None),
                             header, 12.5)
    assert res.success and res.message == "dropped <region9>"
    assert res.header == header
    assert res.answer.startswith("<ground>red cup")
    assert len(res.detections.detections) == 2 and len(res.proposals.detections) == 3
    assert res.count == -1 and res.reasoning == "" and res.inference_ms == 12.5
    res = conv.fill_response(QueryRegions.Response(), _result(count=7, reasoning="because"),
                             header, 1.0)
    assert res.count == 7 and res.reasoning == "because" and res.message == ""


def _bbox(cx, cy, w, h, theta=0.0) -> BoundingBox2D:
    b = BoundingBox2D()
    b.center.position.x, b.center.position.y, b.center.theta = cx, cy, theta
    b.size_x, b.size_y = w, h
    return b


def test_bbox_msgs_to_xyxy_roundtrip():
    boxes = conv.bbox_msgs_to_xyxy([conv.xyxy_to_bbox(b) for b in BOXES], image_size=(100, 120))
    assert boxes.dtype == np.float32 and boxes.shape == (3, 4)
    np.testing.assert_allclose(boxes, BOXES, atol=1e-4)
    assert conv.bbox_msgs_to_xyxy([]).shape == (0, 4)


@pytest.mark.parametrize("box, needle", [
    (_bbox(10, 10, 0, 5), "non-positive size"),
    (_bbox(10, 10, 5, -1), "non-positive size"),
    (_bbox(float("nan"), 10, 5, 5), "non-finite"),
    (_bbox(10, 10, 5, 5, theta=0.3), "rotated"),
    (_bbox(500, 10, 5, 5), "outside"),
    (_bbox(-10, -10, 5, 5), "outside"),
])
def test_bbox_msgs_to_xyxy_rejects(box, needle):
    with pytest.raises(InvalidRequestError, match=needle):
        conv.bbox_msgs_to_xyxy([_bbox(10, 10, 4, 4), box], image_size=(100, 120))


def test_label_colour_is_stable_and_distinct():
    assert debug_image.label_colour("cup") == debug_image.label_colour("cup")
    assert debug_image.label_colour("cup") != debug_image.label_colour("person")
    assert all(0 <= c <= 255 for c in debug_image.label_colour("x"))
    # fixed value: the colour must not depend on the process (PYTHONHASHSEED) or the machine
    assert debug_image.label_colour("cup") == debug_image.label_colour("".join(["c", "up"]))


def test_draw_result_draws_on_a_copy():
    rgb = np.zeros((100, 120, 3), np.uint8)
    out = debug_image.draw_result(rgb, _result())
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert not rgb.any(), "input modified"
    colour = debug_image.label_colour("red cup")
    # the left edge of detection 0 (x = 10, y in 20..80) is drawn in the label colour
    assert tuple(out[60, 10]) == colour
    # the unreferred proposal 1 is grey
    assert tuple(out[3, 5]) == debug_image.PROPOSAL_COLOUR
    # away from every box the image is untouched
    assert not out[95, 115].any()
    no_props = debug_image.draw_result(rgb, _result(), draw_proposals=False)
    assert tuple(no_props[3, 5]) != debug_image.PROPOSAL_COLOUR


def _external(*rows):
    """A Detection2DArray of (cx, cy, w, h, theta, scores) rows, like an external detector's."""
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
    msg = Detection2DArray()
    for cx, cy, w, h, theta, scores in rows:
        det = Detection2D()
        det.bbox.center.position.x, det.bbox.center.position.y = cx, cy
        det.bbox.center.theta, det.bbox.size_x, det.bbox.size_y = theta, w, h
        for s in scores:
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id, hyp.hypothesis.score = "thing", s
            det.results.append(hyp)
        msg.detections.append(det)
    return msg


def test_detection_array_to_raw_proposals():
    msg = _external((50, 40, 20, 10, 0.0, [0.2, 0.7]),      # best hypothesis counts
                    (10, 10, 4, 2, np.pi / 2, []),          # rotated 90°, no results
                    (0, 0, 1, 1, float("inf"), [0.9]))      # unusable theta: NaN row
    boxes, scores = conv.detection_array_to_raw_proposals(msg)
    assert boxes.shape == (3, 4) and boxes.dtype == np.float64
    np.testing.assert_allclose(boxes[0], [40, 35, 60, 45])
    np.testing.assert_allclose(boxes[1], [9, 8, 11, 12], atol=1e-9)  # w and h swap
    assert np.isnan(boxes[2]).all()
    np.testing.assert_allclose(scores, [0.7, 1.0, 0.9])
    empty_boxes, empty_scores = conv.detection_array_to_raw_proposals(_external())
    assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)
