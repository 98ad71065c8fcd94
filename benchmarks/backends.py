"""Which backend should embed the articles? Throughput and quality, side by side.

Builds the same index three times in one run, one per build backend
(``torch``: sentence-transformers on PyTorch, the reference; ``onnx``: the
exported model on ONNX Runtime, fp32; ``onnx-int8``: the same, dynamically
quantised for this CPU), each from scratch through ``Index.add`` (the whole
pipeline: chunking, embedding, SQLite, FAISS), and reports chunks per second
as the ratio to torch, each index's retrieval quality, and how far the int8
vectors are from the fp32 ones (cosine, chunk by chunk).

    python -m benchmarks.backends --dataset DATASET [--limit N]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.build import subset
from benchmarks.common import RESULTS, ROOT, md_table, write_results
from semsearch import Index
from semsearch.evaluate import evaluate, load_beir

BACKENDS = ("torch", "onnx", "onnx-int8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="index only N articles")
    parser.add_argument("--root", type=Path, default=ROOT / "indexes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    dataset = load_beir(args.dataset)
    articles = subset(dataset, args.limit or 10**9)
    rows, vectors = [], {}
    for backend in BACKENDS:
        folder = args.root / f"bench-{dataset.name}-{backend}"
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        with Index.create(folder, build_backend=backend, index_type="flat") as index:
            setup = time.perf_counter() - started
            result = index.add(articles, batch_size=32)
            vectors[backend] = index.chunk_vectors()[1]
            quality = {
                mode: evaluate(index, dataset, mode=mode).metrics for mode in ("semantic", "hybrid")
            }
        rows.append(
            {
                "backend": backend,
                "setup_seconds": setup,
                "chunks": result.chunks_added,
                "seconds": result.seconds,
                "embed_seconds": result.timings.get("embed", 0.0),
                "chunks_per_second": result.chunks_added / result.seconds,
                "quality": quality,
            }
        )
    reference = rows[0]["chunks_per_second"]
    for row in rows:
        row["speedup"] = row["chunks_per_second"] / reference
    cosines = (vectors["onnx-int8"] * vectors["onnx"]).sum(axis=1)
    fp32 = (vectors["onnx"] * vectors["torch"]).sum(axis=1)
    data = {
        "dataset": dataset.name,
        "articles": len(articles),
        "rows": rows,
        "int8_vs_fp32_cosine": {"min": float(cosines.min()), "mean": float(cosines.mean())},
        "onnx_vs_torch_cosine": {"min": float(fp32.min()), "mean": float(fp32.mean())},
    }
    write_results(args.out, "backends", data, markdown(data), argv)
    return data


def markdown(d: dict[str, Any]) -> str:
    table = md_table(
        [
            "build backend",
            "chunks/s",
            "x torch",
            "embed s",
            "semantic nDCG@10",
            "semantic recall@100",
            "hybrid nDCG@10",
        ],
        [
            [
                f"`{r['backend']}`",
                r["chunks_per_second"],
                f"{r['speedup']:.2f}x",
                r["embed_seconds"],
                r["quality"]["semantic"]["nDCG@10"],
                r["quality"]["semantic"]["R@100"],
                r["quality"]["hybrid"]["nDCG@10"],
            ]
            for r in d["rows"]
        ],
    )
    c, f = d["int8_vs_fp32_cosine"], d["onnx_vs_torch_cosine"]
    return (
        f"{d['dataset']}, {d['articles']:,} articles indexed from scratch by each build "
        "backend in the same run (whole pipeline; the one-off ONNX export is excluded, "
        "it is cached per machine).\n\n"
        + table
        + f"\n\nChunk vectors, cosine to the fp32 ONNX ones: int8 min {c['min']:.4f}, mean "
        f"{c['mean']:.4f}. fp32 ONNX to sentence-transformers: min {f['min']:.6f}."
    )


if __name__ == "__main__":
    main()
