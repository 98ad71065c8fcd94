"""The read side of an index: open it, search one generation, get, info.

A :class:`Reader` holds the index's manifest, its SQLite store and the
open segments of one committed generation (see :mod:`semsearch.commit` and
:mod:`semsearch.segments`). Every read happens inside a snapshot: the SQLite
read transaction and the segments and tombstones of the generation that
transaction names; if a writer committed since they were loaded, the new
segments are opened first (only those: the others stay open). So a
long-lived reader sees each commit whole, and never two generations at once.

Threads: one reader may be shared by threads. Its SQLite connection and its
loaded vectors are one state, so a lock serialises what touches them (each
snapshot, :meth:`Reader.refresh`, ``get``, ``len``, ``info``); embedding the
query, the slow part of a text search, runs outside the lock.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .chunk import Chunker
from .commit import GENERATION, Generation, Moved, load_generation, retry
from .config import (
    DEFAULT_K,
    ENV_BACKEND,
    QUERY_BACKENDS,
    Backend,
    canonical_model_name,
    default_memory_budget,
)
from .config import environment as read_environment
from .embed import (
    Encoder,
    backend_named,
    check_encoder,
    check_query_backend,
    has_export,
    prompt_tokens,
    query_encoder,
)
from .errors import (
    BadInputError,
    IncompatibleIndexError,
    QueryTruncatedWarning,
)
from .filters import compile_filter
from .keywords import match_expression
from .manifest import Manifest, read_manifest
from .records import Article, Hit, IndexInfo
from .search import DEFAULT_MODE, HYBRID_WEIGHT, MODES, Query, search
from .segments import SegmentSet
from .store import Store
from .vectors import resolve_factory

R = TypeVar("R", bound="Reader")


class Reader:
    """A read-only view of an index folder: search, get, info.

    Open one with :meth:`open`; use it as a context manager or call :meth:`close`.
    :class:`semsearch.Index` is a reader that can also write.
    """

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        store: Store,
        current: Generation,
        encoder: Encoder | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self._store = store
        self._current = current
        self._encoder = encoder
        self._given_encoder = encoder
        """The encoder given to open or create, if any: it also embeds the articles."""
        self._lock = threading.RLock()
        self._query_backend: str | Backend = Backend.AUTO

    @classmethod
    def open(
        cls: type[R],
        path: str | os.PathLike[str] | None = None,
        *,
        model: str | None = None,
        encoder: Encoder | None = None,
        query_backend: str | None = None,
        backend: str | None = None,
    ) -> R:
        """Open an existing index. The model loads on first use, not here.

        Args:
            path: the folder; default ``$SEMSEARCH_INDEX`` or ``indexes/default``.
            model: if given, must be the model the index was built with.
            encoder: an already loaded encoder for that model.
            query_backend: what embeds queries (:class:`~semsearch.config.Backend`):
                ``auto`` (ONNX Runtime if the index has an export, else
                sentence-transformers), ``onnx`` or ``torch``; checked here.
                Default ``$SEMSEARCH_BACKEND`` (checked at the first query, so
                that a reader's setting never stops a write) or auto.
            backend: the former name of ``query_backend`` (deprecated).

        Raises:
            BadInputError: for an unknown query backend.
            ModelError: for a query backend the index cannot serve (``torch`` on
                an int8 index, ``onnx`` on one without an export).
            IndexNotFoundError: if there is no index in the folder.
            IncompatibleIndexError: for another model, a newer format, or damaged files.
        """
        env = read_environment()
        folder = Path(path) if path is not None else env.index_dir
        if backend is not None:
            if query_backend is not None:
                raise TypeError("Index.open() takes query_backend=, not also backend=")
            warnings.warn(
                "Index.open(backend=) is now query_backend=", DeprecationWarning, stacklevel=2
            )
            query_backend = backend
        chosen = None
        if query_backend is not None:
            chosen = backend_named(query_backend, QUERY_BACKENDS, "query backend")
        manifest = read_manifest(folder)
        if chosen is not None and encoder is None:
            check_query_backend(folder, manifest.model, chosen)
        built_with = manifest.model.name
        for asked in (model, encoder.name if encoder is not None else None):
            if asked is not None and canonical_model_name(asked) != built_with:
                raise IncompatibleIndexError(
                    f"the index at {folder} was built with model {built_with!r}, not "
                    f"{canonical_model_name(asked)!r}; use that model or build a new index"
                )
        store = Store(folder / manifest.store_file)
        try:
            current = load_generation(folder, store, manifest.model.dim)
        except BaseException:
            store.close()
            raise
        if current.vectors.factory:
            manifest.vectors.faiss_factory = current.vectors.factory
        if encoder is not None:
            try:
                check_encoder(encoder, manifest.model, folder)
            except BaseException:
                store.close()
                raise
        reader = cls(folder, manifest, store, current, encoder)
        reader._query_backend = chosen or env.backend
        return reader

    def close(self) -> None:
        self._store.close()

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generations ---------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The number of the committed generation this reader reads now (0: empty)."""
        return self._current.number

    @property
    def _generation(self) -> int:
        return self._current.number

    @property
    def _vectors(self) -> SegmentSet:
        """The open segments of that generation."""
        return self._current.vectors

    def refresh(self) -> bool:
        """Pick up what other processes committed since this index was opened.

        Searches do this by themselves; call it to update :meth:`info` or
        ``len()`` sooner. Returns whether there was anything new.

        Raises:
            IncompatibleIndexError: if the newer generation's files are damaged.
        """
        with self._lock:
            if self._store.meta(GENERATION) == self._generation:
                return False
            dim = self.manifest.model.dim
            generation = load_generation(self.path, self._store, dim, self._current)
            # The manifest follows each commit (settings such as the recall target
            # may have changed); one not yet rewritten is read at the next refresh.
            manifest = None
            with suppress(IncompatibleIndexError, OSError):
                written = read_manifest(self.path)
                if written.vectors.generation == generation.number:
                    manifest = written
            self._adopt(generation, manifest)
            return True

    def _adopt(self, generation: Generation, manifest: Manifest | None = None) -> None:
        """Read this generation from now on (a writer's commit, or another process's)."""
        with self._lock:
            self._current = generation
            if manifest is not None:
                self.manifest = manifest
            if generation.vectors.factory:
                self.manifest.vectors.faiss_factory = generation.vectors.factory

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read of one generation: the loaded vectors and a matching SQLite snapshot."""

        def attempt() -> ExitStack:
            stack = ExitStack()
            stack.enter_context(self._lock)
            stack.enter_context(self._store.snapshot())
            if self._store.meta(GENERATION) == self._generation:
                return stack
            stack.close()
            # A writer committed since the vectors were loaded: load them, look again.
            self.refresh()
            raise Moved(f"the index at {self.path} changes too fast to read")

        with retry(attempt):
            yield

    # -- the model -----------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The index's model, loaded (and checked against the manifest) on first use."""
        if self._encoder is None:
            self._encoder = query_encoder(self.path, self.manifest.model, self.query_backend)
        return self._encoder

    @property
    def query_backend(self) -> Backend:
        """What embeds queries: ``auto``, ``onnx`` or ``torch`` (see :meth:`open`).

        Raises:
            BadInputError: if it comes from ``$SEMSEARCH_BACKEND`` and names no backend.
        """
        if not isinstance(self._query_backend, Backend):
            self._query_backend = backend_named(
                self._query_backend, QUERY_BACKENDS, "query backend", f"${ENV_BACKEND}"
            )
        return self._query_backend

    @property
    def backend(self) -> str:
        """The former name of :attr:`query_backend` (deprecated)."""
        warnings.warn("Index.backend is now Index.query_backend", DeprecationWarning, stacklevel=2)
        return self.query_backend.value

    def chunker(self) -> Chunker:
        """The chunker with this index's settings."""
        settings = self.manifest.chunker
        return make_chunker(self.encoder, settings.overlap_tokens, settings.chunk_tokens)

    # -- searching -------------------------------------------------------------------

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
        return self.search_generation(
            queries,
            k,
            mode=mode,
            filter=filter,
            group=group,
            keyword_syntax=keyword_syntax,
            hybrid_weight=hybrid_weight,
        )[0]

    def search_generation(
        self,
        queries: Sequence[str] | np.ndarray,
        k: int = DEFAULT_K,
        *,
        mode: str | None = None,
        filter: Mapping[str, Any] | None = None,
        group: bool = True,
        keyword_syntax: str = "text",
        hybrid_weight: float | None = None,
    ) -> tuple[list[list[Hit]], int]:
        """:meth:`search_batch`, and the number of the generation the hits were read from.

        Every hit of one call comes from that one committed generation, vectors
        and SQLite alike (a server reports it with each response).

        Raises:
            the errors of :meth:`search`.
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
            with self._lock:
                if not self._store.has_chunks():  # no model to load for an empty index
                    return [[] for _ in texts], self._generation
            prepared = self._prepare(texts, mode, keyword_syntax)
        # One generation: FAISS and SQLite as one commit left them, whatever writers do.
        with self._snapshot():
            hits = search(
                self._vectors,
                self._store,
                prepared,
                k,
                mode=mode,
                group=group,
                where=where,
                hybrid_weight=weight,
            )
            return hits, self._generation

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
        users = keyword_syntax == "fts5"
        expressions = [t if users else match_expression(t) for t in texts]
        if mode == "keyword":
            return [Query(None, e, users) for e in expressions]
        vectors = self._embed(texts)
        return [Query(v, e, users) for v, e in zip(vectors, expressions, strict=True)]

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
                    stacklevel=5,
                )
        return encoder.encode_queries(texts)

    # -- what the index holds -------------------------------------------------------

    def chunk_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk's id and unit vector, as stored: ``(ids, vectors)``.

        ``ids`` is ``(n,)`` int64 in ascending order, ``vectors`` ``(n, dim)`` float32.

        For analysis, export and benchmarks; searching does not need it.
        """
        with self._snapshot():
            return self._vectors.live_vectors()

    def get(self, article_id: str) -> Article | None:
        """The stored article with this id, or None."""
        with self._lock:
            return self._store.article(article_id)

    def __len__(self) -> int:
        with self._lock:
            return self._store.counts()[0]

    def info(self) -> IndexInfo:
        """What the index holds and how it was built."""
        with self._lock:
            self.refresh()
            m = self.manifest
            n_articles, n_chunks = self._store.counts()
            vectors = self._vectors
            factory = vectors.factory or resolve_factory(m.vectors.index_type, 0)
            generation = self._generation
        # Everything in the folder: the store, the vectors and the ONNX export.
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return IndexInfo(
            path=str(self.path),
            model=m.model.name,
            dim=m.model.dim,
            max_tokens=m.model.max_tokens,
            chunk_tokens=m.chunker.chunk_tokens or m.model.max_tokens,
            overlap_tokens=m.chunker.overlap_tokens,
            index_type=m.vectors.index_type,
            faiss_factory=factory,
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
            onnx_export=has_export(self.path, m.model),
            generation=generation,
            segments=len(vectors.segments),
            tombstones=vectors.n_tombstones,
            segment_list=tuple(
                {
                    "id": s.id,
                    "factory": s.vectors.factory,
                    "vectors": len(s),
                    "tombstones": len(s) - vectors.live(s),
                    "generation": s.row.generation,
                    **({"tuning": s.row.settings} if s.row.settings else {}),
                }
                for s in vectors.segments
            ),
            memory_budget=m.vectors.memory_budget or default_memory_budget(),
            recall_target=m.vectors.recall_target,
            tuning=_largest_tuning(vectors),
        )


def _largest_tuning(vectors: SegmentSet) -> dict[str, Any]:
    """The tuning of the largest compressed segment (empty without one)."""
    tuned = [s for s in vectors.segments if s.row.settings]
    return dict(max(tuned, key=len).row.settings) if tuned else {}


def make_chunker(encoder: Encoder, overlap_tokens: int, chunk_tokens: int | None) -> Chunker:
    """The chunker for an encoder with these settings."""
    # The document prompt goes before every chunk, so it takes from the budget too.
    return Chunker(
        encoder.token_spans,
        encoder.max_tokens,
        overlap_tokens,
        encoder.special_tokens + prompt_tokens(encoder),
        chunk_tokens,
    )
