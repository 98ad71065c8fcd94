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
- Beside a plain peer: semsearch against the few lines anyone would write with
  sentence-transformers and FAISS over the same chunk vectors
  (``SentenceTransformer(model).encode([query], normalize_embeddings=True)``,
  then a FAISS index of the index's own type, k=10), each in a process of its
  own, kept warm and sent the same queries in turn (the order rotating query
  by query), so both see the same machine at the same moments. Each process
  times its own call; the ratios are semsearch's p50 over the peer's p50 in
  that run (semantic, and hybrid, semsearch's default mode, against the same
  peer).

    python -m benchmarks.latency --index INDEX --dataset DATASET [--queries N] [--cold-runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS,
    index_summary,
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


# -- beside a plain peer, in separate processes -----------------------------------


class _Worker:
    """A warm search process of this module's (``worker``), answering one query per line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.latency", "worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def seconds(self, query: str, mode: str) -> float:
        """The worker's own time for one search (its output's transfer not counted)."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps({"query": query, "mode": mode}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise SystemExit(f"a latency worker stopped (exit status {self._process.wait()})")
        return float(json.loads(line)["seconds"])

    def first_line(self) -> dict[str, Any]:
        """What the worker said once loaded (the peer: its torch threads)."""
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise SystemExit(f"a latency worker stopped (exit status {self._process.wait()})")
        return dict(json.loads(line))

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait()


def worker(argv: list[str]) -> None:
    """``python -m benchmarks.latency worker semsearch INDEX`` or
    ``... worker peer VECTORS.npy MODEL FACTORY``: search each query read from stdin."""
    kind, *args = argv
    if kind == "semsearch":
        index = Index.open(args[0])

        def search(query: str, mode: str) -> object:
            return index.search(query, k=10, mode=mode)

    else:
        import faiss
        import torch
        from sentence_transformers import SentenceTransformer

        vectors = np.load(args[0], allow_pickle=False)
        flat = faiss.index_factory(vectors.shape[1], args[2], faiss.METRIC_INNER_PRODUCT)
        if not flat.is_trained:
            flat.train(vectors)
        flat.add(vectors)
        model = SentenceTransformer(args[1], device="cpu")
        print(json.dumps({"torch_threads": torch.get_num_threads()}), flush=True)

        def search(query: str, mode: str) -> object:
            vector = model.encode([query], normalize_embeddings=True, convert_to_numpy=True)
            return flat.search(vector, 10)

    for line in sys.stdin:
        asked = json.loads(line)
        start = time.perf_counter()
        search(asked["query"], asked["mode"])
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds}), flush=True)


PEERS = {"peer": None, "peer-1-thread": 1}
"""The plain peers: name → torch threads (``OMP_NUM_THREADS``; None: torch's default).

On a busy machine torch's default threads wait for each other at every
operator, so the same peer on one thread is timed too (the stricter ratio).
"""
PAIRED = (
    ("peer", "semantic"),
    ("peer-1-thread", "semantic"),
    ("semsearch", "semantic"),
    ("semsearch", "hybrid"),
)
"""What is timed for each query: (process, mode)."""


def paired(index_dir: Path, queries: list[str], warmup: int = 10) -> dict[str, Any]:
    """semsearch and the plain peers in separate warm processes, queries sent to each in turn.

    Returns p50/p95/p99 per row of :data:`PAIRED`, and for each peer the ratios
    of semsearch's p50 (semantic, hybrid) over that peer's (``ratios``).
    """
    from semsearch.embed import resolve_model

    with Index.open(index_dir) as index:
        info = index.info()
        _, vectors = index.chunk_vectors()
    factory = info.faiss_factory
    with tempfile.TemporaryDirectory(prefix="semsearch-latency-") as tmp:
        np.save(Path(tmp) / "vectors.npy", vectors)
        peer_args = (str(Path(tmp) / "vectors.npy"), resolve_model(info.model), factory)
        # The peer loads the model folder semsearch would; offline, as it is local.
        offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        workers = {
            name: _Worker(
                "peer",
                *peer_args,
                env={**offline, **({"OMP_NUM_THREADS": str(n)} if n is not None else {})},
            )
            for name, n in PEERS.items()
        }
        workers["semsearch"] = _Worker("semsearch", str(index_dir))
        threads = {name: workers[name].first_line()["torch_threads"] for name in PEERS}
        load_before = os.getloadavg()[0]
        try:
            for query in queries[-warmup:]:  # loads the models and warms the caches
                for name, mode in PAIRED:
                    workers[name].seconds(query, mode)
            times: dict[str, list[float]] = {f"{n} {m}": [] for n, m in PAIRED}
            for i, query in enumerate(queries):
                turn = i % len(PAIRED)
                for name, mode in PAIRED[turn:] + PAIRED[:turn]:
                    times[f"{name} {mode}"].append(workers[name].seconds(query, mode))
        finally:
            for w in workers.values():
                w.close()
    load_after = os.getloadavg()[0]
    figures: dict[str, Any] = {key: percentiles(t) for key, t in times.items()}
    figures["ratios"] = {
        peer: {
            mode: figures[f"semsearch {mode}"]["p50_ms"] / figures[f"{peer} semantic"]["p50_ms"]
            for mode in ("semantic", "hybrid")
        }
        for peer in PEERS
    }
    figures["peer"] = {
        "faiss_factory": factory,
        "model": info.model,
        "chunks": len(vectors),
        "torch_threads": threads,
    }
    # How busy the machine was: the ratios hold for both sides alike, the times do not.
    figures["load_average"] = {"before": load_before, "after": load_after}
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
        "index": index_summary(info),
        "warm": warm_figures,
        "paired": paired(args.index, queries),
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
        f"{ratio}\n\n{markdown_paired(d['paired'])}\n\n{cold_table}"
    )


def markdown_paired(p: dict[str, Any]) -> str:
    """The paired run's table: each row's percentiles and its p50 over each peer's."""
    threads = p["peer"]["torch_threads"]
    peer = f"plain peer: sentence-transformers `encode` + FAISS {p['peer']['faiss_factory']}"
    names = {
        "peer semantic": f"{peer}, torch's default {threads['peer']} threads",
        "peer-1-thread semantic": f"{peer}, torch on {threads['peer-1-thread']} thread",
        "semsearch semantic": '`Index.search(text, mode="semantic")`',
        "semsearch hybrid": "`Index.search(text)` (hybrid)",
    }
    base = p["peer semantic"]["p50_ms"], p["peer-1-thread semantic"]["p50_ms"]
    table = md_table(
        [
            "separate warm processes, queries in turn",
            *("p50 ms", "p95 ms", "p99 ms", "p50 / peer", "p50 / 1-thread peer"),
        ],
        [
            [
                names[key],
                *(p[key][f"{q}_ms"] for q in ("p50", "p95", "p99")),
                *(f"{p[key]['p50_ms'] / b:.2f}x" for b in base),
            ]
            for key in names
        ],
    )
    r, load = p["ratios"], p["load_average"]
    return (
        f"{table}\n\nBeside the plain peer, same queries, same chunk vectors, one run: "
        f"semantic **{r['peer']['semantic']:.2f}x**, hybrid **{r['peer']['hybrid']:.2f}x** "
        f"its p50; beside the same peer on one torch thread, semantic "
        f"**{r['peer-1-thread']['semantic']:.2f}x**, hybrid "
        f"**{r['peer-1-thread']['hybrid']:.2f}x** (k=10; load average "
        f"{load['before']:.1f} before the run, {load['after']:.1f} after, on "
        f"{p['peer']['chunks']:,} chunks)."
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2:])
    else:
        main()
