"""Ctrl-C under ``ros2 launch`` (issue 10 §1), one node process per case.

Each case of ``benchmarks/shutdown_trials.py`` (plain / managed node × proposals from the topic /
the built-in detector × idle / an inference running) once, with the signal patterns in turn
(SIGINT twice 50 ms apart as launch sends it, SIGINT, SIGTERM): exit status 0, no traceback,
no rosout error, no crash, exit within 1 s idle and within the grace + 1 s with an inference
running, and the running call answered (``busy: ...``). The benchmark runs 20 trials per case
(benchmarks/RESULTS.md).
"""
import importlib.util
import itertools
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "shutdown_trials.py"


def _bench():
    spec = importlib.util.spec_from_file_location("shutdown_trials", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRIALS = _bench()
CASES = list(itertools.product(TRIALS.KINDS, TRIALS.SOURCES, TRIALS.MODES))


@pytest.mark.parametrize("index, case", list(enumerate(CASES)),
                         ids=["-".join(c) for c in CASES])
def test_signal_while_serving_exits_0_quickly_and_answers(tiny_models, tmp_path, index, case):
    kind, source, mode = case
    signals = TRIALS.SIGNAL_PATTERNS[index % len(TRIALS.SIGNAL_PATTERNS)]
    row = TRIALS.trial(tiny_models[0], tiny_models[1], tmp_path, kind, source, mode, signals,
                       seed=index)
    log = Path(row["log"]).read_text(errors="replace")
    assert row["ok"], (row["why"], row, log[-3000:])
    assert row["rc"] == 0 and not row["traceback"] and not row["rosout_error"], log[-3000:]
    limit = TRIALS.INFERENCE_EXIT_S if mode == "inference" else TRIALS.IDLE_EXIT_S
    assert row["exit_s"] <= limit, (row, log[-3000:])
    if mode == "inference":
        assert row["answer"].startswith("busy: the node is shutting down"), (row, log[-3000:])
