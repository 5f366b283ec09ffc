"""Results never alias the frame cache or each other (issue 11, item 3)."""
import numpy as np
import pytest


def _snapshot(res):
    return (res.answer, res.proposals.boxes.copy(), res.proposals.scores.copy(),
            [(d.region_index, d.label, d.box.copy(), d.score) for d in res.detections],
            list(res.warnings), [(g.phrase, list(g.region_indices)) for g in res.groundings])


def _vandalise(res):
    """Edit every mutable field of ``res`` in place."""
    res.proposals.boxes[:] = -7.0
    res.proposals.scores[:] = -7.0
    for det in res.detections:
        det.box[:] = -7.0
    for g in res.groundings:
        g.region_indices.append(99)
    res.warnings.append("vandalised")
    res.warnings[:1] = ["changed"]
    res.timings_ms["vandalised"] = 1.0
    res.rejected.append("vandalised")


def _same(a, b):
    assert a[0] == b[0]
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert len(a[3]) == len(b[3])
    for (ia, la, ba, sa), (ib, lb, bb, sb) in zip(a[3], b[3]):
        assert (ia, la, sa) == (ib, lb, sb) and np.array_equal(ba, bb)
    assert a[4] == b[4] and a[5] == b[5]


@pytest.mark.parametrize("via", ["query", "query_many", "answer"])
def test_editing_a_result_does_not_change_later_answers(tiny_pipeline, astronaut,
                                                        astronaut_boxes, via):
    # 130 boxes: the frame carries a warning (30 dropped) that every result repeats
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 400, size=(130, 2))
    boxes = np.concatenate([xy, xy + 60], axis=1).astype(np.float32)
    boxes[:4] = astronaut_boxes

    def ask():
        if via == "query":
            return tiny_pipeline.query(astronaut, "person; flag", boxes=boxes,
                                       max_new_tokens=16)
        if via == "query_many":
            return tiny_pipeline.query_many(astronaut, ["person; flag"], boxes=boxes,
                                            max_new_tokens=16)[0]
        enc = tiny_pipeline.encode(astronaut, boxes)
        return tiny_pipeline.answer(enc, "person; flag", max_new_tokens=16)

    first = ask()
    assert first.warnings  # the dropped-boxes note
    before = _snapshot(first)
    _vandalise(first)
    second = ask()
    _same(_snapshot(second), before)
    assert second.proposals is not first.proposals
    assert second.proposals.boxes is not first.proposals.boxes
    assert "vandalised" not in second.timings_ms and "vandalised" not in second.rejected
    assert second.proposals.boxes.flags.writeable  # the result's own, editable copy


def test_query_many_results_do_not_share_arrays(tiny_pipeline, astronaut, astronaut_boxes):
    r1, r2 = tiny_pipeline.query_many(astronaut, ["person", "flag"], boxes=astronaut_boxes,
                                      max_new_tokens=8)
    assert r1.proposals is not r2.proposals
    assert not np.shares_memory(r1.proposals.boxes, r2.proposals.boxes)
    assert not np.shares_memory(r1.proposals.scores, r2.proposals.scores)
    assert r1.warnings is not r2.warnings and r1.timings_ms is not r2.timings_ms
    r1.proposals.boxes[0, 0] = 123.0
    assert r2.proposals.boxes[0, 0] == astronaut_boxes[0, 0]


def test_cached_encoding_is_read_only_and_not_shared(tiny_pipeline, astronaut,
                                                     astronaut_boxes):
    enc = tiny_pipeline.encode(astronaut, astronaut_boxes)
    with pytest.raises(ValueError, match="read-only"):
        enc.proposals.boxes[0, 0] = 1.0
    res = tiny_pipeline.answer(enc, "person", max_new_tokens=4)
    assert not np.shares_memory(res.proposals.boxes, enc.proposals.boxes)
    for det in res.detections:
        assert not np.shares_memory(det.box, enc.proposals.boxes)
    # the caller's boxes are not aliased either
    mine = astronaut_boxes.copy()
    again = tiny_pipeline.encode(astronaut, mine, reuse_frame=False)
    mine[:] = 0
    assert np.array_equal(again.proposals.boxes, astronaut_boxes)


def test_given_proposals_are_copied(tiny_pipeline, astronaut, astronaut_boxes):
    from vlxseek_core.types import Proposals

    given = Proposals(astronaut_boxes.copy(), np.full(len(astronaut_boxes), 0.5, np.float32))
    res = tiny_pipeline.query(astronaut, "person", proposals=given, max_new_tokens=4)
    assert res.proposals is not given
    res.proposals.boxes[:] = 0
    given.scores[:] = 0.1  # editing the caller's object afterwards changes no cached frame
    again = tiny_pipeline.query(astronaut, "person", proposals=Proposals(
        astronaut_boxes.copy(), np.full(len(astronaut_boxes), 0.5, np.float32)),
        max_new_tokens=4)
    assert np.array_equal(again.proposals.boxes, astronaut_boxes)
    assert np.allclose(again.proposals.scores, 0.5)


def test_proposals_copy():
    from vlxseek_core.types import Proposals

    p = Proposals(np.ones((2, 4), np.float32), np.ones(2, np.float32))
    frozen = p.copy(writeable=False)
    assert not frozen.boxes.flags.writeable and not frozen.scores.flags.writeable
    thawed = frozen.copy()
    thawed.boxes[0, 0] = 5
    assert frozen.boxes[0, 0] == 1 and p.boxes[0, 0] == 1
