"""Segments (issue 12): does a write cost what it changes, is each vector stored
once, and does opening read only what it needs?

One run over the scaling benchmark's synthetic vectors (drawn near the chunk
vectors of ``--index``), one one-chunk article per vector, every step in a
fresh process through the public API, embedding excluded (a
:class:`~benchmarks.scaling.PrecomputedEncoder` looks the vectors up):

1. the full build (``Index.create`` + ``Index.add``, index type ``auto``):
   wall seconds and bytes on disk;
2. opening it cold: seconds and RSS growth before the first query;
3. adding 1% new articles, then removing 1% of the original ones, each write
   in a process of its own: the bytes the process wrote (``wchar``) against
   the index's size before the write, and its wall time against the full
   build's;
4. disk per chunk, text and keyword index excluded: the vector files
   (:func:`semsearch.manifest.vector_files`) plus the SQLite pages of the
   chunk rows (tables ``chunks``, ``segments``, ``tombstones`` and their
   indexes, from SQLite's ``dbstat`` table), for the built index and for an
   exact (flat) one;
5. that exact index: the same vectors written as 20 adds with merging off
   (``MergePolicy(in_writes=False)``), so 20 segments, searched; then
   ``Index.optimize()`` merges them into one, searched again: the top 10s
   compared query by query, and the p50 latency of each;
6. the nightly workload of :mod:`benchmarks.churn` (1% added, 0.2% changed,
   0.2% removed, in a fresh process) ``--nights`` times on the built index:
   segments, tombstones, size on disk, bytes written, write seconds, open and
   p50 per night.

    python -m benchmarks.segments --index indexes/bench-scifact                  # 1M, 30 nights
    python -m benchmarks.segments --index indexes/bench-scifact --size 20000 --nights 5

Writes ``segments.json``, ``segments.md`` and ``segments.png`` into ``--out``.
The 1M run needs about 2 GB for the vectors and room for two indexes in the
temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.churn import ADD, CHANGE, REMOVE, child_night, child_open, night_plan
from benchmarks.common import (
    RESULTS,
    ROOT,
    folder_bytes,
    in_scratch,
    md_table,
    mib,
    own_peak_rss,
    per_item_seconds,
    percentiles,
    run_process,
    synthetic_vectors,
    write_results,
)
from benchmarks.scaling import K, PrecomputedEncoder, child_build
from semsearch import Article, Index
from semsearch.config import MergePolicy
from semsearch.manifest import vector_files

SHARE = 0.01  # the single add and the single removal: 1% of the articles each
SEGMENTS = 20
QUERIES = 100
WARMUP = 10
SEED = 0
# The objects that hold a chunk's vector and ids, beside the vector files.
ROW_TABLES = ("chunks", "segments", "tombstones", "removed_articles")
# Issue 12's targets.
TARGET_WRITTEN = 0.03  # bytes written by a 1% write, as a share of the index's size
TARGET_SECONDS = 0.05  # its wall time, as a share of the full build's
TARGET_BYTES_PER_CHUNK = 1_700  # exact index, text and keyword index excluded
TARGET_OPEN_SECONDS = 0.3
TARGET_OPEN_RSS = 50_000_000  # bytes (50 MB)
# Before segments, a flat index stored 3,080 bytes of vectors per chunk (the
# FAISS file plus the chunks.vector column): benchmarks.churn at 100k, commit
# 5b023ee (`git show 5b023ee:benchmarks/results/churn.md`).
BASELINE_BYTES_PER_CHUNK = 3_080


# -- the plans ------------------------------------------------------------------------


def vector_rows(size: int, nights: int) -> int:
    """Rows of the vector file: the build's, every night's new texts, the 1% add's."""
    return size + nights * (int(size * ADD) + int(size * CHANGE)) + int(size * SHARE)


def add_plan(size: int, nights: int) -> dict[str, list[int]]:
    """1% new articles, on vector rows past every night's (their ids are new too)."""
    first = vector_rows(size, nights) - int(size * SHARE)
    return {
        "add": list(range(first, first + int(size * SHARE))),
        "change_ids": [],
        "change_rows": [],
        "remove": [],
    }


def remove_plan(size: int, nights: int) -> dict[str, list[int]]:
    """1% of the original articles, none that a night changes or removes.

    The nights take slices from the front of churn's seeded shuffle of the
    original ids; this takes the shuffle's tail.
    """
    count = int(size * SHARE)
    nightly = nights * (int(size * CHANGE) + int(size * REMOVE))
    if nightly + count > size:
        raise ValueError(f"{size:,} articles are too few for {nights} nights and a 1% removal")
    order = np.random.default_rng(SEED).permutation(size)
    return {
        "add": [],
        "change_ids": [],
        "change_rows": [],
        "remove": [int(i) for i in order[size - count :]],
    }


# -- what is stored -------------------------------------------------------------------


def storage(folder: Path) -> dict[str, Any]:
    """Bytes that hold the chunks' vectors and ids, text and keyword index excluded.

    Args:
        folder: an index folder.

    Returns:
        ``vector_files`` (bytes of :func:`~semsearch.manifest.vector_files`),
        ``row_bytes`` (whole SQLite pages, overflow pages and free space in them
        included, of the tables in ``ROW_TABLES`` and their indexes, from
        ``dbstat``; ``row_objects`` names them), ``blob_bytes`` (the
        ``chunks.vector`` column's length, what ``benchmarks.churn`` counted),
        ``chunks``, and ``bytes_per_chunk`` (vector files plus row pages, per chunk).
    """
    files = sum(f.stat().st_size for f in vector_files(folder))
    db = sqlite3.connect(f"file:{folder / 'store.sqlite'}?mode=ro", uri=True)
    try:
        marks = ", ".join("?" * len(ROW_TABLES))
        names = [
            name
            for (name,) in db.execute(
                f"SELECT name FROM sqlite_master WHERE tbl_name IN ({marks}) AND rootpage > 0",
                ROW_TABLES,
            )
        ]
        objects = {}
        for name in names:
            (pages,) = db.execute(
                "SELECT pgsize FROM dbstat WHERE name = ? AND aggregate = TRUE", (name,)
            ).fetchone() or (0,)
            objects[name] = int(pages or 0)
        # The vector column, empty for rows written since segments, may go altogether.
        columns = {row[1] for row in db.execute("PRAGMA table_info(chunks)")}
        blobs = "SUM(length(vector))" if "vector" in columns else "0"
        blob, chunks = db.execute(
            f"SELECT {blobs}, COUNT(*) FROM chunks"
            " WHERE article_pk NOT IN (SELECT pk FROM removed_articles)"
        ).fetchone()
    finally:
        db.close()
    rows = sum(objects.values())
    return {
        "vector_files": files,
        "row_bytes": rows,
        "row_objects": objects,
        "blob_bytes": int(blob or 0),
        "chunks": int(chunks),
        "bytes_per_chunk": (files + rows) / max(1, int(chunks)),
    }


# -- the child processes --------------------------------------------------------------


def child_exact(vectors_file: Path, folder: Path, parts: int) -> dict[str, Any]:
    """Write the vectors into a flat index as ``parts`` adds, merging off: one segment each."""
    vectors = np.load(vectors_file, allow_pickle=False)
    encoder = PrecomputedEncoder(vectors.shape[1], vectors)
    started = time.perf_counter()
    with Index.create(folder, encoder=encoder, index_type="flat") as index:
        index.merge_policy = MergePolicy(in_writes=False)
        for rows in np.array_split(np.arange(len(vectors)), parts):
            index.add(Article(id=f"v{row}", text=f"v{row}") for row in rows)
        info = index.info()
    return {
        "seconds": time.perf_counter() - started,
        "segments": info.segments,
        "chunks": info.chunks,
        "faiss_factory": info.faiss_factory,
        "peak_rss_bytes": own_peak_rss(),
    }


def child_query(queries_file: Path, folder: Path, hits_file: Path) -> dict[str, Any]:
    """Search every query once (top 10s into ``hits_file``), then time them all again."""
    queries = np.load(queries_file, allow_pickle=False)
    with Index.open(folder, encoder=PrecomputedEncoder(queries.shape[1])) as index:
        found = [[(h.article_id, h.score) for h in index.search(q, k=K)] for q in queries]
        seconds = per_item_seconds(lambda q: index.search(q, k=K), queries, warmup=WARMUP)
        info = index.info()
    hits_file.write_text(json.dumps(found))
    return {"latency": percentiles(seconds), "segments": info.segments, "chunks": info.chunks}


def child_optimize(queries_file: Path, folder: Path) -> dict[str, Any]:
    """Merge every segment of the index into one (``Index.optimize``)."""
    dim = np.load(queries_file, mmap_mode="r", allow_pickle=False).shape[1]
    with Index.open(folder, encoder=PrecomputedEncoder(dim)) as index:
        return index.optimize().to_dict()


def _child(kind: str, *args: Path | int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.segments", "--child", kind, *map(str, args)]
    proc = run_process(argv, cwd=ROOT)
    if proc["returncode"] != 0:
        raise RuntimeError(f"{kind} child failed ({proc['returncode']}):\n{proc['stderr'][-3000:]}")
    figures: dict[str, Any] = json.loads(proc["stdout"].strip().splitlines()[-1])
    figures["wall_seconds"] = proc["seconds"]
    return figures


def _run_child(kind: str, args: list[str]) -> dict[str, Any]:
    paths = [Path(a) for a in args]
    if kind == "build":
        return child_build(paths[0], paths[1])
    if kind == "write":
        return child_night(paths[0], paths[1], paths[2])
    if kind == "open":
        return child_open(paths[0], paths[1])
    if kind == "exact":
        return child_exact(paths[0], paths[1], int(args[2]))
    if kind == "query":
        return child_query(paths[0], paths[1], paths[2])
    if kind == "optimize":
        return child_optimize(paths[0], paths[1])
    raise ValueError(f"unknown child {kind!r}")


# -- the parent -----------------------------------------------------------------------


def _write(
    name: str, plan: dict[str, list[int]], vectors_file: Path, folder: Path
) -> dict[str, Any]:
    plan_file = vectors_file.with_name(f"plan-{name}.json")
    plan_file.write_text(json.dumps(plan))
    before = folder_bytes(folder)
    figures = _child("write", vectors_file, folder, plan_file)
    figures["index_bytes_before"] = before
    figures["disk_bytes"] = folder_bytes(folder)
    figures["vector_files"] = len(vector_files(folder))
    return figures


def compare(first: list[list[list[Any]]], second: list[list[list[Any]]]) -> dict[str, Any]:
    """How many queries have the same top-k ids in the same order, and the largest score gap."""
    same = [a for a, b in zip(first, second, strict=True) if [h[0] for h in a] == [h[0] for h in b]]
    gaps = [
        abs(x[1] - y[1])
        for a, b in zip(first, second, strict=True)
        for x, y in zip(a, b, strict=False)
        if x[0] == y[0]
    ]
    return {"queries": len(first), "identical": len(same), "max_score_gap": max(gaps, default=0.0)}


def exact_run(first: Path, queries_file: Path, work: Path) -> dict[str, Any]:
    """20 unmerged segments of a flat index against the same data optimized into one."""
    folder = work / "exact"
    try:
        built = _child("exact", first, folder, SEGMENTS)
        segmented = _child("query", queries_file, folder, work / "hits-segmented.json")
        optimized = _child("optimize", queries_file, folder)
        merged = _child("query", queries_file, folder, work / "hits-merged.json")
        stored = storage(folder)
        disk = folder_bytes(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    same = compare(
        json.loads((work / "hits-segmented.json").read_text()),
        json.loads((work / "hits-merged.json").read_text()),
    )
    return {
        "build": built,
        "segmented": segmented,
        "optimize": optimized,
        "merged": merged,
        "results": same,
        "p50_ratio": segmented["latency"]["p50_ms"] / merged["latency"]["p50_ms"],
        "storage": stored,
        "disk_bytes": disk,
    }


def run(base: np.ndarray, size: int, nights: int, work: Path) -> dict[str, Any]:
    """Every measurement, in order, on indexes under ``work``."""
    vectors_file, queries_file = work / "vectors.npy", work / "queries.npy"
    np.save(vectors_file, synthetic_vectors(vector_rows(size, nights), base=base, seed=SEED))
    np.save(queries_file, synthetic_vectors(QUERIES, base=base, seed=SEED + 1))
    # The builds read only the first `size` rows: give them a file of their own.
    first = work / "first.npy"
    np.save(first, np.load(vectors_file, mmap_mode="r")[:size])
    add, remove = add_plan(size, nights), remove_plan(size, nights)
    folder = work / "index"

    build = _child("build", first, folder)
    build["disk_bytes"] = folder_bytes(folder)
    build["storage"] = storage(folder)
    build["vector_files"] = len(vector_files(folder))
    _log(f"built {size:,} in {build['seconds']:.1f} s, {mib(build['disk_bytes']):,.0f} MiB")
    opened = _child("open", queries_file, folder)
    writes = {
        "add": _write("add", add, vectors_file, folder),
        "remove": _write("remove", remove, vectors_file, folder),
    }
    for name, w in writes.items():
        written = w["bytes_written"] / w["index_bytes_before"]
        _log(f"{name} 1%: {written:.1%} of the index written, {w['seconds']:.2f} s")
    exact = exact_run(first, queries_file, work)
    first.unlink()
    same = exact["results"]["identical"]
    _log(f"exact: {same}/{QUERIES} identical, p50 ratio {exact['p50_ratio']:.2f}")
    rows: list[dict[str, Any]] = []
    for night in range(1, nights + 1):
        write = _write(f"night-{night}", night_plan(size, night), vectors_file, folder)
        after = _child("open", queries_file, folder)
        rows.append({"night": night, "write": write, "open": after})
        _log(f"night {night}: {mib(write['disk_bytes']):,.0f} MiB, {after['segments']} segments")
    return {
        "size": size,
        "nights": nights,
        "settings": {
            "k": K,
            "queries": QUERIES,
            "warmup": WARMUP,
            "seed": SEED,
            "segments": SEGMENTS,
        },
        "targets": {
            "written_share": TARGET_WRITTEN,
            "seconds_share": TARGET_SECONDS,
            "bytes_per_chunk": TARGET_BYTES_PER_CHUNK,
            "open_seconds": TARGET_OPEN_SECONDS,
            "open_rss_growth_bytes": TARGET_OPEN_RSS,
            "baseline_bytes_per_chunk": BASELINE_BYTES_PER_CHUNK,
        },
        "build": build,
        "open": opened,
        "writes": writes,
        "exact": exact,
        "rows": rows,
    }


def _log(message: str) -> None:
    print(f"[segments] {message}", file=sys.stderr, flush=True)


# -- the report -----------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def targets(data: dict[str, Any]) -> list[list[object]]:
    """One row per target of issue 12: what, measured, target, met."""
    build, opened, exact = data["build"], data["open"], data["exact"]
    rows: list[list[object]] = []
    for name in ("add", "remove"):
        w = data["writes"][name]
        written = w["bytes_written"] / w["index_bytes_before"]
        share = w["seconds"] / build["seconds"]
        rows.append(
            [
                f"{name} 1%: bytes written / index size",
                f"{written:.2%}",
                f"≤ {TARGET_WRITTEN:.0%}",
                _met(written <= TARGET_WRITTEN),
            ]
        )
        rows.append(
            [
                f"{name} 1%: write time / full build",
                f"{share:.2%}",
                f"≤ {TARGET_SECONDS:.0%}",
                _met(share <= TARGET_SECONDS),
            ]
        )
    per_chunk = exact["storage"]["bytes_per_chunk"]
    rows.append(
        [
            f"disk per chunk, exact index ({exact['build']['faiss_factory']}, optimized)",
            f"{per_chunk:,.0f} B",
            f"≤ {TARGET_BYTES_PER_CHUNK:,} B (before: {BASELINE_BYTES_PER_CHUNK:,} B)",
            _met(per_chunk <= TARGET_BYTES_PER_CHUNK),
        ]
    )
    rows.append(
        [
            "open: seconds",
            f"{opened['open_seconds']:.3f} s",
            f"≤ {TARGET_OPEN_SECONDS} s",
            _met(opened["open_seconds"] <= TARGET_OPEN_SECONDS),
        ]
    )
    growth = opened["open_rss_growth_bytes"]
    rows.append(
        [
            "open: RSS growth before the first query",
            f"{growth / 1e6:.1f} MB",
            f"≤ {TARGET_OPEN_RSS / 1e6:.0f} MB",
            _met(growth <= TARGET_OPEN_RSS),
        ]
    )
    if "open_rss_anon_growth_bytes" in opened:
        anon, file = opened["open_rss_anon_growth_bytes"], opened["open_rss_file_growth_bytes"]
        rows.append(
            [
                "… of which private (RssAnon; the rest: mapped file pages, RssFile "
                f"{file / 1e6:.1f} MB, shared page cache)",
                f"{anon / 1e6:.1f} MB",
                f"≤ {TARGET_OPEN_RSS / 1e6:.0f} MB",
                _met(anon <= TARGET_OPEN_RSS),
            ]
        )
    same = exact["results"]
    rows.append(
        [
            f"{SEGMENTS} segments vs 1: identical top {K}",
            f"{same['identical']} / {same['queries']}",
            "all",
            _met(same["identical"] == same["queries"]),
        ]
    )
    rows.append(
        [f"{SEGMENTS} segments vs 1: p50 ratio", f"{exact['p50_ratio']:.2f}×", "reported", "–"]
    )
    return rows


def _disk_row(label: str, stored: dict[str, Any], disk: int, target: str = "–") -> list[object]:
    """A row of the disk-per-chunk table; *as churn counted*: vector files + vector blobs."""
    chunks = max(1, stored["chunks"])
    return [
        label,
        stored["chunks"],
        mib(disk),
        stored["vector_files"] / chunks,
        stored["row_bytes"] / chunks,
        stored["bytes_per_chunk"],
        (stored["vector_files"] + stored["blob_bytes"]) / chunks,
        target,
    ]


def markdown(data: dict[str, Any]) -> str:
    build, exact = data["build"], data["exact"]
    writes = data["writes"]
    write_table = md_table(
        [
            "write",
            "articles",
            "written MiB",
            "index MiB before",
            "written / index",
            "seconds",
            "/ full build",
            "vector files after",
        ],
        [
            [
                "full build",
                build["chunks"],
                "–",
                "–",
                "–",
                build["seconds"],
                "–",
                build["vector_files"],
            ],
            *[
                [
                    f"{name} 1%",
                    w["added"] + w["removed"],
                    mib(w["bytes_written"]),
                    mib(w["index_bytes_before"]),
                    f"{w['bytes_written'] / w['index_bytes_before']:.2%}",
                    w["seconds"],
                    f"{w['seconds'] / build['seconds']:.2%}",
                    w["vector_files"],
                ]
                for name, w in writes.items()
            ],
        ],
    )
    disk_table = md_table(
        [
            "index",
            "chunks",
            "disk MiB",
            "vector files B/chunk",
            "chunk rows B/chunk",
            "total B/chunk",
            "as churn counted",
            "target",
        ],
        [
            _disk_row(f"built ({build['faiss_factory']})", build["storage"], build["disk_bytes"]),
            _disk_row(
                f"exact ({exact['build']['faiss_factory']}, optimized)",
                exact["storage"],
                exact["disk_bytes"],
                f"≤ {TARGET_BYTES_PER_CHUNK:,}",
            ),
            ["flat, before segments (churn)", *"–––––", BASELINE_BYTES_PER_CHUNK, "–"],
        ],
    )
    segment_table = md_table(
        ["exact index", "segments", "p50 ms", "p95 ms", "identical top 10"],
        [
            [
                f"{SEGMENTS} adds, unmerged",
                exact["segmented"]["segments"],
                exact["segmented"]["latency"]["p50_ms"],
                exact["segmented"]["latency"]["p95_ms"],
                "–",
            ],
            [
                "optimized",
                exact["merged"]["segments"],
                exact["merged"]["latency"]["p50_ms"],
                exact["merged"]["latency"]["p95_ms"],
                f"{exact['results']['identical']} / {exact['results']['queries']}",
            ],
        ],
    )
    night_table = md_table(
        [
            "night",
            "written MiB",
            "written / index",
            "write s",
            "write / build",
            "disk MiB",
            "segments",
            "tombstones",
            "open s",
            "p50 ms",
        ],
        [
            [
                r["night"],
                mib(r["write"]["bytes_written"]),
                f"{r['write']['bytes_written'] / r['write']['index_bytes_before']:.1%}",
                r["write"]["seconds"],
                f"{r['write']['seconds'] / build['seconds']:.1%}",
                mib(r["write"]["disk_bytes"]),
                r["open"]["segments"],
                r["open"]["tombstones"],
                r["open"]["open_seconds"],
                r["open"]["latency"]["p50_ms"],
            ]
            for r in data["rows"]
        ],
    )
    return "\n\n".join(
        [
            f"## Segments: {data['size']:,} one-chunk articles",
            "Every step runs in a fresh process through the public API, on precomputed "
            "vectors (embedding excluded). *Written* is every byte the writing process "
            "passed to `write` (`wchar`: segment files and SQLite pages alike), against the "
            "index's size on disk before the write; write times are against the full "
            f"build's ({build['seconds']:.1f} s, {build['faiss_factory']}). The removal takes "
            "1% of the original articles. Open is a fresh process's `Index.open` on the "
            "built index, before any query.",
            md_table(["target (issue 12)", "measured", "target", "met"], targets(data)),
            "### Writes",
            write_table,
            "### Disk per chunk, text and keyword index excluded",
            "Vector files (`semsearch.manifest.vector_files`) plus the SQLite pages of the "
            f"chunk rows ({', '.join(f'`{t}`' for t in ROW_TABLES)} and their indexes, whole "
            "pages from `dbstat`). A 384-dimensional float32 vector is 1,536 bytes. The "
            "baseline is `benchmarks.churn` before segments (a flat index at 100k; it "
            "counted the FAISS file and the `chunks.vector` column).",
            disk_table,
            f"### {SEGMENTS} segments against one",
            f"The same vectors written into a flat (exact) index as {SEGMENTS} adds with "
            "merging off (`MergePolicy(in_writes=False)`), searched, then merged by "
            f"`Index.optimize()` ({exact['optimize']['seconds']:.1f} s) and searched again: "
            f"{QUERIES} single-query searches (k={K}) each, after {WARMUP} warm-up calls. "
            "The largest score gap between the two top 10s: "
            f"{exact['results']['max_score_gap']:.2g}.",
            segment_table,
            f"### The nightly workload, {data['nights']} nights",
            f"Each night adds {ADD:.0%} new articles, changes {CHANGE:.1%} and removes "
            f"{REMOVE:.1%} (`benchmarks.churn`'s plan), after the two writes above; "
            "segments and tombstones are `Index.info()`'s after the night.",
            night_table,
            "![per night](results/segments.png)",
        ]
    )


def plot(data: dict[str, Any], path: Path) -> None:
    """Four panels per night: segments, index size, bytes written, p50."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = data["rows"]
    nights = [r["night"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    series = [
        ("segments", [r["open"]["segments"] or 0 for r in rows]),
        ("index on disk (MiB)", [mib(r["write"]["disk_bytes"]) for r in rows]),
        ("written per night (MiB)", [mib(r["write"]["bytes_written"]) for r in rows]),
        ("p50 query (ms)", [r["open"]["latency"]["p50_ms"] for r in rows]),
    ]
    for ax, (title, values) in zip(axes, series, strict=True):
        ax.plot(nights, values, marker="o")
        ax.set_title(title)
        ax.set_xlabel("night")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(f"Segments: nightly workload on {data['size']:,} articles")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark (or, with ``--child``, one of its steps) and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="an index whose chunk vectors to imitate")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        figures = _run_child(args.child[0], args.child[1:])
        print(json.dumps(figures))
        return figures

    if args.index is None:
        parser.error("--index is required")
    data = in_scratch(
        "segments", args.index, lambda base, work: run(base, args.size, args.nights, work)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(data, args.out / "segments.png")
    write_results(args.out, "segments", data, markdown(data), argv)
    return data


if __name__ == "__main__":
    main()
