"""Tuning a compressed segment's search to a recall target, when it is written.

A compressed segment (IVF lists of 4-bit PQ codes, see
:func:`semsearch.vectors.compressed_factory`) is searched in two steps: the
IVF search visits ``nprobe`` lists (found by an HNSW coarse quantizer with
``ef_search``) and returns a shortlist of ``k_factor * k`` candidates by
their approximate scores; the shortlist is re-ranked with the exact vectors
(memory-mapped beside the segment). Those three settings trade speed for
recall, and the right ones depend on the data, so :func:`tune` measures them
on the segment itself, as FAISS's ``OperatingPoints`` does
(``faiss/AutoTune.cpp``): for each setting, recall@10 against exact search
and the time per query, and it keeps the fastest setting whose recall reaches
the target.

The queries are a held-out sample of the segment's own vectors (each query's
own vector left out of its truth and its results, so a vector never finds
itself), or the caller's query vectors. Recall@10 is the share of the exact
top 10 found in the top 10 returned (intersection over 10), the measure of
big-ann-benchmarks and of FAISS's benchmarks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import TUNING_QUERIES
from .vectors import SearchSettings, VectorIndex, release_pages

K = 10
"""Recall is measured at 10, the default k."""
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
K_FACTORS = (1, 2, 4, 8, 16, 32, 64)
TIMED = 100
"""Queries timed one at a time per setting (recall is measured on all of them, in a batch)."""
HELD_OUT_MARGIN = 4
"""Held-out vectors of the collection are easier queries than real ones (their
nearest neighbours are near-duplicate chunks, far closer than a question's):
on SciFact, settings reaching recall@10 0.967 on held-out chunk vectors reached
0.915 on the real queries, and 0.992 reached 0.965. So on held-out vectors,
tuning aims at ``1 - (1 - target) / HELD_OUT_MARGIN`` (0.9875 for 0.95); on
the caller's queries, at the target itself."""
BLOCK = 16_384
"""Exact vectors scored at a time for the ground truth: 6 MB of 384-d float32,
and 33 MB of scores (plus their 65 MB ordering) for 500 queries."""
RERANK_FLOATS = 4 * 2**20
"""Exact vector components gathered at a time when re-ranking (16 MB): a batch
of queries' shortlists is re-ranked together, never all of them at once (500
queries x 640 candidates x 384 dimensions would be 490 MB)."""


@dataclass(frozen=True)
class Tuning:
    """What tuning chose for a segment, and what it measured.

    Attributes:
        settings: the chosen nprobe, quantizer efSearch and shortlist factor.
        recall: recall@10 against exact search with those settings, on ``queries``.
        target: the recall@10 it was asked to reach.
        queries: how many query vectors it was measured on.
        held_out: whether they were the segment's own vectors (else the caller's).
        query_ms: the measured search time per single query, in milliseconds
            (FAISS on one thread, re-ranking included).
        seconds: the time tuning took, ground truth included, in seconds.
    """

    settings: SearchSettings
    recall: float
    target: float
    queries: int
    held_out: bool
    query_ms: float
    seconds: float

    @property
    def reached(self) -> bool:
        return self.recall >= self.target

    @property
    def aimed_at(self) -> float:
        """The recall tuning aimed at: the target, raised on held-out vectors."""
        return 1 - (1 - self.target) / HELD_OUT_MARGIN if self.held_out else self.target

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.settings.to_dict(),
            "recall_at_10": round(self.recall, 4),
            "recall_target": self.target,
            "aimed_at": round(self.aimed_at, 4),
            "queries": self.queries,
            "held_out": self.held_out,
            "query_ms": round(self.query_ms, 4),
            "tuning_seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tuning:
        return cls(
            settings=SearchSettings.from_dict(data),
            recall=float(data.get("recall_at_10", 0.0)),
            target=float(data.get("recall_target", 0.0)),
            queries=int(data.get("queries", 0)),
            held_out=bool(data.get("held_out", True)),
            query_ms=float(data.get("query_ms", 0.0)),
            seconds=float(data.get("tuning_seconds", 0.0)),
        )


def shortlist_size(k: int, k_factor: int) -> int:
    """Candidates to re-rank for the k best: ``k_factor * k`` up to k = :data:`K`,
    then one more per further result.

    Tuning measures the shortlist the top :data:`K` need. A search asking for
    more (grouping chunks by article asks for 4k) gets the extra results'
    worth on top, not ``k_factor`` times them: at k = 40 and a factor of 16,
    190 candidates instead of 640, the same recall at 10, and a quarter of the
    re-ranking (most of a compressed index's query time).
    """
    factor = max(1, k_factor)
    return factor * min(k, K) + max(0, k - K)


def exact_top_k(
    queries: np.ndarray, vectors: np.ndarray, k: int, skip: np.ndarray | None = None
) -> np.ndarray:
    """Positions of the exact top k of each query among ``vectors``, by inner product.

    Reads ``vectors`` (which may be memory-mapped) :data:`BLOCK` rows at a
    time, so memory stays ``O(len(queries) * (BLOCK + k))``.

    Args:
        queries: ``(q, dim)`` float32.
        vectors: ``(n, dim)`` float32.
        k: results per query.
        skip: ``(q,)`` int64: a position to leave out per query (its own), or None.

    Returns:
        ``(q, min(k, n))`` int64 positions, best first.
    """
    n = len(vectors)
    kk = min(k, n - (1 if skip is not None else 0))
    best_scores = np.full((len(queries), kk), -np.inf, dtype=np.float32)
    best = np.full((len(queries), kk), -1, dtype=np.int64)
    rows = np.arange(len(queries))
    for start in range(0, n, BLOCK):
        block = np.asarray(vectors[start : start + BLOCK], dtype=np.float32)
        scores = queries @ block.T
        if skip is not None:
            inside = (skip >= start) & (skip < start + len(block))
            scores[rows[inside], skip[inside] - start] = -np.inf
        # The block's own top kk first, then merged with the best so far: the
        # (q, BLOCK) arrays are never widened or copied.
        if len(block) > kk:
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        else:
            top = np.broadcast_to(np.arange(len(block)), (len(queries), len(block)))
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], 1)
        merged = np.concatenate([best, top + start], axis=1)
        del scores
        keep = np.argpartition(-merged_scores, kk - 1, axis=1)[:, :kk]
        best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best = np.take_along_axis(merged, keep, axis=1)
        release_pages(vectors)  # read once: not kept in the resident set
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def rerank(
    queries: np.ndarray,
    candidates: np.ndarray,
    ids: np.ndarray,
    exact: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidate ids with their exact vectors; the k best per query.

    Args:
        queries: ``(q, dim)`` float32.
        candidates: ``(q, s)`` int64 candidate ids, -1 for none.
        ids: ``(n,)`` int64 ascending ids of the segment, aligned with ``exact``.
        exact: ``(n, dim)`` float32 exact vectors (memory-mapped is fine).
        k: results per query.

    Returns:
        ``(q, min(k, s))`` float32 exact scores and int64 ids, best first
        (ties by ascending id), ids -1 where there are fewer candidates.
    """
    q, s = candidates.shape
    if s == 0 or len(ids) == 0:
        return np.zeros((q, 0), dtype=np.float32), np.zeros((q, 0), dtype=np.int64)
    kk = min(k, s)
    best_scores = np.empty((q, kk), dtype=np.float32)
    best_ids = np.empty((q, kk), dtype=np.int64)
    step = max(1, RERANK_FLOATS // max(1, s * queries.shape[1]))
    for start in range(0, q, step):
        part = slice(start, min(q, start + step))
        best_scores[part], best_ids[part] = _rerank(queries[part], candidates[part], ids, exact, kk)
    return best_scores, best_ids


def _rerank(
    queries: np.ndarray, candidates: np.ndarray, ids: np.ndarray, exact: np.ndarray, kk: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rerank` of one batch of queries, ``kk <= candidates.shape[1]``."""
    valid = candidates >= 0
    scores = np.full(candidates.shape, -np.inf, dtype=np.float32)
    rows, _ = np.nonzero(valid)
    scores[valid] = exact_scores_of(queries[rows], candidates[valid], ids, exact)
    return top_k(scores, candidates, kk)


def exact_scores_of(
    queries: np.ndarray, chunk_ids: np.ndarray, ids: np.ndarray, exact: np.ndarray
) -> np.ndarray:
    """Each query's inner product with its chunk's exact vector: ``(m,)`` float32.

    Args:
        queries: ``(m, dim)`` float32, one per chunk.
        chunk_ids: ``(m,)`` int64 ids, each one of ``ids``.
        ids: ``(n,)`` int64 ascending ids, aligned with ``exact``.
        exact: ``(n, dim)`` float32 exact vectors (memory-mapped is fine).
    """
    positions = np.searchsorted(ids, chunk_ids)
    # Each row read once, in file order (random reads of a mapped file are cheapest sorted).
    unique, inverse = np.unique(positions, return_inverse=True)
    vectors = np.asarray(exact[unique], dtype=np.float32)[inverse.ravel()]
    return np.einsum("md,md->m", vectors, queries).astype(np.float32)


def top_k(scores: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of scored candidates (``(q, s)``; -inf: none), best first, ties by
    ascending id: ``(q, min(k, s))`` float32 scores and int64 ids, -1 where none."""
    kk = min(k, candidates.shape[1])
    valid = candidates >= 0
    order = np.lexsort((np.where(valid, candidates, np.iinfo(np.int64).max), -scores), axis=-1)
    order = order[:, :kk]
    best_scores = np.take_along_axis(scores, order, axis=1)
    best_ids = np.take_along_axis(candidates, order, axis=1)
    return best_scores, np.where(np.isneginf(best_scores), -1, best_ids)


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    """Mean share of each query's true top k among its first k found: ``|F ∩ T| / k``."""
    if len(truth) == 0:
        return 1.0
    kk = min(k, truth.shape[1])
    hits = [
        len(np.intersect1d(f[:kk][f[:kk] >= 0], t[:kk])) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) / kk if kk else 1.0


def tune(
    index: VectorIndex,
    ids: np.ndarray,
    exact: np.ndarray,
    target: float,
    queries: np.ndarray | None = None,
    seed: int = 0,
) -> Tuning:
    """The fastest search settings of a compressed segment reaching ``target`` recall@10.

    Args:
        index: the segment's IVF index, its vectors added.
        ids: ``(n,)`` int64 ascending ids of its vectors.
        exact: ``(n, dim)`` float32 exact vectors, aligned with ``ids``.
        target: recall@10 to reach, in (0, 1].
        queries: ``(q, dim)`` float32 query vectors to tune on; default: up to
            :data:`~semsearch.config.TUNING_QUERIES` of the segment's own
            vectors, drawn at random and held out of their own results.
        seed: for the sample.

    Returns:
        the chosen settings with what they measured. On held-out vectors the
        recall aimed at is higher than the target (:data:`HELD_OUT_MARGIN`).
        Where no setting reaches it, the one of highest recall.
    """
    started = time.perf_counter()
    n = len(ids)
    held_out = queries is None
    aim = 1 - (1 - target) / HELD_OUT_MARGIN if held_out else target
    if queries is None:
        rng = np.random.default_rng(seed)
        count = min(TUNING_QUERIES, max(1, n // 10))
        sample = np.sort(rng.choice(n, size=count, replace=False))
        queries = np.asarray(exact[sample], dtype=np.float32)
        truth = ids[exact_top_k(queries, exact, K, skip=sample)]
        own = ids[sample]
    else:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        truth = ids[exact_top_k(queries, exact, K)]
        own = None
    extra = 1 if own is not None else 0
    nlist = index.nlist or 1
    best: tuple[float, float, SearchSettings] | None = None  # (recall, ms, settings)
    fallback: tuple[float, SearchSettings] | None = None
    for nprobe in [p for p in NPROBES if p <= nlist] or [nlist]:
        ef_search = max(2 * nprobe, 32)
        if best is not None:
            # The cheapest search at this nprobe (k = 10, no re-ranking) already
            # costs more than the best setting found: so does every further one.
            floor = SearchSettings(nprobe, ef_search, 1)
            if _query_ms(index, ids, exact, queries, floor) >= best[1]:
                break
        probe = SearchSettings(nprobe, ef_search, K_FACTORS[-1])
        _, found = index.search(queries, K * K_FACTORS[-1] + extra, settings=probe)
        for k_factor in K_FACTORS:
            _, top = rerank(queries, _without(found, own, K * k_factor), ids, exact, K)
            recall = recall_at(top, truth)
            chosen = SearchSettings(nprobe, ef_search, k_factor)
            if recall >= aim:
                # A longer shortlist only costs more: time this one, go on to the next nprobe.
                ms = _query_ms(index, ids, exact, queries, chosen)
                if best is None or ms < best[1]:
                    best = (recall, ms, chosen)
                break
            if fallback is None or recall > fallback[0]:
                fallback = (recall, chosen)
        release_pages(exact)  # 500 shortlists touch much of a mapped file
    if best is None:  # the target is out of reach: the highest recall seen
        recall, settings = fallback or (0.0, SearchSettings())
        best = (recall, _query_ms(index, ids, exact, queries, settings), settings)
    recall, ms, settings = best
    return Tuning(
        settings=settings,
        recall=recall,
        target=target,
        queries=len(queries),
        held_out=held_out,
        query_ms=ms,
        seconds=time.perf_counter() - started,
    )


def _query_ms(
    index: VectorIndex,
    ids: np.ndarray,
    exact: np.ndarray,
    queries: np.ndarray,
    settings: SearchSettings,
) -> float:
    """Milliseconds per query, searching :data:`TIMED` queries one at a time as a user
    does: the IVF search for ``k_factor * 10`` candidates, and their re-ranking."""
    timed = queries[:TIMED]
    shortlist = K * settings.k_factor
    t0 = time.perf_counter()
    for i in range(len(timed)):
        query = timed[i : i + 1]
        _, candidates = index.search(query, shortlist, settings=settings)
        if settings.k_factor > 1:
            rerank(query, candidates, ids, exact, K)
    return (time.perf_counter() - t0) * 1000 / max(1, len(timed))


def _without(found: np.ndarray, own: np.ndarray | None, width: int) -> np.ndarray:
    """The first ``width`` candidates of each row, its query's own id left out."""
    if own is None:
        return found[:, :width]
    out = np.full((len(found), width), -1, dtype=np.int64)
    for i, row in enumerate(found):
        kept = row[row != own[i]][:width]
        out[i, : len(kept)] = kept
    return out
