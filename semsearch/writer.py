"""The write side of an index: creation, and change = diff + prune + chunk + embed.

A :class:`Writer` works on a :class:`~semsearch.reader.Reader`'s index. Each
write takes the folder's writer lock (:mod:`semsearch.lock`), picks up the
latest generation and cleans up after any crashed write
(:func:`semsearch.commit.recover`). An add then reads its input once, in
windows of at most :data:`WINDOW_CHUNKS` chunks, so that its memory does not
grow with its size: per window it compares the articles with what is stored
(by content hash), chunks what changed and embeds the chunks, reusing the
stored vector of any chunk text it has embedded before, and hands the window
as a :class:`~semsearch.commit.Change` to :func:`semsearch.commit.writing`,
which writes its rows and its segment inside the one SQLite transaction of the
whole add. Repeated ids and the ids seen for pruning are kept as hashes
(:class:`SeenIds`); what was pruned is removed at the end, and the commit
makes the whole add one generation (segments, tombstones); the reader then
reads that generation. If the merge policy
(:class:`~semsearch.config.MergePolicy`) then asks for it, the same write
merges segments, as one more generation.

Stage timings (``load``, ``diff``, ``chunk``, ``embed``, ``sqlite``, ``faiss``)
go into :attr:`AddResult.timings`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from . import __version__, commit
from .chunk import MAX_TITLE_TOKENS, Chunker
from .commit import Change, NewArticle, StageClock, failpoint
from .config import (
    BUILD_BACKENDS,
    DEFAULT_OVERLAP_TOKENS,
    RECALL_TARGET,
    Backend,
    MergePolicy,
    canonical_model_name,
    parse_bytes,
)
from .config import environment as read_environment
from .embed import (
    ONNX_FOLDER,
    Encoder,
    ExportableEncoder,
    backend_named,
    build_encoder,
    check_build_backend,
    document_encoder,
    fingerprint,
    load_encoder,
)
from .errors import BadInputError, LockedError, ModelError
from .load import STDIN_NAME, skipped_article, source_file
from .lock import WriterLock
from .manifest import ChunkerInfo, Manifest, ModelInfo, VectorsInfo, write_manifest
from .migrations import TEXT_HASH_BYTES
from .reader import Reader, make_chunker
from .records import AddResult, Article, Chunk, OptimizeResult, Skipped
from .segments import misfits, plan_merge
from .store import Store, utc_now
from .vectors import VectorIndex, resolve_factory

T = TypeVar("T")
MERGES_PER_WRITE = 3
"""Merges any write may run after its commit (see :meth:`Writer._settle`)."""
MERGE_WORK = 2
"""A large write may merge more: as long as the chunks its merges rewrite stay
under this many times the chunks it wrote (a 10M-chunk add leaves 150 windows
to merge; three merges would leave over a hundred segments to search)."""


class Writer:
    """Writes to the index a reader reads; every write holds the folder's writer lock.

    Args:
        reader: the index; after each commit it reads the new generation.
        lock_timeout: seconds a write waits for another process's write (0: fail at once).
    """

    def __init__(self, reader: Reader, lock_timeout: float = 0.0) -> None:
        self.reader = reader
        self.lock_timeout = lock_timeout
        self.holds_lock = False
        """Inside ``Index.creating``: this process holds the lock already."""
        self._store_id = _file_id(reader.path / reader.manifest.store_file)
        self._encoder: Encoder | None = None
        self.merge_policy = MergePolicy()

    @property
    def encoder(self) -> Encoder:
        """What embeds the articles: the encoder given to open or create, else the
        index's recorded build backend (:func:`semsearch.embed.document_encoder`),
        whatever embeds its queries."""
        if self._encoder is None:
            reader = self.reader
            given = reader._given_encoder
            self._encoder = given or document_encoder(reader.path, reader.manifest.model)
        return self._encoder

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer lock, clean up after any crashed write, and start from the latest."""
        if self.holds_lock:  # the creation's own first write: the lock is held already
            yield
            return
        reader = self.reader
        with WriterLock(reader.path, self.lock_timeout):
            if _file_id(reader.path / reader.manifest.store_file) != self._store_id:
                raise LockedError(
                    f"the index at {reader.path} was removed or replaced while this process "
                    "waited to write to it (its creation failed?); run again"
                )
            with reader._lock:
                reader.refresh()
                reader.manifest = commit.recover(
                    reader.path, reader._store, reader._current, reader.manifest
                )
                if reader._vectors.legacy:  # format 3: its first write converts it
                    done = commit.convert_legacy(
                        reader.path, reader._store, reader._current, reader.manifest
                    )
                    self._adopt(done)
            yield

    def _adopt(self, done: commit.Committed) -> None:
        """Read the generation just committed: its new segments open, the rest reused."""
        reader = self.reader
        dim = reader.manifest.model.dim
        generation = commit.load_generation(reader.path, reader._store, dim, reader._current)
        reader._adopt(generation, done.manifest)

    def _commit(self, change: Change, clock: StageClock | None = None) -> int:
        """Apply a change as the next generation, then merge if the policy says so.

        Returns the chunks removed.
        """
        reader = self.reader
        with reader._lock:  # no read of this index in between: its state is changing
            done = commit.commit(
                reader.path, reader._store, reader._current, reader.manifest, change, clock
            )
            self._settle(done, clock)
        return done.chunks_removed

    def _settle(
        self, done: commit.Committed, clock: StageClock | None = None, written: int = 0
    ) -> None:
        """Read the generation just committed, then merge segments if the policy says so.

        Up to :data:`MERGES_PER_WRITE` merges (each of at most the policy's
        ``max_merge_chunks``), and more while the chunks they rewrite stay
        under :data:`MERGE_WORK` times the ``written`` chunks of this write: a
        write's merge work follows its size, so a small write stays quick and
        a large add of many windows leaves the tiers as the policy wants them.
        """
        reader = self.reader
        with reader._lock:
            self._adopt(done)
            rewritten = 0
            for merges in itertools.count():
                plan = commit.vector_plan(reader.path, reader.manifest, reader._current)
                current = reader._vectors
                chosen = plan_merge(current, self.merge_policy, misfits(current, plan))
                if not chosen:
                    break
                size = sum(current.live(s) for s in current.segments if s.id in chosen)
                if merges >= MERGES_PER_WRITE and rewritten + size > MERGE_WORK * written:
                    break
                rewritten += size
                merged = commit.merge(
                    reader.path, reader._store, reader._current, reader.manifest, chosen, clock
                )
                self._adopt(merged)

    def add(
        self,
        articles: Iterable[Article | Skipped | Prepared],
        *,
        batch_size: int,
        progress: bool,
        prune: Sequence[str | os.PathLike[str]] | None,
        strict: bool,
        input_stage: str = "load",
    ) -> AddResult:
        """The write behind :meth:`semsearch.Index.add` (see there).

        ``input_stage`` names the time spent waiting for the input in
        :attr:`AddResult.timings`: ``load``, or ``workers`` for a distributed
        build's stream, which the workers loaded, chunked and embedded.

        The input is read once, in windows of :data:`WINDOW_CHUNKS` chunks: each
        is diffed, chunked, embedded and written (its rows, and its vectors as a
        segment) before the next is read, all inside the one SQLite transaction
        of :func:`semsearch.commit.writing`, so the whole add is one generation
        and its memory does not grow with its size. Pruning and ``strict``'s
        refusal come at the end, before the commit.
        """
        started = time.perf_counter()
        clock = StageClock()
        reader = self.reader
        tally = _Tally()
        with self.writing(), _progress_bar(progress) as bar, SeenIds(reader.path) as seen:
            # A connection of its own: this process's readers share the reader's,
            # and must not see this transaction's rows before their segments.
            store = Store(reader.path / reader.manifest.store_file)
            try:
                with commit.writing(
                    reader.path, store, reader._current, reader.manifest, clock
                ) as write:
                    self._add_windows(
                        articles, store, write, seen, tally, batch_size, bar, strict, input_stage
                    )
                    if strict and tally.skipped:
                        skipped = tally.skipped
                        raise BadInputError(
                            f"{len(skipped)} input(s) skipped and strict mode is on, so nothing "
                            f"was written; the first: {skipped[0]}"
                        )
                    if prune is not None:
                        tally.removed = self._prune(prune, store, write, seen, tally.skipped)
            finally:
                store.close()
            done = write.committed
            if done is not None:
                self._settle(done, clock, written=tally.chunks_added)
        return AddResult(
            added=tally.added,
            updated=tally.updated,
            unchanged=tally.unchanged,
            chunks_added=tally.chunks_added,
            chunks_removed=done.chunks_removed if done is not None else 0,
            skipped=tuple(tally.skipped),
            seconds=time.perf_counter() - started,
            timings=clock.seconds,
            removed=tally.removed,
            chunks_embedded=tally.chunks_embedded,
            lines_removed=tally.lines_removed,
        )

    def _add_windows(
        self,
        articles: Iterable[Article | Skipped | Prepared],
        store: Store,
        write: commit.Write,
        seen: SeenIds,
        tally: _Tally,
        batch_size: int,
        bar: _Bar,
        strict: bool,
        input_stage: str = "load",
    ) -> None:
        """Read, diff and chunk the input, embedding and writing it a window at a time.

        A :class:`Prepared` item was diffed, chunked and embedded elsewhere (a
        worker of a distributed build): its digest decides here, as an
        article's does, whether it is unchanged, and its chunks and vectors
        are used as they are. With ``strict``, the first skipped input stops
        the embedding and writing; the rest is still read and chunked, to
        count what is skipped.
        """
        settings = self.reader.manifest.chunker
        chunker: Chunker | None = None
        window: list[_Pending] = []
        in_window = 0
        for batch in _batches(write.clock.iterate(input_stage, articles), READ_ARTICLES):
            prepared = {id(p.article): p for p in batch if isinstance(p, Prepared)}
            plain = [p.article if isinstance(p, Prepared) else p for p in batch]
            fresh = seen.first_of_each_id(plain, tally.skipped)
            tally.lines_removed += sum(len(a.removed_lines) for a in fresh)
            with write.clock("diff"):
                digests = [
                    prepared[id(a)].digest if id(a) in prepared else article_hash(a) for a in fresh
                ]
                stored = store.article_hashes([a.id for a in fresh])
            for article, digest in zip(fresh, digests, strict=True):
                if stored.get(article.id) == digest:
                    tally.unchanged += 1
                    continue
                ready = prepared.get(id(article))
                with write.clock("chunk"):
                    if ready is not None:
                        chunks, texts, vectors = ready.chunked(article)
                    else:
                        if chunker is None:
                            chunker = make_chunker(
                                self.encoder, settings.overlap_tokens, settings.chunk_tokens
                            )
                        chunks = chunker.chunks(article)
                        texts = [chunker.embed_text(article, c) for c in chunks]
                        vectors = None
                if not chunks:
                    tally.skipped.append(skipped_article(article, "no text to index"))
                    continue
                if strict and tally.skipped:
                    continue  # refused at the end: nothing more to embed or write
                window.append(
                    _Pending(article, digest, chunks, texts, article.id in stored, vectors)
                )
                in_window += len(chunks)
                if in_window >= WINDOW_CHUNKS:
                    self._write_window(window, write, tally, batch_size, bar)
                    window, in_window = [], 0
        if window and not (strict and tally.skipped):
            self._write_window(window, write, tally, batch_size, bar)

    def _write_window(
        self,
        window: list[_Pending],
        write: commit.Write,
        tally: _Tally,
        batch_size: int,
        bar: _Bar,
    ) -> None:
        """Embed one window's chunks and apply it: its rows, and its vectors as a segment.

        Chunks that came with their vectors (:class:`Prepared`) are not embedded again.
        """
        texts = [t for pending in window for t in pending.texts]
        with write.clock("embed"):
            text_hashes = [_embedded_text_hash(t) for t in texts]
            wanted: list[int] = []  # the chunks to embed here
            start = 0
            for p in window:
                if p.vectors is None:
                    wanted.extend(range(start, start + len(p.texts)))
                start += len(p.texts)
            fresh, embedded = self._embed_documents(
                [texts[i] for i in wanted], [text_hashes[i] for i in wanted], batch_size, bar
            )
            given = sum(len(p.texts) for p in window if p.vectors is not None)
            bar.update(given)
        failpoint("after-embed")
        insert, start, at = [], 0, 0
        for p in window:
            part = slice(start, start + len(p.chunks))
            if p.vectors is None:
                vectors = fresh[at : at + len(p.chunks)]
                at += len(p.chunks)
            else:
                vectors = p.vectors
            insert.append(NewArticle(p.article, p.digest, p.chunks, vectors, text_hashes[part]))
            start = part.stop
        replaced = [p.article.id for p in window if p.stored]
        write.apply(Change(insert=insert, drop=replaced))
        tally.added += len(window) - len(replaced)
        tally.updated += len(replaced)
        tally.chunks_added += len(texts)
        tally.chunks_embedded += embedded + given

    def _embed_documents(
        self, texts: list[str], text_hashes: list[bytes], batch_size: int, bar: _Bar
    ) -> tuple[np.ndarray, int]:
        """Vectors for chunk texts: reused where this index embedded the same text, else new.

        Returns the vectors and how many were embedded now.
        """
        reader = self.reader
        dim = reader.manifest.model.dim
        vectors = np.zeros((len(texts), dim), dtype=np.float32)
        with reader._lock:
            cached = reader._vectors.reusable(sorted(set(text_hashes)))
        # One embedding per distinct new text, however many chunks share it.
        todo = {h: i for i, h in reversed(list(enumerate(text_hashes))) if h not in cached}
        items = list(todo.items())
        for start in range(0, len(items), EMBED_STEP):  # the bar moves once per step
            step = items[start : start + EMBED_STEP]
            fresh = self.encoder.encode_documents(
                [texts[i] for _, i in step], batch_size=batch_size, progress=False
            )
            cached.update(zip((h for h, _ in step), fresh, strict=True))
            bar.update(len(step))
        for i, h in enumerate(text_hashes):
            vectors[i] = cached[h]
        return vectors, len(todo)

    def _prune(
        self,
        sources: Sequence[str | os.PathLike[str]],
        store: Store,
        write: commit.Write,
        seen: SeenIds,
        skipped: list[Skipped],
    ) -> int:
        """Remove the indexed articles read from under these sources that this add did not
        read again, a page of stored articles at a time; returns how many."""
        # "-" is stdin, whose rows load_paths names "<stdin>:LINE".
        roots = [STDIN_NAME if os.fspath(s) == "-" else _canonical(s) for s in sources]
        troubled = {_canonical(s.path) for s in skipped}
        removed = 0
        for page in _stored_paths(store):
            read = seen.contains([article_id for article_id, _ in page])
            gone = []
            for (article_id, path), again in zip(page, read, strict=True):
                if again or path is None:
                    continue
                file = _canonical(source_file(path))
                if file not in troubled and any(_under(file, root) for root in roots):
                    gone.append(article_id)
            if gone:
                write.apply(Change(remove=gone))
                removed += len(gone)
        return removed

    def remove(self, article_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """The write behind :meth:`semsearch.Index.remove`: (removed ids, ids not found)."""
        wanted = list(dict.fromkeys(article_ids))
        with self.writing():
            with self.reader._lock:
                present = self.reader._store.article_hashes(wanted)
            removed = [i for i in wanted if i in present]
            missing = [i for i in wanted if i not in present]
            if removed:
                self._commit(Change(remove=removed))
        return removed, missing

    def rebuild(self, index_type: str | None = None) -> None:
        """The write behind :meth:`semsearch.Index.rebuild`."""
        if index_type is not None:
            # Refuse an invalid type before touching anything.
            n = self.reader._vectors.ntotal
            VectorIndex.create(resolve_factory(index_type, n), self.reader.manifest.model.dim)
        with self.writing():
            self._commit(Change(rebuild=True, index_type=index_type))

    def optimize(self) -> OptimizeResult:
        """The write behind :meth:`semsearch.Index.optimize`."""
        started = time.perf_counter()
        reader = self.reader
        with self.writing(), reader._lock:
            current = reader._vectors
            before, tombstones = len(current.segments), current.n_tombstones
            reason = commit.retrain_reason(reader.path, reader.manifest, reader._current)
            if before > 1 or tombstones or reason:
                merged = commit.merge(
                    reader.path,
                    reader._store,
                    reader._current,
                    reader.manifest,
                    [s.id for s in current.segments],
                    retrain=bool(reason),
                )
                self._adopt(merged)
            after = len(reader._vectors.segments)
        return OptimizeResult(
            before, after, tombstones, time.perf_counter() - started, retrained=reason
        )

    def tune(
        self, queries: Sequence[str] | np.ndarray | None, recall_target: float | None
    ) -> list[dict[str, Any]]:
        """The write behind :meth:`semsearch.Index.tune` (see there)."""
        reader = self.reader
        target = reader.manifest.vectors.recall_target if recall_target is None else recall_target
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
            raise BadInputError(f"recall target {target!r}: must be a share in (0, 1], e.g. 0.95")
        vectors = None
        if isinstance(queries, str):
            queries = [queries]  # one query, not one per character
        if queries is not None and not isinstance(queries, np.ndarray):
            queries = list(queries)
            if not queries:
                raise BadInputError(
                    "no tuning queries given (leave queries out to tune on held-out vectors)"
                )
            empty = [n for n, q in enumerate(queries) if not str(q).strip()]
            if empty:
                raise BadInputError(f"tuning query {empty[0]} is empty")
        if queries is not None:
            if isinstance(queries, np.ndarray):
                vectors = np.atleast_2d(np.asarray(queries, dtype=np.float32))
            else:
                vectors = self.encoder.encode_queries(list(queries))
            if (
                vectors.ndim != 2
                or vectors.shape[1] != reader.manifest.model.dim
                or not len(vectors)
            ):
                raise BadInputError(
                    f"tuning queries of shape {vectors.shape}: need (n, "
                    f"{reader.manifest.model.dim}) query vectors, n >= 1"
                )
        with self.writing(), reader._lock:
            done, tuned = commit.retune(
                reader.path,
                reader._store,
                reader._current,
                reader.manifest,
                vectors,
                float(target),
            )
            self._adopt(done)
        return tuned

    def export_onnx(self) -> bool:
        """The write behind :meth:`semsearch.Index.export_onnx`."""
        reader = self.reader
        model = reader.manifest.model
        encoder = load_encoder(model.name, model.query_prompt, model.document_prompt)
        if not isinstance(encoder, ExportableEncoder):
            return False
        with self.writing():
            try:
                model.onnx = encoder.install_onnx(
                    reader.path / ONNX_FOLDER, read_environment().cache_dir
                )
            except ModelError:
                return False
            write_manifest(reader.path, reader.manifest)
        return True


# -- the windows of an add -------------------------------------------------------------

WINDOW_CHUNKS = 65_536
"""Chunks an add embeds and writes at a time, as one segment of its generation.

While a window is written the process holds its chunks' texts, their vectors
(96 MiB of 384-d float32) and the segment's FAISS index; SQLite's page cache
is bounded too (:data:`semsearch.store.WRITE_CACHE_KIB`), spilling the rest
of the transaction to its WAL. So an add of any size peaks a few hundred MB
above what the process held before, and makes one segment per window."""
READ_ARTICLES = 4_096
"""Articles read from the input at a time, checked for repeated ids and compared
with the store in one query."""
EMBED_STEP = 4_096
"""Texts per call to the encoder: the progress bar moves once per call."""
PAGE_ARTICLES = 10_000
"""Stored articles read at a time when pruning."""


@dataclass
class _Tally:
    """What an add has done so far, for :class:`AddResult`."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks_added: int = 0
    chunks_embedded: int = 0
    lines_removed: int = 0
    skipped: list[Skipped] = dataclass_field(default_factory=list)


@dataclass(frozen=True)
class _Pending:
    """An article of the window being filled: chunked, to be embedded."""

    article: Article
    digest: str
    chunks: list[Chunk]
    texts: list[str]
    """The text embedded for each chunk (:meth:`semsearch.chunk.Chunker.embed_text`)."""
    stored: bool
    """Whether it replaces a stored article of its id."""
    vectors: np.ndarray | None = None
    """``(len(chunks), dim)`` float32 unit vectors if they came embedded, else None."""


@dataclass(frozen=True)
class Prepared:
    """An article loaded, diffed, chunked and embedded elsewhere (a distributed build's
    worker), for :meth:`Writer.add`: the write itself decides as for any article.

    A worker that found the article unchanged in the snapshot of stored hashes
    it was given sends no text (``article.text`` is ``""``) and no chunks
    (``chunks`` None): the write, under the lock the snapshot was taken in,
    finds it unchanged too.
    """

    article: Article
    digest: str
    """:func:`article_hash` of the whole article, computed where it was loaded."""
    chunks: list[Chunk] | None
    """Its chunks (none: no text to index), or None if it was not chunked."""
    texts: list[str]
    """The text embedded for each chunk."""
    vectors: np.ndarray
    """``(len(chunks), dim)`` float32 unit vectors of ``texts``."""

    def chunked(self, article: Article) -> tuple[list[Chunk], list[str], np.ndarray]:
        """Its chunks, texts and vectors, for a write that found it changed.

        Raises:
            RuntimeError: if it was not chunked: the worker's snapshot said it was
                unchanged, and the index says otherwise (the index changed under
                the writer lock: a bug).
        """
        if self.chunks is None:
            raise RuntimeError(
                f"article {article.id!r} was sent as unchanged but the index holds another "
                "version: the index changed during the build"
            )
        return self.chunks, self.texts, self.vectors


class _Bar(Protocol):
    def update(self, n: int) -> object: ...


class _NoBar:
    def update(self, n: int) -> None:
        return None


@contextmanager
def _progress_bar(show: bool) -> Iterator[_Bar]:
    """One bar for a whole add, counting the chunks embedded (its total is unknown:
    the input is read as it goes)."""
    if not show:
        yield _NoBar()
        return
    from tqdm import tqdm  # comes with sentence-transformers and huggingface_hub

    with tqdm(desc="Embedding", unit=" chunks") as bar:
        yield bar


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


_PAGE_OF_PATHS = (
    "SELECT pk, id, path FROM articles WHERE pk > ?"
    " AND pk NOT IN (SELECT pk FROM removed_articles) ORDER BY pk LIMIT ?"
)


def _stored_paths(store: Store) -> Iterator[list[tuple[str, str | None]]]:
    """Every stored article's (id, path it was read from), a page at a time (not a list
    of millions at once)."""
    after = -(2**63)
    while rows := store.execute(_PAGE_OF_PATHS, (after, PAGE_ARTICLES)):
        after = rows[-1][0]
        yield [(article_id, path) for _pk, article_id, path in rows]


class SeenIds:
    """The article ids one add has read, in bounded memory: for repeated ids and pruning.

    Each id costs 16 bytes of RAM: an 8-byte hash (BLAKE2b) kept in sorted
    runs, merged as they grow (a log-structured merge: O(log n) runs), and the
    offset in a temporary spool file of the id itself and the path it was
    first read from. The spool is read only for an id whose hash was seen
    before: to name where it was first read, and to tell a repeat from two ids
    whose hashes collide. Ten million ids: 160 MB, where a set of the strings
    would take gigabytes. Use it as a context manager (the spool is closed at
    its end; the file has no name and goes with it).

    Args:
        folder: where the spool file goes (default: the system's temporary folder).
    """

    def __init__(self, folder: Path | None = None) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        # No name, so nothing is left behind even by a crash. 50 bytes an id or so:
        # in the index's folder (default: the system's), not a /tmp that may be RAM.
        self._spool = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed by __exit__)
        self._spooled = 0
        """Bytes in the spool (each batch's records are appended in one write)."""

    def __enter__(self) -> SeenIds:
        return self

    def __exit__(self, *exc: object) -> None:
        self._spool.close()

    def first_of_each_id(
        self, items: Sequence[Article | Skipped], skipped: list[Skipped]
    ) -> list[Article]:
        """The articles among these whose id was not read before, in this batch or earlier.

        As :func:`semsearch.load.first_of_each_id`, in bounded memory: a later
        article of an id is appended to ``skipped`` as a :class:`Skipped` that
        names its file and line and where the first one was read; the
        :class:`Skipped` items among ``items`` are appended too, in order.
        """
        articles = [item for item in items if isinstance(item, Article)]
        hashes = id_hashes([a.id for a in articles])
        earlier = self._first_paths(hashes, [a.id for a in articles])
        here: dict[str, str] = {}
        kept: list[Article] = []
        new_hashes: list[int] = []
        offsets: list[int] = []
        records: list[bytes] = []
        n = 0
        for item in items:
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            first = earlier[n] or here.get(item.id)
            digest = int(hashes[n])
            n += 1
            if first is not None:
                skipped.append(
                    skipped_article(
                        item,
                        f"duplicate id {item.id!r}, first at {first}; this one is skipped",
                    )
                )
                continue
            here[item.id] = item.path or "an earlier article"
            key, where = _utf8(item.id), _utf8(here[item.id])
            records.append(struct.pack("<II", len(key), len(where)) + key + where)
            offsets.append(self._spooled)
            self._spooled += len(records[-1])
            new_hashes.append(digest)
            kept.append(item)
        self._spool.seek(0, os.SEEK_END)
        self._spool.write(b"".join(records))
        self._add_run(np.array(new_hashes, dtype=np.uint64), np.array(offsets, dtype=np.int64))
        return kept

    def contains(self, ids: Sequence[str]) -> np.ndarray:
        """Whether each id was read: ``(n,)`` bool.

        By hash alone: an id whose hash collides with one read (about one in
        2**64 / n) counts as read, which keeps it from being pruned.
        """
        hashes = id_hashes(ids)
        found = np.zeros(len(hashes), dtype=bool)
        for run, _ in self._runs:
            at = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            found |= run[at] == hashes
        return found

    def _first_paths(self, hashes: np.ndarray, ids: Sequence[str]) -> list[str | None]:
        """Where each id was first read, if it was read before (from the spool)."""
        found: list[str | None] = [None] * len(ids)
        for run, offsets in self._runs:
            at = np.searchsorted(run, hashes)
            hits = np.flatnonzero(run[np.minimum(at, len(run) - 1)] == hashes)
            for hit in hits:  # repeats, and collisions of 64-bit hashes
                n, i = int(hit), int(at[hit])
                while found[n] is None and i < len(run) and run[i] == hashes[n]:
                    article_id, path = self._spool_read(int(offsets[i]))
                    if article_id == ids[n]:
                        found[n] = path
                    i += 1
        return found

    def _add_run(self, hashes: np.ndarray, offsets: np.ndarray) -> None:
        if not len(hashes):  # a batch of repeats only
            return
        order = np.argsort(hashes, kind="stable")
        self._runs.append((hashes[order], offsets[order]))
        # Merge while the run before is not much larger: sizes fall geometrically.
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            newer, older = self._runs.pop(), self._runs.pop()
            self._runs.append(_merge_sorted(older, newer))

    def _spool_read(self, offset: int) -> tuple[str, str]:
        self._spool.seek(offset)
        n_key, n_where = struct.unpack("<II", self._spool.read(8))
        key, where = self._spool.read(n_key), self._spool.read(n_where)
        return key.decode("utf-8", "surrogatepass"), where.decode("utf-8", "surrogatepass")


def _merge_sorted(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Two runs of (sorted hashes, offsets) as one, by placing each element where it
    goes (no sort, no concatenated copy: the peak is the two runs and the result)."""
    n = len(a[0]) + len(b[0])
    hashes, offsets = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.int64)
    at = np.searchsorted(a[0], b[0], side="right") + np.arange(len(b[0]))
    hashes[at], offsets[at] = b
    rest = np.ones(n, dtype=bool)
    rest[at] = False
    hashes[rest], offsets[rest] = a
    return hashes, offsets


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """An 8-byte BLAKE2b hash of each article id: ``(n,)`` uint64."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(_utf8(i), digest_size=8).digest(), "little") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


# -- creating an index ---------------------------------------------------------------


@dataclass(frozen=True)
class CreationSettings:
    """What an index is created with: fixed for its life, recorded in its manifest.

    ``None`` means not given: the default when an index is created, and
    whatever the index has when one is opened by
    :meth:`semsearch.Index.open_or_create`. The fields are the keyword
    arguments of :meth:`semsearch.Index.create` of the same names.
    """

    model: str | None = None
    index_type: str | None = None
    overlap_tokens: int | None = None
    chunk_tokens: int | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None
    build_backend: str | None = None
    memory_budget: str | int | None = None
    recall_target: float | None = None

    def conflicts(self, manifest: Manifest) -> list[tuple[str, Any, Any]]:
        """The given settings an existing index was not made with: ``(name, given, has)``.

        A setting equal to its default counts as not given, so a command run
        the same way every night, defaults spelt out, still matches.
        """
        m = manifest.model
        has = {
            "model": m.name,
            "index_type": manifest.vectors.index_type,
            "overlap_tokens": manifest.chunker.overlap_tokens,
            "chunk_tokens": manifest.chunker.chunk_tokens or m.max_tokens,
            "query_prompt": m.query_prompt,
            "document_prompt": m.document_prompt,
            "build_backend": m.backend,
            "memory_budget": manifest.vectors.memory_budget or "the default (a quarter of memory)",
            "recall_target": manifest.vectors.recall_target,
        }
        defaults: dict[str, Any] = {"index_type": "auto", "overlap_tokens": DEFAULT_OVERLAP_TOKENS}
        differ = []
        for field in fields(self):
            given = getattr(self, field.name)
            if given is None or given == defaults.get(field.name):
                continue
            if field.name == "model":
                given = canonical_model_name(given)
            if field.name == "build_backend" and given == Backend.AUTO:
                continue
            if field.name == "memory_budget":
                given = parse_bytes(given)
            if given != has[field.name]:
                differ.append((field.name, given, has[field.name]))
        return differ


@dataclass
class CreationPlan:
    """A new index's settings, validated, with its model loaded; nothing written yet."""

    encoder: Encoder
    vectors: VectorIndex
    manifest: Manifest
    onnx: bool
    backend: Backend
    given: bool
    """Whether the caller gave the encoder object (then it builds the index as it is)."""


def plan_creation(
    env: Any,
    settings: CreationSettings,
    *,
    encoder: Encoder | None = None,
    onnx: bool = True,
) -> CreationPlan:
    """Validate a new index's settings and load its model; writes nothing.

    Raises:
        BadInputError: for an unknown backend, an invalid index type or chunk setting.
        ModelError: if the model cannot be loaded.
    """
    backend = backend_named(settings.build_backend or Backend.AUTO, BUILD_BACKENDS, "build backend")
    given = encoder is not None
    model = settings.model
    if encoder is None:
        name = canonical_model_name(model or env.model)
        encoder = load_encoder(name, settings.query_prompt, settings.document_prompt)
    elif model is not None and canonical_model_name(model) != encoder.name:
        raise BadInputError(f"model {model!r} given with an encoder for {encoder.name!r}")
    overlap_tokens = (
        DEFAULT_OVERLAP_TOKENS if settings.overlap_tokens is None else settings.overlap_tokens
    )
    index_type = settings.index_type or "auto"
    make_chunker(encoder, overlap_tokens, settings.chunk_tokens)
    budget = parse_bytes(settings.memory_budget) if settings.memory_budget is not None else 0
    target = RECALL_TARGET if settings.recall_target is None else settings.recall_target
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise BadInputError(f"recall target {target!r}: must be a share in (0, 1], e.g. 0.95")
    factory = resolve_factory(index_type, 0)
    vectors = VectorIndex.create(factory, encoder.dim)
    check_build_backend(encoder, backend)
    now = utc_now()
    manifest = Manifest(
        model=ModelInfo(
            name=encoder.name,
            dim=encoder.dim,
            max_tokens=encoder.max_tokens,
            special_tokens=encoder.special_tokens,
            backend=encoder.backend,
            fingerprint=fingerprint(encoder),
            query_prompt=encoder.query_prompt,
            document_prompt=encoder.document_prompt,
        ),
        chunker=ChunkerInfo(
            overlap_tokens=overlap_tokens,
            chunk_tokens=settings.chunk_tokens,
            max_title_tokens=MAX_TITLE_TOKENS,
        ),
        vectors=VectorsInfo(
            index_type, faiss_factory=factory, memory_budget=budget, recall_target=float(target)
        ),
        counts={"articles": 0, "chunks": 0},
        created_at=now,
        updated_at=now,
        semsearch_version=__version__,
        library_versions=_library_versions(),
    )
    return CreationPlan(encoder, vectors, manifest, onnx, backend, given)


def create_locked(folder: Path, cache_dir: Path, plan: CreationPlan) -> tuple[Store, Encoder]:
    """Write a new index's files; the caller holds the writer lock and has seen no manifest.

    Returns the open store and the encoder that builds the index (the ONNX
    export's, for an ONNX build backend: see :func:`semsearch.embed.build_encoder`).
    The manifest, written last, is what makes the folder an index for everyone else.
    """
    commit.remove_failed_creation(folder)
    manifest = plan.manifest
    chosen = build_encoder(
        plan.encoder, folder, cache_dir, plan.backend, export=plan.onnx, given=plan.given
    )
    manifest.model.onnx = chosen.onnx
    if chosen.encoder is not plan.encoder:
        # The index is built, and will be queried, with the exported model.
        manifest.model.backend = chosen.backend
        manifest.model.fingerprint = fingerprint(chosen.encoder)
    store = commit.initialize(folder)
    write_manifest(folder, manifest)
    return store, chosen.encoder


# -- identity of articles and paths ----------------------------------------------------


def article_hash(article: Article) -> str:
    """A hash of everything indexed about an article (not where it was read from).

    Stored in the ``articles.content_hash`` column (its name since format 1), it
    decides whether a write skips an article as unchanged. Not an article's id
    (:func:`semsearch.load.default_article_id`) nor a chunk's text hash
    (:func:`_embedded_text_hash`).
    """
    data = article.to_dict()
    data.pop("path", None)
    data.pop("removed_lines", None)  # what cleaning dropped is not indexed
    encoded = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _embedded_text_hash(text: str) -> bytes:
    """Key of the embedding cache: the first 16 bytes of the SHA-256 of the exact
    text embedded for a chunk.

    Stored in ``chunks.text_hash`` (a 16-byte blob) and in the key table of the
    chunk's segment, where writes look it up; the model and prompt are the
    index's, so the text alone decides the vector.
    """
    return hashlib.sha256(text.encode("utf-8")).digest()[:TEXT_HASH_BYTES]


def _canonical(path: str | os.PathLike[str]) -> str:
    """One spelling of a path, for comparing where articles came from.

    Absolute and resolved (``./``, ``..``, repeated slashes and symbolic links,
    as far as they exist); ``<stdin>`` stays as it is. A relative path stored
    by an older semsearch resolves against the current directory.
    """
    text = os.fspath(path)
    return text if text == STDIN_NAME else os.path.realpath(text)


def _under(file: str, root: str) -> bool:
    return file == root or file.startswith(root.rstrip(os.sep) + os.sep)


def _file_id(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` now (device and inode), or None."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("faiss-cpu", "numpy", "sentence-transformers", "torch", "transformers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions
