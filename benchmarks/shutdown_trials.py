"""Shutdown trials of the vlxseek_detector node process (issue 10 §1): Ctrl-C as launch sends it.

Each trial starts a node process (tiny random model unless ``--model``), waits for ``ready:``
and stops it with one of three signal patterns, taken in turn: SIGINT twice 50 ms apart (a
terminal Ctrl-C under ``ros2 launch``: the terminal's SIGINT and launch's forwarded one), one
SIGINT, one SIGTERM. Cases: node kind (plain, managed with ``autostart``) × proposal source
(``topic``: an external detector's Detection2DArray; ``builtin``: the tiny OmDet-Turbo-style
proposal detector loaded in the node) × what the node does when the signal comes:

* ``idle``: serving, nothing running (0.3 s after ``ready:``); it must exit within
  :data:`IDLE_EXIT_S`.
* ``inference``: a service call is running (``~/status`` says ``inference_in_flight``, then a
  random 0–0.5 s more, so the signal falls into proposals, towers or decoding): ``caption`` of
  100 request boxes with ``topic``, ``vqa`` about the built-in detector's proposals with
  ``builtin`` (a free-text answer: ``detect`` on the tiny random model mostly ends at once),
  both with a budget of 4096 new tokens (tens of seconds). It must exit within
  :data:`INFERENCE_EXIT_S` (the documented grace ``SHUTDOWN_GRACE_S`` + the idle limit), and
  the call must be answered ``busy: the node is shutting down ...``.

Every trial must end with exit status 0, no traceback, no ``Failed to publish log message to
rosout`` and no crash (a negative status). Usage (ROS environment sourced; DDS stays on this
machine)::

    source scripts/ros_env.sh
    export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=64
    python benchmarks/shutdown_trials.py --tiny --trials 20      # 160 node processes, CPU

test/ros/test_shutdown_trials.py runs one trial of every case.
"""
from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # python benchmarks/shutdown_trials.py
    sys.path.insert(0, str(REPO))

from benchmarks.load_calls import Driver, NodeProcess, node_command  # noqa: E402
from benchmarks.load_soak import (check_network_env, machine_description,  # noqa: E402
                                  make_tiny_models)

SIGNAL_PATTERNS = [(signal.SIGINT, signal.SIGINT), (signal.SIGINT,), (signal.SIGTERM,)]
KINDS = ("plain", "managed")
SOURCES = ("topic", "builtin")
MODES = ("idle", "inference")
# Exit limits, seconds from the first signal to the process's end (SHUTDOWN_GRACE_S = 1 s:
# vlxseek_ros.node_process).
IDLE_EXIT_S = 1.0
INFERENCE_EXIT_S = 2.0
INFERENCE_TOKENS = 4096
START_TIMEOUT_S = 300.0


def _request(driver: Driver, source: str, rng: np.random.Generator) -> Any:
    """A slow query: a caption of 100 request boxes (topic) or a vqa on proposals (builtin)."""
    from vision_msgs.msg import BoundingBox2D

    from vlxseek_ros.image_conversion import rgb_to_image_msg
    from vlxseek_ros.srv import QueryRegions
    req = QueryRegions.Request()
    req.image = rgb_to_image_msg(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), None)
    if source == "builtin":  # free text about the detector's proposals: decodes for seconds
        req.task, req.query = "vqa", "What is in these regions of the image?"
        return req
    req.task = "caption"
    for cx, cy in rng.uniform(30, 200, (100, 2)):
        box = BoundingBox2D()
        box.center.position.x, box.center.position.y = float(cx), float(cy)
        box.size_x, box.size_y = 40.0, 30.0
        req.regions.append(box)
    return req


def trial(model: Path, proposer: Path, workdir: Path, kind: str, source: str, mode: str,
          signals: Sequence[int], device: str = "cpu", seed: int = 0) -> Dict[str, Any]:
    """Start a node, stop it with ``signals`` (50 ms apart) in ``mode``; return how it ended.

    Returns a dict: the case, ``rc``, ``exit_s``, ``traceback``, ``rosout_error``, ``in_flight``
    (inference mode: the node reported the call running when signalled), ``answer`` (the call's
    message, or ``"node gone"``), ``ok`` (every check passed) and ``why`` (the failed checks).
    """
    ns = f"/vlxseek_stop_{kind}_{source}_{mode}"
    log = workdir / f"stop_{kind}_{source}_{mode}_{seed}_{int(time.time() * 1e3) % 10**8}.log"
    tokens = INFERENCE_TOKENS if mode == "inference" else 8
    cmd = node_command(model, ns, kind == "managed", device,
                       source="topic" if source == "topic" else "omdet_turbo",
                       proposer=None if source == "topic" else proposer,
                       max_new_tokens=tokens)
    proc = NodeProcess(cmd, log)
    driver: Optional[Driver] = None
    row: Dict[str, Any] = dict(kind=kind, source=source, mode=mode, log=str(log),
                               signals="+".join(signal.Signals(s).name for s in signals))
    try:
        row["reached"] = proc.wait_for_line("ready:", START_TIMEOUT_S)
        future = None
        if mode == "inference" and row["reached"]:
            driver = Driver(f"{ns}/vlxseek_detector")
            client = driver.wait_for_service(60.0, proc)
            future = client.call_async(_request(driver, source, np.random.default_rng(seed)))
            deadline = time.monotonic() + 30.0
            while not driver.status.get("inference_in_flight") and time.monotonic() < deadline:
                time.sleep(0.01)
            row["in_flight"] = bool(driver.status.get("inference_in_flight"))
            time.sleep(random.Random(seed).uniform(0.0, 0.5))
        else:
            time.sleep(0.3)
        row.update(proc.stop(signals))
        if future is not None:
            t_end = time.monotonic() + 2.0
            while not future.done() and time.monotonic() < t_end:
                time.sleep(0.01)
            row["answer"] = future.result().message if future.done() else "node gone"
        row["why"] = _failed_checks(row, proc.log())
        row["ok"] = not row["why"]
        return row
    finally:
        if driver is not None:
            driver.close()
        proc.kill()


def _failed_checks(row: Dict[str, Any], log: str) -> List[str]:
    why = []
    limit = INFERENCE_EXIT_S if row["mode"] == "inference" else IDLE_EXIT_S
    if not row.get("reached"):
        why.append("never ready")
    if row["mode"] == "inference" and not row.get("in_flight"):
        why.append("no inference in flight when signalled")
    answer = row.get("answer", "")
    if row["mode"] == "inference" and not answer.startswith("busy: the node is shutting down"):
        why.append("the running call was not answered" if answer == "node gone" else
                   f"the call ended before the signal ({answer[:40]!r})")
    if row["rc"] != 0:
        why.append(f"exit status {row['rc']}")
    if row["exit_s"] > limit:
        why.append(f"exit took {row['exit_s']:.2f} s > {limit} s")
    if row["traceback"]:
        why.append("traceback")
    if row["rosout_error"]:
        why.append("rosout error")
    if "Segmentation fault" in log or "core dumped" in log:
        why.append("crash")
    return why


def run_trials(model: Path, proposer: Path, workdir: Path, trials: int, device: str = "cpu",
               kinds: Sequence[str] = KINDS, sources: Sequence[str] = SOURCES,
               modes: Sequence[str] = MODES) -> List[Dict[str, Any]]:
    """``trials`` node processes per (kind, source, mode), signal patterns in turn."""
    rows = []
    for kind in kinds:
        for source in sources:
            for mode in modes:
                for i in range(trials):
                    rows.append(trial(model, proposer, workdir, kind, source, mode,
                                      SIGNAL_PATTERNS[i % len(SIGNAL_PATTERNS)], device, seed=i))
                    print(_line(rows[-1]), flush=True)
    return rows


def _line(r: Dict[str, Any]) -> str:
    return (f"{r['kind']:7s} {r['source']:7s} {r['mode']:9s} {r['signals']:13s} rc={r['rc']} "
            f"exit {r['exit_s']:.2f} s {'ok' if r['ok'] else 'FAILED: ' + '; '.join(r['why'])}"
            + (f" | call: {r['answer'][:60]}" if "answer" in r else ""))


def summary(rows: List[Dict[str, Any]]) -> str:
    """Markdown table: per case, trials passed, exit-time median / max, the calls answered."""
    lines = ["| node | proposals | while | trials | passed | exit s median / max | limit s | "
             "running call answered busy |", "|---|---|---|---|---|---|---|---|"]
    cases = sorted({(r["kind"], r["source"], r["mode"]) for r in rows},
                   key=lambda c: (KINDS.index(c[0]), SOURCES.index(c[1]), MODES.index(c[2])))
    for case in cases:
        rs = [r for r in rows if (r["kind"], r["source"], r["mode"]) == case]
        times = [r["exit_s"] for r in rs]
        answered = [r for r in rs
                    if r.get("answer", "").startswith("busy: the node is shutting down")]
        lines.append(
            f"| {case[0]} | {case[1]} | {case[2]} | {len(rs)} | {sum(r['ok'] for r in rs)} | "
            f"{np.median(times):.2f} / {max(times):.2f} | "
            f"{INFERENCE_EXIT_S if case[2] == 'inference' else IDLE_EXIT_S} | "
            f"{f'{len(answered)} / {len(rs)}' if case[2] == 'inference' else '—'} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="VLM-FO1 checkpoint directory")
    ap.add_argument("--proposer", type=Path, help="proposal detector directory (builtin)")
    ap.add_argument("--tiny", action="store_true", help="tiny random model and detector")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trials", type=int, default=20, help="node processes per case")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--keep-logs", type=Path, help="write the node logs here")
    args = ap.parse_args(argv)
    check_network_env()
    print(f"machine: {machine_description(args.device)}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep_logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.tiny:
            args.model, args.proposer = make_tiny_models(Path(tmp))
        if args.model is None or args.proposer is None:
            ap.error("--model and --proposer, or --tiny, are required")
        rows = run_trials(args.model, args.proposer, workdir, args.trials, args.device,
                          args.kinds, args.sources, args.modes)
    print(summary(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
