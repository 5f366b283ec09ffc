"""Helpers shared by the benchmarks: machine description, timing, memory, tables, caches.

Nothing here is benchmark-specific: each ``bench_*.py`` owns its method and its table.
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

DEFAULT_CACHE_DIR = os.path.join(tempfile.gettempdir(), "vlxseek_bench_cache")
"""Where cached artefacts (tiny checkpoint, tiny proposer) live unless ``--cache-dir`` says."""


# ----------------------------------------------------------------------------- machine

def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info(device: str = "cpu") -> Dict[str, str]:
    """What the figures were measured on: CPU, cores, memory, versions, device.

    Args:
        device: the torch device the benchmark runs on (``cpu``, ``cuda``, ``cuda:1``).
    """
    import torch
    import transformers

    info = {
        "cpu": cpu_model(),
        "logical_cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
    }
    try:
        import psutil

        info["memory_gib"] = f"{psutil.virtual_memory().total / 2**30:.1f}"
        info["load_avg_1m"] = f"{os.getloadavg()[0]:.2f}"
    except (ImportError, OSError):
        pass
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
        info["cuda"] = str(torch.version.cuda)
    return info


def print_header(title: str, device: str, settings: Dict[str, object]) -> Dict[str, str]:
    """Print the benchmark title, the machine and the settings; return the machine dict."""
    info = machine_info(device)
    print(f"== {title} ==")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    if settings:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    return info


# ----------------------------------------------------------------------------- timing

@dataclass
class Timing:
    """Repeated wall-clock measurements of one thing, in milliseconds."""

    samples_ms: List[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)


def synchronize(device: str) -> None:
    """Wait for queued GPU work so that wall-clock time covers it (no-op on CPU)."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


def measure(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1,
            device: str = "cpu", setup: Optional[Callable[[], object]] = None) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls.

    Args:
        fn: the work to time (its result is ignored).
        repeats: timed calls (at least 1).
        warmup: untimed calls first (allocator, kernel selection, caches).
        device: synchronised before and after each timed call when it is a GPU.
        setup: untimed work before every call (e.g. restoring a KV cache).

    Returns:
        :class:`Timing`; use ``median_ms``.
    """
    timing = Timing()
    for i in range(max(0, warmup) + max(1, repeats)):
        if setup is not None:
            setup()
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            timing.samples_ms.append((time.perf_counter() - start) * 1e3)
    return timing


# ----------------------------------------------------------------------------- memory

def current_rss() -> int:
    """Resident set size of this process in bytes (psutil)."""
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """Peak memory during a ``with`` block.

    On CPU a thread samples the process RSS (psutil) every ``interval_s``; ``peak_bytes`` is
    the highest sample (including the values at entry and exit). On a GPU it is
    ``torch.cuda.max_memory_allocated`` after resetting the peak at entry (tensors only, not
    the CUDA context or allocator slack). ``start_bytes`` is the value at entry.
    """

    def __init__(self, device: str = "cpu", interval_s: float = 0.002):
        self.device = str(device)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.start_bytes = 0
        self.kind = "cuda max_memory_allocated" if self.is_gpu else "process RSS (psutil)"
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def is_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, current_rss())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        if self.is_gpu:
            import torch

            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
            self.start_bytes = torch.cuda.memory_allocated(torch.device(self.device))
        else:
            self.start_bytes = self.peak_bytes = current_rss()
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.is_gpu:
            import torch

            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(torch.device(self.device))
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, current_rss())


def mib(num_bytes: float) -> float:
    """Bytes → MiB."""
    return num_bytes / 2**20


# ----------------------------------------------------------------------------- tables

def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (pastes into RESULTS.md as is); floats get 2 decimals, numbers are
    right-aligned, text left-aligned."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    def align(v: object, text: str, width: int) -> str:
        return text.rjust(width) if isinstance(v, (int, float)) else text.ljust(width)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h)
              for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(align(v, c, w) for v, c, w in zip(row, r, widths)) + " |"
              for row, r in zip(rows, text)]
    return "\n".join(lines)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` (``nan`` when the denominator is 0)."""
    return numerator / denominator if denominator else float("nan")


# ----------------------------------------------------------------------------- arguments

def add_run_args(parser: argparse.ArgumentParser, *, repeats: int = 3, warmup: int = 1,
                 device: bool = True) -> None:
    """Add ``--repeats``, ``--warmup``, ``--seed`` and optionally ``--device``/``--dtype``."""
    parser.add_argument("--repeats", type=int, default=repeats,
                        help=f"timed repetitions, median reported (default {repeats})")
    parser.add_argument("--warmup", type=int, default=warmup,
                        help=f"untimed warm-up runs first (default {warmup})")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (boxes, weights)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op CPU threads (default: torch's choice); 1 gives "
                             "steadier figures on a machine shared with other jobs")
    if device:
        parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
        parser.add_argument("--dtype", default="auto",
                            help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR,
                        help=f"cache for tiny checkpoints (default {DEFAULT_CACHE_DIR})")


def add_model_benchmark_args(parser: argparse.ArgumentParser, *,
                             images_help: str = "their image directory",
                             limit_help: str = "first N records only") -> None:
    """Add the flags of the benchmarks that compare checkpoints on a held-out set:
    ``--models`` (one or more checkpoint directories, required), ``--images`` (required),
    ``--limit``, ``--device`` (default ``cpu``) and ``--json`` (results file).

    Args:
        images_help: help text of ``--images`` (what the images belong to).
        limit_help: help text of ``--limit`` (what is counted: scenes, records).
    """
    parser.add_argument("--models", nargs="+", required=True, help="checkpoint directories")
    parser.add_argument("--images", required=True, help=images_help)
    parser.add_argument("--limit", type=int, default=None, help=limit_help)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results to this file")


def write_json(path: Optional[str], results: object) -> None:
    """``--json PATH``: write a benchmark's results as indented JSON (nothing without a path;
    values JSON cannot hold are written as their ``str``)."""
    if path:
        import json

        with open(path, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2, default=str)


BY_HELP = ("also score each value of this record field or meta field apart (e.g. task, kind; "
           "regions: by the number of candidate regions; objects: records naming an object "
           "kind no train image shows, unseen, against the rest, seen; colour: detect_all "
           "records by their first object, photo, a colour another shape shares, or unique; "
           "superlative: superlative refer records by their word, leftmost ... smallest)")


def add_by_arg(parser: argparse.ArgumentParser) -> None:
    """``--by KEY``: the per-group rows of the scene benchmarks (see :func:`record_group`)."""
    parser.add_argument("--by", help=BY_HELP)


def record_group(record: dict, key: str) -> str:
    """The group of a training-format ``record`` for ``--by key``: ``record[key]``, else
    ``record["meta"][key]``, else ``"-"`` (the record has no such field).

    Three keys are computed when the record has no such field: ``regions``, the number of
    candidate regions (``len(bbox_list)``, or ``len(text_regions)`` of an image-free record of
    ``make-text-regions``: the list length), and ``objects``, ``unseen`` when
    the record names or grounds a colour-shape kind that no train image shows (composition),
    else ``seen`` (new placements and phrasings of seen kinds): scene records carry it in
    ``meta`` (:mod:`vlxseek_core.training.scene_data`, which also knows the objects that
    "the yellow one" grounds); other records get it from their text
    (:func:`vlxseek_core.training.scenes.names_unseen_object`); and ``colour``, on
    ``detect_all`` records the group of the first object the answer grounds (the one the
    probes score): ``photo``, ``shared`` (another shape in the scene has its colour: the
    colour-shape conjunction) or ``unique``
    (:func:`vlxseek_core.training.scenes.first_colour_group`); ``-`` for other tasks; and
    ``superlative``, on ``refer`` records of kind ``superlative`` the word of the expression
    (``leftmost`` ... ``smallest``, :data:`~vlxseek_core.training.scenes.SUPERLATIVES`: which
    comparison a model makes or misses), ``-`` for other records."""
    if key == "regions" and "regions" not in record:
        return str(len(record.get("bbox_list") or record.get("text_regions") or ()))
    meta = record.get("meta") or {}
    if key == "objects" and "objects" not in record and "objects" not in meta:
        from vlxseek_core.training.scenes import names_unseen_object

        text = " ".join(t.get("value", "") for t in record.get("conversations") or ())
        return "unseen" if names_unseen_object(text) else "seen"
    if key == "colour" and "colour" not in record:
        from vlxseek_core.training.scenes import first_colour_group

        if record.get("task") != "detect_all":
            return "-"
        turns = record.get("conversations") or ()
        return first_colour_group(turns[-1].get("value", "") if turns else "")
    if key == "superlative" and "superlative" not in record:
        from vlxseek_core.training.scenes import SUPERLATIVES

        kind = (record.get("meta") or {}).get("kind")
        if record.get("task") != "refer" or kind != "superlative":
            return "-"
        words = str(record.get("query", "")).split()
        return next((w for w in words if w in SUPERLATIVES), "-")
    value = record.get(key, (record.get("meta") or {}).get(key, "-"))
    return str(value)


@contextmanager
def torch_threads(num: Optional[int]) -> Iterator[None]:
    """Run the block with ``num`` torch CPU threads (``None``: unchanged), then restore."""
    import torch

    previous = torch.get_num_threads()
    if num:
        torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def parse_size(text: str) -> Tuple[int, int]:
    """``"1280x720"`` → ``(width, height)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from exc
    if w < 28 or h < 28:
        raise argparse.ArgumentTypeError(f"size {text!r} is below 28x28")
    return w, h


def resolve_device_dtype(device: str, dtype: str):
    """``(device str, torch.dtype)`` with the pipeline's rules (auto: bf16 GPU, fp32 CPU)."""
    from vlxseek_core.pipeline import resolve_device, resolve_dtype

    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)


# ----------------------------------------------------------------------------- caches

@functools.lru_cache(maxsize=1)
def qwen_tokenizer():
    """The exact Qwen2.5-VL tokenizer with the VLM-FO1 tokens (built once per process)."""
    from vlxseek_core.tokenizer import build_qwen25_vl_tokenizer

    return build_qwen25_vl_tokenizer()


def _cached_dir(path: str, marker: str, make: Callable[[str], object]) -> str:
    """Create ``path`` with ``make(tmp)`` unless ``path/marker`` exists (atomic rename)."""
    if os.path.isfile(os.path.join(path, marker)):
        return path
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        make(tmp)
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished first
            if not os.path.isfile(os.path.join(path, marker)):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def tiny_model_dir(cache_dir: str = DEFAULT_CACHE_DIR) -> str:
    """A tiny random VLM-FO1 checkpoint (``make_tiny_model``), created once per cache dir."""
    from vlxseek_core.tiny import make_tiny_model

    return _cached_dir(os.path.join(cache_dir, "tiny_vlm_fo1"), "model.safetensors",
                       lambda d: make_tiny_model(d, seed=0))


def tiny_proposer_dir(cache_dir: str = DEFAULT_CACHE_DIR) -> str:
    """A tiny random OmDet-Turbo detector (``make-tiny-proposer``), created once."""
    from vlxseek_core.proposals import write_tiny_omdet_turbo

    return _cached_dir(os.path.join(cache_dir, "tiny_omdet_turbo"), "config.json",
                       write_tiny_omdet_turbo)


# ----------------------------------------------------------------------------- inputs

def synthetic_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic HWC uint8 RGB frame with smooth gradients, blocks and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1),
                    0.5 + 0.5 * np.sin((xx + yy) / 37.0)], axis=-1) * 200.0
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        img[y0:y0 + height // 5, x0:x0 + width // 6] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 8, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_boxes(n: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """``n`` plausible object boxes (float32 xyxy pixels) on a ``width`` × ``height`` frame.

    Box sides are log-uniform between 2 % and 60 % of the frame side, so the set mixes small
    and large objects the way detections on a street or table scene do.
    """
    rng = np.random.default_rng(seed)
    bw = np.exp(rng.uniform(np.log(0.02), np.log(0.6), n)) * width
    bh = np.exp(rng.uniform(np.log(0.02), np.log(0.6), n)) * height
    x1 = rng.uniform(0, 1, n) * (width - bw)
    y1 = rng.uniform(0, 1, n) * (height - bh)
    return np.stack([x1, y1, x1 + bw, y1 + bh], axis=1).astype(np.float32)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' info/warning logging inside the block."""
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(previous)


def flush() -> None:
    """Flush stdout so tables interleave properly with stderr in logs."""
    sys.stdout.flush()


def qwen_resized_size(width: int, height: int) -> Tuple[int, int]:
    """``(width, height)`` of the frame Qwen2.5-VL's processor feeds the ViT (and in whose
    absolute pixels Qwen2.5-VL writes ``bbox_2d``): stock ``smart_resize`` with the stock
    min/max pixels, after vlxseek's 2048 long-side cap."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from vlxseek_core.preprocessing import capped_size
    from vlxseek_core.tiny import QWEN25_VL_PREPROCESSOR as P

    cw, ch = capped_size(width, height)
    factor = P["patch_size"] * P["merge_size"]
    h, w = smart_resize(ch, cw, factor=factor, min_pixels=P["min_pixels"],
                        max_pixels=P["max_pixels"])
    return w, h
