"""Queries → ranked :class:`~semsearch.records.Hit` lists, in three modes.

- ``semantic``: cosine similarity of the query vector to chunk vectors (FAISS).
- ``keyword``: BM25 over the chunks' title and text (the segments' postings, or SQLite FTS5).
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import impacts, maxscore, tokens
from .filters import Filter
from .keywords import marked_spans
from .records import COMMON_FIELDS, Hit
from .segments import SegmentSet
from .store import ChunkRow, Store

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
# Candidates taken from each ranking before fusion (at least k); the fused list is
# scored exactly over their union. On SciFact at k=10, nDCG@10 is 0.742 with 100, 50
# or 30 candidates (0.741 with 20; `python -m benchmarks.fusion`), and each ranking's
# top 30 costs far less than its top 100 at ten million chunks.
HYBRID_POOL = 30
# Below this best BM25 a query's words carry no keyword evidence (each is in more than
# half the chunks, so FTS5 floors its idf at 1e-6): hybrid then ranks by cosine alone.
MIN_BEST_BM25 = 1e-3
# An approximate index (HNSW, IVF) searches a filtered set this small by brute
# force, exactly; a larger one goes through FAISS's selector.
BRUTE_FORCE_LIMIT = 50_000
_FETCH_FACTOR = 4
_MIN_FETCH = 20
_MAX_RUNS = 64


@dataclass(frozen=True)
class Query:
    """One query, prepared for the mode: its unit vector and its FTS5 expression.

    ``user_fts5``: the expression is the user's own, so SQLite rejecting it is
    bad input (see :func:`semsearch.store.sqlite_errors`).
    """

    vector: np.ndarray | None
    match: str | None
    user_fts5: bool = False


@dataclass(frozen=True)
class _Ranked:
    score: float
    chunk_id: int
    semantic: float | None = None
    keyword: float | None = None


def search(
    vectors: SegmentSet,
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
    # Removed articles keep their rows until a merge: their chunks are the
    # tombstones, which every ranking leaves out (vector search inside FAISS).
    dead = vectors.dead
    scope = _Scope.of(store, where, dead) if where is not None else None
    ranked: list[list[_Ranked]] = []
    for query in queries:
        if scope is not None and scope.empty:
            ranked.append([])
        elif mode == "semantic":
            assert query.vector is not None
            ranked.append(_semantic(vectors, store, query.vector, k, group, scope))
        elif mode == "keyword":
            matches = KeywordMatches.of(vectors, store, query, where, scope)
            ranked.append(matches.ranking(store, k, group))
        else:
            assert query.vector is not None
            ranked.append(_hybrid(vectors, store, query, k, group, where, scope, hybrid_weight))
    rows = store.chunk_rows([r.chunk_id for hits in ranked for r in hits])
    hits = []
    for query, picked in zip(queries, ranked, strict=True):
        marked = {}
        if highlight and query.match is not None and picked:
            chunk_ids = [r.chunk_id for r in picked]
            marked = tokens.highlighted(store, query.match, chunk_ids, user_fts5=query.user_fts5)
        hits.append(
            [
                _hit(rank, mode, r, rows[r.chunk_id], marked.get(r.chunk_id))
                for rank, r in enumerate(picked, start=1)
            ]
        )
    return hits


@dataclass(frozen=True)
class _Scope:
    """The ids of the chunks a filter lets through, ascending."""

    ids: np.ndarray

    @classmethod
    def of(cls, store: Store, where: Filter, dead: np.ndarray) -> _Scope:
        ids = store.filtered_chunks(where.sql, where.params)
        return cls(_live(ids, dead))

    @property
    def empty(self) -> bool:
        return len(self.ids) == 0


# -- semantic ----------------------------------------------------------------------


def _semantic(
    vectors: SegmentSet,
    store: Store,
    query: np.ndarray,
    k: int,
    group: bool,
    scope: _Scope | None,
) -> list[_Ranked]:
    if vectors.ntotal == 0:
        return []
    if scope is not None and not vectors.exact and len(scope.ids) <= BRUTE_FORCE_LIMIT:
        ids, chunk_vectors = vectors.vectors_of(scope.ids)
        articles = _articles_of(store, ids)
        scores = chunk_vectors @ query
        order = np.argsort(-scores, kind="stable")
        picked = _pick(scores[order], ids[order], articles[order], k, group)
        return [_Ranked(score, chunk_id, semantic=score) for score, chunk_id in picked]
    only = scope.ids if scope is not None else None

    def best(n: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = vectors.search(query[None, :], n, only)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def article_keys(ids: np.ndarray) -> np.ndarray:
        keys = impacts.article_keys(store.path.parent, vectors, ids)
        return keys if keys is not None else _articles_of(store, ids)

    limit = vectors.ntotal if only is None else len(only)
    picked = _until_k(best, limit, store, k, group, article_keys)
    return [_Ranked(score, chunk_id, semantic=score) for score, chunk_id in picked]


def _until_k(
    best: Callable[[int], tuple[np.ndarray, np.ndarray]],
    limit: int,
    store: Store,
    k: int,
    group: bool,
    articles: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[tuple[float, int]]:
    """The k best (score, chunk id), or the k best articles' best chunks.

    ``best(n)`` gives the n best chunks, best first (scores, ids), of ``limit``
    in all. Grouping by article, more are asked for until k distinct articles
    are found or all ``limit`` were given. ``articles(ids)`` gives each chunk's
    article key (default: from the store).
    """
    fetch = min(limit, max(k * _FETCH_FACTOR, _MIN_FETCH) if group else k)
    while True:
        scores, ids = best(fetch)
        if not group:
            keys = np.full(len(ids), -1, dtype=np.int64)
        else:
            keys = articles(ids) if articles is not None else _articles_of(store, ids)
        picked = _pick(scores, ids, keys, k, group)
        if len(picked) >= k or fetch >= limit:
            return picked
        fetch = min(limit, fetch * _FETCH_FACTOR)


def _pick(
    scores: np.ndarray, ids: np.ndarray, articles: np.ndarray, k: int, group: bool
) -> list[tuple[float, int]]:
    """The first k (score, chunk id), or each of the first k articles' best (input best first)."""
    picked: list[tuple[float, int]] = []
    seen: set[int] = set()
    for score, chunk_id, article in zip(scores, ids, articles, strict=True):
        if group:
            if article in seen or article < 0:
                continue
            seen.add(int(article))
        picked.append((float(score), int(chunk_id)))
        if len(picked) == k:
            break
    return picked


# -- keyword -----------------------------------------------------------------------


class KeywordMatches:
    """Every live chunk matching a keyword query, as FTS5 scores them: ids and BM25, unordered.

    Where the query is plain words and every segment has postings, :meth:`of`
    gives :class:`ScoredMatches` instead, which scores only what can enter the
    top (:mod:`semsearch.maxscore`). FTS5 serves the rest: the user's own FTS5
    syntax, the prefix and two-word alternatives of no-space scripts, segments
    written before postings existed. Both give FTS5's BM25 formula.
    """

    def __init__(self, ids: np.ndarray, scores: np.ndarray) -> None:
        self.ids = ids
        self.scores = scores
        self._runs: np.ndarray | None = None  # where ascending runs of ids start and end

    @classmethod
    def of(
        cls,
        vectors: SegmentSet,
        store: Store,
        query: Query,
        where: Filter | None,
        scope: _Scope | None,
    ) -> KeywordMatches | ScoredMatches:
        """The query's matches: scored from the postings where they serve, else by FTS5."""
        if query.match is None:
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0))
        if not query.user_fts5:
            terms = tokens.query_tokens(store, query.match)
            if terms is not None:
                only = scope.ids if scope is not None else None
                scorer = maxscore.scorer(store.path.parent, vectors, terms, only)
                if scorer is not None:
                    return ScoredMatches(scorer, vectors)
        sql, params = (where.sql, where.params) if where is not None else (None, ())
        ids, scores = store.keyword_matches(query.match, sql, params, user_fts5=query.user_fts5)
        keep = _live_mask(ids, vectors.dead)
        return cls(ids[keep], scores[keep])

    @property
    def best(self) -> float:
        """The best BM25 among the matches (1.0 with none)."""
        return float(self.scores.max()) if len(self.scores) else 1.0

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n best (scores, ids), best first; ties broken by chunk id (reproducible)."""
        order = self._best(n)
        return self.scores[order], self.ids[order]

    def _best(self, n: int) -> np.ndarray:
        """Positions of the n best matches, best first."""
        if n < len(self.scores):
            # Every score tied with the n-th best comes along, so the tie-break is exact.
            cut = np.partition(self.scores, len(self.scores) - n)[len(self.scores) - n]
            pool = np.flatnonzero(self.scores >= cut)
        else:
            pool = np.arange(len(self.scores))
        return pool[np.lexsort((self.ids[pool], -self.scores[pool]))][:n]

    def scores_of(self, chunk_ids: np.ndarray) -> np.ndarray:
        """BM25 of these chunks, 0 for those that do not match."""
        found = np.zeros(len(chunk_ids))
        if len(self.ids) == 0:
            return found
        if self._runs is None:
            # The postings give each segment's matches in ascending id order: a
            # binary search in each run, rather than sorting a million matches.
            breaks = np.flatnonzero(self.ids[1:] < self.ids[:-1]) + 1
            if len(breaks) > _MAX_RUNS:
                order = np.argsort(self.ids, kind="stable")
                self.ids, self.scores = self.ids[order], self.scores[order]
                breaks = breaks[:0]
            self._runs = np.r_[0, breaks, len(self.ids)]
        for start, end in zip(self._runs[:-1], self._runs[1:], strict=True):
            run = self.ids[start:end]
            at = np.searchsorted(run, chunk_ids).clip(max=len(run) - 1)
            hit = run[at] == chunk_ids
            found[hit] = self.scores[start:end][at[hit]]
        return found

    def ranking(self, store: Store, k: int, group: bool) -> list[_Ranked]:
        """The k best articles (their best chunks), or the k best chunks."""
        picked = _until_k(self.top, len(self.ids), store, k, group)
        return [_Ranked(score, chunk_id, keyword=score) for score, chunk_id in picked]


class ScoredMatches:
    """A keyword query's matches scored from the segments' postings, on demand: the top
    by MaxScore (:class:`semsearch.maxscore.Scorer`), any chunk's BM25 by lookup."""

    def __init__(self, scorer: maxscore.Scorer, vectors: SegmentSet) -> None:
        self._scorer = scorer
        self._vectors = vectors

    @property
    def best(self) -> float:
        """The best BM25 among the matches (1.0 with none)."""
        return self._scorer.best

    def scores_of(self, chunk_ids: np.ndarray) -> np.ndarray:
        """BM25 of these chunks, 0 for those that do not match."""
        return self._scorer.scores_of(chunk_ids, self._vectors)

    def ranking(self, store: Store, k: int, group: bool) -> list[_Ranked]:
        """The k best articles (their best chunks), or the k best chunks."""
        scores, ids, articles = self._scorer.top(k, group)
        picked = _pick(scores, ids, articles, k, group)
        return [_Ranked(score, chunk_id, keyword=score) for score, chunk_id in picked]


# -- hybrid ------------------------------------------------------------------------


def _hybrid(
    vectors: SegmentSet,
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
    matches = KeywordMatches.of(vectors, store, query, where, scope)
    sparse = matches.ranking(store, pool, True)
    candidates = {r.chunk_id for r in dense} | {r.chunk_id for r in sparse}
    if not candidates:
        return []
    pool_ids = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
    article_of = impacts.articles_of(store.path.parent, vectors, pool_ids)
    if article_of is None:
        article_of = store.chunk_articles(pool_ids.tolist())
    # Every chunk of every candidate article, so that each gets its exact best
    # cosine and best BM25, whichever list it came from.
    ids, articles = store.chunks_of_articles(sorted(set(article_of.values())))
    found, chunk_vectors = vectors.vectors_of(ids)
    ids, articles = _aligned(found, ids, articles)
    cosine = chunk_vectors @ query.vector
    bm25 = matches.scores_of(ids)
    # BM25 / the best BM25; none where even the best is at FTS5's floor for words in
    # over half the chunks (~1e-6): divided by it, noise would weigh like a match.
    per_bm25 = 1.0 / matches.best if matches.best >= MIN_BEST_BM25 else 0.0
    fused = weight * cosine + (1 - weight) * bm25 * per_bm25
    if not group:
        order = np.lexsort((ids, -fused))[:k]
        return [
            _Ranked(float(fused[i]), int(ids[i]), float(cosine[i]), float(bm25[i])) for i in order
        ]
    # Group the chunks by article, each article's best fused chunk first.
    order = np.lexsort((ids, -fused, articles))
    starts = np.flatnonzero(np.r_[True, articles[order][1:] != articles[order][:-1]])
    semantic = np.maximum.reduceat(cosine[order], starts)
    keyword = np.maximum.reduceat(bm25[order], starts)
    snippets = ids[order][starts]
    scores = weight * semantic + (1 - weight) * keyword * per_bm25
    top = np.lexsort((snippets, -scores))[:k]
    return [
        _Ranked(float(scores[i]), int(snippets[i]), float(semantic[i]), float(keyword[i]))
        for i in top
    ]


def _hit(rank: int, mode: str, ranked: _Ranked, row: ChunkRow, marked: str | None) -> Hit:
    return Hit(
        rank=rank,
        score=ranked.score,
        article_id=row.article_id,
        **{f: getattr(row, f) for f in COMMON_FIELDS},
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


def _articles_of(store: Store, chunk_ids: np.ndarray) -> np.ndarray:
    """Each chunk's article key, ``(n,)`` int64 (-1 for a chunk not stored)."""
    article_of = store.chunk_articles(chunk_ids.tolist())
    return np.asarray([article_of.get(int(i), -1) for i in chunk_ids], dtype=np.int64)


def _aligned(
    found: np.ndarray, ids: np.ndarray, articles: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The (ids, article keys) in the order of ``found`` (ids whose vectors were found)."""
    article_of = dict(zip(ids.tolist(), articles.tolist(), strict=True))
    return found, np.asarray([article_of[int(i)] for i in found], dtype=np.int64)


def _live_mask(ids: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """Which of these chunk ids are not tombstoned."""
    return ~np.isin(ids, dead) if len(dead) else np.ones(len(ids), dtype=bool)


def _live(ids: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """These chunk ids without the tombstoned ones (order kept)."""
    return ids[~np.isin(ids, dead)] if len(dead) else ids
