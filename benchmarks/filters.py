"""Is filtered search exact, and what does a filter cost?

For each selectivity (50%, 5%, 0.5%, 0.1% of the articles, a seeded random
sample) the filter is ``{"id": {"in": [...]}}``, which goes the same way as
any metadata filter (SQL selects the matching chunks, FAISS searches only
those). Every query's filtered semantic top 10 is compared with brute force
(exact inner product over the matching articles' stored vectors only); the
figure is how many queries agree exactly. Timings are warm, through the
public API, p50 over the queries, all modes interleaved query by query:
semantic with a precomputed query vector (the filter and the vector search),
and hybrid with the query text (embedding included).

    python -m benchmarks.filters --index INDEX --dataset DATASET [--queries N]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, md_table, percentiles, repeat_timer, write_results
from semsearch import Index
from semsearch.evaluate import load_beir

SHARES = (0.5, 0.05, 0.005, 0.001)
K = 10


def brute_force(
    vectors: np.ndarray, articles: np.ndarray, allowed: set[str], query: np.ndarray
) -> list[str]:
    """Exact top K articles (best chunk each) among the allowed ones."""
    keep = np.asarray([a in allowed for a in articles])
    scores = vectors[keep] @ query
    ranked = articles[keep][np.argsort(-scores, kind="stable")]
    return list(dict.fromkeys(ranked))[:K]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    texts = list(load_beir(args.dataset).judged_queries().values())[: args.queries]
    rng = random.Random(0)
    rows = []
    with Index.open(args.index) as index:
        info = index.info()
        ids, vectors = index.chunk_vectors()
        everything = index.search(texts[0], k=len(ids), mode="semantic", group=False)
        article_of = {h.chunk_id: h.article_id for h in everything}
        articles = np.asarray([article_of[int(i)] for i in ids])
        all_ids = sorted(set(article_of.values()))
        query_vectors = index.encoder.encode_queries(texts)
        settings: list[tuple[str, dict[str, Any] | None, set[str] | None]] = [
            ("none (100%)", None, None)
        ]
        for share in SHARES:
            sample = set(rng.sample(all_ids, max(1, round(share * len(all_ids)))))
            settings.append((f"{share:.1%}", {"id": {"in": sorted(sample)}}, sample))
        for label, spec, allowed in settings:
            exact, semantic, hybrid = 0, [], []
            for text, vector in zip(texts, query_vectors, strict=True):
                hits = index.search(vector, k=K, mode="semantic", filter=spec)
                if allowed is not None:
                    truth = brute_force(vectors, articles, allowed, vector)
                    exact += [h.article_id for h in hits] == truth
                semantic += repeat_timer(
                    lambda v=vector, f=spec: index.search(v, k=K, mode="semantic", filter=f), 1, 0
                )
                hybrid += repeat_timer(lambda t=text, f=spec: index.search(t, k=K, filter=f), 1, 0)
            rows.append(
                {
                    "filter": label,
                    "articles": len(allowed) if allowed is not None else len(all_ids),
                    "exact": exact if allowed is not None else None,
                    "queries": len(texts),
                    "semantic": percentiles(semantic),
                    "hybrid": percentiles(hybrid),
                }
            )
    data = {"index": {"articles": info.articles, "chunks": info.chunks}, "rows": rows}
    data["faiss_factory"] = info.faiss_factory
    write_results(args.out, "filters", data, markdown(data), argv)
    return data


def markdown(d: dict[str, Any]) -> str:
    table = md_table(
        [
            "filter (share of articles)",
            "articles matching",
            "top-10 equal to brute force",
            "semantic p50 ms (vector given)",
            "hybrid p50 ms (text)",
        ],
        [
            [
                r["filter"],
                r["articles"],
                "–" if r["exact"] is None else f"{r['exact']}/{r['queries']}",
                r["semantic"]["p50_ms"],
                r["hybrid"]["p50_ms"],
            ]
            for r in d["rows"]
        ],
    )
    return (
        f"{d['index']['articles']:,} articles, {d['index']['chunks']:,} chunks, FAISS "
        f'{d["faiss_factory"]}; filter `{{"id": {{"in": [...]}}}}` with a random sample '
        "of articles.\n\n" + table
    )


if __name__ == "__main__":
    main()
