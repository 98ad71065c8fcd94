"""Keyword search by BM25 over per-segment term postings, without FTS5 scoring every match.

FTS5's ``bm25()`` is an auxiliary function called once per matching row: a
SciFact claim matches a third of the index, and scoring and fetching those
rows cost more than embedding the query. So, like bm25s, each segment also
holds its chunks' term statistics as arrays (a sparse term × chunk matrix),
written beside its vectors and memory-mapped:

- ``segment.<id>.kw-terms.npy``: one row per term, sorted by the term's
  128-bit hash (BLAKE2b of its UTF-8): where its postings start, how many;
- ``segment.<id>.kw-postings.npy``: ``(position, tf)`` of every chunk holding
  each term, grouped by term, positions ascending;
- ``segment.<id>.kw-docs.npy``: each chunk's id and length in tokens, by position;
- ``segment.<id>.kw-bounds.npy``: each term's largest BM25 tf part
  ``tf × (k1 + 1) / (tf + k1 × (1 − b + b × D / A))`` over its postings, with A
  the segment's own average length (float32, rounded up): MaxScore's bound.

A query is scored from the postings of its terms only
(:mod:`semsearch.maxscore`): each posting's BM25 impact
``idf × tf × (k1 + 1) / (tf + k1 × (1 − b + b × D / avgdl))`` is summed per
chunk, with the statistics (chunks, tokens, each term's chunk count) summed
over the live segments, tombstoned chunks excluded; MaxScore skips the
postings that cannot change the top k. The formula and constants are FTS5's
own (``fts5_aux.c``), so scores equal what FTS5 gives on an index holding
exactly the live chunks.

Terms are FTS5's own: the segment's chunks' keyword text (title and text, as
the FTS5 table reads them from ``chunk_text``) goes through the index's FTS5
tokenizer itself (:mod:`semsearch.tokens`), as do the query's words.

A segment's files are written in the transaction that records the segment
(:func:`write_keywords`, called by :func:`semsearch.commit._add_segment`), so
they belong to the same generation as its vectors and rows. FTS5 stays for
highlights, for the user's own FTS5 syntax, for query words that are not one
plain token (prefix and two-word alternatives of no-space scripts), and for a
generation with a segment written before these files existed (until a merge
rewrites it).
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import damaged
from .manifest import (
    KEYWORD_BOUNDS,
    KEYWORD_DOCS,
    KEYWORD_POSTINGS,
    KEYWORD_TERMS,
    segment_file,
)
from .segments import Segment, SegmentMissing, SegmentSet
from .store import Store
from .tokens import tokenizer

# FTS5's bm25() constants (fts5_aux.c), and its floor for the idf of a common term.
K1 = 1.2
B = 0.75
_MIN_IDF = 1e-6

HI, LO, START, COUNT = range(4)
"""The terms array's columns: a term's hash as two halves, where its postings start and
how many there are. ``(n, 4)`` uint64 in Fortran order, so that each column is contiguous
in the mapped file (a binary search over a strided column would copy it)."""
DOC_DTYPE = np.dtype([("chunk", "<i8"), ("article", "<i8"), ("length", "<u4")])
"""A chunk's row, by position: its id, its article's key and its length in tokens
(title and text). A chunk's article never changes: an edit makes new chunks."""
_BATCH = 5_000
_BOUND_BATCH = 1 << 22
_RANGE_BITS = 6
_MERGE_RANGES = 1 << _RANGE_BITS
"""A merge takes terms in this many ranges of their hashes' top bits, one at a time."""


def posting_dtype(tf: str) -> np.dtype:
    """A posting: the chunk's position in the segment and the term's count in it."""
    return np.dtype([("pos", "<u4"), ("tf", tf)])


def term_hash(term: str) -> tuple[int, int]:
    """A term's 128-bit key as two unsigned 64-bit halves."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")


# -- writing a segment's postings -------------------------------------------------------


def write_keywords(
    folder: Path,
    store: Store,
    segment: int,
    ids: np.ndarray,
    stages: str = "",
    merged: SegmentSet | None = None,
) -> dict[str, dict[str, int]]:
    """Write a segment's keyword files for its chunks (ascending ids, rows in the store).

    Called inside the transaction that records the segment, after its chunks'
    rows are written, so the text is what the FTS5 index holds. A merge's
    segment is made from its sources' postings (no text tokenized again)
    where they all have them.

    Args:
        folder: the index folder.
        store: the store, in the write transaction.
        segment: the segment's id.
        ids: its chunk ids, ascending (positions in the files follow them).
        stages: prefix of the fail points' names (``merge-`` in a merge).
        merged: in a merge, the segments merged (with their tombstones), whose
            live chunks are ``ids``.

    Returns:
        The files written: name → ``{"size": bytes, "crc32": int}``.

    Raises:
        OSError: if a file cannot be written.
    """
    from .commit import failpoint, file_checksum

    ids = np.asarray(ids, dtype=np.int64)
    sources = None
    if merged is not None:
        try:
            sources = [_open(folder, s) for s in merged.segments]
        except SegmentMissing:
            sources = None
    if merged is not None and sources is not None and all(p is not None for p in sources):
        parts = [
            (p, merged.tombstones.get(s.id))
            for s, p in zip(merged.segments, sources, strict=True)
            if p is not None
        ]
        failpoint(stages + "before-keywords-write")
        out = folder / segment_file(segment, KEYWORD_POSTINGS)
        terms, postings, docs = merge_postings(parts, ids, out)
        bounds = term_bounds(terms, postings, docs)
        del postings  # written and flushed to its file: only its fsync is left
        arrays = {KEYWORD_DOCS: docs, KEYWORD_POSTINGS: None, KEYWORD_TERMS: terms}
    else:
        terms, postings, docs = _postings(store, ids)
        bounds = term_bounds(terms, postings, docs)
        failpoint(stages + "before-keywords-write")
        arrays = {KEYWORD_DOCS: docs, KEYWORD_POSTINGS: postings, KEYWORD_TERMS: terms}
    arrays[KEYWORD_BOUNDS] = bounds
    files = {}
    for suffix, array in arrays.items():
        path = folder / segment_file(segment, suffix)
        with open(path, "r+b" if array is None else "wb") as f:
            if array is not None:
                np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        files[path.name] = file_checksum(path)
    failpoint(stages + "mid-keywords-write", truncate=folder / segment_file(segment, KEYWORD_TERMS))
    return files


def _postings(store: Store, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (terms, postings, docs) arrays of these chunks."""
    tok = tokenizer(store)
    vocabulary: dict[str, int] = {}
    piece_terms: dict[str, tuple[int, ...]] = {}  # a whitespace-separated piece's term ids
    keys: list[np.ndarray] = []  # term id × n + position, one per (term, chunk)
    counts: list[np.ndarray] = []
    lengths = np.zeros(len(ids), dtype=np.int64)
    articles = np.full(len(ids), -1, dtype=np.int64)
    n = max(len(ids), 1)
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        texts = store.keyword_texts(batch.tolist())
        rows = [texts.get(chunk_id, (-1, "")) for chunk_id in batch.tolist()]
        split = [text.split() for _, text in rows]
        # Each distinct piece goes through the tokenizer once, all of a batch together.
        new = list({p: None for pieces in split for p in pieces if p not in piece_terms})
        for piece, tokens in zip(new, tok.tokens(new), strict=True):
            piece_terms[piece] = tuple(vocabulary.setdefault(t, len(vocabulary)) for t in tokens)
        term_ids: list[int] = []
        positions: list[int] = []
        for offset, ((article, _), pieces) in enumerate(zip(rows, split, strict=True)):
            chunk_terms = [t for p in pieces for t in piece_terms[p]]
            articles[start + offset] = article
            lengths[start + offset] = len(chunk_terms)
            term_ids += chunk_terms
            positions += [start + offset] * len(chunk_terms)
        pairs, tf = np.unique(
            np.asarray(term_ids, dtype=np.int64) * n + np.asarray(positions, dtype=np.int64),
            return_counts=True,
        )
        keys.append(pairs)
        counts.append(tf)
    hashes = np.array([term_hash(t) for t in vocabulary], dtype=np.uint64).reshape(-1, 2)
    rank = np.empty(len(vocabulary), dtype=np.int64)  # term id → its row in hash order
    by_hash = np.lexsort((hashes[:, 1], hashes[:, 0])) if len(hashes) else rank
    rank[by_hash] = np.arange(len(vocabulary))
    pairs = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    tf = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    row, position = rank[pairs // n], pairs % n
    order = np.lexsort((position, row))
    wide = tf.max(initial=0) >= 2**16
    postings = np.empty(len(order), dtype=posting_dtype("<u4" if wide else "<u2"))
    postings["pos"], postings["tf"] = position[order], tf[order]
    per_term = np.bincount(row, minlength=len(vocabulary))
    terms = np.empty((len(vocabulary), 4), dtype="<u8", order="F")
    terms[:, HI], terms[:, LO] = hashes[by_hash, 0], hashes[by_hash, 1]
    terms[:, COUNT] = per_term
    terms[:, START] = np.cumsum(per_term) - per_term
    docs = np.empty(len(ids), dtype=DOC_DTYPE)
    docs["chunk"], docs["article"], docs["length"] = ids, articles, lengths
    return terms, postings, docs


def average_length(docs: np.ndarray) -> float:
    """A segment's average chunk length in tokens (1.0 when it is 0): its bounds' A."""
    total = int(docs["length"].sum(dtype=np.int64))
    return total / len(docs) if total else 1.0


def term_bounds(terms: np.ndarray, postings: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Each term's largest BM25 tf part over its postings, with the segment's average length.

    With another average ``a``, the tf part of every posting is at most this
    bound times ``max(1, a / A)`` (it grows with the average, and the
    length term scales by ``A / a`` at most), which :mod:`semsearch.maxscore`
    uses to skip postings that cannot reach the top k.

    Returns:
        ``(terms,)`` float32, rounded up, in the terms' order.
    """
    bounds = np.zeros(len(terms), dtype=np.float32)
    if not len(postings):
        return bounds
    length = docs["length"].astype(np.float64)
    avgdl = average_length(docs)
    starts = terms[:, START].astype(np.int64)
    for low in range(0, len(postings), _BOUND_BATCH):  # bounded memory in a large merge
        block = postings[low : low + _BOUND_BATCH]
        tf = block["tf"].astype(np.float64)
        part = tf * (K1 + 1.0) / (tf + K1 * (1 - B + B * length[block["pos"]] / avgdl))
        # The terms whose postings start in this block, and the one running into it.
        first = max(int(np.searchsorted(starts, low, side="right")) - 1, 0)
        last = int(np.searchsorted(starts, low + len(block)))
        edges = (starts[first:last] - low).clip(min=0)
        best = np.maximum.reduceat(part, edges)
        up = best.astype(np.float32)
        up = np.where(up < best, np.nextafter(up, np.float32(np.inf)), up)  # rounded up
        bounds[first:last] = np.maximum(bounds[first:last], up)
    return bounds


def merge_postings(
    parts: Sequence[tuple[SegmentPostings, np.ndarray | None]],
    ids: np.ndarray,
    out: Path | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (terms, postings, docs) of merged segments' live chunks, from their own arrays.

    Terms are taken a range of hashes at a time (:data:`_MERGE_RANGES`): each
    source holds a range's terms, and their postings, contiguously, so memory
    holds one range's postings, not every posting of the merged segments.

    Args:
        parts: each merged segment's arrays and its tombstoned chunk ids (or None).
        ids: the live chunk ids of them all, ascending: the new positions.
        out: where to write the postings ``.npy`` as they are made (mapped,
            flushed, not fsynced); None: in memory.

    Returns:
        The arrays :func:`_postings` would make from the chunks' text (the
        postings mapped from ``out`` where given).
    """
    sources = []
    for part, gone in parts:
        chunks = part.docs["chunk"]
        live = ~np.isin(chunks, gone) if gone is not None and len(gone) else None
        sources.append((part, live, np.searchsorted(ids, chunks)))
    lows = [r << (64 - _RANGE_BITS) for r in range(_MERGE_RANGES)]
    highs: list[int | None] = [*lows[1:], None]

    def ranges() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Each hash range's (term hashes, term of each posting, new positions, tf)."""
        for low, high in zip(lows, highs, strict=True):
            hashes, rows, positions, tfs = [], [], [], []
            n_terms = 0
            for part, live, new_position in sources:
                his = part.terms[:, HI]
                first = int(np.searchsorted(his, np.uint64(low)))
                last = len(his) if high is None else int(np.searchsorted(his, np.uint64(high)))
                counts = part.terms[first:last, COUNT].astype(np.int64)
                start = int(part.terms[first, START]) if last > first else 0
                block = part.postings[start : start + int(counts.sum())]
                old = block["pos"].astype(np.int64)
                keep = live[old] if live is not None else slice(None)
                term = np.repeat(np.arange(len(counts)) + n_terms, counts)
                n_terms += len(counts)
                hashes.append(np.asarray(part.terms[first:last][:, [HI, LO]]))
                rows.append(term[keep])
                positions.append(new_position[old[keep]])
                tfs.append(block["tf"][keep].astype(np.int64))
            yield (
                np.concatenate(hashes) if hashes else np.zeros((0, 2), dtype=np.uint64),
                np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64),
                np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64),
                np.concatenate(tfs) if tfs else np.zeros(0, dtype=np.int64),
            )

    total = sum(len(row) for _, row, _, _ in ranges())  # a first pass: the file's length
    wide = any(p.postings.dtype["tf"].itemsize > 2 for p, _ in parts)
    dtype = posting_dtype("<u4" if wide else "<u2")
    postings = (
        np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=(total,))
        if out is not None
        else np.empty(total, dtype=dtype)
    )
    terms_parts = []
    written = 0
    for hashes, row, position, tf in ranges():
        unique, merged_row = np.unique(hashes, axis=0, return_inverse=True)  # by (hi, lo)
        row = merged_row.ravel()[row]
        per_term = np.bincount(row, minlength=len(unique))
        held = per_term > 0  # a term only tombstoned chunks held goes
        row, unique, per_term = (np.cumsum(held) - 1)[row], unique[held], per_term[held]
        order = np.lexsort((position, row))
        postings["pos"][written : written + len(order)] = position[order]
        postings["tf"][written : written + len(order)] = tf[order]
        terms = np.empty((len(unique), 4), dtype="<u8")
        terms[:, HI], terms[:, LO], terms[:, COUNT] = unique[:, 0], unique[:, 1], per_term
        terms[:, START] = written + np.cumsum(per_term) - per_term
        terms_parts.append(terms)
        written += len(order)
    if isinstance(postings, np.memmap):
        postings.flush()
    docs = [p.docs[live] if live is not None else np.asarray(p.docs) for p, live, _ in sources]
    merged_docs = np.concatenate(docs) if docs else np.zeros(0, dtype=DOC_DTYPE)
    merged_docs = merged_docs[np.argsort(merged_docs["chunk"], kind="stable")]
    assert np.array_equal(merged_docs["chunk"], ids), "the merged chunks are the live ones"
    every = np.concatenate(terms_parts) if terms_parts else np.zeros((0, 4), dtype="<u8")
    return np.asfortranarray(every), postings, merged_docs.astype(DOC_DTYPE)


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentPostings:
    """One segment's keyword arrays, memory-mapped."""

    terms: np.ndarray
    postings: np.ndarray
    docs: np.ndarray
    bounds: np.ndarray | None = None
    """Each term's bound on its tf part (:func:`term_bounds`); None in a segment written
    before bounds were."""
    tokens: int = 0
    """The tokens of all the segment's chunks (tombstoned ones too)."""

    @property
    def avgdl(self) -> float:
        """The average length of the segment's chunks (all of them): the bounds' A, as
        :func:`average_length` gives it."""
        return self.tokens / len(self.docs) if self.tokens else 1.0

    def postings_of(self, row: int) -> np.ndarray:
        """The postings of the term in this row (none for -1), a slice of the map."""
        if row < 0:
            return self.postings[:0]
        start = int(self.terms[row, START])
        return self.postings[start : start + int(self.terms[row, COUNT])]

    def row(self, hi: int, lo: int) -> int:
        """The term's row, -1 if the segment lacks it."""
        his = self.terms[:, HI]
        at = int(np.searchsorted(his, np.uint64(hi)))
        while at < len(his) and int(his[at]) == hi:
            if int(self.terms[at, LO]) == lo:
                return at
            at += 1
        return -1


_OPENED: weakref.WeakKeyDictionary[Segment, SegmentPostings] = weakref.WeakKeyDictionary()
_GENERATIONS_LOCK = threading.Lock()
"""Guards the caches of opened segments and generations (a reader is shared by threads)."""


def _open(folder: Path, segment: Segment) -> SegmentPostings | None:
    """A segment's keyword arrays (mapped once per open segment), or None if it has none.

    Raises:
        SegmentMissing: if a file is gone (a writer merged the segment away).
        IncompatibleIndexError: if a file is damaged.
    """
    found = _OPENED.get(segment)
    if found is not None:
        return found
    names = [segment_file(segment.id, s) for s in (KEYWORD_TERMS, KEYWORD_POSTINGS, KEYWORD_DOCS)]
    if not all(name in segment.row.files for name in names):
        return None
    if segment_file(segment.id, KEYWORD_BOUNDS) in segment.row.files:
        names.append(segment_file(segment.id, KEYWORD_BOUNDS))
    arrays = []
    for name in names:
        try:
            # Plain views of the maps: numpy's memmap subclass costs per slice.
            mapped = np.load(folder / name, mmap_mode="r", allow_pickle=False)
            arrays.append(mapped.view(np.ndarray))
        except FileNotFoundError:
            raise SegmentMissing(f"{folder / name} is missing") from None
        except ValueError as e:
            raise damaged(folder / name, str(e)) from None
    terms, postings, docs = arrays[:3]
    bounds = arrays[3] if len(arrays) > 3 else None
    if (
        terms.dtype != np.dtype("<u8")
        or terms.ndim != 2
        or terms.shape[1] != 4
        or not terms.flags.f_contiguous
        or docs.dtype != DOC_DTYPE
        or len(docs) != len(segment)
    ):
        raise damaged(folder / names[0], "keyword arrays of the wrong type or length")
    if bounds is not None and (bounds.dtype != np.float32 or bounds.shape != (len(terms),)):
        raise damaged(folder / names[3], "keyword bounds of the wrong type or length")
    tokens = int(docs["length"].sum(dtype=np.int64))
    found = SegmentPostings(terms, postings, docs, bounds, tokens)
    with _GENERATIONS_LOCK:
        _OPENED[segment] = found
    return found


@dataclass(frozen=True)
class _Live:
    """A generation's keyword arrays with its tombstones as masks, and its live totals."""

    segments: tuple[SegmentPostings, ...]
    dead: tuple[np.ndarray | None, ...]  # per segment: bool by position, or None
    n_chunks: int
    n_tokens: int
    _norms: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def avgdl(self) -> float:
        """The live chunks' average length in tokens (1.0 with none)."""
        return float(self.n_tokens) / float(self.n_chunks) if self.n_chunks else 1.0

    def norm(self, s: int) -> np.ndarray:
        """BM25's length normalisation of segment s's chunks, ``k1 × (1 − b + b × D / avgdl)``
        with the generation's avgdl: ``(n,)`` float64 by position, made at first use (8
        bytes a chunk, kept while the generation is read)."""
        found = self._norms.get(s)
        if found is None:
            length = self.segments[s].docs["length"].astype(np.float64)
            found = K1 * (1 - B + B * length / self.avgdl)
            self._norms[s] = found
        return found


_GENERATIONS: dict[int, tuple[weakref.ref[SegmentSet], _Live | None]] = {}


def _live(folder: Path, vectors: SegmentSet) -> _Live | None:
    """The generation's keyword arrays (made once per open generation), or None if any
    segment has none."""
    with _GENERATIONS_LOCK:
        known = _GENERATIONS.get(id(vectors))
        if known is not None and known[0]() is vectors:
            return known[1]
    try:
        opened = [_open(folder, s) for s in vectors.segments] if not vectors.legacy else [None]
    except SegmentMissing:
        # A merge deleted a segment this generation names after the reader loaded it
        # (its vectors stay mapped, these files are opened at the first keyword
        # query): FTS5, read in the same snapshot, still has this generation.
        return None
    live: _Live | None = None
    if all(p is not None for p in opened):
        segments = tuple(p for p in opened if p is not None)
        dead: list[np.ndarray | None] = []
        n_chunks = n_tokens = 0
        for segment, postings in zip(vectors.segments, segments, strict=True):
            lengths = postings.docs["length"]
            n_chunks += len(lengths)
            n_tokens += postings.tokens
            gone = vectors.tombstones.get(segment.id)
            mask = None
            if gone is not None and len(gone):
                chunks = postings.docs["chunk"]
                at = np.minimum(np.searchsorted(chunks, gone), len(chunks) - 1)
                mask = np.zeros(len(lengths), dtype=bool)
                mask[at[chunks[at] == gone]] = True
                n_chunks -= int(mask.sum())
                n_tokens -= int(lengths[mask].sum(dtype=np.int64))
            dead.append(mask)
        live = _Live(segments, tuple(dead), n_chunks, n_tokens)
    with _GENERATIONS_LOCK:
        for key in [k for k, (ref, _) in _GENERATIONS.items() if ref() is None]:
            del _GENERATIONS[key]
        _GENERATIONS[id(vectors)] = (weakref.ref(vectors), live)
    return live


def available(folder: Path, vectors: SegmentSet) -> bool:
    """Whether every live segment of the generation has keyword arrays."""
    return _live(folder, vectors) is not None


def articles_of(folder: Path, vectors: SegmentSet, chunk_ids: np.ndarray) -> dict[int, int] | None:
    """Map chunk id → article key for these chunks, from the postings' chunk table.

    Returns None if a segment has no keyword arrays (ask the store then).
    """
    chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
    keys = article_keys(folder, vectors, chunk_ids)
    if keys is None:
        return None
    held = keys >= 0
    return dict(zip(chunk_ids[held].tolist(), keys[held].tolist(), strict=True))


def article_keys(folder: Path, vectors: SegmentSet, chunk_ids: np.ndarray) -> np.ndarray | None:
    """Each chunk's article key from the postings' chunk table: ``(n,)`` int64, -1 for
    a chunk no segment holds. None if a segment has no keyword arrays (ask the store)."""
    live = _live(folder, vectors)
    if live is None:
        return None
    chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
    keys = np.full(len(chunk_ids), -1, dtype=np.int64)
    for segment, postings in zip(vectors.segments, live.segments, strict=True):
        held, at = segment.positions(chunk_ids)  # the segment's ids are the docs' chunks
        if len(at):
            keys[np.flatnonzero(held)] = postings.docs["article"][at]
    return keys
