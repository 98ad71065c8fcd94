"""Query vectors → ranked :class:`~semsearch.records.Hit` lists.

Grouped search returns one hit per article, its best chunk, and ``k`` means
``k`` distinct articles: when several chunks of one article crowd the top, it
asks FAISS for more until ``k`` articles are found or the index is exhausted.
"""

from __future__ import annotations

import numpy as np

from .records import Hit
from .store import ChunkRow, Store
from .vectors import VectorIndex

# First fetch for grouped search: a few chunks per wanted article.
_FETCH_FACTOR = 4
_MIN_FETCH = 20


def search_vectors(
    vectors: VectorIndex, store: Store, queries: np.ndarray, k: int, group: bool = True
) -> list[list[Hit]]:
    """Search unit query vectors (shape ``(n, dim)``); one hit list per query."""
    if vectors.ntotal == 0 or len(queries) == 0:
        return [[] for _ in range(len(queries))]
    fetch = min(vectors.ntotal, max(k * _FETCH_FACTOR, _MIN_FETCH) if group else k)
    scores, ids = vectors.search(queries, fetch)
    picked: list[list[tuple[float, int]]] = []
    for row in range(len(queries)):
        s, i = scores[row], ids[row]
        while True:
            best = _best_per_article(store, s, i, k) if group else _raw(s, i, k)
            if len(best) >= k or len(i) >= vectors.ntotal:
                break
            fetch = min(vectors.ntotal, len(i) * _FETCH_FACTOR)
            more_scores, more_ids = vectors.search(queries[row : row + 1], fetch)
            s, i = more_scores[0], more_ids[0]
        picked.append(best)
    rows = store.chunk_rows([cid for hits in picked for _, cid in hits])
    return [
        [_hit(rank, score, rows[cid]) for rank, (score, cid) in enumerate(hits, start=1)]
        for hits in picked
    ]


def _raw(scores: np.ndarray, ids: np.ndarray, k: int) -> list[tuple[float, int]]:
    return [(float(s), int(i)) for s, i in zip(scores, ids, strict=True) if i >= 0][:k]


def _best_per_article(
    store: Store, scores: np.ndarray, ids: np.ndarray, k: int
) -> list[tuple[float, int]]:
    valid = [(float(s), int(i)) for s, i in zip(scores, ids, strict=True) if i >= 0]
    article_of = store.chunk_articles([i for _, i in valid])
    seen: set[int] = set()
    best: list[tuple[float, int]] = []
    for score, chunk_id in valid:  # FAISS returns them best first
        article = article_of.get(chunk_id)
        if article is None or article in seen:
            continue
        seen.add(article)
        best.append((score, chunk_id))
        if len(best) == k:
            break
    return best


def _hit(rank: int, score: float, row: ChunkRow) -> Hit:
    return Hit(
        rank=rank,
        score=score,
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
    )
