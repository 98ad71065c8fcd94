"""How much recall do the ANN index types give up, for how much speed?

For each FAISS index type semsearch can build (exact ``Flat``, ``HNSW32``,
``IVF<nlist>,Flat``, ``IVF<nlist>,PQ<dim/8>``) and each search-time setting
(HNSW ``ef_search``, IVF ``nprobe``), this measures recall@10 against exact
search, single-query latency, batch throughput, build time and index size.
Every index is built with semsearch's own wrapper and defaults
(``VectorIndex.create(factory, dim)``, then ``add``), so the figures are those
of an index built with ``--index-type``.

Two vector sets:

* real: the chunk vectors of an existing index. Queries are a BEIR dataset's
  judged queries embedded with the index's model (``--dataset``), or else a
  seeded 1% (at least 50) of the chunk vectors, held out of the base;
* synthetic: N vectors near the real chunk vectors (``synthetic_vectors``;
  1,000,000 by default, 20,000 with ``--quick``) and 1,000 queries (200) near
  the real queries.

Run from the repository root:

    python -m benchmarks.ann --index indexes/scifact --dataset ../shared/data/scifact
    python -m benchmarks.ann --index indexes/scifact --quick     # seconds
    python -m benchmarks.ann --index indexes/scifact --synthetic 100000

Writes ``ann.json``, ``ann.md`` and ``ann.png`` into ``--out``
(default ``benchmarks/results``). On 2 cores the full run takes about 8 minutes
(4 GB peak), most of it training IVF on 1M vectors; ``--quick`` about 15 seconds.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS,
    exact_neighbours,
    md_table,
    median,
    mib,
    per_item_seconds,
    percentiles,
    recall_at_k,
    repeat_timer,
    synthetic_vectors,
    write_results,
)
from semsearch import BadInputError, Index
from semsearch.evaluate import load_beir
from semsearch.vectors import VectorIndex

K = 10
EF_SEARCH = (16, 32, 64, 128, 256)
NPROBE = (1, 4, 16, 64)
LATENCY_QUERIES = 200
WARMUP = 10
# FAISS k-means wants at least 39 training vectors per list.
MIN_PER_LIST = 39
HELD_OUT_FRACTION = 0.01
MIN_HELD_OUT = 50
SEED = 0


@dataclass(frozen=True)
class VectorSet:
    """Base vectors and queries of one benchmark set."""

    name: str
    kind: str
    base: np.ndarray
    queries: np.ndarray
    queries_from: str


@dataclass(frozen=True)
class Spec:
    """An index type and the search-time setting it sweeps."""

    factory: str
    param: str | None
    values: tuple[int, ...]
    nlist: int | None = None


def choose_nlist(n: int) -> int:
    """A power of two near 4·sqrt(n), small enough that every list gets 39 vectors."""
    nlist = 2 ** max(0, round(math.log2(4 * math.sqrt(max(n, 1)))))
    while nlist > 1 and n < MIN_PER_LIST * nlist:
        nlist //= 2
    return nlist


def specs(n: int, dim: int) -> list[Spec]:
    """The index types compared, for n vectors of dimension dim."""
    nlist = choose_nlist(n)
    pq = f"IVF{nlist},PQ{dim // 8}"
    return [
        Spec("Flat", None, ()),
        Spec("HNSW32", "ef_search", EF_SEARCH),
        Spec(f"IVF{nlist},Flat", "nprobe", NPROBE, nlist),
        Spec(pq, "nprobe", NPROBE, nlist),
    ]


def build(spec: Spec, base: np.ndarray) -> tuple[VectorIndex, float]:
    """Build one index through semsearch's wrapper: (index, seconds).

    As in semsearch, IVF types train on their first add, on all of it (FAISS's
    k-means itself samples 256 vectors per list at most).
    """
    started = time.perf_counter()
    index = VectorIndex.create(spec.factory, base.shape[1])
    index.add(base, np.arange(len(base), dtype=np.int64))
    return index, time.perf_counter() - started


def index_bytes(index: VectorIndex) -> int:
    """Size of the index as semsearch writes it to disk."""
    with tempfile.TemporaryDirectory(prefix="semsearch-ann-") as folder:
        path = Path(folder) / "vectors.faiss"
        index.write(path)
        return path.stat().st_size


def measure(index: VectorIndex, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Recall@k, single-query latency and batch throughput at the current setting."""
    timed = queries[:LATENCY_QUERIES]
    latency = per_item_seconds(lambda q: index.search(q[None, :], K), timed, warmup=WARMUP)
    started = time.perf_counter()
    _, found = index.search(queries, K)
    batch = [time.perf_counter() - started]
    if batch[0] < 1.0:  # short enough to repeat: take the median of three
        batch += repeat_timer(lambda: index.search(queries, K), repeats=2, warmup=0)
    seconds = median(batch)
    return {
        "recall_at_10": recall_at_k(found, truth, K),
        "latency": percentiles(latency),
        "batch_seconds": seconds,
        "batch_qps": len(queries) / seconds,
    }


def run_set(vectors: VectorSet) -> dict[str, Any]:
    """Every index type and setting on one vector set."""
    n, dim = vectors.base.shape
    started = time.perf_counter()
    truth = exact_neighbours(vectors.base, vectors.queries, K)
    exact_seconds = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for spec in specs(n, dim):
        try:
            index, build_seconds = build(spec, vectors.base)
        except BadInputError as e:
            reason = _short(str(e))
            skipped.append({"index_type": spec.factory, "reason": reason})
            _log(f"{vectors.name}: {spec.factory} skipped: {reason}")
            continue
        size = index_bytes(index)
        defaults = index.search_params
        _log(f"{vectors.name}: {spec.factory} built in {build_seconds:.1f} s")
        seen: set[int] = set()
        for value in spec.values or (None,):
            if spec.param is not None:
                index.set_search_params(**{spec.param: value})
            effective = index.search_params.get(spec.param or "")
            if effective is not None and effective in seen:
                continue  # nprobe is capped at nlist: the same setting again
            if effective is not None:
                seen.add(effective)
            figures = measure(index, vectors.queries, truth)
            rows.append(
                {
                    "index_type": spec.factory,
                    "param": spec.param,
                    "value": effective,
                    "default": spec.param is not None and defaults.get(spec.param) == effective,
                    **figures,
                    "build_seconds": build_seconds,
                    "index_bytes": size,
                    "nlist": spec.nlist,
                }
            )
        index.set_search_params(**defaults)
        del index
    return {
        "name": vectors.name,
        "kind": vectors.kind,
        "n": n,
        "dim": dim,
        "queries": len(vectors.queries),
        "queries_from": vectors.queries_from,
        "nlist": choose_nlist(n),
        "exact_seconds": exact_seconds,
        "results": rows,
        "skipped": skipped,
    }


def real_set(index_dir: Path, dataset: Path | None) -> tuple[VectorSet, np.ndarray]:
    """The index's chunk vectors and real queries; also every chunk vector."""
    name = f"{index_dir.resolve().name} (real)"
    with Index.open(index_dir) as index:
        _, chunks = index.chunk_vectors()
        if dataset is not None:
            texts = list(load_beir(dataset).judged_queries().values())
            queries = index.encoder.encode_queries(texts)
            source = f"the {len(texts)} judged queries of {dataset.name}, embedded"
            return VectorSet(name, "real", chunks, queries, source), chunks
    held = min(max(MIN_HELD_OUT, round(len(chunks) * HELD_OUT_FRACTION)), len(chunks) // 2)
    order = np.random.default_rng(SEED).permutation(len(chunks))
    queries, base = chunks[np.sort(order[:held])], chunks[np.sort(order[held:])]
    source = f"{held} chunk vectors held out of the base (seeded)"
    return VectorSet(name, "real", base, queries, source), chunks


def synthetic_set(n: int, n_queries: int, chunks: np.ndarray, queries: np.ndarray) -> VectorSet:
    """n vectors near the real chunk vectors; queries near the real queries."""
    return VectorSet(
        f"synthetic {n:,}",
        "synthetic",
        synthetic_vectors(n, base=chunks, seed=SEED),
        synthetic_vectors(n_queries, base=queries, seed=SEED + 1),
        f"{n_queries} vectors near the real queries (seed {SEED + 1})",
    )


def markdown(sets: list[dict[str, Any]]) -> str:
    parts = [
        "## ANN index types: recall against speed",
        "",
        f"Recall@{K} against exact search. Latency: one query per call (median and p95 "
        f"over up to {LATENCY_QUERIES} queries, after {WARMUP} warm-up calls); throughput: "
        "every query in one call. Built with semsearch's `VectorIndex` and its defaults "
        "(HNSW efConstruction 80; IVF trained on every vector). Build s includes training. "
        f"FAISS threads: {_faiss_threads()}. `*` marks semsearch's default setting.",
    ]
    headers = ["index type", "setting", f"recall@{K}", "p50 ms", "p95 ms", "queries/s (batch)"]
    headers += ["build s", "size MiB"]
    for data in sets:
        parts += [
            "",
            f"### {data['name']}: {data['n']:,} vectors of dimension {data['dim']}",
            "",
            f"Queries: {data['queries_from']}.",
            "",
        ]
        rows = []
        for r in data["results"]:
            setting = "exact" if r["param"] is None else f"{r['param']}={r['value']}"
            rows.append(
                [
                    r["index_type"],
                    setting + (" *" if r["default"] else ""),
                    round(r["recall_at_10"], 3),
                    r["latency"]["p50_ms"],
                    r["latency"]["p95_ms"],
                    round(r["batch_qps"]),
                    r["build_seconds"],
                    f"{mib(r['index_bytes']):.1f}",
                ]
            )
        parts.append(md_table(headers, rows))
        notes = [f"{s['index_type']} skipped: {s['reason']}" for s in data["skipped"]]
        if notes:
            parts += ["", *(f"- {note}" for note in notes)]
    return "\n".join(parts)


def plot(sets: list[dict[str, Any]], path: Path) -> None:
    """Recall@10 against ms per query: one panel per vector set, one line per index type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.8), squeeze=False)
    for ax, data in zip(axes[0], sets, strict=True):
        by_type: dict[str, list[dict[str, Any]]] = {}
        for r in data["results"]:
            by_type.setdefault(r["index_type"], []).append(r)
        for factory, rows in by_type.items():
            xs = [r["latency"]["p50_ms"] for r in rows]
            ys = [r["recall_at_10"] for r in rows]
            param = rows[0]["param"]
            label = factory if param is None else f"{factory} ({param})"
            exact = param is None  # one point: a star, drawn on top
            ax.plot(
                xs,
                ys,
                marker="*" if exact else "o",
                markersize=11 if exact else 5,
                zorder=3 if exact else 2,
                label=label,
            )
            for r, x, y in zip(rows, xs, ys, strict=True):
                if r["value"] is not None:
                    ax.annotate(
                        str(r["value"]),
                        (x, y),
                        xytext=(3, -9),
                        textcoords="offset points",
                        fontsize=7,
                    )
        lowest = min((r["recall_at_10"] for r in data["results"]), default=1.0)
        ax.set_ylim(max(0.0, lowest - 0.05), 1.01)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("ms per query (median, one query per call)")
        ax.set_ylabel(f"recall@{K}")
        ax.set_title(f"{data['name']}\nn={data['n']:,}, dim={data['dim']}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _log(message: str) -> None:
    print(f"[ann] {message}", file=sys.stderr, flush=True)


def _short(reason: str) -> str:
    """A FAISS error without its C++ location: what failed, not where."""
    return re.sub(r"Error in .*? failed: ", "", reason)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=Path, required=True, help="an existing semsearch index")
    parser.add_argument("--dataset", type=Path, help="BEIR folder whose judged queries to embed")
    parser.add_argument(
        "--synthetic", type=int, help="synthetic vectors (default 1,000,000; 20,000 quick; 0: none)"
    )
    parser.add_argument("--quick", action="store_true", help="a small synthetic set, 200 queries")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    n_synthetic = (
        args.synthetic if args.synthetic is not None else (20_000 if args.quick else 10**6)
    )
    n_queries = 200 if args.quick else 1000
    real, chunks = real_set(args.index, args.dataset)
    sets = [run_set(real)]
    if n_synthetic > 0:
        synthetic = synthetic_set(n_synthetic, n_queries, chunks, real.queries)
        del chunks
        sets.append(run_set(synthetic))
        del synthetic
    data: dict[str, Any] = {
        "settings": {
            "index": str(args.index),
            "dataset": str(args.dataset) if args.dataset else None,
            "quick": args.quick,
            "k": K,
            "ef_search": list(EF_SEARCH),
            "nprobe": list(NPROBE),
            "latency_queries": LATENCY_QUERIES,
            "warmup": WARMUP,
            "synthetic": n_synthetic,
            "synthetic_queries": n_queries,
            "seed": SEED,
            "faiss_threads": _faiss_threads(),
        },
        "sets": sets,
        "seconds": time.perf_counter() - started,
    }
    write_results(args.out, "ann", data, markdown(sets), argv=argv)
    plot(sets, args.out / "ann.png")
    _log(f"done in {data['seconds']:.0f} s; results in {args.out}")
    return data


def _faiss_threads() -> int:
    import faiss

    return int(faiss.omp_get_max_threads())


if __name__ == "__main__":
    main()
