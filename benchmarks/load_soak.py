"""Load soak of the vlxseek_detector node: camera-rate frames while the service is called.

Starts the node as its own process, publishes ``width x height`` rgb8 frames on its ``image``
topic at ``rate_hz`` for ``seconds`` (every frame differs, so the frame cache does not hide the
encoding cost) while one client calls ``~/query_regions`` about the newest frame back to back.
It records the node's resident memory (VmRSS) after a warm-up query and at the end, the frames
received / dropped / answered from ``~/status``, the request outcomes and latencies, and the age
of each answered frame (answer time minus the frame's stamp: with the depth-1 newest-frame buffer
it stays near one inference time instead of growing, i.e. no backlog). Prints a table with the
machine description.

Usage (ROS environment sourced; DDS traffic must stay on this machine)::

    source scripts/ros_env.sh
    export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=61
    python benchmarks/load_soak.py --model /models/vlm-fo1 --device cuda            # 60 s, 60 Hz
    python benchmarks/load_soak.py --tiny --seconds 10 --rate-hz 30 --width 320 --height 240

:func:`run_soak` is what test/ros/test_load_soak.py runs at a small scale.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NS = "/vlxseek_soak"
NODE = f"{NS}/vlxseek_detector"
IMAGE_TOPIC = f"{NS}/camera/image_raw"


def check_network_env() -> None:
    """Refuse to run unless DDS discovery is limited to this machine and a domain id is set."""
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST" or \
            not os.environ.get("ROS_DOMAIN_ID", "").strip().isdigit():
        raise SystemExit("set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and ROS_DOMAIN_ID first")


def rss_mb(pid: int) -> float:
    """Return the resident set size of process ``pid`` in MiB (Linux /proc), -1 when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return -1.0


def machine_description(device: str) -> str:
    """Describe the machine: CPU model and count, memory, Python, device (GPU name)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except OSError:
        mem_gb = float("nan")
    gpu = ""
    if device.startswith("cuda") or device == "auto":
        try:
            import torch
            if torch.cuda.is_available():
                gpu = f", GPU {torch.cuda.get_device_name(0)}"
        except ImportError:
            pass
    return (f"{cpu} x {os.cpu_count()} CPUs, {mem_gb:.0f} GiB RAM, Python "
            f"{platform.python_version()}, device {device}{gpu}")


def make_tiny_models(root: Path) -> tuple:
    """Make a tiny random VLM-FO1 checkpoint and proposal detector (vlxseek_core CLI)."""
    model, proposer = root / "model", root / "proposer"
    for cmd, out in (("make-tiny-model", model), ("make-tiny-proposer", proposer)):
        subprocess.run([sys.executable, "-m", "vlxseek_core.cli", cmd, str(out)], check=True,
                       cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return model, proposer


def _wait_status(status: Dict[str, Any], predicate, timeout_s: float = 5.0) -> None:
    """Wait (up to ``timeout_s``) until the latest ``~/status`` satisfies ``predicate``."""
    deadline = time.monotonic() + timeout_s
    while not predicate(dict(status)) and time.monotonic() < deadline:
        time.sleep(0.05)


def _percentile(values: List[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def run_soak(model: Path, proposer: Optional[Path] = None, seconds: float = 60.0,
             rate_hz: float = 60.0, width: int = 1280, height: int = 720, device: str = "auto",
             call_timeout_s: float = 30.0, busy_policy: str = "wait",
             query: str = "person", start_timeout_s: float = 180.0, warmup_queries: int = 3,
             log_path: Optional[Path] = None, node_warmup: bool = True) -> Dict[str, Any]:
    """Run one soak and return its measurements (see the module docstring).

    Returns:
        dict with ``rss_start_mb``, ``rss_end_mb``, ``frames_published``, ``publish_rate_hz``,
        ``status`` (the node's last ``~/status`` JSON), ``outcomes`` (ok/busy/failed/timeout
        counts), ``latency_ms`` (p50/p95/max of answered calls), ``frame_age_ms`` (p50/p95/max),
        ``failures`` (messages of failed calls, at most 5), ``node_exit`` (exit status),
        ``first_call_ms`` (the first service call, on the first frame), ``warmup_ms`` (the
        node's start-up warm-up inference, ``None`` with ``node_warmup=False``).

    Raises:
        RuntimeError: the node did not start in ``start_timeout_s`` (its log is in the message).
    """
    check_network_env()
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                          str(REPO / "config" / "fastdds_large_images.xml"))
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from vlxseek_ros.image_conversion import rgb_to_image_msg
    from vlxseek_ros.srv import QueryRegions

    cmd = [sys.executable, "-m", "vlxseek_ros.detector_node", "--ros-args",
           "-r", f"__ns:={NS}", "-r", f"image:={IMAGE_TOPIC}", "-p", f"model_path:={model}",
           "-p", f"device:={device}", "-p", f"busy_policy:={busy_policy}",
           "-p", "status_period_s:=0.2", "-p", "max_new_tokens:=64",
           "-p", "publish_debug_image:=false",
           "-p", f"warmup:={'true' if node_warmup else 'false'}"]
    cmd += ["-p", f"proposal_model:={proposer}"] if proposer else []
    log_file = open(log_path or os.devnull, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("vlxseek_soak_driver", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    status: Dict[str, Any] = {}
    node.create_subscription(String, f"{NODE}/status",
                             lambda m: status.update(json.loads(m.data)),
                             QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    pub = node.create_publisher(Image, IMAGE_TOPIC,
                                QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    client = node.create_client(QueryRegions, f"{NODE}/query_regions")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)

    def frame_msg(k: int):
        img = base.copy()
        img[0, :8, 0] = np.frombuffer(int(k).to_bytes(8, "little"), np.uint8)
        msg = rgb_to_image_msg(img, None)
        now = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1.0) * 1e9)
        msg.header.frame_id = "soak_camera"
        return msg

    def call(timeout: float):
        future = client.call_async(QueryRegions.Request(query=query))
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        return future.result() if done.wait(timeout) else None

    result: Dict[str, Any] = {}
    try:
        deadline = time.monotonic() + start_timeout_s
        while not client.wait_for_service(timeout_sec=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node did not start (exit {proc.poll()}); see {log_path}")
        while pub.get_subscription_count() == 0:
            time.sleep(0.05)
        # warm-up: the first inferences allocate the model's (and the threads') working memory
        warm_deadline = time.monotonic() + start_timeout_s
        k = warm_ok = 0
        while True:
            pub.publish(frame_msg(k))
            k += 1
            start = time.monotonic()
            res = call(call_timeout_s)
            if k == 1:  # what the node's own warm-up saves the first caller
                result["first_call_ms"] = (time.monotonic() - start) * 1e3
            warm_ok += int(res is not None and res.success)
            if warm_ok >= warmup_queries:
                break
            if time.monotonic() > warm_deadline:
                raise RuntimeError("warm-up query never succeeded")
            time.sleep(0.1)
        result["rss_start_mb"] = rss_mb(proc.pid)
        _wait_status(status, lambda st: st.get("requests_ok", 0) >= warm_ok)
        status_start = dict(status)
        result["warmup_ms"] = status_start.get("warmup_ms")
        stop = threading.Event()
        published = [0]

        def publisher():
            period, next_t, i = 1.0 / rate_hz, time.monotonic(), k
            while not stop.is_set():
                pub.publish(frame_msg(i))
                i += 1
                published[0] += 1
                next_t += period
                time.sleep(max(0.0, next_t - time.monotonic()))

        outcomes = {"ok": 0, "busy": 0, "failed": 0, "timeout": 0}
        latencies: List[float] = []
        ages: List[float] = []
        failures: List[str] = []
        pub_thread = threading.Thread(target=publisher, daemon=True)
        t0 = time.monotonic()
        pub_thread.start()
        while time.monotonic() - t0 < seconds:
            start = time.monotonic()
            res = call(call_timeout_s)
            if res is None:
                outcomes["timeout"] += 1
            elif res.success:
                outcomes["ok"] += 1
                latencies.append((time.monotonic() - start) * 1e3)
                stamp = res.header.stamp.sec + res.header.stamp.nanosec * 1e-9
                ages.append((time.time() - stamp) * 1e3)
            elif res.message.startswith("busy:"):
                outcomes["busy"] += 1
            else:
                outcomes["failed"] += 1
                if len(failures) < 5:
                    failures.append(res.message)
        elapsed = time.monotonic() - t0
        stop.set()
        pub_thread.join(5)
        _wait_status(status, lambda st: st.get("requests_ok", 0)
                     >= status_start.get("requests_ok", 0) + outcomes["ok"])
        result.update(
            rss_end_mb=rss_mb(proc.pid), frames_published=published[0],
            publish_rate_hz=published[0] / elapsed, seconds=elapsed, outcomes=outcomes,
            failures=failures, status=dict(status), status_start=status_start,
            latency_ms={"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                        "max": max(latencies, default=0.0)},
            frame_age_ms={"p50": _percentile(ages, 50), "p95": _percentile(ages, 95),
                          "max": max(ages, default=0.0)})
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        result["node_exit"] = proc.returncode
        log_file.close()
    return result


def format_table(r: Dict[str, Any], args: argparse.Namespace) -> str:
    """Format the soak's results as a two-column text table."""
    s, s0 = r["status"], r.get("status_start", {})

    def delta(key):
        return s.get(key, 0) - s0.get(key, 0)
    o = r["outcomes"]
    rows = [
        ("machine", machine_description(args.device)),
        ("load", f"{args.width}x{args.height} rgb8 at {args.rate_hz:g} Hz for {args.seconds:g} s "
                 f"(achieved {r['publish_rate_hz']:.1f} Hz), busy_policy {args.busy_policy}"),
        ("node RSS MiB", f"{r['rss_start_mb']:.0f} -> {r['rss_end_mb']:.0f} "
                         f"({r['rss_end_mb'] - r['rss_start_mb']:+.0f})"),
        ("frames", f"{r['frames_published']} published, {delta('frames_received')} received, "
                   f"{delta('frames_dropped')} dropped, {delta('frames_answered')} answered"),
        ("requests", f"{o['ok']} ok, {o['busy']} busy, {o['failed']} failed, "
                     f"{o['timeout']} timed out"),
        ("call latency ms", "p50 {p50:.0f}  p95 {p95:.0f}  max {max:.0f}".format(
            **r["latency_ms"])),
        ("start-up warm-up ms", "off (warmup:=false)" if r.get("warmup_ms") is None
         else f"{r['warmup_ms']:.0f} (one inference on a synthetic frame, before the service)"),
        ("first call ms", f"{r.get('first_call_ms', 0.0):.0f} (p50 of later calls: "
                          f"{r['latency_ms']['p50']:.0f})"),
        ("answered frame age ms", "p50 {p50:.0f}  p95 {p95:.0f}  max {max:.0f}".format(
            **r["frame_age_ms"])),
        ("stage mean ms", ", ".join(f"{k} {v['mean']:.0f}"
                                    for k, v in s.get("latency_ms", {}).items())),
        ("inference errors", f"{s.get('inference_errors', 0)}; last: "
                             f"{s.get('last_error') or '-'}"),
        ("node exit", str(r["node_exit"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="VLM-FO1 checkpoint directory")
    ap.add_argument("--proposer", type=Path, help="proposal detector directory (default: "
                    "the node's default)")
    ap.add_argument("--tiny", action="store_true", help="use tiny random models (no weights)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate-hz", type=float, default=60.0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--busy-policy", default="wait", choices=("wait", "reject"))
    ap.add_argument("--call-timeout-s", type=float, default=30.0)
    ap.add_argument("--log", type=Path, help="write the node's output here")
    ap.add_argument("--no-node-warmup", action="store_true",
                    help="start the node with warmup:=false (the first call pays the warm-up)")
    args = ap.parse_args(argv)
    check_network_env()
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            args.model, args.proposer = make_tiny_models(Path(tmp))
        if args.model is None:
            ap.error("--model or --tiny is required")
        r = run_soak(args.model, args.proposer, seconds=args.seconds, rate_hz=args.rate_hz,
                     width=args.width, height=args.height, device=args.device,
                     call_timeout_s=args.call_timeout_s, busy_policy=args.busy_policy,
                     log_path=args.log, node_warmup=not args.no_node_warmup)
    print(format_table(r, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
