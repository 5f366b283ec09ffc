"""StampMatcher: frames and external proposals paired by header stamp (no ROS needed)."""
import threading
import time
from types import SimpleNamespace

import pytest

from vlxseek_ros.frame_matching import StampMatcher, format_stamp, stamp_to_ns

S = 1_000_000_000  # one second in ns


def test_stamp_conversions():
    assert stamp_to_ns(SimpleNamespace(sec=12, nanosec=345)) == 12 * S + 345
    assert format_stamp(12 * S + 345) == "12.000000345"
    assert format_stamp(None) == "none"


def test_exact_match_and_no_match():
    m = StampMatcher(frame_capacity=3)
    m.add_frame(5 * S, "f5")
    m.add_proposals(5 * S, "p5")
    assert m.proposals_for(5 * S) == "p5"
    assert m.proposals_for(5 * S + 1) is None  # tolerance 0: equal stamps only
    assert m.newest_pair() == ("f5", "p5")


def test_tolerance_picks_the_nearest_within_it():
    m = StampMatcher(frame_capacity=3, tolerance_ns=10_000_000)  # 10 ms
    m.add_proposals(100 * S + 8_000_000, "late8ms")
    m.add_proposals(100 * S - 3_000_000, "early3ms")
    m.add_proposals(100 * S + 20_000_000, "late20ms")
    assert m.proposals_for(100 * S) == "early3ms"
    m.tolerance_ns = 1_000_000
    assert m.proposals_for(100 * S) is None
    with pytest.raises(ValueError):
        m.tolerance_ns = -1


def test_newest_pair_prefers_the_newest_frame_that_has_proposals():
    m = StampMatcher(frame_capacity=4)
    for k in range(1, 5):
        m.add_frame(k * S, f"f{k}")
    m.add_proposals(2 * S, "p2")
    m.add_proposals(3 * S, "p3")
    assert m.newest_frame() == "f4"           # f4 has no proposals yet
    assert m.newest_pair() == ("f3", "p3")
    assert m.newest_pair(lambda f: f != "f3") == ("f2", "p2")
    assert m.newest_pair(lambda f: f == "f4") is None
    assert m.newest_stamps() == (4 * S, 3 * S)


def test_capacities_evict_the_oldest():
    m = StampMatcher(frame_capacity=2, proposal_capacity=2)
    assert m.add_frame(1 * S, "f1") is None
    assert m.add_frame(2 * S, "f2") is None
    assert m.add_frame(3 * S, "f3") == "f1"   # returned so the caller can count drops
    for k in (1, 2, 3):
        m.add_proposals(k * S, f"p{k}")
    assert m.proposals_for(1 * S) is None and m.proposals_for(3 * S) == "p3"
    m.add_proposals(2 * S, "p2-again")        # same stamp: replaced, not duplicated
    assert m.proposals_for(2 * S) == "p2-again"
    m.clear()
    assert m.newest_frame() is None and m.newest_stamps() == (None, None)


def test_only_the_newest_frame_with_capacity_one():
    m = StampMatcher(frame_capacity=1)
    m.add_frame(1 * S, "f1")
    assert m.add_frame(2 * S, "f2") == "f1"
    assert m.newest_frame() == "f2"


def test_waiting_for_late_proposals():
    m = StampMatcher(frame_capacity=2)
    m.add_frame(7 * S, "f7")

    def publish_later():
        time.sleep(0.2)
        m.add_proposals(7 * S, "p7")

    threading.Thread(target=publish_later).start()
    start = time.monotonic()
    assert m.newest_pair(timeout_s=5.0) == ("f7", "p7")
    assert time.monotonic() - start < 4.0      # woken by the arrival, not by the timeout
    start = time.monotonic()
    assert m.proposals_for(8 * S, timeout_s=0.2) is None
    assert time.monotonic() - start >= 0.19


def test_bad_capacities_are_refused():
    with pytest.raises(ValueError):
        StampMatcher(frame_capacity=0)
    with pytest.raises(ValueError):
        StampMatcher(proposal_capacity=0)
