"""What does a nightly write cost, and does the index stay bounded as the nights go by?

The workload of a news archive: an index of N one-chunk articles is built
once, then each "night" adds 1% new articles, changes 0.2% (new text, so a
new vector) and removes 0.2%, through the public API in a fresh process, as
a pipeline would. Each night records:

- the bytes the writing process wrote (``wchar`` of ``/proc/self/io``: every
  byte handed to ``write``/``pwrite``, FAISS files and SQLite pages alike),
  beside the index's size on disk;
- the write's wall time (embedding excluded: vectors are precomputed, as in
  ``benchmarks.scaling``), beside the full build's;
- opening the index in a fresh process (seconds, and RSS growth before the
  first query), then p50 latency of single semantic queries;
- how many vector files the folder holds, and the vector bytes stored per
  chunk (FAISS files plus the ``chunks.vector`` column).

It is the measuring stick of the segments issue (12): today every write
rewrites the whole FAISS file and every chunk vector is stored twice.

    python -m benchmarks.churn --index indexes/bench-scifact                   # 1M, 30 nights
    python -m benchmarks.churn --index indexes/bench-scifact --size 100000 --nights 5

Writes ``churn.json``, ``churn.md`` and ``churn.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

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
from semsearch.manifest import vector_files

ADD, CHANGE, REMOVE = 0.01, 0.002, 0.002
QUERIES = 100
WARMUP = 10
SEED = 0


def _io_written() -> int:
    """Bytes this process has passed to write(2) and kin so far (``wchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def _rss(field: str = "VmRSS") -> int:
    """Bytes of this process's resident memory: ``VmRSS`` (all), ``RssAnon``
    (private: heap and anonymous maps) or ``RssFile`` (mapped files' pages,
    shared with the page cache and other processes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def night_plan(size: int, night: int) -> dict[str, list[int]]:
    """Which rows a night adds, changes (article id → new vector row) and removes.

    Articles are ``v<id>``; vector rows beyond ``size`` are the new texts.
    Removed and changed ids are drawn from the original articles, never twice.
    """
    add, change, remove = int(size * ADD), int(size * CHANGE), int(size * REMOVE)
    fresh = size + (night - 1) * (add + change)
    # One seeded shuffle of the original ids, a slice of it per night: no id is
    # removed twice, nor changed after it was removed.
    order = np.random.default_rng(SEED).permutation(size)
    picked = order[(night - 1) * (change + remove) : night * (change + remove)]
    if len(picked) < change + remove:
        raise ValueError(f"{size:,} articles are too few for night {night}")
    return {
        "add": list(range(fresh, fresh + add)),
        "change_ids": [int(i) for i in picked[:change]],
        "change_rows": list(range(fresh + add, fresh + add + change)),
        "remove": [int(i) for i in picked[change:]],
    }


def child_night(vectors_file: Path, folder: Path, plan_file: Path) -> dict[str, Any]:
    """One night's write through the public API: add, change, remove."""
    vectors = np.load(vectors_file, mmap_mode="r", allow_pickle=False)
    plan = json.loads(plan_file.read_text())
    encoder = PrecomputedEncoder(vectors.shape[1], vectors)
    written = _io_written()
    started = time.perf_counter()
    with Index.open(folder, encoder=encoder) as index:
        new = [Article(id=f"v{row}", text=f"v{row}") for row in plan["add"]]
        changed = [
            Article(id=f"v{i}", text=f"v{row}")
            for i, row in zip(plan["change_ids"], plan["change_rows"], strict=True)
        ]
        # An empty side is skipped, so a plan may only add or only remove.
        added = index.add([*new, *changed]) if new or changed else None
        removed = index.remove([f"v{i}" for i in plan["remove"]])[0] if plan["remove"] else []
    return {
        "seconds": time.perf_counter() - started,
        "bytes_written": _io_written() - written,
        "added": added.added if added else 0,
        "updated": added.updated if added else 0,
        "removed": len(removed),
        "peak_rss_bytes": own_peak_rss(),
    }


def child_open(queries_file: Path, folder: Path) -> dict[str, Any]:
    """Open the index cold (RSS growth before the first query), then time queries."""
    queries = np.load(queries_file, allow_pickle=False)
    encoder = PrecomputedEncoder(queries.shape[1])
    before = {f: _rss(f) for f in ("VmRSS", "RssAnon", "RssFile")}
    started = time.perf_counter()
    index = Index.open(folder, encoder=encoder)
    opened = time.perf_counter() - started
    grown = _rss() - before["VmRSS"]
    anon, file = _rss("RssAnon") - before["RssAnon"], _rss("RssFile") - before["RssFile"]
    with index:
        seconds = per_item_seconds(lambda q: index.search(q, k=K), queries, warmup=WARMUP)
        info = index.info()
    return {
        "open_seconds": opened,
        "open_rss_growth_bytes": grown,
        "open_rss_anon_growth_bytes": anon,
        "open_rss_file_growth_bytes": file,
        "latency": percentiles(seconds),
        "segments": info.segments,
        "tombstones": info.tombstones,
        "generation": info.generation,
    }


def vector_bytes(folder: Path) -> tuple[int, int]:
    """(bytes of every stored vector: FAISS files + the chunks.vector column, chunks)."""
    faiss = sum(f.stat().st_size for f in vector_files(folder))
    db = sqlite3.connect(f"file:{folder / 'store.sqlite'}?mode=ro", uri=True)
    try:
        blob, chunks = db.execute(
            "SELECT SUM(length(vector)), COUNT(*) FROM chunks"
            " WHERE article_pk NOT IN (SELECT pk FROM removed_articles)"
        ).fetchone()
    finally:
        db.close()
    return faiss + int(blob or 0), int(chunks)


def _child(kind: str, *args: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.churn", "--child", kind, *map(str, args)]
    proc = run_process(argv, cwd=ROOT)
    if proc["returncode"] != 0:
        raise RuntimeError(f"{kind} child failed ({proc['returncode']}):\n{proc['stderr'][-3000:]}")
    figures: dict[str, Any] = json.loads(proc["stdout"].strip().splitlines()[-1])
    figures["wall_seconds"] = proc["seconds"]
    return figures


def run(base: np.ndarray, size: int, nights: int, work: Path) -> dict[str, Any]:
    per_night = int(size * ADD) + int(size * CHANGE)
    vectors_file, queries_file = work / "vectors.npy", work / "queries.npy"
    np.save(vectors_file, synthetic_vectors(size + nights * per_night, base=base, seed=SEED))
    np.save(queries_file, synthetic_vectors(QUERIES, base=base, seed=SEED + 1))
    folder = work / "index"
    # The build reads only the first `size` rows: give it a file of its own.
    first = work / "first.npy"
    np.save(first, np.load(vectors_file, mmap_mode="r")[:size])
    build = _child("build", first, folder)
    first.unlink()
    rows = []
    for night in range(nights + 1):
        if night:
            plan_file = work / "plan.json"
            plan_file.write_text(json.dumps(night_plan(size, night)))
            write = _child("night", vectors_file, folder, plan_file)
        else:
            write = None
        stored, chunks = vector_bytes(folder)
        rows.append(
            {
                "night": night,
                "write": write,
                "disk_bytes": folder_bytes(folder),
                "vector_files": len(vector_files(folder)),
                "vector_bytes_per_chunk": stored / max(1, chunks),
                "chunks": chunks,
                "open": _child("open", queries_file, folder),
            }
        )
        print(f"[churn] night {night}: {mib(folder_bytes(folder)):,.0f} MiB", flush=True)
    return {"size": size, "nights": nights, "build": build, "rows": rows}


def markdown(data: dict[str, Any]) -> str:
    build = data["build"]
    rows = data["rows"]
    table = md_table(
        [
            "night",
            "written MiB",
            "written / index",
            "write s",
            "write / build",
            "disk MiB",
            "vector files",
            "vector B/chunk",
            "open s",
            "open RSS MiB",
            "p50 ms",
        ],
        [
            [
                r["night"],
                mib(r["write"]["bytes_written"]) if r["write"] else "build",
                f"{r['write']['bytes_written'] / r['disk_bytes']:.0%}" if r["write"] else "–",
                r["write"]["seconds"] if r["write"] else build["seconds"],
                f"{r['write']['seconds'] / build['seconds']:.1%}" if r["write"] else "–",
                mib(r["disk_bytes"]),
                r["vector_files"],
                round(r["vector_bytes_per_chunk"]),
                r["open"]["open_seconds"],
                mib(r["open"]["open_rss_growth_bytes"]),
                r["open"]["latency"]["p50_ms"],
            ]
            for r in rows
        ],
    )
    return (
        f"## Nightly churn: {data['size']:,} one-chunk articles, {data['nights']} nights\n\n"
        f"Each night adds {ADD:.0%} new articles, changes {CHANGE:.1%} and removes "
        f"{REMOVE:.1%}, in a fresh process through `Index.add` and `Index.remove` "
        "(precomputed vectors: embedding excluded). *Written* is every byte the writing "
        "process passed to `write` (`wchar`), *write / build* its wall time against the "
        f"full build's ({build['seconds']:.1f} s, {build['faiss_factory']}); open and "
        "p50 are a fresh process's. *Vector B/chunk* counts the FAISS files and the "
        "`chunks.vector` column (a 384-dimensional float32 vector is 1,536 bytes).\n\n"
        f"{table}\n\n![per night](results/churn.png)"
    )


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in data["rows"] if r["write"]]
    nights = [r["night"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    series = [
        ("written per night (MiB)", [mib(r["write"]["bytes_written"]) for r in rows]),
        ("index on disk (MiB)", [mib(r["disk_bytes"]) for r in rows]),
        ("vector files", [r["vector_files"] for r in rows]),
        ("p50 query (ms)", [r["open"]["latency"]["p50_ms"] for r in rows]),
    ]
    for ax, (title, values) in zip(axes, series, strict=True):
        ax.plot(nights, values, marker="o")
        ax.set_title(title)
        ax.set_xlabel("night")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Nightly churn on {data['size']:,} articles")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="an index whose chunk vectors to imitate")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, *paths = args.child
        files = [Path(p) for p in paths]
        if kind == "build":
            figures = child_build(files[0], files[1])
        elif kind == "night":
            figures = child_night(files[0], files[1], files[2])
        else:
            figures = child_open(files[0], files[1])
        print(json.dumps(figures))
        return figures

    if args.index is None:
        parser.error("--index is required")
    data = in_scratch(
        "churn", args.index, lambda base, work: run(base, args.size, args.nights, work)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(data, args.out / "churn.png")
    write_results(args.out, "churn", data, markdown(data), argv)
    return data


if __name__ == "__main__":
    main()
