"""Every ~/query_regions call is answered exactly once; signals at any moment exit cleanly.

Short version of ``benchmarks/load_calls.py`` (issue 11):

* in-process, fake pipeline: 80 concurrent calls from 8 clients under both busy policies; a
  burst while the managed node is deactivated; the request queue's QoS, the service gate, the
  interruptible start-up step and the signal recorder as units;
* node processes, tiny model: the same burst over DDS (both policies) then one while SIGINT
  arrives twice, 50 ms apart; and SIGINT/SIGTERM sent before loading, while loading and while
  warming up, for the plain and the managed node: exit status 0, no traceback.

"Answered exactly once" is checked on both sides: every client future completes (or, during a
shutdown or deactivation, its client sees the service go away), and the node's
``requests_received`` = ``requests_answered`` = ``requests_ok + busy + failed`` = what the
clients received.
"""
import importlib.util
import os
import signal
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="source scripts/ros_env.sh first")
pytest.importorskip("vision_msgs.msg", reason="source scripts/ros_env.sh first")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from node_harness import FakePipeline, Harness, frame, wait_for  # noqa: E402
from vlxseek_ros import service_queue, startup, stop_signals  # noqa: E402
from vlxseek_ros.managed_detector_node import ManagedDetectorNode  # noqa: E402
from vlxseek_ros.srv import QueryRegions  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "load_calls.py"
CALLS, CLIENTS = 80, 8
KEEP_ALL = QoSProfile(history=HistoryPolicy.KEEP_ALL, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE)


def _bench():
    spec = importlib.util.spec_from_file_location("load_calls", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _burst(peer, service_name, calls=CALLS, clients=CLIENTS, gone=None, timeout=30.0):
    """Send ``calls`` at once over ``clients`` KEEP_ALL clients; classify the outcomes."""
    cls = [peer.create_client(QueryRegions, service_name, qos_profile=KEEP_ALL)
           for _ in range(clients)]
    for c in cls:
        assert c.wait_for_service(timeout_sec=10)
    req = QueryRegions.Request(query="cup", image=frame())
    futures = [cls[i % clients].call_async(req) for i in range(calls)]
    deadline, gone_at = time.monotonic() + timeout, None
    while not all(f.done() for f in futures) and time.monotonic() < deadline:
        if gone is not None and gone_at is None and gone():
            gone_at = time.monotonic()
        if gone_at is not None and time.monotonic() - gone_at > 1.0:
            break
        time.sleep(0.02)
    out = {"ok": 0, "busy": 0, "failed": 0, "gone": 0, "lost": 0}
    for f in futures:
        if not f.done():
            out["gone" if gone_at is not None else "lost"] += 1
        elif f.result().success:
            out["ok"] += 1
        else:
            out["busy" if f.result().message.startswith("busy:") else "failed"] += 1
    return out


def _node_counts(node):
    s = node.status()
    return {k: s[f"requests_{k}"] for k in ("received", "answered", "ok", "busy", "failed")}


# ------------------------------------------------------------------------------ units

def test_service_qos_depth_and_executor_sizing():
    qos = service_queue.service_qos(1000)
    assert qos.depth == 1000 and qos.history == HistoryPolicy.KEEP_LAST
    assert qos.reliability == ReliabilityPolicy.RELIABLE
    # a thread per waiting call, one to answer busy meanwhile, one per other callback group,
    # the ~/query action's group and its running goals
    assert service_queue.EXECUTOR_THREADS == (service_queue.MAX_WAITING_CALLS + 1 + 5
                                              + service_queue.MAX_ACTION_GOALS + 1)


def test_service_gate_closes_after_running_callbacks():
    gate = service_queue.ServiceGate()
    assert gate.can_execute(None) and gate.beginning_execution(None)
    assert not gate.close(timeout_s=0.05)     # one callback still running
    assert not gate.can_execute(None) and not gate.beginning_execution(None)
    threading.Timer(0.1, gate.ending_execution, (None,)).start()
    assert gate.close(timeout_s=5.0) and gate.running == 0
    gate.reopen()
    assert gate.can_execute(None)


def test_wait_for_lock_gives_up_when_closing():
    lock = threading.Lock()
    lock.acquire()
    closing = threading.Event()
    threading.Timer(0.1, closing.set).start()
    start = time.monotonic()
    assert not service_queue.wait_for_lock(lock, 30.0, closing.is_set)
    assert time.monotonic() - start < 1.0
    assert not service_queue.wait_for_lock(lock, 0.0, lambda: False)
    lock.release()
    assert service_queue.wait_for_lock(lock, 0.0, lambda: False)


def test_queued_calls_are_answered_busy_then_given_time_to_arrive(monkeypatch):
    """The last step before a service is destroyed: every queued call is answered busy, the
    counters count them, and only then the node waits DELIVERY_LINGER_S (answers destroyed
    with their writer were lost: a node counted 240 answered, its clients got 236)."""
    from types import SimpleNamespace

    from vlxseek_ros import serving_interfaces
    from vlxseek_ros.serving_stats import ServingStats

    events = []
    queue = [("req-a", "hdr-a"), ("req-b", "hdr-b")]

    class Handle:  # rclpy's service handle: a context manager that takes queued requests
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def service_take_request(self, _request_type):
            return queue.pop(0) if queue else (None, None)

    service = SimpleNamespace(
        handle=Handle(), srv_type=QueryRegions,
        send_response=lambda resp, hdr: events.append(("sent", hdr, resp.success, resp.message)))
    monkeypatch.setattr(serving_interfaces.time, "sleep", lambda s: events.append(("sleep", s)))
    fake = SimpleNamespace(_closing="the node is shutting down", _service=service,
                           _stats=ServingStats())
    answered = serving_interfaces.ServingInterfaces.answer_queued_calls(fake)
    assert answered == 2
    busy = "busy: the node is shutting down"
    assert events == [("sent", "hdr-a", False, busy), ("sent", "hdr-b", False, busy),
                      ("sleep", service_queue.DELIVERY_LINGER_S)]
    assert service_queue.DELIVERY_LINGER_S > 0
    counts = fake._stats.counts
    assert (counts["requests_received"], counts["requests_busy"],
            counts["requests_answered"]) == (2, 2, 2)
    # no service (a managed node never activated, or already deactivated): nothing to wait for
    events.clear()
    fake._service = None
    assert serving_interfaces.ServingInterfaces.answer_queued_calls(fake) == 0
    assert events == []


def test_run_interruptibly_returns_raises_or_abandons():
    assert startup.run_interruptibly(lambda: 7, lambda: False, "adding") == 7
    with pytest.raises(ValueError, match="bad"):
        startup.run_interruptibly(lambda: (_ for _ in ()).throw(ValueError("bad")),
                                  lambda: False, "failing")
    with pytest.raises(startup.StartupInterrupted, match="before loading"):
        startup.run_interruptibly(lambda: 1, lambda: True, "loading")
    release = threading.Event()
    stop_at = time.monotonic() + 0.2
    start = time.monotonic()
    with pytest.raises(startup.StartupInterrupted, match="while loading"):
        startup.run_interruptibly(lambda: release.wait(30), lambda: time.monotonic() > stop_at,
                                  "loading")
    assert time.monotonic() - start < 1.0 and startup.abandoned_work()
    release.set()
    wait_for(lambda: not startup.abandoned_work())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_importing_exits_0_at_once(sig):
    """The node modules' first line: a stop signal during the imports ends the process with
    status 0 at once (not after seconds of torch imports, not with a traceback)."""
    import subprocess
    import sys
    code = ("import os, signal, time\n"
            "from vlxseek_ros import stop_signals\n"
            "stop_signals.install(exit_at_once=True)\n"
            f"os.kill(os.getpid(), {int(sig)})\n"
            "time.sleep(5)\n"
            "print('still running')\n")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "still running" not in proc.stdout and "Traceback" not in proc.stderr
    assert "shutdown requested while importing" in proc.stderr
    assert time.monotonic() - start < 4.0


def _entry_script(tmp_path, exe, module):
    """The executable CMakeLists.txt generates for ``ros2 run``/``ros2 launch`` (its CONTENT
    with the CMake variables filled in)."""
    import re
    import sys
    cmake = (Path(__file__).resolve().parents[2] / "CMakeLists.txt").read_text()
    content = re.search(r'file\(GENERATE OUTPUT "\$\{_entry_script\}" CONTENT\n"(.*?)"\)\n',
                        cmake, re.S).group(1).replace('\\"', '"')
    content = (content.replace("${Python3_EXECUTABLE}", sys.executable)
               .replace("${_exe}", exe).replace("${_module}", module))
    path = tmp_path / exe
    path.write_text(content)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("exe, module", [("vlxseek_detector", "detector_node"),
                                         ("vlxseek_detector_managed", "managed_detector_node")])
def test_installed_executable_exits_0_on_a_signal_during_its_imports(tmp_path, exe, module):
    """The generated entry script records signals before importing the node: SIGINT then ends
    it at once with status 0 and no traceback (not a KeyboardInterrupt out of torch's import)."""
    import subprocess
    script = _entry_script(tmp_path, exe, module)
    bench = _bench()
    env = dict(os.environ)  # this checkout's vlxseek_ros, not an installed copy
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                         env.get("PYTHONPATH", "")])
    proc = bench.NodeProcess([str(script), "--ros-args", "-p", "model_path:=/nonexistent"],
                             tmp_path / "entry.log", env=env)
    try:
        assert proc.records_signals(), proc.log()
        start = time.monotonic()
        proc.proc.send_signal(signal.SIGINT)
        rc = proc.proc.wait(timeout=30)
        out = proc.log()
        assert rc == 0 and "Traceback" not in out, out
        assert time.monotonic() - start < 2.0, out  # not after the imports (seconds)
        assert "shutdown requested while importing" in out, out
    except subprocess.TimeoutExpired:
        raise AssertionError(proc.log())
    finally:
        proc.kill()


def test_stop_signals_are_recorded_not_raised():
    saved = {sig: signal.getsignal(sig) for sig in stop_signals.STOP_SIGNALS}
    stop_signals.reset()
    try:
        assert stop_signals.install() and not stop_signals.requested()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)   # no KeyboardInterrupt
        wait_for(lambda: len(stop_signals.received()) == 2)
        assert stop_signals.requested() and stop_signals.received() == ["SIGTERM", "SIGINT"]
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        stop_signals.reset()


# ------------------------------------------------------------------------------ in-process

@pytest.mark.parametrize("policy", ["wait", "reject"])
def test_concurrent_calls_from_8_clients_are_answered_exactly_once(policy):
    fake = FakePipeline()
    fake.delay_s = 0.05
    h = Harness(fake, overrides=[Parameter("busy_policy", value=policy)])
    try:
        assert h.node._service.qos_profile.depth == 1000  # service_queue_depth, not rclpy's 10
        got = _burst(h.peer, h.client.srv_name)
        assert got["lost"] == 0 and got["gone"] == 0 and got["failed"] == 0, got
        assert got["ok"] >= 1 and got["ok"] + got["busy"] == CALLS, got
        wait_for(lambda: _node_counts(h.node)["answered"] == CALLS)
        assert _node_counts(h.node) == {"received": CALLS, "answered": CALLS, "failed": 0,
                                        "ok": got["ok"], "busy": got["busy"]}
        assert fake.max_active == 1
    finally:
        h.close()


def test_service_queue_depth_parameter_sizes_the_service():
    h = Harness(FakePipeline(), overrides=[Parameter("service_queue_depth", value=64)])
    try:
        assert h.node._service.qos_profile.depth == 64
        assert h.call(image=frame()).success
    finally:
        h.close()


def test_calls_in_flight_while_deactivating_get_one_answer_each():
    """A managed node deactivated under a burst: each call is answered (ok, or busy while
    deactivating: the taken ones and those still queued) or its client sees the service go;
    the node's counters equal what the clients received."""
    context = rclpy.Context()
    rclpy.init(context=context)
    fake = FakePipeline()
    fake.delay_s = 0.3
    node = ManagedDetectorNode(pipeline=fake, context=context, namespace="/load_managed",
                               parameter_overrides=[Parameter("autostart", value=True)])
    peer = rclpy.create_node("load_peer", namespace="/load_managed", context=context)
    executor = MultiThreadedExecutor(num_threads=service_queue.EXECUTOR_THREADS,
                                     context=context)
    executor.add_node(node)
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    name = "/load_managed/vlxseek_detector/query_regions"
    probe = peer.create_client(QueryRegions, name)
    try:
        transition = {}
        trigger = threading.Thread(target=lambda: (
            wait_for(lambda: fake.active == 1),
            transition.setdefault("result", node.trigger_deactivate())))
        trigger.start()
        got = _burst(peer, name, gone=lambda: not probe.service_is_ready())
        trigger.join(30)
        assert transition["result"] == TransitionCallbackReturn.SUCCESS
        assert got["lost"] == 0 and got["failed"] == 0, got
        counts = _node_counts(node)
        assert counts["received"] == counts["answered"] == got["ok"] + got["busy"], (counts, got)
        assert (counts["ok"], counts["busy"]) == (got["ok"], got["busy"]), (counts, got)
        assert got["ok"] >= 1 and got["busy"] >= 1, got
        # active again: a new burst is answered in full
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        again = _burst(peer, name)
        assert again["lost"] == again["gone"] == 0 and again["ok"] + again["busy"] == CALLS
    finally:
        executor.shutdown()
        spinner.join(timeout=5)  # out of spin_once before the nodes go (node_harness)
        node.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown(context=context)


# ------------------------------------------------------------------------------ processes

def test_node_process_answers_bursts_and_a_burst_during_double_sigint(tiny_models, tmp_path):
    """80 calls from 8 clients under each busy policy, over DDS, against the tiny model; then
    a burst while SIGINT arrives twice, 50 ms apart: exit 0, no traceback, every call answered
    or its client saw the node go, and the node's exit line counts what the clients got."""
    bench = _bench()
    ns = "/vlxseek_ci_load"
    proc = bench.NodeProcess(bench.node_command(tiny_models[0], ns), tmp_path / "node.log")
    driver = bench.Driver(f"{ns}/vlxseek_detector")
    try:
        probe = driver.wait_for_service(150.0, proc)
        for policy in ("wait", "reject"):
            driver.set_parameter("busy_policy", policy)
            clients = driver.clients(CLIENTS, 0)
            for c in clients:
                assert c.wait_for_service(timeout_sec=20)
            before = driver.counters(settle_s=1.0)
            got = bench.fire(driver, clients, CALLS, 90.0)
            node = bench.delta(driver.counters(), before)
            assert got["lost"] == 0 and got["failed"] == 0, (policy, got, proc.log()[-2000:])
            assert got["ok"] >= 1 and got["ok"] + got["busy"] == CALLS, (policy, got)
            assert node == {"received": CALLS, "answered": CALLS, "ok": got["ok"],
                            "busy": got["busy"], "failed": 0}, (policy, node, got)
        stopped = {}
        got = bench.fire(
            driver, clients, CALLS, 60.0,
            gone=lambda: proc.proc.poll() is not None and not probe.service_is_ready(),
            on_sent=lambda: threading.Thread(target=lambda: stopped.update(proc.stop(
                (signal.SIGINT, signal.SIGINT))), daemon=True).start())
        wait_for(lambda: "rc" in stopped, 30)
        out = proc.log()
        assert stopped["rc"] == 0 and not stopped["traceback"], out[-3000:]
        assert got["lost"] == 0 and got["failed"] == 0, got
        total = 2 * CALLS + got["ok"] + got["busy"]
        assert f"{total} answered" in out, (got, out[-1500:])  # the node's "at exit" line
    finally:
        driver.close()
        proc.kill()


# (node kind, phase, signals): before loading (as soon as the process records signals), while
# loading the model, while warming up; the serving phase is the test above.
TRIALS = [
    (False, "start", (signal.SIGTERM,)),
    (False, "loading", (signal.SIGINT,)),
    (False, "loading", (signal.SIGTERM, signal.SIGINT)),
    (False, "warm-up", (signal.SIGINT, signal.SIGINT)),
    (True, "start", (signal.SIGINT,)),
    (True, "loading", (signal.SIGTERM,)),
    (True, "warm-up", (signal.SIGTERM,)),
]


@pytest.mark.parametrize("managed, phase, signals", TRIALS,
                         ids=[f"{'managed' if m else 'plain'}-{p}-{'+'.join(s.name for s in sg)}"
                              for m, p, sg in TRIALS])
def test_signal_during_start_up_exits_0_without_traceback(tiny_models, tmp_path, managed, phase,
                                                          signals):
    r = _bench().signal_trial(tiny_models[0], tmp_path, phase, signals, managed)
    out = Path(r["log"]).read_text()
    assert r["reached"] and r["still_in_phase"], out  # the signal came in the intended phase
    assert r["rc"] == 0 and not r["traceback"], out
    assert not r["rosout_error"], out
    assert r["exit_s"] < 5.0, (r, out)
    assert "ready:" not in out or phase == "serving", out  # no interface after the signal
