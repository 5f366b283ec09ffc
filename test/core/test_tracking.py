"""Track ids for the standing query (issue 10 §6): ByteTrack from the `trackers` library."""
import numpy as np
import pytest

pytest.importorskip("trackers")

from vlxseek_core.errors import InvalidRequestError  # noqa: E402
from vlxseek_core.tracking import RegionTracker  # noqa: E402


def _box(x, y, w=40, h=60):
    return [x, y, x + w, y + h]


def test_moving_object_keeps_one_id_and_a_second_object_gets_another():
    tracker = RegionTracker(lost_track_seconds=1.0, frame_rate=10)
    ids_a, ids_b = [], []
    for f in range(40):  # person walks right 6 px/frame; a static one stands at the side
        t = f * 0.1
        out = tracker.update(np.array([_box(20 + 6 * f, 100 + 2 * f), _box(500, 80)]),
                             ["person", "person"], stamp=t)
        ids_a.append(out[0])
        ids_b.append(out[1])
    assert ids_a[0] is None and ids_b[0] is None  # confirmed on the second detection
    assert len(set(ids_a[1:])) == 1 and len(set(ids_b[1:])) == 1
    assert ids_a[1] != ids_b[1]


def test_order_of_detections_does_not_matter_and_phrases_never_share_ids():
    tracker = RegionTracker(frame_rate=10)
    seen = {}
    for f in range(10):
        boxes = [_box(100 + 3 * f, 50), _box(300, 200 - 3 * f)]
        labels = ["cup", "red cup"]
        if f % 2:  # the model lists them in another order every other frame
            boxes, labels = boxes[::-1], labels[::-1]
        for label, tid in zip(labels, tracker.update(np.array(boxes), labels, stamp=f * 0.1)):
            if tid is not None:
                seen.setdefault(label, set()).add(tid)
    assert seen["cup"] != seen["red cup"]
    assert len(seen["cup"]) == 1 and len(seen["red cup"]) == 1


def test_short_occlusion_keeps_the_id_long_absence_ends_the_track():
    tracker = RegionTracker(lost_track_seconds=1.0, frame_rate=10)
    first = None
    t = 0.0
    for f in range(5):
        first = tracker.update(np.array([_box(100 + 4 * f, 100)]), ["cat"], stamp=t)[0]
        t += 0.1
    for _ in range(4):  # hidden for 0.4 s
        assert tracker.update(np.zeros((0, 4)), [], stamp=t) == []
        t += 0.1
    again = tracker.update(np.array([_box(136, 100)]), ["cat"], stamp=t)[0]
    assert again == first
    t += 5.0  # gone for longer than lost_track_seconds
    tracker.update(np.zeros((0, 4)), [], stamp=t)
    late = [tracker.update(np.array([_box(136, 100)]), ["cat"], stamp=t + 0.1 * k)[0]
            for k in range(1, 3)]
    assert late[-1] is not None and late[-1] != first


def test_reset_never_reuses_ids():
    tracker = RegionTracker(frame_rate=10)
    before = [tracker.update(np.array([_box(10, 10)]), ["a"], stamp=0.1 * k)[0]
              for k in range(3)]
    tracker.reset()
    after = [tracker.update(np.array([_box(10, 10)]), ["a"], stamp=0.1 * k)[0]
             for k in range(3)]
    assert before[-1] is not None and after[-1] is not None and after[-1] != before[-1]


@pytest.mark.parametrize("boxes, labels, stamp", [
    (np.array([_box(0, 0)]), [], 1.0), (np.array([[0, 0, np.nan, 4]]), ["a"], 1.0),
    (np.array([_box(0, 0)]), ["a"], -5.0)])
def test_bad_updates(boxes, labels, stamp):
    tracker = RegionTracker()
    tracker.update(np.zeros((0, 4)), [], stamp=0.0)
    with pytest.raises(InvalidRequestError, match="tracking"):
        tracker.update(boxes, labels, stamp)


@pytest.mark.parametrize("kwargs", [{"lost_track_seconds": 0}, {"frame_rate": -1},
                                    {"min_iou": 1.0}, {"lost_track_seconds": float("nan")}])
def test_bad_settings(kwargs):
    with pytest.raises(InvalidRequestError, match="tracking"):
        RegionTracker(**kwargs)
