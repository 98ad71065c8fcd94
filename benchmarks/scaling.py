"""How do build time, query latency and memory grow with index size?

For each size, a real semsearch index is built through the public API
(``Index.create`` + ``Index.add``, index type ``auto``: exact up to 100k
vectors, HNSW32 above) in a child process of its own, then opened and queried
in another, so each peak RSS is that step's alone. Articles are one short text
each ("v123"); a :class:`PrecomputedEncoder` hands back synthetic vectors drawn
near the chunk vectors of an existing index. Embedding is left out by design
(``benchmarks.build`` measures it): what grows here is loading, chunking,
SQLite, FAISS and search.

Run from the repository root:

    python -m benchmarks.scaling --index indexes/scifact                  # 10k, 100k, 1M
    python -m benchmarks.scaling --index indexes/scifact --quick          # 2k, 10k
    python -m benchmarks.scaling --index indexes/scifact --sizes 5000,50000

Writes ``scaling.json``, ``scaling.md`` and ``scaling.png`` into ``--out``
(default ``benchmarks/results``). On 2 cores the full run takes about 3
minutes, most of it building HNSW for 1M vectors, and needs about 9 GB of
memory; ``--quick`` takes seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS,
    ROOT,
    folder_bytes,
    md_table,
    mib,
    own_peak_rss,
    per_item_seconds,
    percentiles,
    run_process,
    synthetic_vectors,
    write_results,
)
from semsearch import Article, Index
from semsearch.embed import FINGERPRINT_TEXT

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000, 10_000)
K = 10
QUERIES = 200
WARMUP = 20
SEED = 0
_WORD = re.compile(r"\S+")
_ROW = re.compile(r"v(\d+)")


class PrecomputedEncoder:
    """An :class:`~semsearch.embed.Encoder` that looks vectors up instead of computing them.

    The text ``"v<row>"`` maps to row ``row`` of ``vectors``; the fingerprint
    text maps to a fixed unit vector, so an index built with this encoder
    opens with it again.

    Args:
        dim: vector dimension.
        vectors: the ``(n, dim)`` unit vectors texts refer to (not needed to open and search).
    """

    name = "benchmark/precomputed"
    max_tokens = 256
    special_tokens = 2
    backend = "precomputed"
    query_prompt = ""
    document_prompt = ""

    def __init__(self, dim: int, vectors: np.ndarray | None = None) -> None:
        self.dim = dim
        self._vectors = vectors
        self._fingerprint = np.full(dim, dim**-0.5, dtype=np.float32)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        rows, where = [], []
        for i, text in enumerate(texts):
            if text == FINGERPRINT_TEXT:
                out[i] = self._fingerprint
                continue
            row = self._row_of(text)
            if row is None:
                raise ValueError(f"no {self._source} vector for {text[:40]!r}")
            rows.append(row)
            where.append(i)
        if rows:
            out[where] = self._vectors_of(np.asarray(rows, dtype=np.int64))
        return out

    _source = "precomputed"
    """What the vectors are, for the error naming a text without one."""

    def _row_of(self, text: str) -> int | None:
        """The row a text names (``"v<row>"``), or None."""
        match = _ROW.fullmatch(text)
        return int(match.group(1)) if match is not None and self._vectors is not None else None

    def _vectors_of(self, rows: np.ndarray) -> np.ndarray:
        assert self._vectors is not None
        return self._vectors[rows]

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_documents(texts)


def articles(n: int) -> Iterator[Article]:
    """One short article per vector: text and id ``v<row>``."""
    for row in range(n):
        yield Article(id=f"v{row}", text=f"v{row}")


# -- the child processes ----------------------------------------------------------


def child_build(vectors_file: Path, folder: Path) -> dict[str, Any]:
    """Build an index of these vectors through the public API."""
    vectors = np.load(vectors_file, allow_pickle=False)
    encoder = PrecomputedEncoder(vectors.shape[1], vectors)
    started = time.perf_counter()
    with Index.create(folder, encoder=encoder, index_type="auto") as index:
        created = time.perf_counter() - started
        result = index.add(articles(len(vectors)))
        info = index.info()
    seconds = time.perf_counter() - started
    assert info.chunks == len(vectors), (info.chunks, len(vectors))
    return {
        "seconds": seconds,
        "create_seconds": created,
        "add_seconds": result.seconds,
        "timings": result.timings,
        "faiss_factory": info.faiss_factory,
        "articles": info.articles,
        "chunks": info.chunks,
        "peak_rss_bytes": own_peak_rss(),
    }


def child_query(queries_file: Path, folder: Path) -> dict[str, Any]:
    """Open the index and time warm single-query searches through the public API."""
    queries = np.load(queries_file, allow_pickle=False)
    encoder = PrecomputedEncoder(queries.shape[1])
    started = time.perf_counter()
    index = Index.open(folder, encoder=encoder)
    opened = time.perf_counter() - started
    with index:
        hits = index.search(queries[0], k=K)
        seconds = per_item_seconds(lambda q: index.search(q, k=K), queries, warmup=WARMUP)
        factory = index.info().faiss_factory
    return {
        "open_seconds": opened,
        "latency": percentiles(seconds),
        "hits": len(hits),
        "faiss_factory": factory,
        "peak_rss_bytes": own_peak_rss(),
    }


def _child(kind: str, data_file: Path, folder: Path) -> dict[str, Any]:
    """Run one step in a fresh interpreter: its figures (own peak RSS included), wall time."""
    argv = [sys.executable, "-m", "benchmarks.scaling", "--child", kind]
    proc = run_process([*argv, "--data", str(data_file), "--folder", str(folder)], cwd=ROOT)
    if proc["returncode"] != 0:
        raise RuntimeError(f"{kind} child failed ({proc['returncode']}):\n{proc['stderr'][-3000:]}")
    figures: dict[str, Any] = json.loads(proc["stdout"].strip().splitlines()[-1])
    figures["wall_seconds"] = proc["seconds"]
    return figures


# -- the parent -------------------------------------------------------------------


def measure_size(size: int, base: np.ndarray, queries_file: Path, work: Path) -> dict[str, Any]:
    """Build, then open and query, an index of `size` synthetic vectors."""
    vectors_file = work / f"vectors-{size}.npy"
    np.save(vectors_file, synthetic_vectors(size, base=base, seed=SEED), allow_pickle=False)
    folder = work / f"index-{size}"
    try:
        build = _child("build", vectors_file, folder)
        disk = folder_bytes(folder)
        query = _child("query", queries_file, folder)
    finally:
        vectors_file.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "size": size,
        "faiss_factory": build["faiss_factory"],
        "build": build,
        "vectors_per_second": size / build["seconds"],
        "disk_bytes": disk,
        "query": query,
    }


def markdown(rows: list[dict[str, Any]], source: str) -> str:
    headers = ["vectors", "FAISS type", "build s", "vectors/s", "disk MiB", "build peak RSS MiB"]
    headers += ["open s", "p50 ms", "p95 ms", "query peak RSS MiB"]
    table = [
        [
            r["size"],
            r["faiss_factory"],
            r["build"]["seconds"],
            round(r["vectors_per_second"]),
            f"{mib(r['disk_bytes']):.1f}",
            round(mib(r["build"]["peak_rss_bytes"])),
            r["query"]["open_seconds"],
            r["query"]["latency"]["p50_ms"],
            r["query"]["latency"]["p95_ms"],
            round(mib(r["query"]["peak_rss_bytes"])),
        ]
        for r in rows
    ]
    stages = sorted({s for r in rows for s in r["build"]["timings"]}, key=_stage_order)
    stage_rows = [[r["size"], *(r["build"]["timings"].get(s, 0.0) for s in stages)] for r in rows]
    return "\n".join(
        [
            "## Scaling: build time, query latency and memory against index size",
            "",
            "Embedding is excluded by design: vectors are precomputed (synthetic, near the "
            f"chunk vectors of {source}) and handed to the index by an encoder that looks "
            "them up; `benchmarks.build` measures embedding. One short article (one chunk) "
            "per vector; index type `auto`. Build: `Index.create` + `Index.add` in a fresh "
            "process; query: `Index.open` in another (warm page cache), then "
            f"`index.search(vector, k={K})` for {QUERIES} queries after {WARMUP} warm-up "
            "calls. Peak RSS is each process's own (`VmHWM`), including Python and, for the "
            "build, the vectors it loads.",
            "",
            md_table(headers, table),
            "",
            "Where the build time goes (seconds, `AddResult.timings`):",
            "",
            md_table(["vectors", *stages], stage_rows),
        ]
    )


def _stage_order(stage: str) -> int:
    order = ["load", "diff", "chunk", "embed", "sqlite", "faiss"]
    return order.index(stage) if stage in order else len(order)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Three log-log panels against size: build time, p50 latency, peak RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    sizes = [r["size"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [
        ("build seconds", [r["build"]["seconds"] for r in rows], None),
        ("p50 ms per query", [r["query"]["latency"]["p50_ms"] for r in rows], None),
        ("peak RSS MiB", [mib(r["build"]["peak_rss_bytes"]) for r in rows], "build"),
    ]
    for ax, (title, values, label) in zip(axes, panels, strict=True):
        ax.plot(sizes, values, marker="o", label=label)
        for size, value, r in zip(sizes, values, rows, strict=True):
            where = {"xytext": (4, -10), "textcoords": "offset points"}
            ax.annotate(r["faiss_factory"], (size, value), fontsize=7, **where)
        ax.set_title(title, fontsize=10)
    axes[2].plot(
        sizes, [mib(r["query"]["peak_rss_bytes"]) for r in rows], marker="s", label="query"
    )
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("vectors")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=Path, help="an index whose chunk vectors to imitate")
    parser.add_argument(
        "--sizes", help="comma-separated index sizes (default 10000,100000,1000000)"
    )
    parser.add_argument("--quick", action="store_true", help="sizes 2000,10000")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=["build", "query"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        step = child_build if args.child == "build" else child_query
        figures = step(args.data, args.folder)
        print(json.dumps(figures))
        return figures
    if args.index is None:
        parser.error("--index is required")

    started = time.perf_counter()
    if args.sizes:
        sizes = [int(s) for s in args.sizes.replace("_", "").split(",") if s.strip()]
    else:
        sizes = list(QUICK_SIZES if args.quick else SIZES)
    with Index.open(args.index) as index:
        _, base = index.chunk_vectors()
    rows = []
    with tempfile.TemporaryDirectory(prefix="semsearch-scaling-") as tmp:
        work = Path(tmp)
        queries_file = work / "queries.npy"
        queries = synthetic_vectors(QUERIES, base=base, seed=SEED + 1)
        np.save(queries_file, queries, allow_pickle=False)
        for size in sizes:
            row = measure_size(size, base, queries_file, work)
            rows.append(row)
            print(
                f"[scaling] {size:,}: {row['faiss_factory']}, built in "
                f"{row['build']['seconds']:.1f} s, p50 {row['query']['latency']['p50_ms']:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    data: dict[str, Any] = {
        "settings": {
            "index": str(args.index),
            "sizes": sizes,
            "quick": args.quick,
            "k": K,
            "queries": QUERIES,
            "warmup": WARMUP,
            "index_type": "auto",
            "seed": SEED,
            "embedding": "excluded (precomputed vectors)",
        },
        "sizes": rows,
        "seconds": time.perf_counter() - started,
    }
    source = args.index.resolve().name
    write_results(args.out, "scaling", data, markdown(rows, source), argv=argv)
    plot(rows, args.out / "scaling.png")
    print(f"[scaling] done in {data['seconds']:.0f} s", file=sys.stderr, flush=True)
    return data


if __name__ == "__main__":
    main()
