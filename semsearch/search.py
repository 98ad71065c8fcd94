"""Queries → ranked :class:`~semsearch.records.Hit` lists, in three modes.

- ``semantic``: cosine similarity of the query vector to chunk vectors (FAISS).
- ``keyword``: BM25 over the chunks' title and text (SQLite FTS5).
- ``hybrid`` (the default): both, fused by a weighted sum of normalised scores.

Results are articles: an article's score in each mode is its best chunk's,
and that chunk is the hit's snippet. ``k`` means ``k`` distinct articles: when
several chunks of one article crowd the top, more are fetched until ``k``
articles are found or the index is exhausted.

A filter restricts every mode *inside* the search: FAISS gets an
``IDSelector`` of the matching chunks (a flat index then stays exact), an
approximate index searches a small matching set by brute force, and the FTS5
query joins the filter in SQL. So a filtered query returns the top ``k`` of
the matching articles, never the matching few of an unfiltered top ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .filters import Filter
from .keywords import marked_spans
from .records import Hit
from .store import ChunkRow, Store
from .vectors import VectorIndex

MODES = ("hybrid", "semantic", "keyword")
DEFAULT_MODE = "hybrid"

# Hybrid score = W × cosine + (1 − W) × BM25 / (the best BM25 among matching chunks).
# Cosine is kept as it is (its range is fixed), BM25 is divided by the query's
# best so it lies in [0, 1]; "theoretical min-max" normalisation, which Bruch et
# al. (2023, "An analysis of fusion functions for hybrid retrieval") found more
# robust than min-max over the results, and which needs no statistics of the
# result list. A weighted sum beat reciprocal rank fusion on SciFact by 0.04
# nDCG@10 because it keeps how much better one result is than the next. W was
# tuned on one half of SciFact's queries (the same W was best on the other
# half); see benchmarks/README.md.
HYBRID_WEIGHT = 0.7
# Candidates taken from each ranking before fusion; the fused list is scored
# exactly over their union, so recall@100 needs at least 100.
HYBRID_POOL = 100
# An approximate index (HNSW, IVF) searches a filtered set this small by brute
# force, exactly; a larger one goes through FAISS's selector.
BRUTE_FORCE_LIMIT = 50_000
_FETCH_FACTOR = 4
_MIN_FETCH = 20


@dataclass(frozen=True)
class Query:
    """One query, prepared for the mode: its unit vector and its FTS5 expression."""

    vector: np.ndarray | None
    match: str | None


@dataclass(frozen=True)
class _Ranked:
    score: float
    chunk_id: int
    semantic: float | None = None
    keyword: float | None = None


def search(
    vectors: VectorIndex,
    store: Store,
    queries: Sequence[Query],
    k: int,
    *,
    mode: str = DEFAULT_MODE,
    group: bool = True,
    where: Filter | None = None,
    highlight: bool = True,
    hybrid_weight: float = HYBRID_WEIGHT,
) -> list[list[Hit]]:
    """Rank articles (or chunks, ``group=False``) for each query; one hit list per query."""
    scope = _Scope.of(store, where) if where is not None else None
    ranked: list[list[_Ranked]] = []
    for query in queries:
        if scope is not None and scope.empty:
            ranked.append([])
        elif mode == "semantic":
            assert query.vector is not None
            ranked.append(_semantic(vectors, store, query.vector, k, group, scope))
        elif mode == "keyword":
            ranked.append(_keyword(store, query.match, k, group, where))
        else:
            assert query.vector is not None
            ranked.append(_hybrid(vectors, store, query, k, group, where, scope, hybrid_weight))
    rows = store.chunk_rows([r.chunk_id for hits in ranked for r in hits])
    hits = []
    for query, picked in zip(queries, ranked, strict=True):
        marked = {}
        if highlight and query.match is not None and picked:
            marked = store.highlighted(query.match, [r.chunk_id for r in picked])
        hits.append(
            [
                _hit(rank, mode, r, rows[r.chunk_id], marked.get(r.chunk_id))
                for rank, r in enumerate(picked, start=1)
            ]
        )
    return hits


@dataclass(frozen=True)
class _Scope:
    """The chunks a filter lets through: ids ascending, with their articles."""

    ids: np.ndarray
    articles: np.ndarray

    @classmethod
    def of(cls, store: Store, where: Filter) -> _Scope:
        ids, articles = store.filtered_chunks(where.sql, where.params)
        return cls(ids, articles)

    @property
    def empty(self) -> bool:
        return len(self.ids) == 0


# -- semantic ----------------------------------------------------------------------


def _semantic(
    vectors: VectorIndex,
    store: Store,
    query: np.ndarray,
    k: int,
    group: bool,
    scope: _Scope | None,
) -> list[_Ranked]:
    if vectors.ntotal == 0:
        return []
    if scope is not None and not vectors.exact and len(scope.ids) <= BRUTE_FORCE_LIMIT:
        ids, articles, chunk_vectors = store.chunk_vectors(scope.ids.tolist(), vectors.dim)
        scores = chunk_vectors @ query
        order = np.argsort(-scores, kind="stable")
        return _pick(scores[order], ids[order], articles[order], k, group)
    only = scope.ids if scope is not None else None
    limit = vectors.ntotal if only is None else len(only)
    fetch = min(limit, max(k * _FETCH_FACTOR, _MIN_FETCH) if group else k)
    while True:
        scores, ids = vectors.search(query[None, :], fetch, only)
        scores, ids = scores[0], ids[0]
        keep = ids >= 0
        scores, ids = scores[keep], ids[keep]
        article_of = store.chunk_articles(ids) if group else {}
        articles = np.asarray([article_of.get(int(i), -1) for i in ids], dtype=np.int64)
        best = _pick(scores, ids, articles, k, group)
        if len(best) >= k or fetch >= limit:
            return best
        fetch = min(limit, fetch * _FETCH_FACTOR)


def _pick(
    scores: np.ndarray, ids: np.ndarray, articles: np.ndarray, k: int, group: bool
) -> list[_Ranked]:
    """The first k chunks, or the best chunk of each of the first k articles (input best first)."""
    picked: list[_Ranked] = []
    seen: set[int] = set()
    for score, chunk_id, article in zip(scores, ids, articles, strict=True):
        if group:
            if article in seen or article < 0:
                continue
            seen.add(int(article))
        picked.append(_Ranked(float(score), int(chunk_id), semantic=float(score)))
        if len(picked) == k:
            break
    return picked


# -- keyword -----------------------------------------------------------------------


def _keyword_matches(
    store: Store, match: str | None, where: Filter | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every matching chunk, best first: (BM25 scores, chunk ids, article keys)."""
    if match is None:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0), empty, empty
    sql, params = (where.sql, where.params) if where is not None else (None, ())
    ids, articles, scores = store.keyword_chunks(match, sql, params)
    # Ties (equal BM25) are broken by chunk id, so results are reproducible.
    order = np.lexsort((ids, -scores))
    return scores[order], ids[order], articles[order]


def _keyword(
    store: Store, match: str | None, k: int, group: bool, where: Filter | None
) -> list[_Ranked]:
    scores, ids, articles = _keyword_matches(store, match, where)
    picked = _pick(scores, ids, articles, k, group)
    return [_Ranked(r.score, r.chunk_id, keyword=r.score) for r in picked]


# -- hybrid ------------------------------------------------------------------------


def _hybrid(
    vectors: VectorIndex,
    store: Store,
    query: Query,
    k: int,
    group: bool,
    where: Filter | None,
    scope: _Scope | None,
    weight: float,
) -> list[_Ranked]:
    """Fuse the semantic and keyword rankings, scoring every candidate in both exactly."""
    assert query.vector is not None
    pool = max(k, HYBRID_POOL)
    dense = _semantic(vectors, store, query.vector, pool, True, scope)
    kw_scores, kw_ids, kw_articles = _keyword_matches(store, query.match, where)
    kw_top = _pick(kw_scores, kw_ids, kw_articles, pool, True)
    candidates = {r.chunk_id for r in dense} | {r.chunk_id for r in kw_top}
    if not candidates:
        return []
    article_of = store.chunk_articles(list(candidates))
    # Every chunk of every candidate article, so that each gets its exact best
    # cosine and best BM25, whichever list it came from.
    ids, articles, chunk_vectors = store.article_vectors(
        sorted(set(article_of.values())), vectors.dim
    )
    cosine = chunk_vectors @ query.vector
    bm25_of = dict(zip(kw_ids.tolist(), kw_scores.tolist(), strict=True))
    bm25 = np.asarray([bm25_of.get(int(i), 0.0) for i in ids])
    best_bm25 = float(kw_scores[0]) if len(kw_scores) else 1.0
    fused = weight * cosine + (1 - weight) * bm25 / best_bm25
    if not group:
        order = np.lexsort((ids, -fused))[:k]
        return [
            _Ranked(float(fused[i]), int(ids[i]), float(cosine[i]), float(bm25[i])) for i in order
        ]
    ranked = []
    for article in np.unique(articles):
        rows = np.flatnonzero(articles == article)
        semantic, keyword = float(cosine[rows].max()), float(bm25[rows].max())
        score = weight * semantic + (1 - weight) * keyword / best_bm25
        snippet = int(ids[rows[np.argmax(fused[rows])]])
        ranked.append(_Ranked(score, snippet, semantic, keyword))
    ranked.sort(key=lambda r: (-r.score, r.chunk_id))
    return ranked[:k]


def _hit(rank: int, mode: str, ranked: _Ranked, row: ChunkRow, marked: str | None) -> Hit:
    return Hit(
        rank=rank,
        score=ranked.score,
        article_id=row.article_id,
        title=row.title,
        url=row.url,
        date=row.date,
        source=row.source,
        author=row.author,
        tags=row.tags,
        text=row.text,
        start=row.start,
        end=row.end,
        chunk_id=row.chunk_id,
        chunk_ordinal=row.ordinal,
        metadata=row.metadata,
        mode=mode,
        semantic_score=ranked.semantic,
        keyword_score=ranked.keyword,
        highlights=marked_spans(marked, row.text) if marked is not None else (),
    )
