"""How fast does semsearch build an index, where does the time go, how much memory and disk?

Indexes a BEIR corpus through the public pipeline (load → chunk → embed →
FAISS + SQLite) in a child process, so that its peak memory is the build's
alone, and writes ``build.json``/``build.md``: chunks and articles per
second, seconds per stage, peak RSS, size on disk per article.

    python -m benchmarks.build DATASET INDEX [--limit N] [--out DIR]

``--limit N`` indexes a subset: every document judged for the first queries,
plus a seeded random sample, N in all (the quick mode).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    folder_bytes,
    md_table,
    mib,
    own_peak_rss,
    run_process,
    write_results,
)
from semsearch import Article, Index
from semsearch.evaluate import BeirDataset, load_beir

STAGES = ("model_load", "load", "diff", "chunk", "embed", "sqlite", "faiss")


def subset(dataset: BeirDataset, limit: int, seed: int = 0) -> list[Article]:
    """At most `limit` articles: those judged for the first judged queries, then random ones."""
    articles = [a for a in dataset.corpus() if isinstance(a, Article)]
    if limit >= len(articles):
        return articles
    by_id = {a.id: a for a in articles}
    keep: dict[str, Article] = {}
    for qid in dataset.judged_queries():
        docs = [by_id[d] for d in dataset.qrels[qid] if d in by_id]
        if len(keep) + len(docs) > limit // 2:
            break
        keep.update((a.id, a) for a in docs)
    rest = [a for a in articles if a.id not in keep]
    random.Random(seed).shuffle(rest)
    for article in rest[: limit - len(keep)]:
        keep[article.id] = article
    return list(keep.values())


def build(dataset_dir: Path, folder: Path, limit: int = 0, index_type: str = "auto") -> dict:
    """Build the index here, in this process; returns the figures."""
    dataset = load_beir(dataset_dir)
    started = time.perf_counter()
    with Index.create(folder, index_type=index_type) as index:
        model_seconds = time.perf_counter() - started
        corpus = subset(dataset, limit) if limit else dataset.corpus()
        result = index.add(corpus)
        info = index.info()
    return {
        "dataset": dataset.name,
        "limit": limit,
        "articles": info.articles,
        "chunks": info.chunks,
        "skipped": len(result.skipped),
        "seconds": time.perf_counter() - started,
        "add_seconds": result.seconds,
        "timings": {"model_load": model_seconds, **result.timings},
        "chunks_per_second": info.chunks / result.seconds,
        "articles_per_second": info.articles / result.seconds,
        "size_bytes": folder_bytes(folder),
        "own_peak_rss_bytes": own_peak_rss(),
        "index": info.to_dict(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("index", type=Path)
    parser.add_argument("--limit", type=int, default=0, help="index at most N documents")
    parser.add_argument("--index-type", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        figures = build(args.dataset, args.index, args.limit, args.index_type)
        json.dump(figures, sys.stdout)
        return figures

    shutil.rmtree(args.index, ignore_errors=True)
    child = run_process(
        [
            sys.executable,
            "-m",
            "benchmarks.build",
            str(args.dataset),
            str(args.index),
            "--limit",
            str(args.limit),
            "--index-type",
            args.index_type,
            "--child",
        ],
    )
    if child["returncode"] != 0:
        raise SystemExit(f"build failed:\n{child['stderr']}")
    figures = json.loads(child["stdout"])
    figures["peak_rss_bytes"] = child["peak_rss_bytes"]
    figures["process_seconds"] = child["seconds"]
    write_results(args.out, "build", figures, markdown(figures), argv)
    return figures


def markdown(f: dict[str, Any]) -> str:
    total = sum(f["timings"].get(s, 0.0) for s in STAGES)
    scope = f"{f['dataset']}" + (f" (subset of {f['limit']:,} documents)" if f["limit"] else "")
    summary = md_table(
        [
            "articles",
            "chunks",
            "chunks/s",
            "articles/s",
            "peak RSS MiB",
            "disk MiB",
            "disk KiB/article",
        ],
        [
            [
                f["articles"],
                f["chunks"],
                f["chunks_per_second"],
                f["articles_per_second"],
                mib(f["peak_rss_bytes"]),
                mib(f["size_bytes"]),
                f["size_bytes"] / 1024 / max(1, f["articles"]),
            ]
        ],
    )
    stages = md_table(
        ["stage", "seconds", "share"],
        [
            [s, f["timings"].get(s, 0.0), f"{100 * f['timings'].get(s, 0.0) / total:.1f}%"]
            for s in STAGES
        ],
    )
    backend = f["index"].get("build_backend", "torch")
    engine = {
        "torch": "sentence-transformers on PyTorch",
        "onnx": "the ONNX export on ONNX Runtime",
    }
    return (
        f"Index build of {scope}, default settings (all-MiniLM-L6-v2, build backend "
        f"`{backend}`: {engine.get(backend, backend)}, {f['index']['faiss_factory']}); "
        "whole pipeline, one process.\n\n"
        f"{summary}\n\nWhere the time goes:\n\n{stages}"
    )


if __name__ == "__main__":
    main()
