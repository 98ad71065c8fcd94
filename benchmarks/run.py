"""Run every benchmark in one go and refresh benchmarks/README.md.

    python -m benchmarks.run --quick     # a few minutes on 2 cores (SciFact subset)
    python -m benchmarks.run             # the full run (SciFact, 1M synthetic vectors)

Steps, each also runnable alone (see its module): build → quality → fusion →
chunking → backends → filters → latency → ann → scaling → report. Results go
to ``--out``: by default
benchmarks/results for the full run (and the README is regenerated from it),
benchmarks/out/quick (git-ignored) for the quick one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import (
    ann,
    backends,
    build,
    chunking,
    filters,
    fusion,
    latency,
    quality,
    report,
    scaling,
)
from benchmarks.common import RESULTS, ROOT, SCIFACT

QUICK_LIMIT = 1_000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument(
        "--index",
        type=Path,
        default=None,
        help="where to build the index [default: indexes/bench-DATASET]",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--synthetic", type=int, default=None, help="ANN synthetic set size")
    parser.add_argument("--sizes", default=None, help="scaling sizes, comma-separated")
    args = parser.parse_args(argv)

    index = args.index or ROOT / "indexes" / f"bench-{args.dataset.resolve().name}"
    args.out = args.out or (ROOT / "benchmarks" / "out" / "quick" if args.quick else RESULTS)
    out, quick = str(args.out), ["--quick"] if args.quick else []
    data = ["--index", str(index), "--dataset", str(args.dataset)]
    steps = [
        (
            "build",
            lambda: build.main(
                [
                    str(args.dataset),
                    str(index),
                    "--out",
                    out,
                    "--limit",
                    str(QUICK_LIMIT if args.quick else 0),
                ]
            ),
        ),
        (
            "quality",
            lambda: quality.main(
                [*data, "--out", out, *([] if args.quick else ["--check-reference"])]
            ),
        ),
        (
            "fusion",
            lambda: fusion.main(
                [*data, "--out", out, *(["--weights", "0.5,0.7"] if args.quick else [])]
            ),
        ),
        (
            "chunking",
            lambda: chunking.main(
                [
                    "--dataset",
                    str(args.dataset),
                    "--root",
                    str(index.parent),
                    "--out",
                    out,
                    "--sizes",
                    "128" if args.quick else "128,192,256",
                ]
            ),
        ),
        (
            "backends",
            lambda: backends.main(
                [
                    "--dataset",
                    str(args.dataset),
                    "--root",
                    str(index.parent),
                    "--out",
                    out,
                    *(["--limit", str(QUICK_LIMIT)] if args.quick else []),
                ]
            ),
        ),
        (
            "filters",
            lambda: filters.main([*data, "--out", out, "--queries", "20" if args.quick else "100"]),
        ),
        (
            "latency",
            lambda: latency.main(
                [
                    *data,
                    "--out",
                    out,
                    "--cold-runs",
                    str(args.cold_runs),
                    "--queries",
                    "50" if args.quick else "300",
                ]
            ),
        ),
        (
            "ann",
            lambda: ann.main(
                [
                    *data,
                    "--out",
                    out,
                    *quick,
                    *(["--synthetic", str(args.synthetic)] if args.synthetic else []),
                ]
            ),
        ),
        (
            "scaling",
            lambda: scaling.main(
                [
                    "--index",
                    str(index),
                    "--out",
                    out,
                    *quick,
                    *(["--sizes", args.sizes] if args.sizes else []),
                ]
            ),
        ),
    ]
    for name, step in steps:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        step()
        print(f"== {name} done in {time.perf_counter() - started:.0f}s", flush=True)
    if args.out.resolve() == RESULTS.resolve():
        report.main([])


if __name__ == "__main__":
    main()
