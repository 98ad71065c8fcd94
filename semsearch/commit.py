"""The commit protocol: generations of segments, and applying a change atomically.

Every write makes a new generation. The writer (:mod:`semsearch.writer`)
describes the write as changes (:class:`Change`), one per window of its input (so
that a write of millions of chunks holds one window in memory), and
:func:`writing` applies them, all in one SQLite transaction:

1. per window (:meth:`Write.apply`): delete the dropped articles, insert the
   new ones with their chunks, and record the dropped chunks as tombstones of
   the segments holding them; write and flush the window's vectors as a new
   segment, ``segment.<id>.faiss`` (:mod:`semsearch.segments`), and record it
   with its size and CRC-32;
2. record ``generation = n+1``, and commit.

That SQLite commit is the single switch: before it, the index is generation n
in full; after it, n+1 in full, every window's segment at once. A write costs
what it changes: new files of its own chunks, and rows. Nothing existing is
rewritten. :func:`commit` applies a single change the same way.

A :func:`merge` is a generation too: the live chunks of some segments written
as one new segment, the old segments and their tombstones dropped in the same
transaction, their files deleted after it. The manifest and the files of
dropped segments follow a commit; both are re-derivable, and the next writer
repairs them (:func:`recover`) if a crash came between. A failure at any
earlier point leaves the index as it was.

A reader reads the generation and the SQLite rows it searches inside one read
transaction (a snapshot), so it never mixes two generations, nor sees a
segment without its tombstones or a merged segment beside those it replaced.
If a file its snapshot names is already gone (a merge switched and cleaned up
in between), it looks again (:func:`retry`).

An index of format 3 (one ``vectors.<n>.faiss`` per generation, every vector
also in SQLite) reads as one segment and is converted by its first write
(:func:`convert_legacy`).

Fail points: with ``SEMSEARCH_FAILPOINT`` set to a stage name (see
:func:`failpoint`), a write kills its own process there with SIGKILL: how the
tests prove that a crash at any point loses nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from .config import RECALL_TARGET, default_memory_budget
from .errors import IncompatibleIndexError, damaged
from .impacts import write_keywords
from .lock import LOCK_FILE
from .manifest import (
    FORMAT_VERSION,
    KEYWORD_SUFFIXES,
    STORE_FILE,
    Manifest,
    legacy_vector_files,
    manifest_path,
    quantizer_file,
    segment_file,
    segment_of,
    store_files,
    vector_files,
    vectors_file,
    write_manifest,
)
from .onnx_backend import FOLDER as ONNX_FOLDER
from .records import Article, Chunk
from .segments import (
    NPY,
    SUFFIXES,
    LazyVectors,
    Segment,
    SegmentMissing,
    SegmentSet,
    VectorPlan,
    draw_sample,
    key_table,
    open_segments,
    sort_keys,
    tune_segment,
    write_segment,
)
from .store import SegmentRow, Store, utc_now
from .tuning import tune
from .vectors import VectorIndex, compressed_factory

T = TypeVar("T")

# The commit record, in the store's meta table.
GENERATION = "generation"
LAYOUT = "layout"
SEGMENTS = "segments"
"""``layout = "segments"``: the generation is the ``segments`` table (format 4)."""
# Format 3's record of its one vector file (see _load_legacy).
FACTORY = "faiss_factory"
CHECKSUM = "faiss_file"
QUANTIZER = "quantizer"
"""The shared trained quantizer: ``{"file", "size", "crc32", "factory", "trained_on",
"error", "generation"}`` (see :class:`~semsearch.segments.VectorPlan`)."""
LIVE_CHUNKS = "live_chunks"
"""The live (not removed) chunks of the generation, counted at its commit: what its
segments' live vectors must add up to (absent in indexes committed before it)."""
FAILPOINT_ENV = "SEMSEARCH_FAILPOINT"
FAILPOINT_ONCE_ENV = "SEMSEARCH_FAILPOINT_ONCE"
"""If set, a file: a fail point kills only the one process that removes it."""
ATTEMPTS = 20
"""How many times a reader looks again when writers keep switching generations under it."""


# -- reading a generation -----------------------------------------------------


class Moved(Exception):
    """A writer switched generations while a read was looking; :func:`retry` looks again."""


def retry(
    attempt: Callable[[], T],
    *,
    pause: float = 0.0,
    give_up: Callable[[Moved], T] | None = None,
) -> T:
    """Call ``attempt`` until it does not raise :class:`Moved` (at most :data:`ATTEMPTS` times).

    Args:
        attempt: one try at a read of one generation.
        pause: seconds to wait between tries.
        give_up: what to return after the last try failed (given its :class:`Moved`);
            default: raise :class:`IncompatibleIndexError` with its message.

    Raises:
        IncompatibleIndexError: after the last try, without ``give_up``.
    """
    moved = Moved("the index changes too fast to read")
    for n in range(ATTEMPTS):
        try:
            return attempt()
        except Moved as e:
            moved = e
        if pause and n + 1 < ATTEMPTS:
            time.sleep(pause)
    if give_up is not None:
        return give_up(moved)
    raise IncompatibleIndexError(str(moved)) from None


def file_checksum(path: Path) -> dict[str, int]:
    """Size and CRC-32 of a file (CRC-32 reads about 1 GB/s: 15 ms for SciFact's)."""
    with open(path, "rb") as f:
        return {"size": os.fstat(f.fileno()).st_size, "crc32": _crc32(f)}


@dataclass(frozen=True)
class Generation:
    """A committed generation: its number and its open segments."""

    number: int
    vectors: SegmentSet
    quantizer: dict[str, Any] | None = None
    """The shared trained quantizer's record (``QUANTIZER`` meta), if any."""


def load_generation(
    folder: Path, store: Store, dim: int, previous: Generation | None = None
) -> Generation:
    """The committed generation's segments, opened memory-mapped and checked.

    Args:
        previous: a generation already open: its segments that are still live
            are reused, so only the new ones are opened.

    Raises:
        IncompatibleIndexError: if the commit record or a file is missing or
            damaged, or the segments do not hold one vector per chunk.
    """
    return retry(lambda: _load_once(folder, store, dim, previous))


def _load_once(folder: Path, store: Store, dim: int, previous: Generation | None) -> Generation:
    with store.snapshot():
        number = store.meta(GENERATION)
        if number is None:
            raise damaged(store.path, "it has no commit record")
        if store.meta(LAYOUT) != SEGMENTS:
            vectors = _load_legacy(folder, store, dim, int(number))
        else:
            reuse = previous.vectors if previous is not None else None
            try:
                vectors = open_segments(folder, store.segments(), store.tombstones(), dim, reuse)
            except SegmentMissing as e:
                # A writer merged it away since the snapshot began: look again.
                raise Moved(str(e)) from None
        recorded = store.meta(LIVE_CHUNKS)
        n_chunks = int(recorded) if recorded is not None else store.counts()[1]
        quantizer = store.meta(QUANTIZER)
    if vectors.ntotal != n_chunks:
        raise IncompatibleIndexError(
            f"the index at {folder} is inconsistent: its segments hold {vectors.ntotal} live "
            f"vectors for {n_chunks} chunks; run `semsearch verify`, or rebuild it"
        )
    return Generation(int(number), vectors, quantizer)


def _load_legacy(folder: Path, store: Store, dim: int, number: int) -> SegmentSet:
    """A format-3 index as one segment: its generation's file, checked whole as then."""
    factory = store.meta(FACTORY)
    if factory is None:
        raise damaged(store.path, "it has no commit record")
    path = folder / vectors_file(number)
    try:
        # Opened once: checked and read through the same open file, which
        # stays readable even if a writer deletes the path meanwhile.
        file = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        # A writer switched generations and removed it: look again.
        raise Moved(f"{path} is missing; the index is incomplete") from None
    with file:
        _check_file(path, file, store.meta(CHECKSUM))
        vectors = VectorIndex.read(path, str(factory), file)
    if vectors.dim != dim:
        raise IncompatibleIndexError(
            f"the index at {folder} is inconsistent: {path.name} holds vectors of "
            f"dimension {vectors.dim}, not {dim}; run `semsearch verify`, or rebuild it"
        )

    def stored(ids: np.ndarray) -> np.ndarray:
        found = store.vectors_of_chunks(ids.tolist(), dim)
        row = {int(i): n for n, i in enumerate(found.chunk_ids)}
        return found.vectors[[row[int(i)] for i in ids]]

    row = SegmentRow(0, str(factory), vectors.ntotal, {}, number)
    return SegmentSet((Segment(row, vectors, fallback=stored),), {}, dim, legacy=True)


def _check_file(path: Path, file: BinaryIO, recorded: dict[str, int] | None) -> None:
    """Compare an open file with its commit record, then rewind it."""
    if recorded is None:  # written before checksums were recorded
        return
    size = os.fstat(file.fileno()).st_size
    if size != recorded["size"]:
        raise damaged(path, f"{size} bytes, but {recorded['size']} were committed")
    if _crc32(file) != recorded["crc32"]:
        raise damaged(path, "its checksum does not match the commit")
    file.seek(0)


def _crc32(file: BinaryIO) -> int:
    crc = 0
    while block := file.read(1 << 20):
        crc = zlib.crc32(block, crc)
    return crc


# -- what a write changes -------------------------------------------------------


@dataclass(frozen=True)
class NewArticle:
    """An article to insert, chunked and embedded.

    ``article_hash`` is :func:`semsearch.writer.article_hash` (how the next write
    knows it unchanged); ``vectors`` has one unit float32 row per chunk;
    ``text_hashes`` keys each chunk's vector in the embedding cache (the hash of
    the exact text embedded).
    """

    article: Article
    article_hash: str
    chunks: Sequence[Chunk]
    vectors: np.ndarray
    text_hashes: Sequence[bytes]


@dataclass(frozen=True)
class Change:
    """One write, or one window of a write: :meth:`Write.apply` applies it, :func:`commit`
    applies one alone as a generation.

    Args:
        insert: articles to insert (an id already stored must also be in ``drop``).
        drop: ids of stored articles to delete now, with their chunks (replaced ones).
        remove: ids of stored articles to remove: marked removed, their chunks
            tombstoned, their rows deleted by the merge that drops the tombstones.
        rebuild: build the vector index anew from the stored vectors.
        index_type: the index type from now on (``auto``, ``flat``, ``hnsw`` or a
            FAISS factory); default: the manifest's.
    """

    insert: Sequence[NewArticle] = ()
    drop: Sequence[str] = ()
    remove: Sequence[str] = ()
    rebuild: bool = False
    index_type: str | None = None

    def new_vectors(self, dim: int) -> np.ndarray:
        """The inserted chunks' vectors, in insertion order: ``(n, dim)`` float32."""
        parts = [np.asarray(a.vectors, dtype=np.float32) for a in self.insert]
        return np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)


@dataclass(frozen=True)
class Committed:
    """What a commit left: the new generation's number, the manifest, and how many chunks went."""

    generation: int
    manifest: Manifest
    chunks_removed: int


class StageClock:
    """Seconds spent per stage of a write, for ``AddResult.timings``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def start(self, stage: str) -> None:
        self._started[stage] = time.perf_counter()

    def stop(self, stage: str) -> None:
        elapsed = time.perf_counter() - self._started.pop(stage)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self.start(stage)
        try:
            yield
        finally:
            self.stop(stage)

    def iterate(self, stage: str, items: Iterable[T]) -> Iterator[T]:
        """Yield from items, counting the time spent producing them."""
        iterator = iter(items)
        while True:
            self.start(stage)
            try:
                item = next(iterator)
            except StopIteration:
                self.stop(stage)
                return
            self.stop(stage)
            yield item


def failpoint(stage: str, truncate: Path | None = None) -> None:
    """Kill this process at a named stage of a write, when the tests ask for it.

    Stages, in order: ``after-embed`` (in the writer), ``before-faiss-write``,
    ``mid-faiss-write`` (the new file cut off halfway), ``after-window`` (a
    window's rows and segment written, the next window or the commit to come;
    the first three come once per window), ``before-commit``, ``after-commit``,
    ``after-manifest``; ``ray-embed`` in a distributed build's embedding actor.
    """
    if os.environ.get(FAILPOINT_ENV) != stage:
        return
    once = os.environ.get(FAILPOINT_ONCE_ENV)
    if once:  # only the process that claims (removes) this file dies
        try:
            os.unlink(once)
        except FileNotFoundError:
            return
    if truncate is not None:  # a write cut off halfway
        with open(truncate, "r+b") as f:
            f.truncate(truncate.stat().st_size // 2)
    os.kill(os.getpid(), signal.SIGKILL)


# -- applying it ------------------------------------------------------------------


class Write:
    """The next generation, being written one window at a time inside one SQLite transaction.

    Made by :func:`writing`, which opens the transaction and commits it. Each
    :meth:`apply` writes one window of a write: its rows (visible only to
    this connection until the commit), its tombstones, and its new chunks'
    vectors as a segment file of their own, recorded in the ``segments`` table
    inside the same transaction. So a write of any size holds one window's
    vectors at a time, SQLite spills the transaction's pages to its WAL, and
    every window's segment becomes live at the same COMMIT, or none does.

    Attributes:
        number: the generation being written.
        written: the files written so far (deleted again if the write fails).
        chunks_removed: the chunks dropped or removed so far.
        committed: after :func:`writing` ends, what it committed (None: nothing changed).
    """

    def __init__(
        self,
        folder: Path,
        store: Store,
        current: Generation,
        manifest: Manifest,
        clock: StageClock,
        index_type: str,
    ) -> None:
        self.folder = folder
        self.store = store
        self.current = current
        self.manifest = manifest
        self.clock = clock
        self.index_type = index_type
        self.number = current.number + 1
        self.written: list[Path] = []
        self.replaced: list[int] = []
        self.chunks_removed = 0
        self.changed = False
        self.rebuilt = False
        self.committed: Committed | None = None
        self.plan = vector_plan(folder, manifest, current, index_type)
        self.added = 0
        """Chunks inserted by the windows so far."""

    def apply(self, change: Change) -> None:
        """Apply one window of the write: its rows and tombstones, and a segment of its vectors.

        The articles a window drops or removes must be stored before the write
        began (an id appears in one window only); a rebuild is a write's only change.

        Raises:
            BadInputError: if FAISS cannot build or train the segment's index type.
            OSError: if a file cannot be written.
        """
        assert not self.rebuilt, "a rebuild is a write's only change"
        assert not (change.rebuild and self.changed), "a rebuild is a write's only change"
        store, clock, current = self.store, self.clock, self.current
        dim = self.manifest.model.dim
        self.changed = True
        with clock("sqlite"):
            old_ids = store.chunk_ids([*change.drop, *change.remove])
            store.delete_articles(list(change.drop))
            store.remove_articles(list(change.remove))
            # An id removed earlier and added again: its old rows go now.
            store.purge_removed([a.article.id for a in change.insert])
            new_ids = [
                store.insert_article(a.article, a.article_hash, a.chunks, None, a.text_hashes)
                for a in change.insert
            ]
            ids = np.concatenate(new_ids) if new_ids else np.zeros(0, dtype=np.int64)
            hashes = [h for a in change.insert for h in a.text_hashes]
            if not change.rebuild:
                for segment, gone in current.vectors.locate(old_ids).items():
                    store.add_tombstones(segment, gone.tolist())
        self.chunks_removed += len(old_ids)
        folder, number, written, plan = self.folder, self.number, self.written, self.plan
        with clock("faiss"):
            if change.rebuild:
                # Every live vector, and the new ones, as one segment of the type.
                self.rebuilt = True
                kept_ids, kept = current.vectors.live_vectors()
                keep = ~np.isin(kept_ids, old_ids)
                all_ids = np.concatenate([kept_ids[keep], ids])
                vectors = np.concatenate([kept[keep], change.new_vectors(dim)])
                order = np.argsort(all_ids, kind="stable")
                kept_keys = current.vectors.live_keys()
                kept_keys = kept_keys[~np.isin(kept_keys["chunk"], old_ids)]
                keys = sort_keys(np.concatenate([kept_keys, key_table(hashes, ids)]))
                self.replaced = [s.id for s in current.vectors.segments]
                store.purge_removed()  # every tombstone goes
                store.delete_segments(self.replaced)
                plan.retrain = True  # a rebuild trains anew on what it holds
                fresh = plan.index_for(len(all_ids), len(all_ids), lambda n: _sample_of(vectors, n))
                _add_segment(
                    folder,
                    store,
                    number,
                    fresh,
                    all_ids[order],
                    vectors[order],
                    keys,
                    written,
                    plan=plan,
                )
            elif len(ids):
                new_vectors = change.new_vectors(dim)
                self.added += len(ids)
                total = current.vectors.ntotal - self.chunks_removed + self.added
                fresh = plan.index_for(
                    len(ids), total, lambda n: draw_sample(current.vectors, new_vectors, n)
                )
                keys = key_table(hashes, ids)
                _add_segment(
                    folder, store, number, fresh, ids, new_vectors, keys, written, plan=plan
                )
        failpoint("after-window")


class _Unchanged(Exception):
    """Nothing was applied: roll the transaction back, commit no generation."""


@contextmanager
def writing(
    folder: Path,
    store: Store,
    current: Generation,
    manifest: Manifest,
    clock: StageClock | None = None,
    index_type: str | None = None,
) -> Iterator[Write]:
    """Write the next generation in windows: ``with writing(...) as write: write.apply(...)``.

    The caller holds the writer lock, has called :func:`recover` since taking
    it, and has converted a format-3 index (:func:`convert_legacy`). The block
    runs inside one SQLite write transaction on ``store``: reads through
    ``store`` in it see the windows applied so far, and no other connection
    does. When the block ends, the generation is committed (the single
    switch), then the manifest is written and replaced segments' files are
    deleted; ``write.committed`` says what was committed. If the block applied
    nothing, nothing is committed and ``write.committed`` stays None. If it
    raises, or the process dies at any point before the commit, the
    transaction rolls back and the index is as it was: the files written are
    deleted now, or by the next writer's :func:`recover` after a crash.

    Args:
        folder: the index folder.
        store: a connection to the index's store (no transaction open); for a
            long write, not the one readers of this process share, which would
            see the rows before their vectors.
        current: the committed generation.
        manifest: the current manifest; the new one is ``write.committed.manifest``.
        clock: where to add the ``sqlite`` and ``faiss`` seconds.
        index_type: the index type from now on (default: the manifest's).

    Raises:
        BadInputError: if FAISS cannot build or train a segment's index type.
        OSError: if a file cannot be written.
    """
    assert not current.vectors.legacy, "convert a format-3 index before writing to it"
    clock = clock or StageClock()
    write = Write(
        folder, store, current, manifest, clock, index_type or manifest.vectors.index_type
    )
    try:
        with store.transaction():
            yield write
            if not write.changed:
                raise _Unchanged
            _save_quantizer(folder, store, write.plan, write.number, write.written)
            manifest = _manifest_after(manifest, store, write.number, write.index_type)
            store.set_meta(GENERATION, write.number)
            failpoint("before-commit")
            clock.start("sqlite")  # the commit itself
        clock.stop("sqlite")
    except _Unchanged:
        return
    except BaseException:
        for path in write.written:  # the committed files are intact
            path.unlink(missing_ok=True)
        raise
    failpoint("after-commit")
    # Committed. The manifest and the dropped segments' files follow; both are re-derivable.
    write_manifest(folder, manifest)
    failpoint("after-manifest")
    remove_segment_files(folder, write.replaced)
    _remove_old_quantizer(folder, current, write.plan)
    write.committed = Committed(write.number, manifest, write.chunks_removed)


def commit(
    folder: Path,
    store: Store,
    current: Generation,
    manifest: Manifest,
    change: Change,
    clock: StageClock | None = None,
) -> Committed:
    """Apply one change to SQLite and a new segment as the next generation.

    One window of :func:`writing`: see there for what the caller must hold.

    Args:
        folder: the index folder.
        store: the index's store (no transaction open).
        current: the committed generation.
        manifest: the current manifest; a new one is written and returned.
        change: what to apply.
        clock: where to add the ``sqlite`` and ``faiss`` seconds.

    Returns:
        the new generation's number, the new manifest and the chunks removed.

    Raises:
        BadInputError: if FAISS cannot build or train the segment's index type;
            nothing is changed then.
        OSError: if a file cannot be written; nothing is changed then.
    """
    with writing(folder, store, current, manifest, clock, change.index_type) as write:
        write.apply(change)
    assert write.committed is not None
    return write.committed


def merge(
    folder: Path,
    store: Store,
    current: Generation,
    manifest: Manifest,
    segments: Sequence[int],
    clock: StageClock | None = None,
    retrain: bool = False,
) -> Committed:
    """Merge segments into one as the next generation, leaving their tombstones behind.

    ``retrain``: train a new shared quantizer on the index's vectors for the
    merged segment (``optimize``, when the data has drifted from the old one).

    The caller holds the writer lock, as for :func:`commit`. The stages of
    :func:`failpoint` are those of a commit prefixed ``merge-``.

    Returns:
        the new generation's number, the new manifest, and 0 chunks removed.

    Raises:
        OSError: if a file cannot be written; nothing is changed then.
    """
    assert not current.vectors.legacy, "convert a format-3 index before merging it"
    clock = clock or StageClock()
    chosen = [s for s in current.vectors.segments if s.id in set(segments)]
    number = current.number + 1
    dim = current.vectors.dim
    plan = vector_plan(folder, manifest, current)
    plan.retrain = retrain
    written: list[Path] = []
    with clock("merge"):
        lazy = current.vectors.live_layout(chosen)
        ids = lazy.ids
        keys = current.vectors.live_keys(chosen)
        try:
            with store.transaction():
                for segment in chosen:  # removed articles go with their tombstones
                    dead = current.vectors.tombstones.get(segment.id)
                    if dead is not None:
                        store.purge_chunks(dead.tolist())
                store.delete_segments([s.id for s in chosen])  # and their tombstones
                if len(ids):
                    fresh = plan.index_for(
                        len(ids),
                        current.vectors.ntotal,
                        lambda n: draw_sample(current.vectors, np.zeros((0, dim)), n),
                    )
                    # A compressed merge streams its vectors; flat and HNSW hold them anyway.
                    vectors = lazy if fresh.trains else current.vectors.live_vectors(chosen)[1]
                    merged = replace(current.vectors, segments=tuple(chosen))
                    _add_segment(
                        folder,
                        store,
                        number,
                        fresh,
                        ids,
                        vectors,
                        keys,
                        written,
                        "merge-",
                        plan=plan,
                        merged=merged,
                    )
                    _save_quantizer(folder, store, plan, number, written)
                manifest = _manifest_after(manifest, store, number, manifest.vectors.index_type)
                store.set_meta(GENERATION, number)
                failpoint("merge-before-commit")
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        failpoint("merge-after-commit")
        write_manifest(folder, manifest)
        failpoint("merge-after-manifest")
        remove_segment_files(folder, [s.id for s in chosen])
        _remove_old_quantizer(folder, current, plan)
    return Committed(number, manifest, 0)


def retune(
    folder: Path,
    store: Store,
    current: Generation,
    manifest: Manifest,
    queries: np.ndarray | None,
    target: float,
) -> tuple[Committed, list[dict[str, Any]]]:
    """Tune every compressed segment again, as the next generation (no file changes).

    Args:
        queries: ``(q, dim)`` float32 query vectors to tune on; None: each
            segment's own held-out vectors, as when it was written.
        target: recall@10 to reach; recorded as the index's target from now on.

    Returns:
        the commit, and each compressed segment's new tuning (``id`` added).
    """
    tuned = []
    for segment in current.vectors.segments:
        if segment.refines:
            assert segment._exact is not None
            result = tune(segment.vectors, segment.ids, segment._exact, target, queries)
            tuned.append({"id": segment.id, **result.to_dict()})
    number = current.number + 1
    manifest = replace(manifest, vectors=replace(manifest.vectors, recall_target=target))
    with store.transaction():
        for row in tuned:
            store.set_segment_settings(row["id"], {k: v for k, v in row.items() if k != "id"})
        manifest = _manifest_after(manifest, store, number, manifest.vectors.index_type)
        store.set_meta(GENERATION, number)
    write_manifest(folder, manifest)
    return Committed(number, manifest, 0), tuned


def _add_segment(
    folder: Path,
    store: Store,
    generation: int,
    index: VectorIndex,
    ids: np.ndarray,
    vectors: np.ndarray | LazyVectors,
    keys: np.ndarray,
    written: list[Path],
    stages: str = "",
    plan: VectorPlan | None = None,
    merged: SegmentSet | None = None,
) -> int:
    """Write a segment of these (ascending) ids and record it; returns its id.

    A compressed segment is tuned to the plan's recall target before it is
    recorded (:func:`~semsearch.segments.tune_segment`). ``merged``: in a
    merge, the segments merged, whose keyword postings make the new one's.
    """
    segment = store.new_segment(index.factory, len(ids), generation)
    written += [folder / segment_file(segment, suffix) for suffix in SUFFIXES]
    written += [folder / segment_file(segment, suffix) for suffix in KEYWORD_SUFFIXES]
    files = write_segment(folder, segment, index, ids, vectors, keys, stages)
    files.update(write_keywords(folder, store, segment, ids, stages, merged))
    store.set_segment_files(segment, files)
    target = plan.recall_target if plan is not None else RECALL_TARGET
    if index.trains:
        exact = (
            np.load(folder / segment_file(segment, NPY), mmap_mode="r")
            if isinstance(vectors, LazyVectors)
            else vectors
        )
        tuning = tune_segment(index, ids, exact, target)
        if tuning is not None:
            store.set_segment_settings(segment, tuning.to_dict())
    return segment


def _sample_of(vectors: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` rows of ``vectors`` drawn uniformly without replacement."""
    if count >= len(vectors):
        return np.asarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size=count, replace=False))
    return np.asarray(vectors[rows], dtype=np.float32)


def vector_plan(
    folder: Path, manifest: Manifest, current: Generation, index_type: str | None = None
) -> VectorPlan:
    """The plan a write makes its segments by: the manifest's settings and the shared quantizer.

    Raises:
        IncompatibleIndexError: if the quantizer's file is missing or damaged.
    """
    v = manifest.vectors
    quantizer = None
    record = current.quantizer
    if record and (index_type is None or index_type == v.index_type):
        quantizer = VectorIndex.read(folder / record["file"], record["factory"])
    return VectorPlan(
        index_type=index_type or v.index_type,
        dim=manifest.model.dim,
        memory_budget=v.memory_budget or default_memory_budget(),
        recall_target=v.recall_target or RECALL_TARGET,
        quantizer=quantizer,
    )


DRIFT = 1.2
"""Retrain when the quantizer's error on recent vectors passes this multiple of its
error on the sample it was trained on."""
GROWTH = 4
"""Retrain when the index has grown to want this many times the quantizer's lists."""


def retrain_reason(folder: Path, manifest: Manifest, current: Generation) -> str:
    """Why the shared quantizer should be trained again (empty: it need not be).

    Drift: its mean squared distance from the vectors of the segments
    written since it was trained (a sample of up to 20,000) to their nearest
    centroid, against the same on its training sample; growth: the index now
    wants :data:`GROWTH` times its lists (:func:`~semsearch.vectors.compressed_factory`).
    """
    record = current.quantizer
    if not record or manifest.vectors.index_type.strip().lower() != "auto":
        return ""
    quantizer = VectorIndex.read(folder / record["file"], record["factory"])
    wanted = VectorIndex.create(
        compressed_factory(current.vectors.ntotal, manifest.model.dim), manifest.model.dim
    )
    if wanted.nlist >= GROWTH * quantizer.nlist:
        return (
            f"the index has grown to {current.vectors.ntotal:,} vectors, which want "
            f"{wanted.nlist:,} lists; the quantizer has {quantizer.nlist:,}"
        )
    newer = SegmentSet(
        tuple(s for s in current.vectors.segments if s.row.generation > record["generation"]),
        {},
        current.vectors.dim,
    )
    if not newer.segments:
        return ""
    sample = draw_sample(newer, np.zeros((0, current.vectors.dim)), 20_000)
    error = quantizer.quantization_error(sample)
    if error > DRIFT * float(record["error"]):
        return (
            f"the vectors written since it was trained are {error / record['error']:.2f}x as "
            f"far from its centroids as its training sample"
        )
    return ""


def _remove_old_quantizer(folder: Path, current: Generation, plan: VectorPlan) -> None:
    """After a commit that trained a new quantizer: the old one's file (only writers read it)."""
    if plan.trained is not None and current.quantizer:
        (folder / current.quantizer["file"]).unlink(missing_ok=True)


def _save_quantizer(
    folder: Path, store: Store, plan: VectorPlan, generation: int, written: list[Path]
) -> None:
    """Write a quantizer this write trained, and record it (inside the transaction)."""
    if plan.trained is None or plan.quantizer is None:
        return
    path = folder / quantizer_file(generation)
    written.append(path)
    plan.quantizer.write(path)
    store.set_meta(
        QUANTIZER,
        {"file": path.name, **file_checksum(path), **plan.trained, "generation": generation},
    )


def _manifest_after(manifest: Manifest, store: Store, generation: int, index_type: str) -> Manifest:
    """The manifest of the generation being committed (read inside its transaction)."""
    rows = store.segments()
    largest = (
        max(rows, key=lambda r: r.n_vectors).factory if rows else manifest.vectors.faiss_factory
    )
    tuned = [r for r in rows if r.settings]
    tuning = max(tuned, key=lambda r: r.n_vectors).settings if tuned else {}
    n_articles, n_chunks = store.counts()
    # Recorded in the commit too: a reader checks its segments against it
    # without counting the chunks table (1.6 s at 10M chunks, at every open).
    store.set_meta(LIVE_CHUNKS, n_chunks)
    return replace(
        manifest,
        vectors=replace(
            manifest.vectors,
            index_type=index_type,
            faiss_factory=largest,
            file="",
            generation=generation,
            segments=len(rows),
            tuning=tuning,
        ),
        counts={"articles": n_articles, "chunks": n_chunks},
        updated_at=utc_now(),
        format_version=FORMAT_VERSION,  # the store was migrated on open
    )


def remove_segment_files(folder: Path, segments: Iterable[int]) -> None:
    """Delete the files of segments no longer live (a reader holding them keeps its mapping)."""
    for segment in segments:
        for suffix in (*SUFFIXES, *KEYWORD_SUFFIXES):
            (folder / segment_file(segment, suffix)).unlink(missing_ok=True)


def convert_legacy(
    folder: Path, store: Store, current: Generation, manifest: Manifest
) -> Committed:
    """Convert a format-3 index to segments, as the next generation.

    Its vectors (from SQLite, where format 3 kept every one) become one
    segment; the SQLite copies are emptied in the same transaction, and the
    freed pages go back to the file system after it (``VACUUM``). The caller
    holds the writer lock and has called :func:`recover`.
    """
    dim = manifest.model.dim
    number = current.number + 1
    stored = store.all_vectors(dim)
    keys = key_table(store.text_hashes(stored.chunk_ids.tolist()), stored.chunk_ids)
    written: list[Path] = []
    index_type = manifest.vectors.index_type
    try:
        with store.transaction():
            if len(stored.chunk_ids):
                plan = vector_plan(folder, manifest, current)
                n = len(stored.chunk_ids)
                fresh = plan.index_for(n, n, lambda count: _sample_of(stored.vectors, count))
                _add_segment(
                    folder,
                    store,
                    number,
                    fresh,
                    stored.chunk_ids,
                    stored.vectors,
                    keys,
                    written,
                    plan=plan,
                )
                _save_quantizer(folder, store, plan, number, written)
            store.drop_legacy_vectors()
            store.set_meta(LAYOUT, SEGMENTS)
            store.delete_meta(FACTORY)
            store.delete_meta(CHECKSUM)
            manifest = _manifest_after(manifest, store, number, index_type)
            store.set_meta(GENERATION, number)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    write_manifest(folder, manifest)
    for path in legacy_vector_files(folder):
        path.unlink(missing_ok=True)
    store.vacuum()
    return Committed(number, manifest, 0)


# -- before a write, and creating ----------------------------------------------------


def recover(folder: Path, store: Store, current: Generation, manifest: Manifest) -> Manifest:
    """Clean up after any crashed write; returns the manifest, rewritten if it lagged.

    The caller holds the writer lock and has loaded the committed generation.
    """
    remove_leftovers(folder, current)
    if current.vectors.legacy:
        return manifest  # its first write converts it, manifest and all
    n_articles, n_chunks = store.counts()
    counts = {"articles": n_articles, "chunks": n_chunks}
    if (
        manifest.counts == counts
        and manifest.vectors.generation == current.number
        and manifest.format_version == FORMAT_VERSION
    ):
        return manifest
    # A crash came between a commit and its manifest.
    with store.snapshot():
        manifest = _manifest_after(manifest, store, current.number, manifest.vectors.index_type)
    write_manifest(folder, manifest)
    return manifest


def remove_leftovers(folder: Path, current: Generation) -> list[str]:
    """Delete vector files the committed generation does not name (crashed or finished writes).

    Only a writer holding the lock may call this: any other writer could be
    between writing its new files and committing them.
    """
    live = {s.id for s in current.vectors.segments} if not current.vectors.legacy else set()
    keep = {vectors_file(current.number)} if current.vectors.legacy else set()
    if current.quantizer:
        keep.add(current.quantizer["file"])
    removed = []
    for path in vector_files(folder):
        segment = segment_of(path)
        stale = segment not in live if segment is not None else path.name not in keep
        if stale:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    for path in folder.glob("*.tmp"):
        # An older semsearch left its half-made ONNX export as a folder, onnx.tmp.
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def initialize(folder: Path) -> Store:
    """Write a new index's store at generation 0 (no segment yet); returns the open store.

    The caller holds the writer lock, has seen no manifest, and has called
    :func:`remove_failed_creation`; it writes the manifest last.
    """
    store = Store(folder / STORE_FILE, create=True)
    with store.transaction():
        store.set_meta(GENERATION, 0)
        store.set_meta(LAYOUT, SEGMENTS)
    return store


def remove_failed_creation(folder: Path) -> None:
    """Files of an earlier index creation that failed before its manifest was written.

    The caller holds the writer lock and has seen no manifest.
    """
    for name in store_files():
        (folder / name).unlink(missing_ok=True)
    for file in vector_files(folder):
        file.unlink()
    for pattern in (".tmp*", ".old-*"):  # onnx_backend.install's temporary folders
        for tmp in folder.glob(ONNX_FOLDER + pattern):
            shutil.rmtree(tmp, ignore_errors=True)


def remove_created(folder: Path, made_folder: bool) -> None:
    """Undo a failed creation: its index files, and the folder if the creation made it.

    The caller holds the writer lock and there was no manifest when it took it,
    so the index files here are this creation's. Anything else in the folder
    (the user's files) stays, and so does the folder then.
    """
    manifest_path(folder).unlink(missing_ok=True)
    manifest_path(folder).with_name(manifest_path(folder).name + ".tmp").unlink(missing_ok=True)
    remove_failed_creation(folder)
    shutil.rmtree(folder / ONNX_FOLDER, ignore_errors=True)
    if made_folder:
        # A writer waiting on this lock file notices it was removed (see lock.py).
        (folder / LOCK_FILE).unlink(missing_ok=True)
        with suppress(OSError):  # not empty: something that is not ours stays
            folder.rmdir()
