"""vlxseek benchmarks: token counts, decode latency, stage latency/memory, queries per frame.

Run from the repository root, e.g. ``python -m benchmarks.bench_tokens`` (see README.md).
Every benchmark module exposes ``main(argv) -> dict`` that prints its tables and returns the
numbers, so the smoke test can run them at their smallest size.
"""
