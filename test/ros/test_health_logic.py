"""The health logic without ROS: the /diagnostics level function and when a frame counts as
dropped (the node-level tests are in test_detector_diagnostics.py)."""
from vlxseek_ros import diagnostics as D
from vlxseek_ros.frame_demand import FrameDemand

LIMITS = D.Limits(error_after_failures=3, latency_budget_ms=100.0, stale_frame_s=5.0)


def snap(failures=0, e2e_p95=None, inference_p95=None, **counts):
    latency = {}
    if e2e_p95 is not None:
        latency["end_to_end"] = {"count": 5, "p95": e2e_p95, "mean": 1.0}
    if inference_p95 is not None:
        latency["inference"] = {"count": 5, "p95": inference_p95, "mean": 1.0}
    return {"consecutive_failures": failures, "last_error": "inference failed: boom",
            "latency_ms": latency, **counts}


def assess(snapshot, dropped=0, age=0.1, expected=True, limits=LIMITS):
    return D.assess(snapshot, limits, dropped, age, expected)


# ------------------------------------------------------------------ the level (pure)

def test_healthy_is_ok():
    result = assess(snap(e2e_p95=50.0))
    assert (result.level, result.message) == (D.OK, "ok")


def test_consecutive_failures_reach_error_at_the_limit():
    assert assess(snap(failures=2)).level == D.OK
    result = assess(snap(failures=3))
    assert result.level == D.ERROR
    assert "3 consecutive inference failures (last: inference failed: boom)" in result.message


def test_latency_over_budget_warns_end_to_end_first():
    result = assess(snap(e2e_p95=150.0, inference_p95=20.0))
    assert result.level == D.WARN and "end_to_end latency p95 150 ms" in result.message
    assert assess(snap(e2e_p95=90.0, inference_p95=500.0)).level == D.OK
    # a standing-query-only node has no service latency: inference counts
    assert "inference latency p95" in assess(snap(inference_p95=101.0)).message
    no_budget = D.Limits(latency_budget_ms=0.0)
    assert assess(snap(e2e_p95=1e6), limits=no_budget).level == D.OK


def test_dropped_frames_warn():
    result = assess(snap(), dropped=4)
    assert result.level == D.WARN and "4 frames dropped" in result.message


def test_no_frames_warns_only_when_frames_are_expected():
    assert assess(snap(), age=6.0).level == D.WARN
    assert "no frame received for 6.0 s" in assess(snap(), age=6.0).message
    assert assess(snap(), age=6.0, expected=False).level == D.OK
    assert assess(snap(), age=4.0).level == D.OK
    assert assess(snap(), age=None).level == D.OK
    assert assess(snap(), age=1e4, limits=D.Limits(stale_frame_s=0.0)).level == D.OK


def test_error_outranks_warnings_and_every_reason_is_listed():
    result = assess(snap(failures=5, e2e_p95=500.0), dropped=1, age=60.0)
    assert result.level == D.ERROR
    assert result.message.count(";") == 3


def test_key_values_carry_the_counters():
    pairs = dict(D.key_values(snap(e2e_p95=3.0, frames_received=7, frames_dropped=2),
                              {"device": "cuda:0", "warmup_ms": None}))
    assert pairs["device"] == "cuda:0" and pairs["warmup_ms"] == ""
    assert pairs["frames_received"] == "7" and pairs["frames_dropped"] == "2"
    assert pairs["latency_ms.end_to_end.p95"] == "3.0"
    assert pairs["last_error"] == "inference failed: boom"


# ------------------------------------------------------------------ dropped frames (pure)

def test_idle_node_drops_nothing():
    demand = FrameDemand()
    seqs = [demand.arrived() for _ in range(5)]
    assert not any(demand.is_drop(s, used=False) for s in seqs[:-1])


def test_frames_replaced_while_a_call_waits_are_dropped():
    demand = FrameDemand()
    first = demand.arrived()
    with demand.call_waiting() as holds_model:
        second = demand.arrived()
        assert demand.is_drop(first, used=False)       # replaced while the call waits
        assert not demand.is_drop(first, used=True)    # a used frame never drops
        holds_model()
        third = demand.arrived()
    # stored while the call waited, replaced after it got the model: it was missed
    assert demand.is_drop(second, used=False)
    # arrived after the call held the model: nobody wanted it
    assert not demand.is_drop(third, used=False)


def test_frames_replaced_while_the_standing_query_is_behind_are_dropped():
    demand = FrameDemand()
    first = demand.arrived()
    assert not demand.is_drop(first, used=False)
    demand.standing_behind(True)
    second = demand.arrived()
    assert demand.is_drop(second, used=False)
    demand.standing_behind(False)
    third = demand.arrived()
    fourth = demand.arrived()
    assert not demand.is_drop(third, used=False) and fourth == 4


def test_frame_age():
    now = [100.0]
    demand = FrameDemand(clock=lambda: now[0])
    assert demand.frame_age_s() is None and not demand.received_any()
    demand.arrived()
    now[0] = 102.5
    assert demand.frame_age_s() == 2.5 and demand.received_any()
