"""Local build vs a Ray build of the same corpus on the same machine, and 100M projected.

Writes the corpus of a BEIR dataset as JSONL files, then builds it twice,
side by side in one run: locally (``add_paths``) and on a local Ray cluster
of this machine's CPUs (``add_paths(engine="ray")``). Reports wall time,
chunks/s in all and per embedding worker, whether the two indexes hold the
same chunks, the cosine of their vectors, whether every query's top 10 is
the same, and nDCG@10 of each. Then it measures one embedding worker of one
CPU with the ``onnx-int8`` build backend on a subset, and projects the time
and cost of building 100M chunks on N workers, from:

- that per-worker CPU rate;
- the GPU fast path's rate from ``results/gpu.json`` (``benchmarks/gpu.py`` on a
  GPU machine), if it was measured; otherwise the row says so;
- the driver's commit work per chunk (SQLite, FAISS, merges and the diff)
  from ``results/large_10m.json``, measured at 10M chunks on this kind of
  machine. The driver writes every segment, so its rate caps the build
  whatever the number of workers.

    python -m benchmarks.distributed --dataset ../shared/data/scifact [--limit N]

Prices are parameters (``--cpu-hour-usd``, ``--gpu-hour-usd``), not measurements.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.build import subset
from benchmarks.common import RESULTS, SCIFACT, md_table, write_results
from semsearch import Article, Index
from semsearch.distributed import RayOptions
from semsearch.evaluate import evaluate, load_beir

TARGET_CHUNKS = 100_000_000
WORKERS = (1, 8, 32, 128, 512)
DRIVER_STAGES = ("diff", "sqlite", "faiss", "merge")
"""What the driver does per chunk in a distributed build (the rest is the workers')."""


def write_corpus(articles: list[Article], folder: Path, files: int = 8) -> list[Path]:
    """The articles as ``files`` JSONL files (so that Ray has more than one load task)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part-{n:02d}.jsonl" for n in range(files)]
    handles = [p.open("w") for p in paths]
    for n, article in enumerate(articles):
        record = {"id": article.id, "title": article.title, "text": article.text}
        handles[n * files // len(articles)].write(json.dumps(record) + "\n")
    for handle in handles:
        handle.close()
    return paths


def build(
    folder: Path, corpus: Path, engine: str, options: RayOptions | None, backend: str = "auto"
) -> dict[str, Any]:
    started = time.perf_counter()
    with Index.create(folder, build_backend=backend) as index:
        created = time.perf_counter()
        result = index.add_paths([corpus], engine=engine, ray=options)
    return {
        "engine": engine,
        "backend": backend,
        "articles": result.added,
        "chunks": result.chunks_added,
        "seconds": result.seconds,
        "create_seconds": created - started,
        "timings": result.timings,
        "chunks_per_second": result.chunks_added / result.seconds,
    }


def compare(local: Path, distributed: Path, queries: list[str]) -> dict[str, Any]:
    """Same chunks? Vector cosines, and whether every query's top 10 agrees, by mode."""
    with Index.open(local) as a, Index.open(distributed) as b:
        same: dict[str, float] = {}
        for mode in ("semantic", "hybrid"):
            hits_a = a.search_batch(queries, k=10, mode=mode)
            hits_b = b.search_batch(queries, k=10, mode=mode)
            equal = [
                [h.chunk_id for h in x] == [h.chunk_id for h in y]
                for x, y in zip(hits_a, hits_b, strict=True)
            ]
            same[mode] = float(np.mean(equal))
        va, vb = a.chunk_vectors()[1], b.chunk_vectors()[1]
    cosines = np.sum(va * vb, axis=1)
    return {
        "chunks_equal": va.shape == vb.shape,
        "min_cosine": float(cosines.min()),
        "median_cosine": float(np.median(cosines)),
        "same_top10": same,
    }


def ndcg(folder: Path, dataset: Any) -> dict[str, float]:
    with Index.open(folder) as index:
        return {
            mode: round(evaluate(index, dataset, depth=10, mode=mode).metrics["nDCG@10"], 4)
            for mode in ("semantic", "hybrid")
        }


def projection(
    cpu_rate: float, gpu: dict[str, Any] | None, driver_rate: float, prices: dict[str, float]
) -> list[dict[str, Any]]:
    """Hours and cost of 100M chunks on N workers: the workers' embedding and the driver's
    commit run streamed side by side, so the build takes the longer of the two."""
    driver_hours = TARGET_CHUNKS / driver_rate / 3600
    rows = []
    kinds = [("CPU core, onnx-int8", cpu_rate, prices["cpu"])]
    if gpu:
        kinds.append(("GPU, fast path fp16", float(gpu["docs_per_second"]), prices["gpu"]))
    for kind, rate, price in kinds:
        for workers in WORKERS:
            embed_hours = TARGET_CHUNKS / (rate * workers) / 3600
            hours = max(embed_hours, driver_hours)
            rows.append(
                {
                    "worker": kind,
                    "workers": workers,
                    "per_worker_chunks_per_second": rate,
                    "embed_hours": embed_hours,
                    "driver_hours": driver_hours,
                    "hours": hours,
                    "bound_by": "driver" if driver_hours >= embed_hours else "workers",
                    "usd": hours * (workers * price + prices["driver"]),
                }
            )
    return rows


def gpu_rate(data: dict[str, Any]) -> dict[str, Any] | None:
    """The fast path's fp16 row of ``benchmarks/gpu.py``'s results, if measured on a GPU."""
    if not data.get("accelerator", {}).get("gpu"):
        return None
    rows = [r for r in data["rows"] if r["system"] == "TorchEncoder" and r["precision"] == "fp16"]
    return rows[0] if rows else None


def driver_rate(results: Path) -> dict[str, Any]:
    """The driver's chunks/s from the 10M build: its commit stages only."""
    data = json.loads((results / "large_10m.json").read_text())
    build_ = data["sets"][0]["build"]
    chunks = data["sets"][0]["size"]
    seconds = sum(build_["timings"].get(stage, 0.0) for stage in DRIVER_STAGES)
    return {"chunks": chunks, "seconds": seconds, "chunks_per_second": chunks / seconds}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--limit", type=int, default=0, help="build at most N documents")
    parser.add_argument("--int8-limit", type=int, default=1000)
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        nargs="+",
        default=[1.0, 1.5],
        help="one Ray build per value (1.5: two ONNX threads, half a CPU for chunking)",
    )
    parser.add_argument("--cpu-hour-usd", type=float, default=0.04)
    parser.add_argument("--gpu-hour-usd", type=float, default=4.0)
    parser.add_argument("--driver-hour-usd", type=float, default=0.20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import ray

    dataset = load_beir(args.dataset)
    articles = subset(dataset, args.limit) if args.limit else list(dataset.corpus())
    articles = [a for a in articles if isinstance(a, Article)]
    scratch = Path(tempfile.mkdtemp(prefix="semsearch-distributed-", dir=args.scratch))
    try:
        corpus = scratch / "corpus"
        write_corpus(articles, corpus)
        cpus = len(os.sched_getaffinity(0))
        local = build(scratch / "local", corpus, "local", None)
        started = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
        cluster_seconds = time.perf_counter() - started
        runs = []
        for cpus_per_worker in args.cpus_per_worker:
            workers = max(1, int((cpus - 0.5) / cpus_per_worker))
            options = RayOptions(embed_workers=workers, cpus_per_worker=cpus_per_worker)
            folder = scratch / f"ray-{cpus_per_worker:g}"
            run = build(folder, corpus, "ray", options)
            run["embed_workers"] = workers
            run["cpus_per_worker"] = cpus_per_worker
            run["chunks_per_second_per_worker"] = run["chunks_per_second"] / workers
            runs.append(run)
        first = scratch / f"ray-{args.cpus_per_worker[0]:g}"
        queries = [dataset.queries[q] for q in dataset.judged_queries()]
        same = compare(scratch / "local", first, queries)
        quality = {"local": ndcg(scratch / "local", dataset), "ray": ndcg(first, dataset)}
        # One CPU worker on the int8 model: the per-worker rate of the projection.
        small = write_corpus(articles[: args.int8_limit], scratch / "small", files=2)
        del small
        one = RayOptions(embed_workers=1, cpus_per_worker=1)
        int8 = build(scratch / "int8", scratch / "small", "ray", one, backend="onnx-int8")
        ray.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    gpu_file = RESULTS / "gpu.json"
    gpu = gpu_rate(json.loads(gpu_file.read_text())) if gpu_file.exists() else None
    driver = driver_rate(RESULTS)
    prices = {"cpu": args.cpu_hour_usd, "gpu": args.gpu_hour_usd, "driver": args.driver_hour_usd}
    rows = projection(int8["chunks_per_second"], gpu, driver["chunks_per_second"], prices)
    figures = {
        "dataset": dataset.name,
        "limit": args.limit,
        "cpus": cpus,
        "local": local,
        "ray": runs,
        "cluster_start_seconds": cluster_seconds,
        "same": same,
        "ndcg_at_10": quality,
        "int8_one_worker": int8,
        "driver": driver,
        "prices_usd_per_hour": prices,
        "projection": rows,
        "gpu_measured": gpu is not None,
    }
    write_results(args.out, "distributed", figures, markdown(figures), argv)
    return figures


def markdown(f: dict[str, Any]) -> str:
    local, runs = f["local"], f["ray"]
    same, quality = f["same"], f["ndcg_at_10"]
    rows = [
        ["local, one process", local["articles"], local["chunks"], local["seconds"],
         local["chunks_per_second"], "-"],
    ]  # fmt: skip
    for run in runs:
        rows.append(
            [
                f"Ray, {run['embed_workers']} embedding actor(s) of "
                f"{run['cpus_per_worker']:g} CPU ({math.ceil(run['cpus_per_worker'])} "
                "ONNX threads)",
                run["articles"],
                run["chunks"],
                run["seconds"],
                run["chunks_per_second"],
                run["chunks_per_second_per_worker"],
            ]
        )
    lines = [
        f"Local build vs Ray Data build of {f['dataset']}"
        + (f" ({f['limit']:,} documents)" if f["limit"] else "")
        + f", one machine of {f['cpus']} CPUs: the same JSONL files, the default build "
        "backend (ONNX); the local build runs ONNX Runtime on every core; the Ray builds "
        "run load and chunk tasks and an actor pool on a local cluster, the driver "
        "committing. Retrieval compares the local index with the first Ray one.",
        "",
        md_table(
            ["build", "articles", "chunks", "wall s", "chunks/s", "chunks/s per embed worker"],
            rows,
        ),
        "",
        f"Ray cluster start (not in the wall times): {f['cluster_start_seconds']:.1f} s.",
        "",
        md_table(
            ["retrieval", "local", "Ray"],
            [
                ["nDCG@10 semantic", quality["local"]["semantic"], quality["ray"]["semantic"]],
                ["nDCG@10 hybrid", quality["local"]["hybrid"], quality["ray"]["hybrid"]],
                ["same chunks and ids", "", "yes" if same["chunks_equal"] else "NO"],
                [
                    "vector cosine, min / median",
                    "",
                    f"{same['min_cosine']:.6f} / {same['median_cosine']:.6f}",
                ],
                ["queries with the same top 10, semantic", "", same["same_top10"]["semantic"]],
                ["queries with the same top 10, hybrid", "", same["same_top10"]["hybrid"]],
            ],
        ),
        "",
        "### 100M chunks, projected",
        "",
        f"From one Ray embedding worker of 1 CPU with `onnx-int8` "
        f"({f['int8_one_worker']['chunks_per_second']:.1f} chunks/s over "
        f"{f['int8_one_worker']['chunks']:,} chunks, this machine) and the driver's commit "
        f"rate ({f['driver']['chunks_per_second']:,.0f} chunks/s: SQLite, FAISS, merges and "
        f"diff of the 10M build in `large_10m.json`). Workers and driver stream side by side, "
        "so a build takes the longer of the two. Prices are assumptions: "
        + ", ".join(f"{k} ${v}/h" for k, v in f["prices_usd_per_hour"].items())
        + ".",
        "",
        md_table(
            ["worker", "N", "embed h", "driver h", "build h", "bound by", "cost USD"],
            [
                [
                    r["worker"],
                    r["workers"],
                    r["embed_hours"],
                    r["driver_hours"],
                    r["hours"],
                    r["bound_by"],
                    r["usd"],
                ]
                for r in f["projection"]
            ],
        ),
    ]
    if not f["gpu_measured"]:
        lines += [
            "",
            "GPU rows: not measured (no GPU was available); `benchmarks/gpu_device.sh` on a "
            "GPU machine writes `results/gpu.json`, and this projection then includes them.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
