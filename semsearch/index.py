"""The :class:`Index` facade: one folder, one model, articles in, hits out.

The folder holds ``manifest.json`` (what the index is), ``store.sqlite``
(articles, chunks, their vectors, and the commit record) and
``vectors.<generation>.faiss``. A write prepares everything first (loading,
chunking, embedding), then writes the next generation's FAISS file beside the
current one and commits the SQLite transaction that names it: that commit is
the single switch, so a failure at any earlier point leaves the index as it
was. Old files are removed after the switch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import __version__, generations
from .chunk import MAX_TITLE_TOKENS, Chunker
from .config import (
    BACKENDS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_K,
    DEFAULT_OVERLAP_TOKENS,
    canonical_model_name,
)
from .config import environment as read_environment
from .embed import (
    BACKEND_SENTENCE_TRANSFORMERS,
    Encoder,
    fingerprint,
    load_encoder,
    prompt_tokens,
    same_model,
)
from .errors import (
    BadInputError,
    IncompatibleIndexError,
    IndexExistsError,
    LockedError,
    ModelError,
    QueryTruncatedWarning,
)
from .filters import compile_filter
from .generations import CHECKSUM, FACTORY, GENERATION, file_checksum, vectors_file
from .keywords import match_expression
from .load import (
    STDIN_NAME,
    FieldMap,
    first_of_each_id,
    load_paths,
    skipped_article,
    source_file,
)
from .lock import LOCK_FILE, WriterLock
from .manifest import (
    FORMAT_VERSION,
    STORE_FILE,
    ChunkerInfo,
    Manifest,
    ModelInfo,
    VectorsInfo,
    manifest_path,
    read_manifest,
    write_manifest,
)
from .onnx_backend import FOLDER as ONNX_FOLDER
from .onnx_backend import OnnxEncoder
from .records import AddResult, Article, Chunk, Hit, IndexInfo, Skipped
from .search import DEFAULT_MODE, HYBRID_WEIGHT, MODES, Query, search
from .store import Store, utc_now
from .vectors import VectorIndex, resolve_factory

T = TypeVar("T")
BUILD_BACKENDS = ("torch", "onnx", "onnx-int8")
BACKEND_INT8 = "onnx-int8"
# Set to a stage name (see _failpoint), a write kills its own process there with
# SIGKILL: how the tests prove that a crash at any point loses nothing.
FAILPOINT_ENV = "SEMSEARCH_FAILPOINT"


class Index:
    """A semantic search index in a folder.

    Create one with :meth:`create`, open one with :meth:`open`; use it as a
    context manager or call :meth:`close`.

    Example:
        >>> from semsearch import Index, load_paths
        >>> with Index.create("indexes/news") as index:
        ...     index.add(load_paths(["examples/articles"]))
        ...     hits = index.search("NATO Indo-Pacific", k=5)
        >>> hits[0].title
    """

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        store: Store,
        vectors: VectorIndex,
        encoder: Encoder | None = None,
        generation: int = 0,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self._store = store
        self._vectors = vectors
        self._encoder = encoder
        self._generation = generation
        self.backend = "auto"
        self.lock_timeout = 0.0
        """Seconds a write waits for another process's write to finish (0: fail at once)."""
        self._creating = False  # inside Index.creating: this process holds the lock
        self._store_id = _file_id(path / manifest.store_file)

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        model: str | None = None,
        index_type: str = "auto",
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
        chunk_tokens: int | None = None,
        encoder: Encoder | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        onnx: bool = True,
        backend: str = "torch",
        lock_timeout: float = 0.0,
    ) -> Index:
        """Create an empty index in a folder (made if needed).

        Creation is a write like any other: it holds the folder's writer lock,
        so of several processes creating the same index at once, one creates it
        and the others wait (``lock_timeout``) or get :class:`LockedError`, then
        find it made (:class:`IndexExistsError`). To create and fill an index in
        one hold of the lock, use :meth:`creating`.

        Args:
            path: the folder; default ``$SEMSEARCH_INDEX`` or ``indexes/default``.
            model: sentence-transformers model name or folder (default all-MiniLM-L6-v2).
            index_type: ``auto`` (exact up to 100k chunks, HNSW above), ``flat``,
                ``hnsw``, or any FAISS factory string such as ``IVF1024,Flat``.
            overlap_tokens: tokens of whole sentences shared by consecutive chunks.
            chunk_tokens: cap on a chunk's tokens (default: what the model reads).
            encoder: an already loaded encoder (overrides ``model`` and the prompts).
            query_prompt, document_prompt: text put before each query or passage for
                models that expect it (e5: ``"query: "`` and ``"passage: "``).
                Default: the model's own configured prompts, if any. Recorded in
                the manifest and used for every later query.
            onnx: also export the model to ONNX (once per machine, cached) so that
                queries run on ONNX Runtime without importing torch.
            backend: what embeds the articles: ``torch`` (sentence-transformers,
                the reference), ``onnx`` (the same vectors from ONNX Runtime) or
                ``onnx-int8`` (dynamically quantised for this CPU: about 4x the
                reference's speed, at a measured cost in quality; queries then
                use the same int8 model). Recorded in the manifest.
            lock_timeout: seconds to wait for another process writing to (or
                creating) the same folder; 0 fails at once.

        Raises:
            IndexExistsError: if the folder already holds an index.
            LockedError: if another process holds the writer lock past ``lock_timeout``.
            BadInputError: for an invalid index type or chunk setting.
            ModelError: if the model cannot be loaded.
        """
        with cls.creating(
            path,
            model=model,
            index_type=index_type,
            overlap_tokens=overlap_tokens,
            chunk_tokens=chunk_tokens,
            encoder=encoder,
            query_prompt=query_prompt,
            document_prompt=document_prompt,
            onnx=onnx,
            backend=backend,
            lock_timeout=lock_timeout,
        ) as index:
            pass
        return index

    @classmethod
    @contextmanager
    def creating(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = 0.0,
        **settings: Any,
    ) -> Iterator[Index]:
        """Create an index and keep its writer lock until the ``with`` block ends.

        The block's writes (a first :meth:`add`) are part of the creation: no
        other writer gets in between. If creating or the block fails, every
        file this creation made is removed (and the folder, if it made it)
        before the lock is released; files it did not make are never touched.
        Other processes can open the new index once created, and write to it
        once the block ends.

        Args:
            path: the folder, as for :meth:`create`.
            lock_timeout: seconds to wait for another process's write; 0 fails at once.
            settings: the keyword arguments of :meth:`create`.

        Raises:
            the errors of :meth:`create`.

        Example:
            >>> with Index.creating("indexes/news") as index, index:
            ...     index.add(load_paths(["examples/articles"]))
        """
        env = read_environment()
        folder = Path(path) if path is not None else env.index_dir
        if manifest_path(folder).exists():
            raise IndexExistsError(f"an index already exists at {folder}; open it instead")
        # Everything is validated, and the model loaded, before anything is written.
        plan = _plan_creation(env, **settings)
        try:
            folder.mkdir(parents=True)
            made_folder = True
        except FileExistsError:
            made_folder = False
        # If the lock is held, the holder is creating the index in this folder:
        # nothing is removed then, not even a folder this process made.
        with WriterLock(folder, lock_timeout, make_folder=True) as lock:
            if manifest_path(folder).exists():  # another process created it meanwhile
                raise IndexExistsError(f"an index already exists at {folder}; open it instead")
            made_folder = made_folder or lock.made_folder
            index: Index | None = None
            try:
                index = cls._create_locked(folder, env.cache_dir, *plan)
                index._creating = True
                yield index
            except BaseException:
                # Under the lock, with no manifest before: every index file here is this
                # creation's (or a crashed one's), and nobody else can have written since.
                if index is not None:
                    index.close()
                _remove_created(folder, made_folder)
                raise
            finally:
                if index is not None:
                    index._creating = False

    @classmethod
    def _create_locked(
        cls,
        folder: Path,
        cache_dir: Path,
        encoder: Encoder,
        vectors: VectorIndex,
        manifest: Manifest,
        onnx: bool,
        backend: str,
    ) -> Index:
        """Write a new index's files; the caller holds the writer lock."""
        _remove_leftovers(folder)
        install = getattr(encoder, "install_onnx", None)
        if install is not None and (onnx or backend != "torch"):
            try:
                quantize = backend == BACKEND_INT8
                manifest.model.onnx = install(folder / ONNX_FOLDER, cache_dir, quantize)
            except ModelError as e:
                if backend != "torch":
                    raise
                # Queries will go through sentence-transformers.
                warnings.warn(f"no ONNX export, queries will load torch: {e}", stacklevel=4)
        if backend != "torch":
            # The index is built, and will be queried, with the exported model.
            encoder = OnnxEncoder(folder / ONNX_FOLDER)
            manifest.model.backend = backend
            manifest.model.fingerprint = fingerprint(encoder)
        store = Store(folder / STORE_FILE, create=True)
        factory = vectors.factory
        with store.transaction():
            vectors.write(folder / vectors_file(0))
            store.set_meta(GENERATION, 0)
            store.set_meta(FACTORY, factory)
            store.set_meta(CHECKSUM, file_checksum(folder / vectors_file(0)))
        # Last: the manifest is what makes the folder an index for everyone else.
        write_manifest(folder, manifest)
        return cls(folder, manifest, store, vectors, encoder)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        model: str | None = None,
        encoder: Encoder | None = None,
        backend: str | None = None,
    ) -> Index:
        """Open an existing index. The model loads on first use, not here.

        Args:
            path: the folder; default ``$SEMSEARCH_INDEX`` or ``indexes/default``.
            model: if given, must be the model the index was built with.
            encoder: an already loaded encoder for that model.
            backend: ``auto`` (ONNX Runtime if the index has an export, else
                sentence-transformers), ``onnx`` or ``torch``; default
                ``$SEMSEARCH_BACKEND`` or auto.

        Raises:
            IndexNotFoundError: if there is no index in the folder.
            IncompatibleIndexError: for another model, a newer format, or damaged files.
        """
        env = read_environment()
        folder = Path(path) if path is not None else env.index_dir
        backend = backend or env.backend
        if backend not in BACKENDS:
            raise BadInputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        manifest = read_manifest(folder)
        built_with = manifest.model.name
        for asked in (model, encoder.name if encoder is not None else None):
            if asked is not None and canonical_model_name(asked) != built_with:
                raise IncompatibleIndexError(
                    f"the index at {folder} was built with model {built_with!r}, not "
                    f"{canonical_model_name(asked)!r}; use that model or build a new index"
                )
        store = Store(folder / manifest.store_file)
        try:
            current = generations.load(folder, store, manifest.model.dim)
        except BaseException:
            store.close()
            raise
        manifest.vectors.faiss_factory = current.vectors.factory
        index = cls(folder, manifest, store, current.vectors, generation=current.number)
        index.backend = backend
        if encoder is not None:
            index._check_encoder(encoder)
            index._encoder = encoder
        return index

    @staticmethod
    def exists(path: str | os.PathLike[str] | None = None) -> bool:
        """Whether the folder holds an index."""
        folder = Path(path) if path is not None else read_environment().index_dir
        return manifest_path(folder).exists()

    def refresh(self) -> bool:
        """Pick up what other processes committed since this index was opened.

        Searches do this by themselves; call it to update :meth:`info` or
        ``len()`` sooner. Returns whether there was anything new.

        Raises:
            IncompatibleIndexError: if the newer generation's files are damaged.
        """
        if self._store.meta(GENERATION) == self._generation:
            return False
        current = generations.load(self.path, self._store, self.manifest.model.dim)
        self._generation, self._vectors = current.number, current.vectors
        self.manifest.vectors.faiss_factory = current.vectors.factory
        return True

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read of one generation: the loaded vectors and a matching SQLite snapshot."""
        for _ in range(20):
            with self._store.snapshot():
                if self._store.meta(GENERATION) == self._generation:
                    yield
                    return
            # A writer committed since the vectors were loaded: load them, look again.
            self.refresh()
        raise IncompatibleIndexError(f"the index at {self.path} changes too fast to read")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the writer lock, clean up after any crashed write, and start from the latest."""
        if self._creating:  # the creation's own first write: the lock is held already
            yield
            return
        with WriterLock(self.path, self.lock_timeout):
            if _file_id(self.path / self.manifest.store_file) != self._store_id:
                raise LockedError(
                    f"the index at {self.path} was removed or replaced while this process "
                    "waited to write to it (its creation failed?); run again"
                )
            self.refresh()
            generations.remove_leftovers(self.path, self._generation)
            self._repair_manifest()
            yield

    def _repair_manifest(self) -> None:
        """Rewrite the manifest if a crash came between a commit and its manifest."""
        n_articles, n_chunks = self._store.counts()
        current = {"articles": n_articles, "chunks": n_chunks}
        if self.manifest.counts != current or self.manifest.vectors.file != vectors_file(
            self._generation
        ):
            self.manifest = replace(
                self.manifest,
                vectors=replace(self.manifest.vectors, file=vectors_file(self._generation)),
                counts=current,
            )
            write_manifest(self.path, self.manifest)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the model ---------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The index's model, loaded (and checked against the manifest) on first use."""
        if self._encoder is None:
            recorded = self.manifest.model
            exported = self.path / ONNX_FOLDER
            if recorded.backend == BACKEND_INT8 and self.backend == "torch":
                raise ModelError(
                    f"the index at {self.path} was built with the int8 ONNX model; "
                    "its queries must use it too (backend onnx or auto)"
                )
            if self.backend != "torch" and recorded.onnx and exported.exists():
                encoder: Encoder = OnnxEncoder(exported)
            elif self.backend == "onnx" or recorded.backend != BACKEND_SENTENCE_TRANSFORMERS:
                raise ModelError(f"the index at {self.path} has no ONNX export; rebuild it")
            else:
                encoder = load_encoder(*self._model_key())
            self._check_encoder(encoder)
            self._encoder = encoder
        return self._encoder

    def _check_encoder(self, encoder: Encoder) -> None:
        recorded = self.manifest.model
        if encoder.dim != recorded.dim or not same_model(recorded.fingerprint, encoder):
            raise IncompatibleIndexError(
                f"model {encoder.name!r} does not give the vectors the index at {self.path} "
                "was built with (the model files changed?); rebuild the index"
            )
        prompts = (encoder.query_prompt, encoder.document_prompt)
        if prompts != (recorded.query_prompt, recorded.document_prompt):
            raise IncompatibleIndexError(
                f"the index at {self.path} was built with query prompt "
                f"{recorded.query_prompt!r} and document prompt {recorded.document_prompt!r}, "
                f"not {prompts[0]!r} and {prompts[1]!r}"
            )

    def export_onnx(self) -> bool:
        """Give an index built without one the torch-free query encoder (``onnx/``).

        Returns whether an export was made (False if the model cannot be exported).
        """
        encoder = load_encoder(*self._model_key())
        install = getattr(encoder, "install_onnx", None)
        if install is None:
            return False
        with self._writing():
            try:
                self.manifest.model.onnx = install(
                    self.path / ONNX_FOLDER, read_environment().cache_dir
                )
            except ModelError:
                return False
            write_manifest(self.path, self.manifest)
        return True

    def _model_key(self) -> tuple[str, str, str]:
        recorded = self.manifest.model
        return recorded.name, recorded.query_prompt, recorded.document_prompt

    def chunker(self) -> Chunker:
        """The chunker with this index's settings."""
        settings = self.manifest.chunker
        return _chunker(self.encoder, settings.overlap_tokens, settings.chunk_tokens)

    # -- writes --------------------------------------------------------------

    def add(
        self,
        articles: Iterable[Article | Skipped],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
        prune: Sequence[str | os.PathLike[str]] | None = None,
        strict: bool = False,
    ) -> AddResult:
        """Add articles; an article whose id is already indexed is replaced if it changed.

        Unchanged articles (same id, same content) are not embedded again. The
        write is all or nothing, under the index's writer lock; everything is
        chunked and embedded before the index is touched. :class:`Skipped`
        items (from :func:`load_paths`) pass through to the result.

        Args:
            prune: the files and folders these articles were read from, as given to
                :func:`load_paths`: any indexed article read from under them
                before but absent now is removed, in the same write. Articles of
                a file that had a skipped input this time are kept. Paths are
                compared resolved (``os.path.realpath``), however they were typed.
            strict: write nothing if any input is skipped (a bad row, a repeated
                id, an article with no text): raise instead, before the index is
                touched.

        An id given twice in one write keeps its first article; the later one
        is skipped, named by its file and line.

        Returns:
            counts of added, updated, unchanged and removed articles, chunks
            written and removed, and what was skipped.

        Raises:
            LockedError: if another process is writing and ``lock_timeout`` passes.
            BadInputError: with ``strict``, naming the first skipped input and the count.
        """
        started = time.perf_counter()
        clock = _StageClock()
        fresh: dict[str, Article] = {}
        skipped: list[Skipped] = []
        for item in clock.iterate("load", first_of_each_id(articles)):
            if isinstance(item, Skipped):
                skipped.append(item)
            else:
                fresh[item.id] = item
        with self._writing():
            with clock("diff"):
                hashes = {a.id: article_hash(a) for a in fresh.values()}
                stored = self._store.content_hashes(list(hashes))
                todo = [a for a in fresh.values() if stored.get(a.id) != hashes[a.id]]
                gone = self._gone(prune, set(fresh), skipped) if prune is not None else []
            chunker = self.chunker() if todo else None
            chunked: list[tuple[Article, list[Chunk]]] = []
            with clock("chunk"):
                for article in todo:
                    assert chunker is not None
                    chunks = chunker.chunks(article)
                    if chunks:
                        chunked.append((article, chunks))
                    else:
                        skipped.append(skipped_article(article, "no text to index"))
                texts = (
                    [chunker.embed_text(a, c) for a, cs in chunked for c in cs] if chunker else []
                )
            if strict and skipped:
                raise BadInputError(
                    f"{len(skipped)} input(s) skipped and strict mode is on, so nothing "
                    f"was written; the first: {skipped[0]}"
                )
            with clock("embed"):
                text_hashes = [_text_hash(t) for t in texts]
                vectors, embedded = self._embed_documents(texts, text_hashes, batch_size, progress)
            _failpoint("after-embed")
            replaced = [a.id for a, _ in chunked if a.id in stored]

            def change() -> tuple[np.ndarray, np.ndarray]:
                old_ids = self._store.chunk_ids(replaced + gone)
                self._store.delete_articles(replaced + gone)
                new_ids, offset = [], 0
                for article, chunks in chunked:
                    part = vectors[offset : offset + len(chunks)]
                    digest = hashes[article.id]
                    digests = text_hashes[offset : offset + len(chunks)]
                    new_ids.append(
                        self._store.insert_article(article, digest, chunks, part, digests)
                    )
                    offset += len(chunks)
                ids = np.concatenate(new_ids) if new_ids else np.zeros(0, dtype=np.int64)
                return old_ids, ids

            removed = self._commit(change, vectors, clock=clock) if chunked or gone else 0
        return AddResult(
            added=len(chunked) - len(replaced),
            updated=len(replaced),
            unchanged=len(fresh) - len(todo),
            chunks_added=len(texts),
            chunks_removed=removed,
            skipped=tuple(skipped),
            seconds=time.perf_counter() - started,
            timings=clock.seconds,
            removed=len(gone),
            chunks_embedded=embedded,
            lines_removed=sum(len(a.removed_lines) for a in fresh.values()),
        )

    def _embed_documents(
        self, texts: list[str], text_hashes: list[str], batch_size: int, progress: bool
    ) -> tuple[np.ndarray, int]:
        """Vectors for chunk texts: reused where this index embedded the same text, else new.

        Returns the vectors and how many were embedded now.
        """
        dim = self.manifest.model.dim
        vectors = np.zeros((len(texts), dim), dtype=np.float32)
        cached = self._store.cached_vectors(sorted(set(text_hashes)), dim)
        # One embedding per distinct new text, however many chunks share it.
        todo = {h: i for i, h in reversed(list(enumerate(text_hashes))) if h not in cached}
        if todo:
            fresh = self.encoder.encode_documents(
                [texts[i] for i in todo.values()], batch_size=batch_size, progress=progress
            )
            cached.update(zip(todo, fresh, strict=True))
        for i, h in enumerate(text_hashes):
            vectors[i] = cached[h]
        return vectors, len(todo)

    def _gone(
        self, sources: Sequence[str | os.PathLike[str]], seen: set[str], skipped: list[Skipped]
    ) -> list[str]:
        """Indexed articles read from under these sources that this load did not yield."""
        # "-" is stdin, whose rows load_paths names "<stdin>:LINE".
        roots = [STDIN_NAME if os.fspath(s) == "-" else _canonical(s) for s in sources]
        troubled = {_canonical(s.path) for s in skipped}
        gone = []
        for article_id, path in self._store.article_paths():
            if article_id in seen or path is None:
                continue
            file = _canonical(source_file(path))
            if file in troubled:
                continue
            if any(_under(file, root) for root in roots):
                gone.append(article_id)
        return gone

    def add_paths(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        fields: FieldMap | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
        prune: bool = False,
        strict: bool = False,
        date_order: str | None = None,
        clean: bool = True,
    ) -> AddResult:
        """Load files and folders (see :func:`semsearch.load_paths`) and add them.

        With ``prune=True``, articles once read from under these paths and gone
        now are removed in the same write; with ``strict=True`` nothing is
        written if any input is skipped (see :meth:`add`). ``date_order``
        (``"DMY"``/``"MDY"``) reads numeric dates such as ``09/08/2024``.
        ``clean=False`` keeps the page furniture of scraped pages (see
        :mod:`semsearch.clean`).
        """
        return self.add(
            load_paths(paths, fields, date_order=date_order, clean=clean),
            batch_size=batch_size,
            progress=progress,
            prune=list(paths) if prune else None,
            strict=strict,
        )

    def remove(self, article_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Remove articles and all their chunks, from FAISS and SQLite together.

        Returns:
            (removed ids, ids that were not in the index).
        """
        wanted = list(dict.fromkeys(article_ids))
        with self._writing():
            present = self._store.content_hashes(wanted)
            removed = [i for i in wanted if i in present]
            missing = [i for i in wanted if i not in present]
            if removed:

                def change() -> tuple[np.ndarray, np.ndarray]:
                    old_ids = self._store.chunk_ids(removed)
                    self._store.delete_articles(removed)
                    return old_ids, np.zeros(0, dtype=np.int64)

                self._commit(change, np.zeros((0, self.manifest.model.dim), dtype=np.float32))
        return removed, missing

    def rebuild(self, index_type: str | None = None) -> None:
        """Rebuild the vector index from the stored vectors, optionally as another type."""
        if index_type is not None:
            # Refuse an invalid type before touching anything.
            n = self._vectors.ntotal
            VectorIndex.create(resolve_factory(index_type, n), self.manifest.model.dim)
        with self._writing():
            if index_type is not None:
                self.manifest.vectors.index_type = index_type
            nothing = np.zeros(0, np.int64)
            self._commit(lambda: (nothing, nothing), None, force=True)

    def _commit(
        self,
        change: Callable[[], tuple[np.ndarray, np.ndarray]],
        new_vectors: np.ndarray | None,
        force: bool = False,
        clock: _StageClock | None = None,
    ) -> int:
        """Apply a change to SQLite and FAISS as one generation; returns chunks removed.

        The caller holds the writer lock (see :meth:`_writing`).
        """
        clock = clock or _StageClock()
        generation = self._generation
        next_file = self.path / vectors_file(generation + 1)
        try:
            with self._store.transaction():
                with clock("sqlite"):
                    old_ids, new_ids = change()
                with clock("faiss"):
                    self._vectors = self._next_vectors(old_ids, new_ids, new_vectors, force)
                    _failpoint("before-faiss-write")
                    self._vectors.write(next_file)
                    _failpoint("mid-faiss-write", truncate=next_file)
                    checksum = file_checksum(next_file)
                n_articles, n_chunks = self._store.counts()
                assert self._vectors.ntotal == n_chunks, "FAISS and SQLite disagree"
                self._store.set_meta(GENERATION, generation + 1)
                self._store.set_meta(FACTORY, self._vectors.factory)
                self._store.set_meta(CHECKSUM, checksum)
                _failpoint("before-commit")
                clock.start("sqlite")  # the commit itself
            clock.stop("sqlite")
        except BaseException:
            # The live FAISS index may be half-changed; the committed file is intact.
            next_file.unlink(missing_ok=True)
            self._vectors = generations.load(
                self.path, self._store, self.manifest.model.dim
            ).vectors
            raise
        self._generation = generation + 1
        _failpoint("after-commit")
        # Committed. The manifest and the old file follow; both are re-derivable.
        self.manifest = replace(
            self.manifest,
            vectors=replace(
                self.manifest.vectors,
                faiss_factory=self._vectors.factory,
                file=next_file.name,
            ),
            counts={"articles": n_articles, "chunks": n_chunks},
            updated_at=utc_now(),
            format_version=FORMAT_VERSION,  # the store was migrated on open
        )
        write_manifest(self.path, self.manifest)
        _failpoint("after-manifest")
        (self.path / vectors_file(generation)).unlink(missing_ok=True)
        return len(old_ids)

    def _next_vectors(
        self, old_ids: np.ndarray, new_ids: np.ndarray, new_vectors: np.ndarray | None, force: bool
    ) -> VectorIndex:
        current = self._vectors
        dim = self.manifest.model.dim
        total = current.ntotal - len(old_ids) + len(new_ids)
        factory = resolve_factory(self.manifest.vectors.index_type, total)
        unremovable = len(old_ids) > 0 and not current.supports_remove
        if force or unremovable or factory != current.factory:
            rebuilt = VectorIndex.create(factory, dim)
            if current.ntotal == 0 and new_vectors is not None:
                # A first add: the new vectors are all there is; reading them
                # back from SQLite would hold every vector twice more in memory.
                rebuilt.add(new_vectors, new_ids)
            else:
                ids, vectors = self._store.vectors(dim)  # this transaction's view
                rebuilt.add(vectors, ids)
            return rebuilt
        # Changed in place: if the commit fails, _commit reloads the committed file.
        current.remove(old_ids)
        assert new_vectors is not None
        current.add(new_vectors, new_ids)
        return current

    # -- reads -------------------------------------------------------------------

    def search(
        self,
        query: str | np.ndarray,
        k: int = DEFAULT_K,
        *,
        mode: str | None = None,
        filter: Mapping[str, Any] | None = None,
        group: bool = True,
        keyword_syntax: str = "text",
        hybrid_weight: float | None = None,
    ) -> list[Hit]:
        """The k best articles (or chunks, with ``group=False``) for one query.

        Args:
            query: text, or a precomputed unit query vector of the index's dimension.
            k: how many results: distinct articles when grouping, else chunks.
            mode: ``hybrid`` (default for text), ``semantic`` (default for a vector)
                or ``keyword``; see :class:`Hit` for what ``score`` means in each.
            filter: metadata conditions, e.g. ``{"source": "Reuters", "date":
                {"gte": "2023-06-01"}, "tags": {"in": ["nato"]}}``; see
                :func:`semsearch.filters.compile_filter`. The top k is exact among
                the matching articles.
            group: one hit per article (its best chunk), or raw chunks.
            keyword_syntax: ``text`` (the query is words; any character is safe) or
                ``fts5`` (the query is an FTS5 expression: phrases, ``NEAR``, ``*``).
            hybrid_weight: the semantic share of the hybrid score, 0 to 1 (default
                0.7, tuned on held-out SciFact queries; see benchmarks/README.md).

        Raises:
            BadInputError: for an empty query, k < 1, an unknown mode, a bad filter,
                an invalid FTS5 expression, or a vector of the wrong shape.

        Example:
            >>> index.search("NATO Indo-Pacific", k=5, filter={"tags": "defence"})
        """
        batch: list[str] | np.ndarray
        if isinstance(query, str):
            batch = [query]
        else:
            vector = np.asarray(query, dtype=np.float32)
            if vector.ndim != 1:
                raise BadInputError(
                    "search() takes one query vector; use search_batch() for several"
                )
            batch = vector[None, :]
        return self.search_batch(
            batch,
            k,
            mode=mode,
            filter=filter,
            group=group,
            keyword_syntax=keyword_syntax,
            hybrid_weight=hybrid_weight,
        )[0]

    def search_batch(
        self,
        queries: Sequence[str] | np.ndarray,
        k: int = DEFAULT_K,
        *,
        mode: str | None = None,
        filter: Mapping[str, Any] | None = None,
        group: bool = True,
        keyword_syntax: str = "text",
        hybrid_weight: float | None = None,
    ) -> list[list[Hit]]:
        """Search several queries (texts, or an ``(n, dim)`` array); one hit list per query.

        Takes the same options as :meth:`search`.
        """
        if k < 1:
            raise BadInputError(f"k must be at least 1, not {k}")
        if keyword_syntax not in ("text", "fts5"):
            raise BadInputError(f"keyword syntax must be 'text' or 'fts5', not {keyword_syntax!r}")
        weight = HYBRID_WEIGHT if hybrid_weight is None else float(hybrid_weight)
        if not 0.0 <= weight <= 1.0:
            raise BadInputError(f"hybrid weight must be between 0 and 1, not {hybrid_weight}")
        where = compile_filter(filter)
        if isinstance(queries, np.ndarray):
            mode = mode or "semantic"
            prepared = self._vector_queries(queries, mode)
        else:
            mode = mode or DEFAULT_MODE
            if mode not in MODES:
                raise BadInputError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
            texts = [queries] if isinstance(queries, str) else list(queries)
            for text in texts:
                if not isinstance(text, str) or not text.strip():
                    raise BadInputError("empty query: give some words to search for")
            if self._store.counts()[1] == 0:
                return [[] for _ in texts]
        if not isinstance(queries, np.ndarray):
            with _fts5_errors_are_the_users(keyword_syntax == "fts5"):
                prepared = self._prepare(texts, mode, keyword_syntax)
        # One generation: FAISS and SQLite as one commit left them, whatever writers do.
        with _fts5_errors_are_the_users(keyword_syntax == "fts5"), self._snapshot():
            return search(
                self._vectors,
                self._store,
                prepared,
                k,
                mode=mode,
                group=group,
                where=where,
                hybrid_weight=weight,
            )

    def _vector_queries(self, queries: np.ndarray, mode: str) -> list[Query]:
        if mode != "semantic":
            raise BadInputError(f"a query vector can only be searched in semantic mode, not {mode}")
        vectors = np.asarray(queries, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.manifest.model.dim:
            raise BadInputError(
                f"query vectors must have shape (n, {self.manifest.model.dim}), not {vectors.shape}"
            )
        return [Query(vector, None) for vector in vectors]

    def _prepare(self, texts: list[str], mode: str, keyword_syntax: str) -> list[Query]:
        """Query vectors (unless keyword mode) and FTS5 expressions."""
        # Semantic mode does not rank by keywords, but highlights them in the snippet.
        expressions = [t if keyword_syntax == "fts5" else match_expression(t) for t in texts]
        if mode == "keyword":
            return [Query(None, e) for e in expressions]
        return [Query(v, e) for v, e in zip(self._embed(texts), expressions, strict=True)]

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Query vectors; a query longer than the model reads gets a warning."""
        encoder = self.encoder
        limit = encoder.max_tokens - encoder.special_tokens
        for text in texts:
            n_tokens = len(encoder.token_spans(text))
            if n_tokens > limit:
                warnings.warn(
                    f"the query has {n_tokens} tokens and the model reads {limit}: "
                    f"its meaning is taken from the first {limit}, its keywords from all",
                    QueryTruncatedWarning,
                    stacklevel=4,
                )
        return encoder.encode_queries(texts)

    def chunk_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk's id and unit vector, as stored: ``(ids, vectors)``.

        For analysis, export and benchmarks; searching does not need it.
        """
        with self._snapshot():
            return self._store.vectors(self.manifest.model.dim)

    def get(self, article_id: str) -> Article | None:
        """The stored article with this id, or None."""
        return self._store.article(article_id)

    def __len__(self) -> int:
        return self._store.counts()[0]

    def info(self) -> IndexInfo:
        """What the index holds and how it was built."""
        self.refresh()
        m = self.manifest
        n_articles, n_chunks = self._store.counts()
        size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        return IndexInfo(
            path=str(self.path),
            model=m.model.name,
            dim=m.model.dim,
            max_tokens=m.model.max_tokens,
            chunk_tokens=m.chunker.chunk_tokens or m.model.max_tokens,
            overlap_tokens=m.chunker.overlap_tokens,
            index_type=m.vectors.index_type,
            faiss_factory=self._vectors.factory,
            articles=n_articles,
            chunks=n_chunks,
            size_bytes=size,
            format_version=m.format_version,
            semsearch_version=m.semsearch_version,
            created_at=m.created_at,
            updated_at=m.updated_at,
            query_prompt=m.model.query_prompt,
            document_prompt=m.model.document_prompt,
            build_backend=m.model.backend,
            onnx_export=bool(m.model.onnx) and (self.path / ONNX_FOLDER).exists(),
        )


@contextmanager
def _fts5_errors_are_the_users(user_syntax: bool) -> Iterator[None]:
    """An FTS5 expression the user wrote that SQLite rejects is bad input, not a crash."""
    try:
        yield
    except sqlite3.OperationalError as e:
        if user_syntax:
            raise BadInputError(f"invalid FTS5 query: {e}") from None
        raise
    except sqlite3.DatabaseError as e:  # SQLITE_CORRUPT and its kin, found while reading
        raise IncompatibleIndexError(
            f"the index's store is damaged: {e}; run semsearch verify"
        ) from None


class _StageClock:
    """Seconds spent per stage of a write, for AddResult.timings."""

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


def _failpoint(stage: str, truncate: Path | None = None) -> None:
    """Kill this process at a named stage of a write, when the tests ask for it."""
    if os.environ.get(FAILPOINT_ENV) != stage:
        return
    if truncate is not None:  # a write cut off halfway
        with open(truncate, "r+b") as f:
            f.truncate(truncate.stat().st_size // 2)
    os.kill(os.getpid(), signal.SIGKILL)


def _text_hash(text: str) -> str:
    """Key of the embedding cache: the exact text embedded (model and prompt are the index's)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


def _chunker(encoder: Encoder, overlap_tokens: int, chunk_tokens: int | None) -> Chunker:
    # The document prompt goes before every chunk, so it takes from the budget too.
    return Chunker(
        encoder.token_spans,
        encoder.max_tokens,
        overlap_tokens,
        encoder.special_tokens + prompt_tokens(encoder),
        chunk_tokens,
    )


def article_hash(article: Article) -> str:
    """A hash of everything indexed about an article (not where it was read from)."""
    data = article.to_dict()
    data.pop("path", None)
    data.pop("removed_lines", None)  # what cleaning dropped is not indexed
    encoded = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def _plan_creation(
    env: Any,
    *,
    model: str | None = None,
    index_type: str = "auto",
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
    chunk_tokens: int | None = None,
    encoder: Encoder | None = None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    onnx: bool = True,
    backend: str = "torch",
) -> tuple[Encoder, VectorIndex, Manifest, bool, str]:
    """Validate a new index's settings and load its model; writes nothing."""
    if backend not in BUILD_BACKENDS:
        choices = ", ".join(BUILD_BACKENDS)
        raise BadInputError(f"unknown build backend {backend!r}; use one of {choices}")
    if encoder is None:
        name = canonical_model_name(model or env.model)
        encoder = load_encoder(name, query_prompt, document_prompt)
    elif model is not None and canonical_model_name(model) != encoder.name:
        raise BadInputError(f"model {model!r} given with an encoder for {encoder.name!r}")
    _chunker(encoder, overlap_tokens, chunk_tokens)
    factory = resolve_factory(index_type, 0)
    vectors = VectorIndex.create(factory, encoder.dim)
    if backend != "torch" and getattr(encoder, "install_onnx", None) is None:
        raise BadInputError(f"backend {backend!r} needs a sentence-transformers model")
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
            chunk_tokens=chunk_tokens,
            max_title_tokens=MAX_TITLE_TOKENS,
        ),
        vectors=VectorsInfo(index_type, faiss_factory=factory, file=vectors_file(0)),
        counts={"articles": 0, "chunks": 0},
        created_at=now,
        updated_at=now,
        semsearch_version=__version__,
        library_versions=_library_versions(),
    )
    return encoder, vectors, manifest, onnx, backend


def _remove_leftovers(folder: Path) -> None:
    """Files of an earlier index creation that failed before its manifest was written.

    The caller holds the writer lock and has seen no manifest.
    """
    for name in (STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm", STORE_FILE + "-journal"):
        (folder / name).unlink(missing_ok=True)
    for file in folder.glob("vectors.*.faiss"):
        file.unlink()
    for pattern in (".tmp*", ".old-*"):  # onnx_backend.install's temporary folders
        for tmp in folder.glob(ONNX_FOLDER + pattern):
            shutil.rmtree(tmp, ignore_errors=True)


def _file_id(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` now (device and inode), or None."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _remove_created(folder: Path, made_folder: bool) -> None:
    """Undo a failed creation: its index files, and the folder if the creation made it.

    The caller holds the writer lock and there was no manifest when it took it,
    so the index files here are this creation's. Anything else in the folder
    (the user's files) stays, and so does the folder then.
    """
    manifest_path(folder).unlink(missing_ok=True)
    manifest_path(folder).with_name(manifest_path(folder).name + ".tmp").unlink(missing_ok=True)
    _remove_leftovers(folder)
    shutil.rmtree(folder / ONNX_FOLDER, ignore_errors=True)
    if made_folder:
        # A writer waiting on this lock file notices it was removed (see lock.py).
        (folder / LOCK_FILE).unlink(missing_ok=True)
        with suppress(OSError):  # not empty: something that is not ours stays
            folder.rmdir()


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("faiss-cpu", "numpy", "sentence-transformers", "torch", "transformers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions
