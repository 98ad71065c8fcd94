"""The commit protocol: generations of the vector file, and applying a change atomically.

Every write makes a new generation. The writer (:mod:`semsearch.writer`)
prepares everything first (loading, chunking, embedding) and describes the
write as a :class:`Change`; :func:`commit` applies it:

1. in one SQLite transaction, delete the dropped articles and insert the new
   ones (with their chunks and vectors);
2. build the next vector index, write and flush ``vectors.<n+1>.faiss`` beside
   ``vectors.<n>.faiss``;
3. record ``generation = n+1`` with the new file's size and CRC-32, and commit.

That SQLite commit is the single switch: before it, the index is generation n
in full; after it, n+1 in full. The manifest and the old file follow; both are
re-derivable, and the next writer repairs them (:func:`recover`) if a crash
came between. A failure at any earlier point leaves the index as it was.

A reader reads the generation and the SQLite rows it searches inside one read
transaction (a snapshot), so it never mixes two generations. If the file its
snapshot names is already gone (a writer switched and cleaned up in between),
it looks again (:func:`retry`) and loads the newer file.

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
from typing import BinaryIO, TypeVar

import numpy as np

from .errors import IncompatibleIndexError, damaged
from .lock import LOCK_FILE
from .manifest import (
    FORMAT_VERSION,
    STORE_FILE,
    Manifest,
    manifest_path,
    store_files,
    vector_files,
    vectors_file,
    write_manifest,
)
from .onnx_backend import FOLDER as ONNX_FOLDER
from .records import Article, Chunk
from .store import Store, utc_now
from .vectors import VectorIndex, resolve_factory

T = TypeVar("T")

# The commit record, in the store's meta table.
GENERATION = "generation"
FACTORY = "faiss_factory"
CHECKSUM = "faiss_file"
FAILPOINT_ENV = "SEMSEARCH_FAILPOINT"
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
    """A committed generation: its number and its loaded vector index."""

    number: int
    vectors: VectorIndex


def load_generation(folder: Path, store: Store, dim: int) -> Generation:
    """The committed generation's vectors, checked against what the commit recorded.

    Raises:
        IncompatibleIndexError: if the commit record or the file is missing or damaged,
            or the file does not hold one vector per chunk.
    """
    return retry(lambda: _load_once(folder, store, dim))


def _load_once(folder: Path, store: Store, dim: int) -> Generation:
    with store.snapshot():
        number = store.meta(GENERATION)
        factory = store.meta(FACTORY)
        recorded = store.meta(CHECKSUM)
        if number is None or factory is None:
            raise damaged(store.path, "it has no commit record")
        path = folder / vectors_file(int(number))
        try:
            # Opened once: checked and read through the same open file, which
            # stays readable even if a writer deletes the path meanwhile.
            file = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            # A writer switched generations and removed it: look again.
            raise Moved(f"{path} is missing; the index is incomplete") from None
        with file:
            _check_file(path, file, recorded)
            vectors = VectorIndex.read(path, str(factory), file)
        n_chunks = store.counts()[1]
    if vectors.ntotal != n_chunks or vectors.dim != dim:
        raise IncompatibleIndexError(
            f"the index at {folder} is inconsistent: {path.name} holds {vectors.ntotal} "
            f"vectors of dimension {vectors.dim} for {n_chunks} chunks of dimension {dim}; "
            "run `semsearch verify`, or rebuild it"
        )
    return Generation(int(number), vectors)


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
    text_hashes: Sequence[str]


@dataclass(frozen=True)
class Change:
    """One write, described before anything is touched; :func:`commit` applies it.

    Args:
        insert: articles to insert (an id already stored must also be in ``drop``).
        drop: ids of stored articles to delete, with their chunks and vectors.
        rebuild: build the vector index anew from the stored vectors.
        index_type: the index type from now on (``auto``, ``flat``, ``hnsw`` or a
            FAISS factory); default: the manifest's.
    """

    insert: Sequence[NewArticle] = ()
    drop: Sequence[str] = ()
    rebuild: bool = False
    index_type: str | None = None

    def new_vectors(self, dim: int) -> np.ndarray:
        """The inserted chunks' vectors, in insertion order: ``(n, dim)`` float32."""
        parts = [np.asarray(a.vectors, dtype=np.float32) for a in self.insert]
        return np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)


@dataclass(frozen=True)
class Committed:
    """What a commit left: the new generation, the manifest, and how many chunks went."""

    generation: Generation
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
    ``mid-faiss-write`` (the new file cut off halfway), ``before-commit``,
    ``after-commit``, ``after-manifest``.
    """
    if os.environ.get(FAILPOINT_ENV) != stage:
        return
    if truncate is not None:  # a write cut off halfway
        with open(truncate, "r+b") as f:
            f.truncate(truncate.stat().st_size // 2)
    os.kill(os.getpid(), signal.SIGKILL)


# -- applying it ------------------------------------------------------------------


def commit(
    folder: Path,
    store: Store,
    current: Generation,
    manifest: Manifest,
    change: Change,
    clock: StageClock | None = None,
) -> Committed:
    """Apply a change to SQLite and FAISS as the next generation.

    The caller holds the writer lock, and has called :func:`recover` since taking it.

    Args:
        folder: the index folder.
        store: the index's store (no transaction open).
        current: the committed generation; its vector index may be changed in
            place, so if this raises, the caller must load the committed one
            again (:func:`load_generation`).
        manifest: the current manifest; a new one is written and returned.
        change: what to apply.
        clock: where to add the ``sqlite`` and ``faiss`` seconds.

    Returns:
        the new generation, the new manifest and the number of chunks removed.

    Raises:
        BadInputError: if the vector index cannot be built (an IVF type with too
            few vectors to train on); nothing is changed then.
        OSError: if a file cannot be written; nothing is changed then.
    """
    clock = clock or StageClock()
    dim = manifest.model.dim
    index_type = change.index_type or manifest.vectors.index_type
    new_vectors = change.new_vectors(dim)
    next_file = folder / vectors_file(current.number + 1)
    try:
        with store.transaction():
            with clock("sqlite"):
                old_ids = store.chunk_ids(list(change.drop))
                store.delete_articles(list(change.drop))
                new_ids = [
                    store.insert_article(
                        a.article, a.article_hash, a.chunks, a.vectors, a.text_hashes
                    )
                    for a in change.insert
                ]
                ids = np.concatenate(new_ids) if new_ids else np.zeros(0, dtype=np.int64)
            with clock("faiss"):
                vectors = _next_vectors(
                    store, current.vectors, index_type, old_ids, ids, new_vectors, change.rebuild
                )
                failpoint("before-faiss-write")
                vectors.write(next_file)
                failpoint("mid-faiss-write", truncate=next_file)
                checksum = file_checksum(next_file)
            n_articles, n_chunks = store.counts()
            assert vectors.ntotal == n_chunks, "FAISS and SQLite disagree"
            store.set_meta(GENERATION, current.number + 1)
            store.set_meta(FACTORY, vectors.factory)
            store.set_meta(CHECKSUM, checksum)
            failpoint("before-commit")
            clock.start("sqlite")  # the commit itself
        clock.stop("sqlite")
    except BaseException:
        next_file.unlink(missing_ok=True)  # the committed file is intact
        raise
    failpoint("after-commit")
    # Committed. The manifest and the old file follow; both are re-derivable.
    manifest = replace(
        manifest,
        vectors=replace(
            manifest.vectors,
            index_type=index_type,
            faiss_factory=vectors.factory,
            file=next_file.name,
        ),
        counts={"articles": n_articles, "chunks": n_chunks},
        updated_at=utc_now(),
        format_version=FORMAT_VERSION,  # the store was migrated on open
    )
    write_manifest(folder, manifest)
    failpoint("after-manifest")
    (folder / vectors_file(current.number)).unlink(missing_ok=True)
    return Committed(Generation(current.number + 1, vectors), manifest, len(old_ids))


def _next_vectors(
    store: Store,
    current: VectorIndex,
    index_type: str,
    old_ids: np.ndarray,
    new_ids: np.ndarray,
    new_vectors: np.ndarray,
    rebuild: bool,
) -> VectorIndex:
    """The next generation's vector index: the current one changed in place, or a new one."""
    total = current.ntotal - len(old_ids) + len(new_ids)
    factory = resolve_factory(index_type, total)
    unremovable = len(old_ids) > 0 and not current.supports_remove
    if rebuild or unremovable or factory != current.factory:
        rebuilt = VectorIndex.create(factory, current.dim)
        if current.ntotal == 0:
            # A first add: the new vectors are all there is; reading them
            # back from SQLite would hold every vector twice more in memory.
            rebuilt.add(new_vectors, new_ids)
        else:
            stored = store.all_vectors(current.dim)  # this transaction's view
            rebuilt.add(stored.vectors, stored.chunk_ids)
        return rebuilt
    # Changed in place: if the commit fails, the caller reloads the committed file.
    current.remove(old_ids)
    current.add(new_vectors, new_ids)
    return current


# -- before a write, and creating ----------------------------------------------------


def recover(folder: Path, store: Store, generation: int, manifest: Manifest) -> Manifest:
    """Clean up after any crashed write; returns the manifest, rewritten if it lagged.

    The caller holds the writer lock and has loaded the committed ``generation``.
    """
    remove_leftovers(folder, generation)
    n_articles, n_chunks = store.counts()
    current = {"articles": n_articles, "chunks": n_chunks}
    if manifest.counts == current and manifest.vectors.file == vectors_file(generation):
        return manifest
    # A crash came between a commit and its manifest.
    manifest = replace(
        manifest,
        vectors=replace(manifest.vectors, file=vectors_file(generation)),
        counts=current,
    )
    write_manifest(folder, manifest)
    return manifest


def remove_leftovers(folder: Path, committed: int) -> list[str]:
    """Delete vector files of other generations (crashed or finished writes).

    Only a writer holding the lock may call this: any other writer could be
    between writing its new file and committing it.
    """
    removed = []
    for path in vector_files(folder):
        if path.name != vectors_file(committed):
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


def initialize(folder: Path, vectors: VectorIndex) -> Store:
    """Write a new index's store and generation 0; returns the open store.

    The caller holds the writer lock, has seen no manifest, and has called
    :func:`remove_failed_creation`; it writes the manifest last.
    """
    store = Store(folder / STORE_FILE, create=True)
    with store.transaction():
        vectors.write(folder / vectors_file(0))
        store.set_meta(GENERATION, 0)
        store.set_meta(FACTORY, vectors.factory)
        store.set_meta(CHECKSUM, file_checksum(folder / vectors_file(0)))
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
