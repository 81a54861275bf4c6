"""Benchmark scripts behind `invdiff bench TARGET` (one module per target).

Benchmarks measure; tests check. A benchmark module exposes
``run(out_dir: str, quick: bool, device: str) -> list[dict] | dict[str, list[dict]]``.
"""
