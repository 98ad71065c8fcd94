"""How good is semsearch's retrieval? nDCG@10, recall@10/100 and MRR@10 on a BEIR dataset.

Every judged query goes through the public API (``Index.search_batch``, one
hit per article, its best chunk) in each mode (semantic, keyword, hybrid)
over an index built by ``benchmarks.build``; ir-measures scores the rankings.
nDCG@10 is also given on half B of the queries alone, the half that
``benchmarks.fusion`` did not tune on. For SciFact the published references are
printed beside our figures, and (``--check-reference``) the reference dense
run itself is re-measured in the same run — whole ``title + " " + text``
truncated by the model at 256 tokens, exact inner product — to show that the
harness reproduces it.

    python -m benchmarks.quality --index INDEX --dataset DATASET [--check-reference]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, md_table, query_half, write_results
from semsearch import Article, Index
from semsearch.evaluate import MEASURES, BeirDataset, evaluate, load_beir

# Measured on exactly the SciFact files in ../shared/data (see its README);
# quoted, not re-run here, except the dense one with --check-reference.
REFERENCES = {
    "scifact": [
        {
            "system": "BM25 (bm25s, stemmed, stop words), title + text",
            "nDCG@10": 0.686,
            "R@100": 0.913,
        },
        {
            "system": "all-MiniLM-L6-v2, title + text truncated at 256 tokens, exact",
            "nDCG@10": 0.645,
            "R@100": 0.925,
        },
    ]
}
MODES = ("semantic", "keyword", "hybrid")
LABELS = {"nDCG@10": "nDCG@10", "R@10": "recall@10", "R@100": "recall@100", "RR@10": "MRR@10"}


def truncated_dense(index: Index, dataset: BeirDataset, depth: int = 100) -> dict[str, float]:
    """The reference run: one vector per whole document, truncated by the model."""
    import ir_measures

    docs = [a for a in dataset.corpus() if isinstance(a, Article)]
    texts = [f"{a.title} {a.text}" if a.title else a.text for a in docs]
    vectors = index.encoder.encode_documents(texts, batch_size=32)
    queries = dataset.judged_queries()
    qvecs = index.encoder.encode_queries(list(queries.values()))
    scores = qvecs @ vectors.T
    top = np.argsort(-scores, axis=1)[:, :depth]
    run = {qid: {docs[j].id: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(queries)}
    measures = [ir_measures.parse_measure(m) for m in MEASURES]
    qrels = {q: d for q, d in dataset.qrels.items() if q in queries}
    return {str(m): float(v) for m, v in ir_measures.calc_aggregate(measures, qrels, run).items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument(
        "--check-reference",
        action="store_true",
        help="also re-measure the truncated dense reference (embeds the corpus)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    dataset = load_beir(args.dataset)
    with Index.open(args.index) as index:
        info = index.info()
        results = {mode: evaluate(index, dataset, mode=mode) for mode in MODES}
        reference = truncated_dense(index, dataset) if args.check_reference else None
    subset = info.articles < sum(1 for _ in dataset.corpus())
    half_b = {
        mode: float(
            np.mean([q["nDCG@10"] for qid, q in r.per_query.items() if query_half(qid) == "B"])
        )
        for mode, r in results.items()
    }
    data = {
        "dataset": dataset.name,
        "queries": results["hybrid"].queries,
        "queries_half_b": sum(query_half(q) == "B" for q in results["hybrid"].per_query),
        "articles_indexed": info.articles,
        "subset": subset,
        "settings": {
            k: getattr(info, k)
            for k in ("model", "chunk_tokens", "overlap_tokens", "faiss_factory")
        },
        "semsearch": {mode: r.metrics for mode, r in results.items()},
        "half_b_ndcg10": half_b,
        "truncated_dense_remeasured": reference,
        "references": REFERENCES.get(dataset.name, []),
        "search_seconds": {mode: r.seconds for mode, r in results.items()},
    }
    write_results(args.out, "quality", data, markdown(data), argv)
    return data


def markdown(d: dict[str, Any]) -> str:
    def row(name: str, metrics: dict[str, float], half_b: object = "–") -> list[object]:
        return [name, *(metrics.get(m, "–") for m in MEASURES), half_b]

    s = d["settings"]
    rows = [
        row(f"**semsearch {mode}**", d["semsearch"][mode], d["half_b_ndcg10"][mode])
        for mode in MODES
    ]
    if d["truncated_dense_remeasured"]:
        rows.append(
            row(
                "all-MiniLM-L6-v2 truncated at 256, re-measured here",
                d["truncated_dense_remeasured"],
            )
        )
    for ref in d["references"]:
        rows.append(row(f"reference: {ref['system']}", ref))
    caveat = (
        f"\n\n**Quick mode: {d['articles_indexed']:,} of the corpus' documents indexed, so "
        "these figures are not comparable with the references.**"
        if d["subset"]
        else ""
    )
    return (
        f"{d['dataset']}, {d['queries']} judged queries ({d['queries_half_b']} in held-out "
        f"half B); {s['model']}, chunks ≤ {s['chunk_tokens']} tokens with overlap "
        f"{s['overlap_tokens']}, an article scored by its best chunk, FAISS "
        f"{s['faiss_factory']}, BM25 by SQLite FTS5 over the same chunks.\n\n"
        + md_table(["system", *(LABELS[m] for m in MEASURES), "nDCG@10 on half B"], rows)
        + caveat
    )


if __name__ == "__main__":
    main()
