"""k queries about one frame: k independent ``query`` calls vs one frame-cached ``query_many``.

Every timed repetition gets a *new* frame (the same picture with a changed pixel), as a camera
stream would, so no mode profits from an earlier repetition:

* without cache: ``pipe.query(frame, text, ...)`` k times, each re-running proposals,
  preprocessing, both towers, the HFRE and the full prefill (``reuse_frame=False`` where the
  pipeline has a frame cache);
* with cache: one ``pipe.query_many(frame, texts, task=..., boxes=...)``: the frame is encoded
  once and its prompt prefix prefilled once for the k queries;
* frame already cached: k ``pipe.query`` calls right after ``query_many`` encoded that frame
  (e.g. a standing query and a service call on the same image).

When this version of ``VLXSeek`` has no ``query_many`` the cached columns say so; nothing is
estimated in their place. The per-stage breakdown of an uncached query (``timings_ms``) shows
how much of a query is frame work that a cache can share.

Usage::

    python -m benchmarks.bench_queries                    # tiny checkpoint, CPU
    python -m benchmarks.bench_queries --model /path/to/VLM-FO1_Qwen2.5-VL-3B-v01 --device cuda
"""
from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
from typing import Dict, List, Optional

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.answers import MIXED_LABELS  # noqa: E402

DEFAULT_KS = (1, 2, 4, 8)
NOT_AVAILABLE = "frame cache not available in this version"
FRAME_STAGES = ("proposals", "preprocess", "encode", "prefill_prefix")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None,
                        help="checkpoint directory (default: a cached tiny random checkpoint)")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS),
                        help="queries per frame (default 1 2 4 8)")
    parser.add_argument("--task", default="detect", help="task of every query (default detect)")
    parser.add_argument("--max-new-tokens", type=int, default=16,
                        help="decoding budget per query (default 16)")
    parser.add_argument("--image-size", type=common.parse_size, default=(1280, 720),
                        help="frame WIDTHxHEIGHT (default 1280x720)")
    parser.add_argument("--boxes", type=int, default=20,
                        help="user boxes (regions) on the frame (default 20)")
    common.add_run_args(parser, repeats=3, warmup=1)
    return parser


def query_texts(k: int) -> List[str]:
    """``k`` different category queries."""
    return [MIXED_LABELS[i % len(MIXED_LABELS)] for i in range(k)]


def generated_tokens(results) -> int:
    """Total ``num_generated_tokens`` over a list of ``QueryResult``."""
    return sum(int(getattr(r, "num_generated_tokens", 0) or 0) for r in results)


class FrameStream:
    """A new frame per call: ``image`` with a per-call stamp in its first pixels."""

    def __init__(self, image):
        self.base = image
        self.count = 0
        self.current = image

    def next(self) -> None:
        self.count += 1
        frame = self.base.copy()
        frame[0, 0, :] = [self.count % 256, (self.count // 256) % 256, 7]
        self.current = frame


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """Print the queries table; return ``{"rows", "breakdown_ms", "cache_available", ...}``."""
    args = build_parser().parse_args(argv)
    with common.torch_threads(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> Dict[str, object]:
    """The benchmark for parsed ``args`` (see :func:`main`)."""
    from vlxseek_core.pipeline import VLXSeek

    device, dtype = common.resolve_device_dtype(args.device, args.dtype)
    model_dir = args.model or common.tiny_model_dir(args.cache_dir)
    with common.quiet_transformers():
        pipe = VLXSeek.from_pretrained(model_dir, device=device, dtype=dtype,
                                       proposal_source="none",
                                       max_new_tokens=args.max_new_tokens)
    width, height = args.image_size
    stream = FrameStream(common.synthetic_frame(width, height, args.seed))
    boxes = common.random_boxes(args.boxes, width, height, args.seed)
    cache_available = hasattr(pipe, "query_many")
    no_reuse = ({"reuse_frame": False}
                if "reuse_frame" in inspect.signature(pipe.query).parameters else {})
    machine = common.print_header(
        "bench_queries: k queries on one frame, with and without a frame cache", device,
        {"model": "tiny random (cached)" if args.model is None else model_dir,
         "dtype": str(dtype).replace("torch.", ""), "task": args.task,
         "max_new_tokens": args.max_new_tokens, "image": f"{width}x{height}",
         "boxes": args.boxes, "ks": args.ks, "repeats": args.repeats, "warmup": args.warmup,
         "query_many": "available" if cache_available else "absent",
         "uncached query": "query(reuse_frame=False)" if no_reuse else "query()"})
    common.flush()

    def independent(texts, **kw):
        return [pipe.query(stream.current, t, task=args.task, boxes=boxes,
                           max_new_tokens=args.max_new_tokens, **kw) for t in texts]

    def batched(texts):
        return list(pipe.query_many(stream.current, texts, task=args.task, boxes=boxes,
                                    max_new_tokens=args.max_new_tokens))

    rows = []
    stage_samples: Dict[str, List[float]] = {}
    same_answers = True
    for k in args.ks:
        texts = query_texts(k)
        out: Dict[str, list] = {}
        timed = dict(repeats=args.repeats, warmup=args.warmup, device=device)
        plain = common.measure(lambda: out.__setitem__("plain", independent(texts, **no_reuse)),
                               setup=stream.next, **timed)
        for result in out["plain"]:
            for stage, ms in result.timings_ms.items():
                stage_samples.setdefault(stage, []).append(ms)
        row: Dict[str, object] = {
            "k": k, "without_ms": plain.median_ms, "without_per_query_ms": plain.median_ms / k,
            "tokens": generated_tokens(out["plain"]), "with_ms": None,
            "with_per_query_ms": None, "speedup": None, "cached_ms": None,
            "cached_speedup": None}
        if cache_available:
            many = common.measure(lambda: out.__setitem__("many", batched(texts)),
                                  setup=stream.next, **timed)
            warm = common.measure(lambda: out.__setitem__("warm", independent(texts)),
                                  setup=lambda: (stream.next(), batched(texts[:1])), **timed)
            same_answers &= ([r.answer for r in out["plain"]]
                             == [r.answer for r in out["many"]]
                             == [r.answer for r in out["warm"]])
            row.update(with_ms=many.median_ms, with_per_query_ms=many.median_ms / k,
                       speedup=common.ratio(plain.median_ms, many.median_ms),
                       cached_ms=warm.median_ms,
                       cached_speedup=common.ratio(plain.median_ms, warm.median_ms))
        rows.append(row)
        print(f"  k={k}: without cache {plain.median_ms:.1f} ms", flush=True)

    def cell(value):
        return NOT_AVAILABLE if value is None else value

    print(common.format_table(
        ["k", "tokens", "without cache ms", "ms/query", "with cache (query_many) ms",
         "ms/query ", "speedup", "frame already cached ms", "speedup "],
        [[r["k"], r["tokens"], r["without_ms"], r["without_per_query_ms"], cell(r["with_ms"]),
          cell(r["with_per_query_ms"]), cell(r["speedup"]), cell(r["cached_ms"]),
          cell(r["cached_speedup"])] for r in rows]))
    if cache_available:
        print("greedy answers identical in all three modes: "
              + ("yes" if same_answers else "NO"))
    else:
        print(f"with cache: {NOT_AVAILABLE} (VLXSeek has no query_many)")
    breakdown = {stage: statistics.median(v) for stage, v in stage_samples.items()}
    per_query = sum(breakdown.values())
    frame_ms = sum(breakdown.get(s, 0.0) for s in FRAME_STAGES)
    print("uncached query, median per stage (QueryResult.timings_ms): "
          + ", ".join(f"{s} {ms:.1f} ms" for s, ms in breakdown.items()))
    print(f"frame work ({'+'.join(FRAME_STAGES)}) = {frame_ms:.1f} of {per_query:.1f} ms "
          f"= {100 * common.ratio(frame_ms, per_query):.0f}% of an uncached query: the part a "
          "frame cache shares between the queries on one frame")
    common.flush()
    return {"rows": rows, "breakdown_ms": breakdown, "cache_available": cache_available,
            "same_answers": same_answers if cache_available else None,
            "frame_share": common.ratio(frame_ms, per_query), "machine": machine,
            "device": device}


if __name__ == "__main__":
    main()
