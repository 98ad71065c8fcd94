"""A generation's vectors: immutable segments, their tombstones, and merging.

Like Lucene's segments and LanceDB's fragments: each write adds a segment
holding only the chunks it inserted, in a FAISS file of its own that is never
changed again (``segment.<id>.faiss``), and records the chunks it removed as
*tombstones* of the segments holding them. A generation is the list of live
segments plus the tombstones, both in SQLite and switched by one transaction
(see :mod:`semsearch.commit`). A merge writes the live chunks of some
segments as one new segment and drops the old ones, tombstones and all.

The exact vectors are stored once, in the segment files: a flat or HNSW
index keeps them (read back by position with
:meth:`~semsearch.vectors.VectorIndex.reconstruct_at`), and any other type
(IVF, PQ) gets them beside it, as a ``segment.<id>.npy`` float32 array in
ascending id order. Every segment holds its chunks in ascending id order, so
a chunk's position is a binary search away.

Each segment also carries the embedding cache's keys for its chunks
(``segment.<id>.keys.npy``: the hash of the text each vector was computed
from, sorted, with its chunk id), so that a write finds a vector it can reuse
by binary search in each segment, and adding chunks writes their keys in a
file of their own instead of scattering them through a B-tree.

Segments open memory-mapped (FAISS's ``IO_FLAG_MMAP_IFC``, numpy's
``mmap_mode``): opening reads the id maps, the vectors cost page cache shared
by every process, and a reader that sees a new generation opens only the new
segments (:func:`open_segments` with the previous set).

A search covers every live segment, with the tombstones excluded inside each
FAISS search (an ``IDSelectorNot``), and merges the per-segment top k exactly:
the best k by (score descending, chunk id ascending).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .config import SMALL_SEGMENT, IndexType, MergePolicy
from .errors import IncompatibleIndexError, damaged
from .manifest import segment_file
from .store import SegmentRow
from .tuning import Tuning, exact_scores_of, rerank, shortlist_size, top_k, tune
from .vectors import Exclusion, SearchSettings, VectorIndex, release_pages, resolve_factory

EXACT_FILTER = 50_000
"""A filter selecting at most this many chunks of a compressed segment is
searched exactly over their exact vectors (cheaper than the IVF search with a
selector, and exact)."""

NPY = ".npy"
KEYS = ".keys.npy"
IDS = ".ids.npy"
"""A compressed segment's chunk ids, ascending (its IVF lists hold them by list):
mapped on open instead of read from every list and sorted (1.3 s at 10M)."""
SUFFIXES = (".faiss", NPY, KEYS, IDS)
"""Every file a segment may have, by suffix."""
KEY_DTYPE = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("chunk", "<i8")])
"""A key table's rows: a 16-byte text hash as two big-endian halves, and its chunk id."""


def key_table(hashes: Sequence[bytes | None], chunk_ids: np.ndarray) -> np.ndarray:
    """The sorted key table of chunks and their text hashes (chunks without one left out).

    Returns:
        ``(n,)`` array of :data:`KEY_DTYPE`, sorted by hash.
    """
    rows = [
        (int.from_bytes(h[:8], "big"), int.from_bytes(h[8:16], "big"), int(i))
        for h, i in zip(hashes, chunk_ids, strict=True)
        if h
    ]
    table = np.array(rows, dtype=KEY_DTYPE) if rows else np.zeros(0, dtype=KEY_DTYPE)
    return sort_keys(table)


def sort_keys(table: np.ndarray) -> np.ndarray:
    return table[np.lexsort((table["chunk"], table["lo"], table["hi"]))]


def _split(hashes: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    hi = np.array([int.from_bytes(h[:8], "big") for h in hashes], dtype="<u8")
    lo = np.array([int.from_bytes(h[8:16], "big") for h in hashes], dtype="<u8")
    return hi, lo


class SegmentMissing(Exception):
    """A segment file the snapshot names is gone: a writer merged it away meanwhile."""


class Segment:
    """One open segment: its FAISS index, its ids (ascending) and its exact vectors.

    Args:
        row: the segment as the ``segments`` table records it.
        vectors: its FAISS index.
        exact: ``(n, dim)`` float32 exact vectors in ascending id order, where
            the index does not keep them (memory-mapped ``.npy``); else None.
        fallback: for a format-3 index read as one segment: the exact vectors
            of chunk ids, from the store (its ``chunks.vector`` column).
    """

    def __init__(
        self,
        row: SegmentRow,
        vectors: VectorIndex,
        exact: np.ndarray | None = None,
        fallback: Callable[[np.ndarray], np.ndarray] | None = None,
        keys: Path | None = None,
        ids: np.ndarray | None = None,
    ) -> None:
        self.row = row
        self._keys_path = keys
        self._keys: np.ndarray | None = None
        self.vectors = vectors
        self._exact = exact
        self._fallback = fallback
        self.tuning = Tuning.from_dict(row.settings) if row.settings else None
        """A compressed segment's tuned settings and measured recall (None for other types)."""
        self._storage: np.ndarray | None = None
        """Where each of :attr:`ids` is in the index, if not in the same order."""
        self.ids: np.ndarray = ids if ids is not None else self._ids_from_index()
        if exact is not None and len(exact) != len(self.ids):
            raise IncompatibleIndexError(
                f"segment {row.id}: {len(exact)} exact vectors for {len(self.ids)} ids"
            )

    def _ids_from_index(self) -> np.ndarray:
        """The index's ids, ascending (setting :attr:`_storage` where its order differs)."""
        stored = self.vectors.ids()
        if len(stored) > 1 and not bool(np.all(stored[1:] > stored[:-1])):
            # Format 3's files (and IVF's lists) are not in id order.
            self._storage = np.argsort(stored, kind="stable")
            return stored[self._storage]
        return stored

    @property
    def id(self) -> int:
        return self.row.id

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which of these ids the segment holds: ``(bool mask over chunk_ids, positions)``.

        Positions index :attr:`ids` (ascending id order).
        """
        chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        if len(self.ids) == 0 or len(chunk_ids) == 0:
            return np.zeros(len(chunk_ids), dtype=bool), np.zeros(0, dtype=np.int64)
        at = np.searchsorted(self.ids, chunk_ids)
        at_clipped = np.minimum(at, len(self.ids) - 1)
        held = self.ids[at_clipped] == chunk_ids
        return held, at_clipped[held]

    @property
    def keys(self) -> np.ndarray:
        """The segment's key table (:data:`KEY_DTYPE`, sorted), mapped at first use.

        Raises:
            SegmentMissing: if the file is gone (a merge removed the segment).
            IncompatibleIndexError: if it is damaged.
        """
        if self._keys is None:
            if self._keys_path is None:
                return np.zeros(0, dtype=KEY_DTYPE)
            try:
                keys = np.load(self._keys_path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
            except FileNotFoundError:
                raise SegmentMissing(f"{self._keys_path} is missing") from None
            except ValueError as e:
                raise damaged(self._keys_path, str(e)) from None
            if keys.dtype != KEY_DTYPE:
                raise damaged(self._keys_path, f"keys of type {keys.dtype}, not {KEY_DTYPE}")
            self._keys = keys
        return self._keys

    def find(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """The chunk holding each key (text hash halves), or -1: ``(n,)`` int64."""
        keys = self.keys
        found = np.full(len(hi), -1, dtype=np.int64)
        if len(keys) == 0 or len(hi) == 0:
            return found
        at = np.searchsorted(keys["hi"], hi)
        for n in np.flatnonzero(at < len(keys)):
            i = int(at[n])
            while i < len(keys) and keys["hi"][i] == hi[n]:  # 64-bit halves: about once
                if keys["lo"][i] == lo[n]:
                    found[n] = keys["chunk"][i]
                    break
                i += 1
        return found

    @property
    def refines(self) -> bool:
        """Whether search re-ranks a shortlist with the exact vectors (a compressed type)."""
        return self._exact is not None and not self.vectors.exact

    def search(
        self,
        queries: np.ndarray,
        k: int,
        only: np.ndarray | None = None,
        exclude: Exclusion | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The segment's k best per query (see :meth:`VectorIndex.search`).

        A compressed segment searches its codes for a shortlist of
        ``k_factor * k`` candidates (:func:`~semsearch.tuning.shortlist_size`)
        with its tuned settings and re-ranks them
        with their exact vectors, so its scores are exact inner products.
        """
        if not self.refines:
            return self.vectors.search(queries, k, only=only, exclude=exclude)
        assert self._exact is not None
        settings = self.tuning.settings if self.tuning is not None else SearchSettings()
        shortlist = shortlist_size(k, settings.k_factor)
        _, candidates = self.vectors.search(
            queries, shortlist, only=only, exclude=exclude, settings=settings
        )
        return rerank(queries, candidates, self.ids, self._exact, k)

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """The exact vectors at these positions of :attr:`ids`: ``(n, dim)`` float32."""
        positions = np.asarray(positions, dtype=np.int64)
        if self._exact is not None:
            return np.asarray(self._exact[positions], dtype=np.float32)
        if self._fallback is not None and not self.vectors.reconstructs:
            return self._fallback(self.ids[positions])
        storage = self._storage[positions] if self._storage is not None else positions
        return self.vectors.reconstruct_at(storage)


@dataclass(frozen=True)
class SegmentSet:
    """The vectors of one committed generation: its live segments and tombstones.

    Attributes:
        segments: the live segments, by id.
        tombstones: segment id → its tombstoned chunk ids, ascending int64.
        dim: the vectors' dimension.
        legacy: a format-3 index read as one segment (converted by its next write).
    """

    segments: tuple[Segment, ...]
    tombstones: dict[int, np.ndarray]
    dim: int
    legacy: bool = False
    _exclusions: dict[int, Exclusion] = field(default_factory=dict, compare=False, repr=False)
    """Each segment's tombstones as a FAISS selector, made at its first search."""

    @property
    def ntotal(self) -> int:
        """Live chunks: vectors held, tombstones excluded."""
        return sum(len(s) for s in self.segments) - self.n_tombstones

    @property
    def n_tombstones(self) -> int:
        return sum(len(t) for t in self.tombstones.values())

    @property
    def exact(self) -> bool:
        """Whether every segment is searched exhaustively (flat), so search is exact."""
        return all(s.vectors.exact for s in self.segments)

    @property
    def factory(self) -> str:
        """The FAISS factory of the largest segment ("" with no segment)."""
        if not self.segments:
            return ""
        return max(self.segments, key=len).vectors.factory

    def reusable(self, hashes: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """The embedding cache: the stored ``(dim,)`` float32 vector of each text hash found.

        Tombstoned chunks count: their vectors are still exact until a merge.
        """
        if not hashes:
            return {}
        hi, lo = _split(hashes)
        holder = np.full(len(hashes), -1, dtype=np.int64)
        for segment in self.segments:
            missing = holder < 0
            if not missing.any():
                break
            holder[missing] = segment.find(hi[missing], lo[missing])
        ids, vectors = self.vectors_of(holder[holder >= 0])
        row = {int(i): n for n, i in enumerate(ids)}
        return {
            h: vectors[row[int(i)]] for h, i in zip(hashes, holder, strict=True) if int(i) in row
        }

    def live_keys(self, segments: Sequence[Segment] | None = None) -> np.ndarray:
        """The key tables of these segments (default: all), tombstoned chunks left out, sorted."""
        parts = []
        for segment in self.segments if segments is None else segments:
            keys = np.asarray(segment.keys)
            dead = self.tombstones.get(segment.id)
            if dead is not None and len(dead):
                keys = keys[~np.isin(keys["chunk"], dead)]
            parts.append(keys)
        return sort_keys(np.concatenate(parts)) if parts else np.zeros(0, dtype=KEY_DTYPE)

    @cached_property
    def dead(self) -> np.ndarray:
        """Every tombstoned chunk id, ascending: ``(n,)`` int64 (derived once per generation:
        every search leaves them out)."""
        parts = list(self.tombstones.values())
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def ids(self) -> np.ndarray:
        """Every live chunk id, ascending: ``(n,)`` int64."""
        parts = [
            np.setdiff1d(s.ids, self.tombstones.get(s.id, np.zeros(0, np.int64)))
            for s in self.segments
        ]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def live(self, segment: Segment) -> int:
        return len(segment) - len(self.tombstones.get(segment.id, ()))

    def search(
        self, queries: np.ndarray, k: int, only: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best live chunks per query over every segment, merged exactly.

        Args:
            queries: ``(n, dim)`` float32 unit vectors.
            k: results per query.
            only: if given, ascending chunk ids to search among (a filter's; all live).

        Returns:
            ``(n, k')`` float32 scores and int64 chunk ids, best first (ties by
            ascending id), ``k' = min(k, live chunks searched)``; ids are -1
            where a query has fewer results.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores: list[np.ndarray] = []
        ids: list[np.ndarray] = []
        compressed = [s for s in self.segments if s.refines and self.live(s) > 0]
        if only is not None or len(compressed) < 2:
            compressed = []
        else:
            best = self._search_compressed(compressed, queries, k)
            scores.append(best[0])
            ids.append(best[1])
        for segment in self.segments:
            if segment in compressed:
                continue
            found = self._search_segment(segment, queries, k, only)
            if found is not None:
                scores.append(found[0])
                ids.append(found[1])
        n = len(queries)
        if not scores:
            return np.zeros((n, 0), dtype=np.float32), np.zeros((n, 0), dtype=np.int64)
        all_scores = np.concatenate(scores, axis=1)
        all_ids = np.concatenate(ids, axis=1)
        all_scores = np.where(all_ids < 0, -np.inf, all_scores)
        order = np.lexsort((all_ids, -all_scores), axis=-1)[:, :k]
        best_scores = np.take_along_axis(all_scores, order, axis=1)
        best_ids = np.take_along_axis(all_ids, order, axis=1)
        best_ids = np.where(np.isneginf(best_scores), -1, best_ids)
        return best_scores.astype(np.float32), best_ids

    def _exclusion(self, segment: Segment) -> Exclusion | None:
        """The segment's tombstones as a FAISS selector (made once), None if it has none."""
        tombstones = self.tombstones.get(segment.id)
        if tombstones is None or not len(tombstones):
            return None
        exclusion = self._exclusions.get(segment.id)
        if exclusion is None:
            exclusion = self._exclusions[segment.id] = VectorIndex.exclusion(tombstones)
        return exclusion

    def _search_compressed(
        self, segments: list[Segment], queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best of several compressed segments, re-ranked once together.

        Each segment gives the shortlist its own tuning asked for (its nprobe,
        efSearch and ``k_factor``, :func:`~semsearch.tuning.shortlist_size`),
        and the union of them is re-ranked together (:func:`rerank_adaptive`):
        the candidates of re-ranking each segment's shortlist on its own, of
        which only those that can still enter the top k are read. (Cutting the
        union to one segment's shortlist length by approximate score lost
        recall with the segments' number: 0.91 at 10M chunks in 18 segments.)
        """
        approximate, candidates, owners = [], [], []
        longest = 0
        for n, segment in enumerate(segments):
            settings = segment.tuning.settings if segment.tuning else SearchSettings()
            shortlist = shortlist_size(k, settings.k_factor)
            longest = max(longest, shortlist)
            found = segment.vectors.search(
                queries,
                min(shortlist, self.live(segment)),
                exclude=self._exclusion(segment),
                settings=settings,
            )
            approximate.append(np.where(found[1] < 0, -np.inf, found[0]).astype(np.float32))
            candidates.append(found[1])
            owners.append(np.full(found[1].shape, n, dtype=np.int32))
        return rerank_adaptive(
            queries,
            np.concatenate(approximate, axis=1),
            np.concatenate(candidates, axis=1),
            np.concatenate(owners, axis=1),
            segments,
            k,
            first=longest,
        )

    def _search_segment(
        self, segment: Segment, queries: np.ndarray, k: int, only: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        if only is None:
            live = self.live(segment)
            if live == 0:
                return None
            return segment.search(queries, min(k, live), exclude=self._exclusion(segment))
        held, positions = segment.positions(only)
        if len(positions) == 0:
            return None
        exact_cheaply = segment.refines and len(positions) <= EXACT_FILTER
        if segment.vectors.exact or segment._fallback is not None or exact_cheaply:
            # Exact over the filter's chunks: cheaper than scanning the whole
            # segment through a selector, and exact whatever the index type.
            scores = queries @ segment.vectors_at(positions).T
            chunk_ids = segment.ids[positions]
            kk = min(k, len(positions))
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < len(positions) else None
            if top is None:
                top = np.broadcast_to(np.arange(len(positions)), scores.shape)
            return np.take_along_axis(scores, top, axis=1), chunk_ids[top]
        return segment.search(queries, min(k, len(positions)), only=only[held])

    def vectors_of(self, chunk_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact vectors of those of these chunks the segments hold.

        Returns:
            ``(ids, vectors)``: ``(m,)`` int64 and ``(m, dim)`` float32, ids
            grouped by segment, ascending within each.
        """
        wanted = np.unique(np.asarray(chunk_ids, dtype=np.int64))
        found_ids: list[np.ndarray] = []
        found: list[np.ndarray] = []
        for segment in self.segments:
            _held, positions = segment.positions(wanted)
            if len(positions):
                found_ids.append(segment.ids[positions])
                found.append(segment.vectors_at(positions))
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(found_ids), np.concatenate(found)

    def live_vectors(
        self, segments: Sequence[Segment] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every live chunk of these segments (default: all), by ascending id: ``(ids, vectors)``.

        ``ids`` is ``(n,)`` int64, ``vectors`` ``(n, dim)`` float32, all in memory
        (:meth:`live_layout` reads them batch by batch instead).
        """
        lazy = self.live_layout(self.segments if segments is None else segments)
        return lazy.ids, lazy.block(0, len(lazy))

    def _live_positions(self, segment: Segment) -> np.ndarray:
        """Positions of a segment's live (not tombstoned) vectors, ascending."""
        keep = np.ones(len(segment), dtype=bool)
        tombstones = self.tombstones.get(segment.id)
        if tombstones is not None and len(tombstones):
            keep[segment.positions(tombstones)[1]] = False
        return np.flatnonzero(keep)

    def live_layout(self, segments: Sequence[Segment]) -> LazyVectors:
        """The live chunks of these segments in ascending id order, their vectors
        left on disk to be read batch by batch (a merge in bounded memory)."""
        ids_parts, owner_parts, position_parts = [], [], []
        for n, segment in enumerate(segments):
            positions = self._live_positions(segment)
            ids_parts.append(segment.ids[positions])
            owner_parts.append(np.full(len(positions), n, dtype=np.int32))
            position_parts.append(positions)
        if not ids_parts:
            empty = np.zeros(0, dtype=np.int64)
            return LazyVectors((), empty, np.zeros(0, np.int32), empty, self.dim)
        ids = np.concatenate(ids_parts)
        order = np.argsort(ids, kind="stable")
        return LazyVectors(
            tuple(segments),
            ids[order],
            np.concatenate(owner_parts)[order],
            np.concatenate(position_parts)[order],
            self.dim,
        )

    def locate(self, chunk_ids: np.ndarray) -> dict[int, np.ndarray]:
        """Segment id → which of these chunk ids it holds (for tombstoning them)."""
        located: dict[int, np.ndarray] = {}
        chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        for segment in self.segments:
            _held, positions = segment.positions(chunk_ids)
            if len(positions):
                located[segment.id] = segment.ids[positions]
        return located


def exact_scores(
    queries: np.ndarray, candidates: np.ndarray, owner: np.ndarray, segments: Sequence[Segment]
) -> np.ndarray:
    """Exact inner products of candidates held by several segments, read from their
    exact vectors: ``(q, s)`` float32, -inf where a candidate is -1.

    Args:
        queries: ``(q, dim)`` float32.
        candidates: ``(q, s)`` int64 chunk ids, -1 for none.
        owner: ``(q, s)`` int32: which of ``segments`` holds each candidate.
        segments: segments with exact vectors (:attr:`Segment.refines`).
    """
    scores = np.full(candidates.shape, -np.inf, dtype=np.float32)
    valid = candidates >= 0
    for n, segment in enumerate(segments):
        mask = valid & (owner == n)
        if not mask.any():
            continue
        assert segment._exact is not None
        rows, _ = np.nonzero(mask)
        scores[mask] = exact_scores_of(queries[rows], candidates[mask], segment.ids, segment._exact)
    return scores


def rerank_adaptive(
    queries: np.ndarray,
    approximate: np.ndarray,
    candidates: np.ndarray,
    owner: np.ndarray,
    segments: Sequence[Segment],
    k: int,
    first: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidates best approximate score first, only as far as they can matter.

    The ``first`` best by approximate score are re-ranked; the largest amount
    by which their exact score exceeded their approximate one bounds the
    error of the rest (times :data:`ERROR_MARGIN`); a candidate whose
    approximate score plus that bound is below the k-th best exact score
    found cannot enter the top k, and is never read. The rest are re-ranked
    together. This is the reordering step of ScaNN (Guo et al., "Accelerating
    Large-Scale Inference with Anisotropic Vector Quantization", ICML 2020)
    with its cut-off taken from the data rather than fixed.

    Args:
        approximate: ``(q, s)`` float32 approximate scores (-inf for none).
        candidates, owner, segments: as :func:`exact_scores`.
        first: how many to re-rank before deciding (the tuned shortlist).

    Returns:
        ``(q, min(k, s))`` float32 exact scores and int64 ids, best first (ties
        by ascending id), ids -1 where there are fewer candidates.
    """
    q, width = candidates.shape
    order = np.argsort(-approximate, axis=1, kind="stable")
    approximate = np.take_along_axis(approximate, order, axis=1)
    candidates = np.take_along_axis(candidates, order, axis=1)
    owner = np.take_along_axis(owner, order, axis=1)
    head = min(first, width)
    scores = np.full((q, width), -np.inf, dtype=np.float32)
    scores[:, :head] = exact_scores(queries, candidates[:, :head], owner[:, :head], segments)
    if width > head:
        seen = np.isfinite(scores[:, :head]) & np.isfinite(approximate[:, :head])
        error = np.where(seen, scores[:, :head] - approximate[:, :head], 0.0).max(axis=1)
        bound = ERROR_MARGIN * np.maximum(error, 0.0)
        kk = min(k, head)
        kth = -np.partition(-scores[:, :head], kk - 1, axis=1)[:, kk - 1]
        rest = approximate[:, head:] + bound[:, None] >= kth[:, None]
        rest &= candidates[:, head:] >= 0
        if rest.any():
            wanted = np.where(rest, candidates[:, head:], -1)
            scores[:, head:] = exact_scores(queries, wanted, owner[:, head:], segments)
    return top_k(scores, candidates, k)


ERROR_MARGIN = 1.0
"""The bound on the rest's approximation error, as a multiple of the largest
error seen among the first re-ranked candidates (see :func:`rerank_adaptive`).
Measured at 10M chunks in 18 segments (300 held-out queries): 1.0 re-ranks 819
candidates a query for recall@10 0.995; 0.5 stops at the first 190 (0.910); 2.0
re-ranks all 3,420 (0.997)."""


BATCH = 65_536
"""Vectors read, added and written at a time by a merge in bounded memory (96 MiB at 384-d)."""


@dataclass(frozen=True)
class LazyVectors:
    """Exact vectors of live chunks of some segments, by ascending id, read when asked.

    Attributes:
        segments: where they are.
        ids: ``(n,)`` int64 ascending chunk ids.
        owner: ``(n,)`` int32: which of ``segments`` holds each.
        positions: ``(n,)`` int64: its position there.
        dim: vector dimension.
    """

    segments: tuple[Segment, ...]
    ids: np.ndarray
    owner: np.ndarray
    positions: np.ndarray
    dim: int

    def __len__(self) -> int:
        return len(self.ids)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``: ``(stop - start, dim)`` float32."""
        out = np.empty((stop - start, self.dim), dtype=np.float32)
        owner = self.owner[start:stop]
        positions = self.positions[start:stop]
        for n in np.unique(owner):
            mask = owner == n
            segment = self.segments[int(n)]
            out[mask] = segment.vectors_at(positions[mask])
            if segment._exact is not None:
                release_pages(segment._exact)  # read once: not kept in the resident set
        return out

    def sample(self, count: int, seed: int = 0) -> np.ndarray:
        """``count`` rows drawn uniformly without replacement: ``(m, dim)`` float32."""
        count = min(count, len(self))
        rows = np.sort(np.random.default_rng(seed).choice(len(self), size=count, replace=False))
        out = np.empty((count, self.dim), dtype=np.float32)
        for n in np.unique(self.owner[rows]):
            mask = self.owner[rows] == n
            out[mask] = self.segments[int(n)].vectors_at(self.positions[rows][mask])
        return out


def open_segment(folder: Path, row: SegmentRow, dim: int) -> Segment:
    """Open a segment memory-mapped, after checking its files' sizes against the record.

    The full CRC-32 is for writers and ``semsearch verify``; opening checks
    the size, and FAISS the header.

    Raises:
        SegmentMissing: if a file is gone (a writer merged the segment away).
        IncompatibleIndexError: if a file is damaged or disagrees with the record.
    """
    for name, recorded in row.files.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise SegmentMissing(f"{path} is missing; the index is incomplete") from None
        if size != recorded["size"]:
            raise damaged(path, f"{size} bytes, but {recorded['size']} were committed")
    path = folder / segment_file(row.id)
    try:
        vectors = VectorIndex.read(path, row.factory, mmap=True)
    except IncompatibleIndexError:
        if not path.exists():
            raise SegmentMissing(f"{path} is missing; the index is incomplete") from None
        raise
    exact = _mapped(folder / segment_file(row.id, NPY), row)
    keys = folder / segment_file(row.id, KEYS)
    ids_file = folder / segment_file(row.id, IDS)
    ids = _mapped(ids_file, row)
    if ids is not None and (ids.dtype != np.dtype("<i8") or len(ids) != row.n_vectors):
        raise damaged(ids_file, f"{len(ids)} ids of type {ids.dtype} for {row.n_vectors}")
    if vectors.ntotal != row.n_vectors or vectors.dim != dim:
        raise IncompatibleIndexError(
            f"the index at {folder} is inconsistent: {path.name} holds {vectors.ntotal} "
            f"vectors of dimension {vectors.dim}, but {row.n_vectors} of dimension {dim} "
            "were committed; run `semsearch verify`, or rebuild it"
        )
    return Segment(row, vectors, exact, keys=keys if keys.name in row.files else None, ids=ids)


def _mapped(path: Path, row: SegmentRow) -> np.ndarray | None:
    """A segment's ``.npy`` file mapped (None if the segment has none), as a plain
    ndarray view: np.memmap's own indexing costs 0.15 ms a call.

    Raises:
        SegmentMissing: if the file is gone (a writer merged the segment away).
        IncompatibleIndexError: if it is damaged.
    """
    if path.name not in row.files:
        return None
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
    except FileNotFoundError:
        raise SegmentMissing(f"{path} is missing; the index is incomplete") from None
    except ValueError as e:
        raise damaged(path, str(e)) from None


def open_segments(
    folder: Path,
    rows: Sequence[SegmentRow],
    tombstones: dict[int, np.ndarray],
    dim: int,
    previous: SegmentSet | None = None,
) -> SegmentSet:
    """The segment set of a generation, reusing the segments already open in ``previous``."""
    known = {s.id: s for s in previous.segments} if previous is not None else {}
    segments = tuple(
        # A segment's files never change; its tuned settings may (Index.tune).
        known[row.id]
        if row.id in known and known[row.id].row == row
        else open_segment(folder, row, dim)
        for row in rows
    )
    return SegmentSet(segments, tombstones, dim)


# -- writing segments -------------------------------------------------------------


def segment_index(index_type: str, n_vectors: int, dim: int) -> VectorIndex:
    """An empty index for a new segment of ``n_vectors``, sized by the segment alone.

    ``auto`` is decided by the segment's own size (flat up to the HNSW
    threshold). A type that trains (IVF, PQ) trains on the segment's own
    vectors; a segment with too few for that
    (:attr:`~semsearch.vectors.VectorIndex.min_train`) is written flat, exact
    and cheap at that size, until merges make a segment big enough.
    :class:`VectorPlan` decides by the whole index's size and shares one
    trained quantizer; this is what it falls back to.

    Raises:
        BadInputError: if FAISS cannot build the type.
    """
    index = VectorIndex.create(resolve_factory(index_type, n_vectors, dim=dim), dim)
    if index.trains and n_vectors < index.min_train:
        return VectorIndex.create("Flat", dim)
    return index


TRAIN_PER_LIST = 64
"""Training points per IVF list: above FAISS's warning floor of 39, and a
sample of 262,144 for 4,096 lists (k-means minutes on 2 cores)."""


@dataclass
class VectorPlan:
    """How a write makes the index of each new segment.

    The type is chosen by the size of the whole index after the write
    (:func:`~semsearch.vectors.resolve_factory` with the memory budget). A
    compressed (trained) type shares one trained quantizer across segments:
    IVF centroids and PQ codebooks trained once, on a uniform sample of the
    index's vectors, and cloned by every later segment, so a nightly segment
    of a few thousand vectors is encoded as well as the first million.

    Attributes:
        index_type: the manifest's index type.
        dim: vector dimension.
        memory_budget: bytes, or None for no limit.
        recall_target: recall@10 a compressed segment is tuned to.
        quantizer: the shared trained (empty) index, if any.
        trained: set when this write trained a new quantizer (to be saved):
            ``{"factory", "trained_on", "error"}``.
        retrain: train a new quantizer even if one exists (``optimize`` on drift).
    """

    index_type: str
    dim: int
    memory_budget: int | None = None
    recall_target: float = 0.95
    quantizer: VectorIndex | None = None
    trained: dict[str, object] | None = None
    retrain: bool = False

    def index_for(
        self, n_vectors: int, n_total: int, sample: Callable[[int], np.ndarray]
    ) -> VectorIndex:
        """An empty (trained, where the type trains) index for a new segment.

        Args:
            n_vectors: vectors the segment will hold.
            n_total: live vectors of the whole index once the segment is in.
            sample: ``sample(n)`` returns ``(n', dim)`` float32 vectors drawn
                uniformly from the index's vectors and the new ones (``n' <= n``).

        Raises:
            BadInputError: if FAISS cannot build or train the type.
        """
        auto = self.index_type.strip().lower() == IndexType.AUTO.value
        factory = resolve_factory(self.index_type, n_total, self.memory_budget, self.dim)
        if auto and n_vectors < SMALL_SEGMENT:
            return VectorIndex.create("Flat", self.dim)
        index = VectorIndex.create(factory, self.dim)
        if not index.trains:
            return index
        shared = self.quantizer
        if shared is not None and not self.retrain and (auto or shared.factory == factory):
            return shared.clone()
        wanted = max(index.min_train, TRAIN_PER_LIST * index.nlist)
        points = sample(wanted)
        if len(points) < index.min_train:
            return VectorIndex.create("Flat", self.dim)  # too few yet to train on
        index.train(points)
        self.quantizer = index.clone()
        self.retrain = False
        self.trained = {
            "factory": factory,
            "trained_on": len(points),
            "error": round(index.quantization_error(points[:20_000]), 6),
        }
        return index


def draw_sample(current: SegmentSet, new: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` vectors drawn uniformly without replacement from every segment and ``new``.

    Reads only the drawn rows (segments are memory-mapped), so memory is
    ``count * dim`` floats. Tombstoned vectors may be drawn: they are still
    real vectors of the collection's distribution.

    Returns:
        ``(min(count, n), dim)`` float32.
    """
    sizes = [len(s) for s in current.segments] + [len(new)]
    total = sum(sizes)
    count = min(count, total)
    if count == 0:
        return np.zeros((0, current.dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=count, replace=False))
    bounds = np.cumsum([0, *sizes])
    parts = []
    for n, segment in enumerate(current.segments):
        inside = chosen[(chosen >= bounds[n]) & (chosen < bounds[n + 1])] - bounds[n]
        if len(inside):
            parts.append(segment.vectors_at(inside))
    inside = chosen[chosen >= bounds[-2]] - bounds[-2]
    if len(inside):
        parts.append(np.asarray(new[inside], dtype=np.float32))
    return np.concatenate(parts)


def tune_segment(
    index: VectorIndex, ids: np.ndarray, exact: np.ndarray, target: float
) -> Tuning | None:
    """Tune a new compressed segment to ``target`` (None for a type that needs none)."""
    if not index.trains or len(ids) == 0:
        return None
    return tune(index, ids, exact, target)


def write_segment(
    folder: Path,
    segment: int,
    index: VectorIndex,
    ids: np.ndarray,
    vectors: np.ndarray | LazyVectors,
    keys: np.ndarray,
    stages: str = "",
) -> dict[str, dict[str, int]]:
    """Add ascending ids and their vectors to ``index`` and write the segment's files.

    ``vectors`` given as :class:`LazyVectors` (a merge) are read, added and
    written :data:`BATCH` at a time, so a merge of any size holds one batch
    of vectors in memory (and the index's codes). ``keys`` is the segment's
    key table (:func:`key_table`); ``stages`` prefixes the fail points' names
    (``merge-`` in a merge). Returns the files written: name →
    ``{"size": bytes, "crc32": int}``.

    Raises:
        BadInputError: if the index cannot be trained on these vectors.
        OSError: if a file cannot be written.
    """
    from .commit import failpoint, file_checksum

    assert len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])), "a segment's ids ascend"
    npy = folder / segment_file(segment, NPY)
    files: dict[str, dict[str, int]] = {}
    if isinstance(vectors, LazyVectors):
        # Written through the file, not a writable mapping, whose dirty pages
        # would count in the process's resident set until flushed.
        exact = None
        if not index.reconstructs:
            exact = open(npy, "wb")  # noqa: SIM115 - closed below, also on error
        try:
            if exact is not None:
                header = {"descr": "<f4", "fortran_order": False, "shape": (len(ids), vectors.dim)}
                np.lib.format.write_array_header_1_0(exact, header)
            for start in range(0, len(ids), BATCH):
                stop = min(start + BATCH, len(ids))
                block = vectors.block(start, stop)
                index.add(block, ids[start:stop])
                if exact is not None:
                    exact.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
            if exact is not None:
                exact.flush()
                os.fsync(exact.fileno())
        finally:
            if exact is not None:
                exact.close()
        if exact is not None:
            files[npy.name] = file_checksum(npy)
    else:
        index.add(vectors, ids)
    path = folder / segment_file(segment)
    failpoint(stages + "before-faiss-write")
    index.write(path)
    failpoint(stages + "mid-faiss-write", truncate=path)
    files[path.name] = file_checksum(path)
    arrays = {KEYS: np.ascontiguousarray(keys, dtype=KEY_DTYPE)}
    if not index.reconstructs:
        arrays[IDS] = np.ascontiguousarray(ids, dtype="<i8")
        if not isinstance(vectors, LazyVectors):
            arrays[NPY] = np.ascontiguousarray(vectors, dtype="<f4")
    for suffix, array in arrays.items():
        out = folder / segment_file(segment, suffix)
        with open(out, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        files[out.name] = file_checksum(out)
    return files


# -- the merge policy -----------------------------------------------------------------


def kind_of(index: VectorIndex) -> str:
    """``flat``, ``hnsw`` or ``compressed`` (a type that trains)."""
    if index.exact:
        return "flat"
    return "compressed" if index.trains else "hnsw"


def misfits(current: SegmentSet, plan: VectorPlan) -> list[Segment]:
    """Segments of ``auto`` whose kind is not what the index's size asks for now.

    An index past the exact range wants its segments of :data:`SMALL_SEGMENT`
    chunks or more HNSW or compressed (by the memory budget): segments written
    while it was smaller (flat, or HNSW before it outgrew the budget) are
    rewritten by a merge in a later write, as Lucene rewrites segments of an
    older codec.
    """
    if plan.index_type.strip().lower() != IndexType.AUTO.value:
        return []
    total = current.ntotal
    factory = resolve_factory(plan.index_type, total, plan.memory_budget, plan.dim)
    if factory == "Flat":
        return []
    wanted = kind_of(VectorIndex.create(factory, plan.dim))
    return [
        s
        for s in current.segments
        if current.live(s) >= SMALL_SEGMENT and kind_of(s.vectors) != wanted
    ]


def plan_merge(
    current: SegmentSet, policy: MergePolicy, misfit: Sequence[Segment] = ()
) -> list[int]:
    """The segments a write should merge now (none: an empty list).

    Tiered (see :class:`~semsearch.config.MergePolicy`): the lowest tier that
    holds ``segments_per_tier`` segments merges its smallest that many; else
    the :func:`misfits` (``misfit``) are merged into one, smallest first; else
    the segment with the largest share of tombstones past
    ``max_tombstone_share`` is rewritten alone. A merge over
    ``max_merge_chunks`` live chunks is left to :meth:`semsearch.Index.optimize`.
    """
    if not policy.in_writes or not current.segments:
        return []
    per_tier = max(2, policy.segments_per_tier)
    tiers: dict[int, list[Segment]] = {}
    for segment in current.segments:
        size = max(current.live(segment), policy.floor_chunks, 1)
        tiers.setdefault(int(math.log(size, per_tier) + 1e-9), []).append(segment)
    for tier in sorted(tiers):
        members = sorted(tiers[tier], key=current.live)
        if len(members) >= per_tier:
            chosen = members[:per_tier]
            if sum(current.live(s) for s in chosen) <= policy.max_merge_chunks:
                return [s.id for s in chosen]
    taken, size = [], 0
    for segment in sorted(misfit, key=current.live):
        if size + current.live(segment) > policy.max_merge_chunks:
            break
        taken.append(segment.id)
        size += current.live(segment)
    if taken:
        return taken
    by_share = sorted(
        current.segments,
        key=lambda s: len(current.tombstones.get(s.id, ())) / max(1, len(s)),
        reverse=True,
    )
    for segment in by_share:
        share = len(current.tombstones.get(segment.id, ())) / max(1, len(segment))
        if share <= policy.max_tombstone_share:
            break
        if current.live(segment) <= policy.max_merge_chunks:
            return [segment.id]
    return []
