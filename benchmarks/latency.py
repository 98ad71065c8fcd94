"""How fast does a query answer, warm and cold, and with how much memory?

- Warm: through the public API on an open index, after warm-up: the query's
  embedding (``encoder.encode_queries``) and the vector search
  (``Index.search`` with that vector) timed separately, and the whole
  ``Index.search(text)`` in each mode (semantic, keyword, hybrid), all
  interleaved query by query so the modes share the machine's state;
  p50/p95/p99 over the dataset's queries, and hybrid's p50 over semantic's.
- Cold: ``semsearch query`` as a fresh process (imports, index loading,
  model loading, search, printing), median wall time of several runs, and
  that process's peak RSS; with the ONNX backend (the default when the index
  has an export) and forced through sentence-transformers, side by side.
- Warm figures use the index's default backend (named in the results).

    python -m benchmarks.latency --index INDEX --dataset DATASET [--queries N] [--cold-runs N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    md_table,
    median,
    mib,
    percentiles,
    repeat_timer,
    run_process,
    write_results,
)
from semsearch import Index
from semsearch.evaluate import load_beir


def semsearch_command() -> list[str]:
    """The installed `semsearch` entry point beside this Python, else `python -m semsearch`."""
    script = Path(sys.executable).with_name("semsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "semsearch"]


MODES = ("semantic", "keyword", "hybrid")


def warm(index: Index, queries: list[str], k: int = 10) -> dict[str, Any]:
    encoder = index.encoder
    for mode in MODES:
        index.search(queries[0], k=k, mode=mode)  # loads and warms the model and caches
    embed, search = [], []
    total: dict[str, list[float]] = {mode: [] for mode in MODES}
    for query in queries:
        vector = encoder.encode_queries([query])[0]
        embed += repeat_timer(lambda q=query: encoder.encode_queries([q]), 1, warmup=0)
        search += repeat_timer(lambda v=vector: index.search(v, k=k), 1, warmup=0)
        for mode in MODES:
            total[mode] += repeat_timer(
                lambda q=query, m=mode: index.search(q, k=k, mode=m), 1, warmup=0
            )
    figures = {
        "embed": percentiles(embed),
        "vector_search": percentiles(search),
        **{f"total_{mode}": percentiles(times) for mode, times in total.items()},
    }
    figures["hybrid_over_semantic_p50"] = (
        figures["total_hybrid"]["p50_ms"] / figures["total_semantic"]["p50_ms"]
    )
    return figures


def cold(index_dir: Path, query: str, runs: int, backend: str) -> dict[str, Any]:
    command = [*semsearch_command(), "query", query, "--index", str(index_dir), "-k", "10"]
    env = {**os.environ, "SEMSEARCH_BACKEND": backend}
    results = []
    for _ in range(runs):
        results.append(run_process([*command, "--backend", backend], env=env))
    failed = [r for r in results if r["returncode"] != 0]
    if failed:
        raise SystemExit(f"semsearch query failed: {failed[0]['stderr']}")
    return {
        "command": " ".join([*command[-7:], "--backend", backend]),
        "runs": runs,
        "median_seconds": median([r["seconds"] for r in results]),
        "seconds": [r["seconds"] for r in results],
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in results),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=300, help="warm queries to time")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    queries = list(load_beir(args.dataset).judged_queries().values())[: args.queries]
    with Index.open(args.index) as index:
        info = index.info()
        warm_figures = warm(index, queries)
        encoder = index.encoder
    data = {
        "index": {
            "articles": info.articles,
            "chunks": info.chunks,
            "faiss_factory": info.faiss_factory,
            "model": info.model,
        },
        "warm": warm_figures,
        "cold": {
            backend: cold(args.index, queries[0], args.cold_runs, backend)
            for backend in ("onnx", "torch")
        },
        "backend": type(encoder).__name__,
    }
    write_results(args.out, "latency", data, markdown(data), argv)
    return data


def markdown(d: dict[str, Any]) -> str:
    w = d["warm"]
    warm_table = md_table(
        ["warm, public API", "p50 ms", "p95 ms", "p99 ms"],
        [
            [name, w[key]["p50_ms"], w[key]["p95_ms"], w[key]["p99_ms"]]
            for name, key in (
                ("embed the query", "embed"),
                ("vector search + grouping", "vector_search"),
                ('Index.search(text, mode="semantic")', "total_semantic"),
                ('Index.search(text, mode="keyword")', "total_keyword"),
                ('Index.search(text, mode="hybrid")', "total_hybrid"),
            )
        ],
    )
    ratio = f"Hybrid p50 / semantic p50: **{w['hybrid_over_semantic_p50']:.2f}x**."
    c = d["cold"]
    names = {"onnx": "ONNX Runtime, no torch", "torch": "sentence-transformers on PyTorch"}
    cold_table = md_table(
        ["cold process", "median s", "runs", "peak RSS MiB"],
        [
            [
                f"`semsearch query --backend {b}` ({names[b]})",
                r["median_seconds"],
                r["runs"],
                mib(r["peak_rss_bytes"]),
            ]
            for b, r in c.items()
        ],
    )
    slower = c["torch"]["median_seconds"] / c["onnx"]["median_seconds"]
    ratio += f" Cold start, torch / ONNX: **{slower:.1f}x**."
    i = d["index"]
    return (
        f"Index of {i['articles']:,} articles, {i['chunks']:,} chunks (FAISS "
        f"{i['faiss_factory']}), k=10, {w['total_hybrid']['n']} queries.\n\n{warm_table}\n\n"
        f"{ratio}\n\n{cold_table}"
    )


if __name__ == "__main__":
    main()
