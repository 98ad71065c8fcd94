"""Keyword top k by MaxScore over the segments' postings, scoring only what can enter it.

A query's postings at ten million chunks run to millions (a claim's words
match a tenth of the index each), and scoring all of them cost 150 ms a query.
MaxScore (Turtle & Flood 1995, "Query evaluation: strategies and
optimizations"; as in Lucene and PISA) scores far fewer. Each term has an
upper bound on what it adds to any chunk of a segment: its idf times the
largest BM25 tf part among its postings there, stored when the segment is
written (:func:`semsearch.impacts.term_bounds`; ``k1 + 1``, the tf part's
limit, for a segment written before bounds were). In each segment, terms are
taken best bound first:

1. *Essential terms.* Their postings are scored and summed per chunk, one term
   at a time, into a dense array of the segment's chunks (kept in cache, and
   between queries), until the bounds of the terms left add up to less than θ,
   the n-th best score found so far (a partial sum never exceeds the chunk's
   score, so the true n-th best is at least θ).
2. A chunk no essential term matches scores at most that sum, below θ: it
   cannot enter the top n, and the long postings of the common terms left are
   never read. They are only looked up, by binary search, for the candidates
   still able to reach θ; candidates fall away after each term.

Segments are taken one after another and θ carries over, so after the first
few a segment's rare terms alone usually decide it, and a segment whose
bounds cannot reach θ is skipped. The result is exact: the same top n, with
the same BM25 (FTS5's formula, see :mod:`semsearch.impacts`) as scoring every
posting. Candidates are pruned only below θ less a relative tolerance of
:data:`_TOLERANCE`, so a different order of floating-point additions never
drops a tie. Statistics (chunks, their average length, each term's chunk
count) are the generation's live chunks'; a filter restricts the candidates,
not the statistics, as FTS5 joined with a filter does.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .impacts import _MIN_IDF, K1, _Live, _live, term_hash
from .segments import SegmentSet

_STRUCTURED_SEARCH = 2_500
"""Below one key per this many postings, a lookup searches the records, not a copy of
their positions (measured: ~1 µs a key, against ~0.45 ns a posting copied)."""
_GROUP_WIDTH = 4
"""Grouping by article, θ is taken from this many chunks per article wanted."""
_LOOKUP_COST = 4
"""Looking a candidate up in a term's postings costs about this many postings scored
(a binary search's cache misses against a sequential pass)."""
_TOLERANCE = 1e-9
"""Relative slack under θ kept when pruning: sums in another order differ by ulps."""


class Scorer:
    """BM25 of one keyword query over a generation's live chunks: its top n, and the
    score of any chunk, without scoring every posting.

    Made by :func:`scorer`. Shared by one query's keyword and hybrid halves (not
    thread-safe: one per query).
    """

    def __init__(
        self, vectors: SegmentSet, live: _Live, phrases: Sequence[str], scope: np.ndarray | None
    ) -> None:
        self._live = live
        sizes = [len(p.docs) for p in live.segments]
        self._offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._excluded = _excluded(vectors, live, scope)
        # A token given twice counts twice (two phrases in FTS5): one term, weight ×2.
        counts = Counter(phrases)
        self._postings: list[list[np.ndarray]] = []  # per term, per segment: a slice (mapped)
        n = live.n_chunks
        tf_bound = np.full((len(counts), len(live.segments)), K1 + 1.0)
        df = np.zeros(len(counts))
        for j, phrase in enumerate(counts):
            hi, lo = term_hash(phrase)
            per_segment = []
            for s, segment in enumerate(live.segments):
                row = segment.row(hi, lo)
                block = segment.postings_of(row)
                per_segment.append(block)
                df[j] += _live_count(live, s, block)
                if segment.bounds is not None:
                    # Stored at the segment's average length A; at ours, × max(1, avgdl / A).
                    scale = max(1.0, live.avgdl / segment.avgdl)
                    tf_bound[j, s] = float(segment.bounds[row]) * scale if row >= 0 else 0.0
            self._postings.append(per_segment)
        idf = np.log((n - df + 0.5) / (df + 0.5)) if n else np.zeros(len(counts))
        idf[idf <= 0.0] = _MIN_IDF
        self._weight = idf * np.array(list(counts.values()), dtype=np.float64)
        self._bound = self._weight[:, None] * tf_bound
        """Per term and segment: the most the term adds to a chunk's score there."""
        self._df = df
        self._top: dict[bool, tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.postings = int(sum(len(b) for per_term in self._postings for b in per_term))
        """The query's postings in all (each term's, in every segment)."""
        self.scored = 0
        """Postings read and scored in full so far (the essential terms')."""

    # -- the top n ----------------------------------------------------------------------

    def top(self, n: int, group: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The n best live chunks in scope, best first, ties by chunk id; or, with
        ``group``, chunks best first down to the n-th best article's best chunk (an
        article's score is its best chunk's, so every chunk a top-n article can be
        shown by comes along).

        Returns:
            ``(scores, chunk ids, article keys)``: float64 (BM25, higher is
            better), int64, int64; fewer than n rows (articles) when fewer match.
        """
        known = self._top.get(group)
        if known is not None and (known[0] >= n or len(known[1][0]) < known[0]):
            scores, ids, articles = known[1]
            return (scores, ids, articles) if group else (scores[:n], ids[:n], articles[:n])
        found = self._maxscore(n, group)
        self._top[group] = (n, found)
        return found

    @property
    def best(self) -> float:
        """The best BM25 among the matches (1.0 with none)."""
        known = next(iter(self._top.values()), None)
        scores = self.top(1)[0] if known is None else known[1][0]
        return float(scores[0]) if len(scores) else 1.0

    def _maxscore(self, n: int, group: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # θ: the n-th best full score (of a chunk; of an article's best chunk with group)
        # found so far, 0 until n are found. Every chunk that can reach it is kept.
        theta = 0.0
        found_where: list[np.ndarray] = []  # per segment: global positions, full scores
        found_scores: list[np.ndarray] = []
        found_articles: list[np.ndarray] = []
        # A segment at a time, so that its partial sums stay in cache; θ carries over.
        for s in range(len(self._live.segments)):
            # Best bound first; among equal bounds the shorter postings first.
            bound = self._bound[:, s]
            terms = [int(j) for j in np.lexsort((self._df, -bound)) if len(self._postings[j][s])]
            if not terms:
                continue
            local, scores = self._segment_top(s, terms, bound, n, group, theta)
            found_where.append(local + self._offsets[s])
            found_scores.append(scores)
            found_articles.append(self._articles(s, local) if group else local)
            theta = max(
                theta,
                _nth(
                    np.concatenate(found_scores),
                    n,
                    np.concatenate(found_articles) if group else None,
                ),
            )
        where = np.concatenate(found_where) if found_where else np.zeros(0, dtype=np.int64)
        scores = np.concatenate(found_scores) if found_scores else np.zeros(0)
        keep = scores >= theta * (1 - _TOLERANCE)
        where, scores = where[keep], scores[keep]
        ids, articles = self._chunks(where)
        top = np.lexsort((ids, -scores))
        top = top if group else top[:n]
        return scores[top], ids[top], articles[top]

    def _articles(self, s: int, pos: np.ndarray) -> np.ndarray:
        """The article keys of chunks by position in segment s."""
        return self._live.segments[s].docs["article"][pos].astype(np.int64)

    def _segment_top(
        self,
        s: int,
        terms: list[int],
        bound: np.ndarray,
        n: int,
        group: bool,
        theta: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """MaxScore in one segment: the positions and full scores of its chunks that can
        be among the n best (chunks, or articles with ``group``), given θ found before
        it (its own n-th best raises it)."""
        left = np.concatenate([np.cumsum(bound[terms][::-1])[::-1], [0.0]])  # from i on
        if left[0] < theta:  # no chunk of this segment can reach θ
            return np.zeros(0, dtype=np.intp), np.zeros(0)
        excluded = self._excluded[s]
        first = theta == 0.0
        sums = _accumulator(len(self._live.segments[s].docs))
        scored: list[np.ndarray] = []  # each essential term's positions, ascending
        pool = np.zeros(0, dtype=np.intp)  # the n best partial sums' positions so far
        i = 0
        try:
            # Essential terms: every posting's impact added to its chunk's partial sum.
            # Past those MaxScore needs (left < θ), a term is scored too while that
            # costs less than looking it up for the candidates there would be.
            while i < len(terms):
                block = self._postings[terms[i]][s]
                if left[i] < theta:
                    floor = theta * (1 - _TOLERANCE) - left[i]
                    # Estimated from every 8th chunk of each term's (distinct terms can
                    # share a candidate: an overestimate at most).
                    candidates = 8 * sum(
                        int(np.count_nonzero(sums[p[::8]] >= floor)) for p in scored
                    )
                    if candidates * _LOOKUP_COST <= len(block):
                        break
                pos = block["pos"].astype(np.intp)
                tf = block["tf"]
                if excluded is not None:
                    keep = ~excluded[pos]
                    pos, tf = pos[keep], tf[keep]
                self.scored += len(block)
                sums[pos] += self._impact(terms[i], s, pos, tf)  # a term's positions are distinct
                scored.append(pos)
                i += 1
                if first:
                    # Until n chunks are scored in full, the segment's own n-th best
                    # partial sum is θ: the n best now are among this term's n best
                    # and the n best before.
                    width = n * _GROUP_WIDTH if group else n
                    pool = _distinct(np.concatenate([pos[_top_n(sums[pos], width)], pool]))
                    pool = pool[_top_n(sums[pool], width)]
                    articles = self._articles(s, pool) if group else None
                    theta = max(theta, _nth(sums[pool], n, articles))
            # Candidates: chunks an essential term holds that can still reach θ. Each is
            # taken once: its sum is set back to zero (θ > 0 then), below the floor.
            floor = theta * (1 - _TOLERANCE) - left[i]
            runs, partials = [], []
            for pos in scored:
                taken = pos[sums[pos] >= floor]
                runs.append(taken)
                partials.append(sums[taken])
                sums[taken] = 0.0
            where, partial = np.concatenate(runs), np.concatenate(partials)
            if floor <= 0.0:  # a chunk can be taken twice
                where, once = np.unique(where, return_index=True)
                partial = partial[once]
            # Ascending (timsort merges the terms' ascending runs).
            ascending = np.argsort(where, kind="stable")
            where, partial = where[ascending], partial[ascending]
        finally:
            for pos in scored:
                sums[pos] = 0.0
        # The rest: looked up for the candidates that can still reach θ.
        for j in terms[i:]:
            keep = partial + left[i] >= theta * (1 - _TOLERANCE)
            where, partial = where[keep], partial[keep]
            partial = partial + self._lookup(j, s, where)
            i += 1
            if group:
                some = _top_n(partial, n * _GROUP_WIDTH)  # any chunks' scores bound θ
                theta = max(theta, _nth(partial[some], n, self._articles(s, where[some])))
            else:
                theta = max(theta, _nth(partial, n))
        keep = partial >= theta * (1 - _TOLERANCE)
        return where[keep], partial[keep]

    def _lookup(self, term: int, s: int, where: np.ndarray) -> np.ndarray:
        """A term's impact on each of these positions in segment s (ascending), 0 where
        it is absent."""
        block = self._postings[term][s]
        found = np.zeros(len(where))
        if not len(block) or not len(where):
            return found
        if len(where) * _STRUCTURED_SEARCH < len(block):
            # Few keys: search the postings' records in place (a slower compare, but no
            # copy of the positions).
            keys = np.zeros(len(where), dtype=block.dtype)
            keys["pos"] = where
            at = np.searchsorted(block, keys)
        else:
            at = np.searchsorted(np.ascontiguousarray(block["pos"]), where.astype(np.uint32))
        at = at.clip(max=len(block) - 1)
        hit = block["pos"][at] == where
        at = at[hit]
        found[hit] = self._impact(term, s, block["pos"][at].astype(np.intp), block["tf"][at])
        return found

    def _impact(self, term: int, s: int, pos: np.ndarray, tf: np.ndarray) -> np.ndarray:
        """BM25 of a term's postings (FTS5's expression, fts5_aux.c)."""
        tf = tf.astype(np.float64)
        return self._weight[term] * ((tf * (K1 + 1.0)) / (tf + self._live.norm(s)[pos]))

    def _chunks(self, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, article keys) of global positions."""
        ids = np.zeros(len(where), dtype=np.int64)
        articles = np.zeros(len(where), dtype=np.int64)
        segment = np.searchsorted(self._offsets, where, side="right") - 1
        for s in np.unique(segment).tolist():
            at = segment == s
            docs = self._live.segments[s].docs[where[at] - self._offsets[s]]
            ids[at], articles[at] = docs["chunk"], docs["article"]
        return ids, articles

    # -- any chunk ----------------------------------------------------------------------

    def scores_of(self, chunk_ids: np.ndarray, vectors: SegmentSet) -> np.ndarray:
        """BM25 of these chunks: ``(n,)`` float64, 0 for a chunk that does not match,
        is tombstoned or out of scope."""
        chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        scores = np.zeros(len(chunk_ids))
        for s, segment in enumerate(vectors.segments):
            held, at = segment.positions(chunk_ids)
            excluded = self._excluded[s]
            if excluded is not None:
                live = ~excluded[at]
                held[np.flatnonzero(held)[~live]] = False
                at = at[live]
            if not len(at):
                continue
            ascending = np.argsort(at, kind="stable")
            rows = np.flatnonzero(held)[ascending]
            for term in range(len(self._postings)):
                scores[rows] += self._lookup(term, s, at[ascending])
        return scores


def scorer(
    folder: Path, vectors: SegmentSet, phrases: Sequence[str], scope: np.ndarray | None = None
) -> Scorer | None:
    """A MaxScore scorer of these tokens over the generation's postings.

    Args:
        folder: the index folder.
        vectors: the generation read (its segments and tombstones).
        phrases: one token per query word (:func:`semsearch.tokens.query_tokens`).
        scope: the chunk ids a filter lets through (``(m,)`` int64), or None for all.

    Returns:
        The scorer, or None if a segment has no keyword arrays (search FTS5 then).
    """
    live = _live(folder, vectors)
    if live is None:
        return None
    return Scorer(vectors, live, phrases, scope)


def _excluded(
    vectors: SegmentSet, live: _Live, scope: np.ndarray | None
) -> list[np.ndarray | None]:
    """Per segment, a bool mask by position of chunks left out (tombstoned or out of
    scope), or None when none is."""
    excluded = list(live.dead)
    if scope is None:
        return excluded
    scope = np.asarray(scope, dtype=np.int64)
    for s, segment in enumerate(vectors.segments):
        out = np.ones(len(live.segments[s].docs), dtype=bool)
        out[segment.positions(scope)[1]] = False
        dead = excluded[s]
        excluded[s] = out if dead is None else out | dead
    return excluded


def _live_count(live: _Live, s: int, block: np.ndarray) -> int:
    """How many of a term's postings in segment s are live chunks' (tombstones excluded)."""
    dead = live.dead[s]
    if dead is None or not len(block):
        return len(block)
    return len(block) - int(np.count_nonzero(dead[block["pos"]]))


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending (``np.unique`` hashes unsorted integers in numpy 2.3,
    many times slower than a sort)."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values


def _top_n(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest values (all of them when there are fewer), unordered."""
    if len(values) <= n:
        return np.arange(len(values))
    return np.argpartition(values, len(values) - n)[len(values) - n :]


_BUFFERS = threading.local()


def _accumulator(size: int) -> np.ndarray:
    """This thread's array of zeros, float64, at least ``size`` long, for partial sums.

    Kept between queries (allocating and faulting in 8 bytes a chunk per query cost
    more than the scoring); the caller sets what it added back to zero.
    """
    buffer: np.ndarray | None = getattr(_BUFFERS, "sums", None)
    if buffer is None or len(buffer) < size:
        buffer = np.zeros(size)
        _BUFFERS.sums = buffer
    return buffer


def _nth(sums: np.ndarray, n: int, articles: np.ndarray | None = None) -> float:
    """The n-th largest of these sums, 0 if there are fewer; with articles (one key per
    sum), the n-th largest of each article's largest."""
    if n <= 0 or len(sums) < n:
        return 0.0
    if articles is not None:
        by_article = np.lexsort((-sums, articles))
        keys = articles[by_article]
        sums = sums[by_article][np.concatenate([[True], keys[1:] != keys[:-1]])]
        if len(sums) < n:
            return 0.0
    return float(np.partition(sums, len(sums) - n)[len(sums) - n])
