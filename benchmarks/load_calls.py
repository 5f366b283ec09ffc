"""Service-call load of the vlxseek_detector node: every call is answered exactly once.

The node runs as its own process (tiny random model unless ``--model``, CPU unless
``--device``); a driver process (this one) calls ``~/query_regions`` over DDS. Each call asks
about a 64x48 request image with one request box (no camera frame, no proposal detector). Cases:

* **burst**: ``--calls`` (500) calls sent at once, spread round-robin over 1, 8 and 50 clients
  (KEEP_ALL, as the README asks of clients; ``--client-depth 10`` = rclpy's default client QoS,
  which loses calls on the client's side), under ``busy_policy`` wait and reject (switched at
  runtime). Per case: calls sent, answered ok / busy / failed, **lost** (no response within
  ``--call-timeout-s``: must be 0), the node's counter deltas from ``~/status`` (requests
  received / answered / ok / busy / failed: must equal the client's counts, i.e. every call was
  taken once and answered once) and the wall time.
* **loading**: clients started with the node process; each waits for the service
  (``wait_for_service``), then sends its calls the moment it appears: all answered. Calls sent
  *before* the service exists are counted separately: ROS service topics are volatile, so DDS
  delivers them to no one (expected 0 answered; a client must wait for the service).
* **lifecycle**: a managed node (autostart) gets a burst and is deactivated while the burst is
  in flight, then activated and sent another burst. A call of the first burst is answered (ok,
  or ``busy`` while deactivating: the node answers what it took and what is still queued before
  it destroys the service) or, if it was still on its way when the service went, its client
  sees the service disappear (``service_is_ready()`` false); none is left waiting while the
  service exists.
* **shutdown**: a burst in flight when SIGINT arrives twice, 50 ms apart (as ``ros2 launch``
  sends them). Each call is answered or its client sees the node go away; the node exits 0
  without a traceback and logs its counters (``at exit: ...``).
* **signals**: ``--signal-trials`` start-ups per phase, SIGINT or SIGTERM (and both, 50 ms apart)
  sent before loading (as soon as the process records signals), while loading the models, while
  warming up, and while serving, for the plain and the managed node: exit status 0, no
  traceback, exit time.

Usage (ROS environment sourced; DDS traffic must stay on this machine)::

    source scripts/ros_env.sh
    export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=63
    python benchmarks/load_calls.py --tiny                       # everything, tiny model, CPU
    python benchmarks/load_calls.py --tiny --cases burst --clients 1 8 50 --calls 500

test/ros/test_service_load.py runs these functions at a small scale.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # python benchmarks/load_calls.py
    sys.path.insert(0, str(REPO))

from benchmarks.load_soak import (check_network_env, machine_description,  # noqa: E402
                                  make_tiny_models)

COUNTERS = ("requests_received", "requests_answered", "requests_ok", "requests_busy",
            "requests_failed")
# Marker lines of the node's log for each start-up phase (vlxseek_ros/startup.py, serving.py,
# serving_interfaces.py).
PHASE_MARKERS = {"loading": "loading the models", "warm-up": "warming up:", "serving": "ready:"}
SIGTERM_CAUGHT = 1 << (signal.SIGTERM - 1)  # bit of SigCgt in /proc/<pid>/status


def node_command(model: Path, ns: str, managed: bool = False, device: str = "cpu",
                 *extra: str, source: str = "none", proposer: Optional[Path] = None,
                 max_new_tokens: int = 8) -> List[str]:
    """Command line of a node process answering with ``model`` under namespace ``ns``.

    ``source``: the node's ``proposal_source`` (``none``: request boxes only, ``topic``, or a
    built-in detector such as ``omdet_turbo`` with ``proposer`` as its ``proposal_model``).
    """
    module = "managed_detector_node" if managed else "detector_node"
    cmd = [sys.executable, "-m", f"vlxseek_ros.{module}", "--ros-args", "-r", f"__ns:={ns}",
           "-p", f"model_path:={model}", "-p", f"proposal_source:={source}",
           "-p", f"device:={device}", "-p", f"max_new_tokens:={max_new_tokens}",
           "-p", "status_period_s:=0.2", "-p", "publish_debug_image:=false", *extra]
    if proposer is not None:
        cmd += ["-p", f"proposal_model:={proposer}"]
    return cmd + (["-p", "autostart:=true"] if managed else [])


class NodeProcess:
    """A node process whose output goes to ``log_path``."""

    def __init__(self, cmd: List[str], log_path: Path,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ) if env is None else env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_line(self, needle: str, timeout_s: float) -> bool:
        """Wait until ``needle`` appears in the log (False: the process ended or timed out)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if needle in self.log():
                return True
            time.sleep(0.01)
        return needle in self.log()

    def records_signals(self, timeout_s: float = 10.0) -> bool:
        """Wait until the process catches SIGTERM (its stop_signals handler is installed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                    if line.startswith("SigCgt:") and int(line.split()[1], 16) & SIGTERM_CAUGHT:
                        return True
            except OSError:
                return False
            time.sleep(0.002)
        return False

    def stop(self, signals: Sequence[int] = (signal.SIGINT,), gap_s: float = 0.05,
             timeout_s: float = 30.0) -> Dict[str, Any]:
        """Send ``signals`` ``gap_s`` apart; return exit status, seconds to exit and traceback."""
        start = time.monotonic()
        for i, sig in enumerate(signals):
            if i:
                time.sleep(gap_s)
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
        elapsed = time.monotonic() - start
        self._log.close()
        out = self.log()
        return {"rc": rc, "exit_s": elapsed, "traceback": "Traceback" in out,
                "rosout_error": "Failed to publish log message" in out}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


class Driver:
    """The calling side: one rclpy node spun in a thread, its clients and ``~/status``."""

    def __init__(self, node_name: str) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        from vlxseek_ros.image_conversion import rgb_to_image_msg
        self.node_name = node_name
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("vlxseek_load_driver", context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.status: Dict[str, Any] = {}
        self.node.create_subscription(String, f"{node_name}/status",
                                      lambda m: self.status.update(json.loads(m.data)),
                                      QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.image = rgb_to_image_msg(
            np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8), None)

    def close(self) -> None:
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5)

    def clients(self, count: int, depth: int) -> List[Any]:
        """``count`` clients of ``~/query_regions``, KEEP_LAST ``depth`` (0: KEEP_ALL)."""
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from vlxseek_ros.srv import QueryRegions
        qos = QoSProfile(depth=max(depth, 1), reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST if depth else HistoryPolicy.KEEP_ALL)
        return [self.node.create_client(QueryRegions, f"{self.node_name}/query_regions",
                                        qos_profile=qos) for _ in range(count)]

    def request(self) -> Any:
        from vision_msgs.msg import BoundingBox2D

        from vlxseek_ros.srv import QueryRegions
        req = QueryRegions.Request(query="object")
        req.image = self.image
        box = BoundingBox2D()
        box.center.position.x, box.center.position.y = 32.0, 24.0
        box.size_x, box.size_y = 20.0, 16.0
        req.regions = [box]
        return req

    def wait_for_service(self, timeout_s: float, proc: Optional[NodeProcess] = None) -> Any:
        client = self.clients(1, 0)[0]
        deadline = time.monotonic() + timeout_s
        while not client.wait_for_service(timeout_sec=0.2):
            if (proc is not None and proc.proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"service not available; node log:\n"
                                   f"{proc.log()[-3000:] if proc else ''}")
        return client

    def set_parameter(self, name: str, value: str) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters
        client = self.node.create_client(SetParameters, f"{self.node_name}/set_parameters")
        assert client.wait_for_service(timeout_sec=20)
        req = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=value))])
        result = wait_future(client.call_async(req), 20)
        assert result is not None and result.results[0].successful, result

    def counters(self, settle_s: float = 3.0) -> Dict[str, int]:
        """The request counters of ``~/status`` once received == answered and they are steady."""
        deadline = time.monotonic() + settle_s
        last, steady_since = None, time.monotonic()
        while time.monotonic() < deadline:
            now = {k: int(self.status.get(k, 0)) for k in COUNTERS}
            if now != last:
                last, steady_since = now, time.monotonic()
            elif (now["requests_received"] == now["requests_answered"]
                  and time.monotonic() - steady_since > 0.6):
                break
            time.sleep(0.05)
        return last or {k: 0 for k in COUNTERS}


def wait_future(future: Any, timeout_s: float) -> Any:
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    return future.result() if done.wait(timeout_s) else None


def fire(driver: Driver, clients: List[Any], calls: int, timeout_s: float,
         gone: Optional[Any] = None, on_sent: Optional[Any] = None) -> Dict[str, Any]:
    """Send ``calls`` calls at once round-robin over ``clients``; classify every call.

    Args:
        gone: optional ``() -> bool``; once true (the service or the node went away) calls
            still unanswered 1 s later count as ``gone`` instead of waiting for the timeout.
        on_sent: called once every call was sent (e.g. to trigger a transition).

    Returns:
        counts ``sent``, ``ok``, ``busy``, ``failed``, ``gone``, ``lost`` (unanswered while the
        service stayed), ``wall_s`` (first send to last response), ``busy_messages`` (distinct).
    """
    start = time.monotonic()
    futures = [clients[i % len(clients)].call_async(driver.request()) for i in range(calls)]
    if on_sent is not None:
        on_sent()
    deadline = start + timeout_s
    gone_since = None
    while time.monotonic() < deadline and not all(f.done() for f in futures):
        if gone is not None and gone_since is None and gone():
            gone_since = time.monotonic()
        if gone_since is not None and time.monotonic() - gone_since > 1.0:
            break
        time.sleep(0.02)
    wall = time.monotonic() - start
    out = {"sent": calls, "ok": 0, "busy": 0, "failed": 0, "gone": 0, "lost": 0,
           "wall_s": wall, "busy_messages": set(), "failures": []}
    for f in futures:
        if not f.done():
            out["gone" if gone_since is not None else "lost"] += 1
            continue
        res = f.result()
        if res.success:
            out["ok"] += 1
        elif res.message.startswith("busy:"):
            out["busy"] += 1
            out["busy_messages"].add(res.message)
        else:
            out["failed"] += 1
            out["failures"].append(res.message)
    for client in clients:  # forget the unanswered futures
        for f in futures:
            client.remove_pending_request(f)
    return out


def delta(after: Dict[str, int], before: Dict[str, int]) -> Dict[str, int]:
    return {k.replace("requests_", ""): after.get(k, 0) - before.get(k, 0) for k in COUNTERS}


def bursts(model: Path, workdir: Path, client_counts: Sequence[int] = (1, 8, 50),
           policies: Sequence[str] = ("wait", "reject"), calls: int = 500,
           call_timeout_s: float = 120.0, client_depth: int = 0,
           device: str = "cpu") -> List[Dict[str, Any]]:
    """The burst cases against one node process; one row per (policy, clients)."""
    ns = "/vlxseek_load"
    proc = NodeProcess(node_command(model, ns, device=device), workdir / "burst_node.log")
    driver = Driver(f"{ns}/vlxseek_detector")
    rows = []
    try:
        driver.wait_for_service(300.0, proc)
        for policy in policies:
            driver.set_parameter("busy_policy", policy)
            for n in client_counts:
                clients = driver.clients(n, client_depth)
                for c in clients:
                    assert c.wait_for_service(timeout_sec=20)
                before = driver.counters(settle_s=1.0)
                r = fire(driver, clients, calls, call_timeout_s)
                r["node"] = delta(driver.counters(), before)
                r.update(case=f"burst, busy_policy {policy}", clients=n,
                         client_depth=client_depth or "all")
                rows.append(r)
                for c in clients:
                    driver.node.destroy_client(c)
        rows.append({"case": "burst node exit", **proc.stop()})
    finally:
        driver.close()
        proc.kill()
    return rows


def calls_while_loading(model: Path, workdir: Path, clients: int = 8, calls: int = 80,
                        early_calls: int = 10, device: str = "cpu") -> Dict[str, Any]:
    """Clients that wait for the service while the node loads, and calls sent before it."""
    ns = "/vlxseek_loading"
    driver = Driver(f"{ns}/vlxseek_detector")
    proc = NodeProcess(node_command(model, ns, device=device), workdir / "loading_node.log")
    try:
        cls = driver.clients(clients, 0)
        early = driver.clients(1, 0)[0]
        proc.wait_for_line(PHASE_MARKERS["loading"], 60.0)
        early_futures = [early.call_async(driver.request()) for _ in range(early_calls)]
        for c in cls:
            if not c.wait_for_service(timeout_sec=300.0):
                raise RuntimeError(proc.log()[-3000:])
        r = fire(driver, cls, calls, 120.0)
        r["before_service_answered"] = sum(f.done() for f in early_futures)
        r["before_service_sent"] = early_calls
        r["node"] = driver.counters()
        r["case"] = "calls while the model loads"
        r["exit"] = proc.stop()
        return r
    finally:
        driver.close()
        proc.kill()


def calls_during_deactivate(model: Path, workdir: Path, clients: int = 8, calls: int = 200,
                            device: str = "cpu") -> Dict[str, Any]:
    """A burst in flight while the managed node is deactivated; then activate and burst."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    ns = "/vlxseek_lifecycle"
    name = f"{ns}/vlxseek_detector"
    proc = NodeProcess(node_command(model, ns, True, device), workdir / "lifecycle_node.log")
    driver = Driver(name)
    try:
        probe = driver.wait_for_service(300.0, proc)
        change = driver.node.create_client(ChangeState, f"{name}/change_state")
        assert change.wait_for_service(timeout_sec=20)
        cls = driver.clients(clients, 0)
        for c in cls:
            assert c.wait_for_service(timeout_sec=20)
        transition: Dict[str, Any] = {}

        def deactivate() -> None:
            transition["future"] = change.call_async(ChangeState.Request(
                transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
        r = fire(driver, cls, calls, 120.0, gone=lambda: not probe.service_is_ready(),
                 on_sent=deactivate)
        res = wait_future(transition["future"], 60.0)
        r["deactivated"] = bool(res and res.success)
        res = wait_future(change.call_async(ChangeState.Request(
            transition=Transition(id=Transition.TRANSITION_ACTIVATE))), 60.0)
        r["activated"] = bool(res and res.success)
        for c in cls:
            assert c.wait_for_service(timeout_sec=20)
        # ~/status is gone while inactive: the first burst's counters once it is back
        driver.status.clear()
        before = driver.counters()
        r["node"] = {k.replace("requests_", ""): v for k, v in before.items()}
        again = fire(driver, cls, calls, 120.0)
        again["node"] = delta(driver.counters(), before)
        r.update(case="burst while deactivating (managed node)", again=again,
                 exit=proc.stop())
        return r
    finally:
        driver.close()
        proc.kill()


def calls_during_shutdown(model: Path, workdir: Path, clients: int = 8, calls: int = 200,
                          device: str = "cpu", policy: str = "wait") -> Dict[str, Any]:
    """A burst in flight when SIGINT arrives twice, 50 ms apart."""
    ns = "/vlxseek_shutdown"
    proc = NodeProcess(node_command(model, ns, False, device, "-p", f"busy_policy:={policy}"),
                       workdir / "shutdown_node.log")
    driver = Driver(f"{ns}/vlxseek_detector")
    try:
        probe = driver.wait_for_service(300.0, proc)
        cls = driver.clients(clients, 0)
        for c in cls:
            assert c.wait_for_service(timeout_sec=20)
        stopped: Dict[str, Any] = {}

        def stop_soon() -> None:
            threading.Thread(target=lambda: stopped.update(proc.stop(
                (signal.SIGINT, signal.SIGINT))), daemon=True).start()
        r = fire(driver, cls, calls, 120.0, on_sent=stop_soon,
                 gone=lambda: proc.proc.poll() is not None and not probe.service_is_ready())
        deadline = time.monotonic() + 30
        while "rc" not in stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        r.update(case=f"burst during shutdown (SIGINT twice, busy_policy {policy})",
                 exit=stopped, at_exit=next((line.split("at exit: ", 1)[1] for line in
                                             proc.log().splitlines() if "at exit: " in line), ""))
        return r
    finally:
        driver.close()
        proc.kill()


def signal_trial(model: Path, workdir: Path, phase: str, signals: Sequence[int],
                 managed: bool = False, device: str = "cpu", delay_s: float = 0.3,
                 tag: str = "", extra: Sequence[str] = ()) -> Dict[str, Any]:
    """Start a node, send ``signals`` (50 ms apart) in ``phase``; return how it ended.

    Phases: ``start`` (as soon as the process records signals: during its imports, before
    rclpy.init), ``loading`` (``delay_s`` after the phase's log line), ``warm-up`` (at most
    20 ms after it: the tiny model's warm-up inference is short), ``serving`` (at the
    ``ready:`` line).
    """
    ns = f"/vlxseek_sig{os.getpid()}"
    kind = "managed" if managed else "plain"
    log = workdir / f"signal_{phase}_{kind}{tag}_{int(time.time() * 1e3) % 10**8}.log"
    proc = NodeProcess(node_command(model, ns, managed, device, *extra), log)
    try:
        if phase == "start":
            reached = proc.records_signals()
        else:
            reached = proc.wait_for_line(PHASE_MARKERS[phase], 300.0)
            # the tiny model's warm-up inference takes ~0.25 s: signal it early enough
            if phase != "serving":
                time.sleep(delay_s if phase == "loading" else min(delay_s, 0.02))
        result = proc.stop(signals)
        out = proc.log()
        result.update(phase=phase, managed=managed, reached=reached, log=str(log),
                      signals="+".join(signal.Signals(s).name for s in signals),
                      still_in_phase=phase == "start" or phase == "serving" or not any(
                          later in out for later in _later_markers(phase)),
                      last_line=next((line for line in reversed(out.splitlines())
                                      if line.startswith("[")), ""))
        return result
    finally:
        proc.kill()


def _later_markers(phase: str) -> List[str]:
    order = ["loading", "warm-up", "serving"]
    return [PHASE_MARKERS[p] for p in order[order.index(phase) + 1:]]


def signal_trials(model: Path, workdir: Path, trials: int = 2, device: str = "cpu",
                  phases: Sequence[str] = ("start", "loading", "warm-up", "serving"),
                  managed: Sequence[bool] = (False, True)) -> List[Dict[str, Any]]:
    """``trials`` start-ups per (node kind, phase, signal pattern)."""
    patterns = [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)]
    rows = []
    for kind in managed:
        for phase in phases:
            for i in range(trials):
                sigs = patterns[i % len(patterns)]
                rows.append(signal_trial(model, workdir, phase, sigs, kind, device,
                                         tag=f"_{i}"))
    return rows


def format_rows(rows: List[Dict[str, Any]]) -> str:
    """Markdown tables of burst rows and of signal trials."""
    lines = []
    burst = [r for r in rows if "sent" in r and "clients" in r]
    if burst:
        lines += ["| case | clients | client depth | sent | ok | busy | failed | lost | node "
                  "received / answered / ok / busy / failed | wall s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in burst:
            n = r["node"]
            lines.append(f"| {r['case']} | {r['clients']} | {r['client_depth']} | {r['sent']} | "
                         f"{r['ok']} | {r['busy']} | {r['failed']} | {r['lost']} | "
                         f"{n['received']} / {n['answered']} / {n['ok']} / {n['busy']} / "
                         f"{n['failed']} | {r['wall_s']:.2f} |")
    trials = [r for r in rows if "phase" in r]
    if trials:
        lines += ["", "| node | phase | signals | exit status | exit s | traceback |",
                  "|---|---|---|---|---|---|"]
        for r in trials:
            lines.append(f"| {'managed' if r['managed'] else 'plain'} | {r['phase']} | "
                         f"{r['signals']} | {r['rc']} | {r['exit_s']:.2f} | "
                         f"{'yes' if r['traceback'] else 'no'} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="VLM-FO1 checkpoint directory")
    ap.add_argument("--tiny", action="store_true", help="use a tiny random model (no weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", nargs="+", default=["burst", "loading", "lifecycle", "shutdown",
                                                   "signals"])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 50])
    ap.add_argument("--policies", nargs="+", default=["wait", "reject"])
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--client-depth", type=int, default=0, help="KEEP_LAST depth of the "
                    "clients' QoS (default 0: KEEP_ALL; 10, rclpy's default, loses responses)")
    ap.add_argument("--call-timeout-s", type=float, default=120.0,
                    help="a burst's calls unanswered after this long count as lost")
    ap.add_argument("--signal-trials", type=int, default=3)
    ap.add_argument("--keep-logs", type=Path, help="write the node logs here")
    args = ap.parse_args(argv)
    check_network_env()
    print(f"machine: {machine_description(args.device)}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep_logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.tiny:
            args.model, _ = make_tiny_models(Path(tmp))
        if args.model is None:
            ap.error("--model or --tiny is required")
        rows: List[Dict[str, Any]] = []
        if "burst" in args.cases:
            rows += bursts(args.model, workdir, args.clients, args.policies, args.calls,
                           args.call_timeout_s, args.client_depth, args.device)
        for case, fn in (("loading", calls_while_loading), ("lifecycle", calls_during_deactivate),
                         ("shutdown", calls_during_shutdown)):
            if case in args.cases:
                r = fn(args.model, workdir, device=args.device)
                print(json.dumps(r, default=str, indent=1))
        if "signals" in args.cases:
            rows += signal_trials(args.model, workdir, args.signal_trials, args.device)
    print(format_rows(rows))
    for r in rows:
        if "phase" not in r and "sent" not in r:
            print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
