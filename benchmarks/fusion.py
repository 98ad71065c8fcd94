"""How should hybrid search fuse its two rankings? Tuned on one half of the queries.

The dataset's judged queries are split in two halves by a hash of their id
(``common.query_half``): half A tunes, half B is held out. For each weight W
of the hybrid score (W × cosine + (1 − W) × BM25 / best BM25) this script runs
every query through ``Index.search_batch(mode="hybrid", hybrid_weight=W)`` and
scores A, B and all; beside them, reciprocal rank fusion (k=60) of the
semantic and keyword rankings, the textbook alternative. The weight chosen is
the best on A; its figures on B are the honest ones.

    python -m benchmarks.fusion --index INDEX --dataset DATASET
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, md_table, query_half, write_results
from semsearch import Index, search
from semsearch.evaluate import EvalResult, evaluate, load_beir
from semsearch.search import HYBRID_WEIGHT

WEIGHTS = [round(w, 2) for w in np.arange(0.3, 0.951, 0.05)]
RRF_K = 60
POOLS = (100, 50, 30, 20)
SHOWN = ("nDCG@10", "R@100")


def by_half(per_query: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean of each measure over half A, half B and all queries."""
    groups: dict[str, list[dict[str, float]]] = {"A": [], "B": [], "all": []}
    for qid, metrics in per_query.items():
        groups[query_half(qid)].append(metrics)
        groups["all"].append(metrics)
    return {
        name: {m: float(np.mean([q[m] for q in rows])) for m in SHOWN}
        for name, rows in groups.items()
    }


def rrf(semantic: EvalResult, keyword: EvalResult, dataset: Any, depth: int = 100) -> Any:
    """Reciprocal rank fusion of two runs, scored like any run."""
    import ir_measures

    fused: dict[str, dict[str, float]] = {}
    for qid in semantic.run:
        scores: dict[str, float] = {}
        for run in (semantic.run[qid], keyword.run.get(qid, {})):
            ranked = sorted(run, key=lambda d, run=run: -run[d])
            for rank, doc in enumerate(ranked, start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (RRF_K + rank)
        top = sorted(scores, key=lambda d: -scores[d])[:depth]
        fused[qid] = {d: scores[d] for d in top}
    measures = [ir_measures.parse_measure(m) for m in SHOWN]
    qrels = {q: d for q, d in dataset.qrels.items() if q in fused}
    per_query: dict[str, dict[str, float]] = {}
    for metric in ir_measures.iter_calc(measures, qrels, fused):
        per_query.setdefault(metric.query_id, {})[str(metric.measure)] = float(metric.value)
    return per_query


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--weights", default=None, help="comma-separated weights to try")
    parser.add_argument(
        "--pools",
        default=",".join(map(str, POOLS)),
        help="comma-separated hybrid pools (candidates from each ranking) to score at k=10",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    weights = [float(w) for w in args.weights.split(",")] if args.weights else WEIGHTS
    dataset = load_beir(args.dataset)
    with Index.open(args.index) as index:
        info = index.info()
        semantic = evaluate(index, dataset, mode="semantic")
        keyword = evaluate(index, dataset, mode="keyword")
        rows = {
            "semantic": by_half(semantic.per_query),
            "keyword": by_half(keyword.per_query),
            f"RRF k={RRF_K}": by_half(rrf(semantic, keyword, dataset)),
        }
        sweep = {}
        for weight in weights:
            result = evaluate(index, dataset, mode="hybrid", hybrid_weight=weight)
            sweep[weight] = by_half(result.per_query)
        pools = {}
        for pool in [int(p) for p in args.pools.split(",")]:
            # At k=10 (what a user asks for), unlike the sweep's k=100 (recall@100).
            with _hybrid_pool(pool):
                result = evaluate(index, dataset, depth=10, mode="hybrid")
            pools[pool] = result.metrics["nDCG@10"]
    best_a = max(sweep, key=lambda w: sweep[w]["A"]["nDCG@10"])
    best_b = max(sweep, key=lambda w: sweep[w]["B"]["nDCG@10"])
    halves = {h: sum(query_half(q) == h for q in semantic.per_query) for h in ("A", "B")}
    data = {
        "dataset": dataset.name,
        "queries": semantic.queries,
        "halves": halves,
        "chunk_tokens": info.chunk_tokens,
        "overlap_tokens": info.overlap_tokens,
        "baselines": rows,
        "sweep": {str(w): v for w, v in sweep.items()},
        "best_on_A": best_a,
        "best_on_B": best_b,
        "library_default": HYBRID_WEIGHT,
        "pools": {str(p): v for p, v in pools.items()},
        "library_pool": search.HYBRID_POOL,
    }
    write_results(args.out, "fusion", data, markdown(data), argv)
    return data


def markdown(d: dict[str, Any]) -> str:
    def cells(v: dict[str, dict[str, float]]) -> list[object]:
        return [v[h][m] for h in ("A", "B", "all") for m in SHOWN]

    rows: list[list[object]] = [[name, *cells(v)] for name, v in d["baselines"].items()]
    for weight, v in d["sweep"].items():
        marks = []
        if float(weight) == d["best_on_A"]:
            marks.append("best on A")
        if float(weight) == d["library_default"]:
            marks.append("**default**")
        label = f"hybrid W={weight}" + (f" ({', '.join(marks)})" if marks else "")
        rows.append([label, *cells(v)])
    headers = ["ranking", *(f"{h} {m}" for h in ("A (tune)", "B (held out)", "all") for m in SHOWN)]
    return (
        f"{d['dataset']}: {d['queries']} judged queries split by a hash of their id into "
        f"half A ({d['halves']['A']}, used to choose W) and half B ({d['halves']['B']}, "
        f"held out). Chunks ≤ {d['chunk_tokens']} tokens, overlap {d['overlap_tokens']}. "
        f"W is the semantic share of the hybrid score. Best W on A: {d['best_on_A']}; "
        f"best on B alone would have been {d['best_on_B']}.\n\n"
        + md_table(headers, rows)
        + _pool_table(d)
    )


def _pool_table(d: dict[str, Any]) -> str:
    """nDCG@10 of k=10 hybrid searches by the candidates taken from each ranking."""
    if not d.get("pools"):
        return ""
    rows = [
        [f"{p}" + (" (**default**)" if int(p) == d["library_pool"] else ""), v]
        for p, v in d["pools"].items()
    ]
    return (
        "\n\nHybrid pool: the candidates taken from each ranking before fusion (at least "
        "k), all queries, k=10.\n\n" + md_table(["pool", "nDCG@10"], rows)
    )


@contextlib.contextmanager
def _hybrid_pool(pool: int) -> Iterator[None]:
    """Search with this many candidates from each ranking (the library's setting)."""
    saved = search.HYBRID_POOL
    search.HYBRID_POOL = pool
    try:
        yield
    finally:
        search.HYBRID_POOL = saved


if __name__ == "__main__":
    main()
