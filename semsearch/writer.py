"""The write side of an index: creation, and change = diff + prune + chunk + embed.

A :class:`Writer` works on a :class:`~semsearch.reader.Reader`'s index. Each
write takes the folder's writer lock (:mod:`semsearch.lock`), picks up the
latest generation and cleans up after any crashed write
(:func:`semsearch.commit.recover`), then prepares everything before touching
the index: it compares the articles with what is stored (by content hash),
finds what was pruned, chunks what changed and embeds the chunks, reusing the
stored vector of any chunk text it has embedded before. The result is a
:class:`~semsearch.commit.Change`, which :func:`semsearch.commit.commit`
applies as one generation (a new segment, tombstones); the reader then reads
that generation. If the merge policy (:class:`~semsearch.config.MergePolicy`)
then asks for it, the same write merges segments, as one more generation.

Stage timings (``load``, ``diff``, ``chunk``, ``embed``, ``sqlite``, ``faiss``)
go into :attr:`AddResult.timings`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, commit
from .chunk import MAX_TITLE_TOKENS
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
from .load import STDIN_NAME, first_of_each_id, skipped_article, source_file
from .lock import WriterLock
from .manifest import ChunkerInfo, Manifest, ModelInfo, VectorsInfo, write_manifest
from .migrations import TEXT_HASH_BYTES
from .reader import Reader, make_chunker
from .records import AddResult, Article, Chunk, OptimizeResult, Skipped
from .segments import plan_merge
from .store import Store, utc_now
from .vectors import VectorIndex, resolve_factory


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
            self._adopt(done)
            chosen = plan_merge(reader._vectors, self.merge_policy)
            if chosen:  # one merge per write: bounded work
                merged = commit.merge(
                    reader.path, reader._store, reader._current, reader.manifest, chosen, clock
                )
                self._adopt(merged)
        return done.chunks_removed

    def add(
        self,
        articles: Iterable[Article | Skipped],
        *,
        batch_size: int,
        progress: bool,
        prune: Sequence[str | os.PathLike[str]] | None,
        strict: bool,
    ) -> AddResult:
        """The write behind :meth:`semsearch.Index.add` (see there)."""
        started = time.perf_counter()
        clock = StageClock()
        fresh: dict[str, Article] = {}
        skipped: list[Skipped] = []
        for item in clock.iterate("load", first_of_each_id(articles)):
            if isinstance(item, Skipped):
                skipped.append(item)
            else:
                fresh[item.id] = item
        reader = self.reader
        with self.writing():
            with clock("diff"), reader._lock:
                hashes = {a.id: article_hash(a) for a in fresh.values()}
                stored = reader._store.article_hashes(list(hashes))
                todo = [a for a in fresh.values() if stored.get(a.id) != hashes[a.id]]
                gone = self._gone(prune, set(fresh), skipped) if prune is not None else []
            settings = reader.manifest.chunker
            chunker = (
                make_chunker(self.encoder, settings.overlap_tokens, settings.chunk_tokens)
                if todo
                else None
            )
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
                text_hashes = [_embedded_text_hash(t) for t in texts]
                vectors, embedded = self._embed_documents(texts, text_hashes, batch_size, progress)
            failpoint("after-embed")
            replaced = [a.id for a, _ in chunked if a.id in stored]
            insert, start = [], 0
            for article, chunks in chunked:
                end = start + len(chunks)
                digest, part = hashes[article.id], slice(start, end)
                insert.append(NewArticle(article, digest, chunks, vectors[part], text_hashes[part]))
                start = end
            change = Change(insert=insert, drop=replaced, remove=gone)
            removed = self._commit(change, clock) if chunked or gone else 0
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
        self, texts: list[str], text_hashes: list[bytes], batch_size: int, progress: bool
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
        for article_id, path in self.reader._store.article_paths():
            if article_id in seen or path is None:
                continue
            file = _canonical(source_file(path))
            if file in troubled:
                continue
            if any(_under(file, root) for root in roots):
                gone.append(article_id)
        return gone

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
            "memory_budget": manifest.vectors.memory_budget,
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
