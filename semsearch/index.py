"""The :class:`Index` facade: one folder, one model, articles in, hits out.

The folder holds ``manifest.json`` (what the index is), ``store.sqlite``
(articles, chunks, the list of segments, their tombstones and the commit
record) and one ``segment.<id>.faiss`` per segment. :class:`Index` composes
three rooms:

- reads (open, search, get, info) are a :class:`~semsearch.reader.Reader`,
  which :class:`Index` extends;
- writes (create, add, remove, rebuild, optimize) go to a
  :class:`~semsearch.writer.Writer`, which prepares each as changes
  (:class:`~semsearch.commit.Change`; an add: one per window of its input);
- :func:`semsearch.commit.writing` applies them as one generation: a new
  segment file of the chunks each window wrote, inside the SQLite transaction
  that names them and tombstones the chunks removed, whose commit is the
  single switch, so a failure at any earlier point leaves the index as it
  was; :func:`semsearch.commit.merge` merges segments the same way.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from .commit import Generation, remove_created
from .config import BUILD_BACKENDS, DEFAULT_BATCH_SIZE, DEFAULT_OVERLAP_TOKENS, MergePolicy
from .config import environment as read_environment
from .distributed import ENGINES, RayOptions
from .embed import Encoder, backend_named
from .errors import BadInputError, IndexExistsError, SettingsConflictError
from .load import FieldMap, load_paths
from .lock import WriterLock
from .manifest import Manifest, manifest_path
from .reader import Reader
from .records import AddResult, Article, OptimizeResult, Skipped
from .segments import SegmentSet
from .store import Store
from .writer import CreationSettings, Prepared, Writer, create_locked, plan_creation


class Index(Reader):
    """A semantic search index in a folder.

    Create one with :meth:`create`, open one with :meth:`open`; use it as a
    context manager or call :meth:`close`. Reading (``search``, ``get``,
    ``info``, ``len``) comes from :class:`~semsearch.reader.Reader`; writes
    go through a :class:`~semsearch.writer.Writer`.

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
        current: Generation,
        encoder: Encoder | None = None,
    ) -> None:
        super().__init__(path, manifest, store, current, encoder)
        self._writer = Writer(self)

    @property
    def lock_timeout(self) -> float:
        """Seconds a write waits for another process's write to finish (0: fail at once)."""
        return self._writer.lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, seconds: float) -> None:
        self._writer.lock_timeout = seconds

    @property
    def merge_policy(self) -> MergePolicy:
        """When this index's writes merge segments (see :class:`~semsearch.config.MergePolicy`)."""
        return self._writer.merge_policy

    @merge_policy.setter
    def merge_policy(self, policy: MergePolicy) -> None:
        """Set for this object's writes only: it is not saved with the index.

        Raises:
            TypeError: for anything but a :class:`~semsearch.config.MergePolicy`.
        """
        if not isinstance(policy, MergePolicy):
            raise TypeError(
                f"merge_policy must be a semsearch.MergePolicy, not {type(policy).__name__}"
            )
        self._writer.merge_policy = policy

    # -- creating --------------------------------------------------------------

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
        build_backend: str = "auto",
        lock_timeout: float = 0.0,
        backend: str | None = None,
        memory_budget: str | int | None = None,
        recall_target: float | None = None,
    ) -> Index:
        """Create an empty index in a folder (made if needed).

        Creation is a write like any other: it holds the folder's writer lock,
        so of several processes creating the same index at once, one creates it
        and the others wait (``lock_timeout``) or get :class:`LockedError`, then
        find it made (:class:`IndexExistsError`). To create and fill an index in
        one hold of the lock, use :meth:`creating`; to open it if it exists,
        :meth:`open_or_create`.

        Args:
            path: the folder; default ``$SEMSEARCH_INDEX`` or ``indexes/default``.
            model: sentence-transformers model name or folder (default all-MiniLM-L6-v2).
            index_type: ``auto`` (exact up to 100k chunks; above, HNSW while it
                fits ``memory_budget``, and beyond a compressed IVF index of 4-bit PQ
                fast-scan codes re-ranked with the exact vectors, tuned to
                ``recall_target``), ``flat``, ``hnsw``, or any FAISS factory
                string such as ``IVF1024,Flat``.
            memory_budget: bytes the vectors may take in memory when searched
                (``"2GB"``, ``"512MiB"`` or an int); default: a quarter of this
                machine's memory, decided at each write. Recorded in the manifest.
            recall_target: recall@10 against exact search that a compressed
                index is tuned to at build and merge time (default 0.95),
                measured on a held-out sample of the index's own vectors.
            overlap_tokens: tokens of whole sentences shared by consecutive chunks.
            chunk_tokens: cap on a chunk's tokens (default: what the model reads).
            encoder: an already loaded encoder (overrides ``model`` and the prompts);
                with ``build_backend="auto"`` it embeds the articles as it is.
            query_prompt, document_prompt: text put before each query or passage for
                models that expect it (e5: ``"query: "`` and ``"passage: "``).
                Default: the model's own configured prompts, if any. Recorded in
                the manifest and used for every later query.
            onnx: also export the model to ONNX (once per machine, cached) so that
                queries run on ONNX Runtime without importing torch.
            build_backend: what embeds the articles (:class:`~semsearch.config.Backend`):
                ``auto`` (the default: ``onnx`` where the model exports, else
                ``torch`` with a warning saying why), ``torch``
                (sentence-transformers, the reference), ``onnx`` (the same
                vectors from ONNX Runtime, 1.1-1.8x the speed by CPU) or ``onnx-int8``
                (dynamically quantised for this CPU: 2-3x, at a measured
                cost in quality; queries then use the same int8 model).
                Recorded in the manifest.
            lock_timeout: seconds to wait for another process writing to (or
                creating) the same folder; 0 fails at once.
            backend: the former name of ``build_backend`` (deprecated).

        Raises:
            IndexExistsError: if the folder already holds an index.
            LockedError: if another process holds the writer lock past ``lock_timeout``.
            BadInputError: for an unknown build backend, an invalid index type or chunk setting.
            ModelError: if the model cannot be loaded, or an asked ONNX backend exported.
        """
        chosen = _renamed(backend, build_backend, "Index.create", stacklevel=3)
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
            build_backend=chosen,
            lock_timeout=lock_timeout,
            memory_budget=memory_budget,
            recall_target=recall_target,
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
        creation, encoder, onnx = _creation_settings(settings, "Index.creating")
        plan = plan_creation(env, creation, encoder=encoder, onnx=onnx)
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
                store, encoder = create_locked(folder, env.cache_dir, plan)
                empty = Generation(0, SegmentSet((), {}, plan.manifest.model.dim))
                index = cls(folder, plan.manifest, store, empty, encoder)
                index._writer.holds_lock = True
                yield index
            except BaseException:
                # Under the lock, with no manifest before: every index file here is this
                # creation's (or a crashed one's), and nobody else can have written since.
                if index is not None:
                    index.close()
                remove_created(folder, made_folder)
                raise
            finally:
                if index is not None:
                    index._writer.holds_lock = False

    @classmethod
    @contextmanager
    def open_or_create(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = 0.0,
        **settings: Any,
    ) -> Iterator[Index]:
        """Open the index in a folder, creating it first if there is none; closed at the end.

        The call a pipeline repeats every night. A new index is made as by
        :meth:`creating`: the block's first :meth:`add` is part of the
        creation, and if the block fails what this call made is removed. For
        an existing index, creation settings may repeat what it was made with
        (defaults spelt out count as not given) but never change it; the model
        is such a setting too. If another process creates the index meanwhile,
        it is opened like any other. On an existing index each write in the
        block commits on its own, as always: a failure later in the block
        does not undo it.

        Args:
            path: the folder, as for :meth:`create`.
            lock_timeout: seconds a write waits for another process's write; 0 fails at once.
            settings: the keyword arguments of :meth:`create`.

        Raises:
            SettingsConflictError: (a :class:`BadInputError`) if the index exists and
                was made with other settings; ``conflicts`` lists them.
            the errors of :meth:`create` and :meth:`open`.

        Example:
            >>> with Index.open_or_create("indexes/news", index_type="flat") as index:
            ...     index.add_paths(["feeds/"], prune=True)
        """
        folder = Path(path) if path is not None else read_environment().index_dir
        creation, encoder, _ = _creation_settings(settings, "Index.open_or_create")
        settings = {**settings, "build_backend": creation.build_backend, "backend": None}
        if creation.build_backend is not None:  # a misspelt name is not a conflict
            backend_named(creation.build_backend, BUILD_BACKENDS, "build backend")
        with ExitStack() as stack:
            index: Index | None = None
            if not cls.exists(folder):
                # If another process creates it meanwhile, it is opened below as any index.
                with suppress(IndexExistsError):
                    index = stack.enter_context(
                        cls.creating(folder, lock_timeout=lock_timeout, **settings)
                    )
            if index is None:
                # The model is compared with the other settings, to list every difference.
                index = cls.open(folder, encoder=encoder)
                stack.enter_context(index)
                conflicts = creation.conflicts(index.manifest)
                if conflicts:
                    raise SettingsConflictError(str(folder), conflicts)
                index.lock_timeout = lock_timeout
            else:
                stack.enter_context(index)
            yield index

    @staticmethod
    def exists(path: str | os.PathLike[str] | None = None) -> bool:
        """Whether the folder holds an index."""
        folder = Path(path) if path is not None else read_environment().index_dir
        return manifest_path(folder).exists()

    # -- writes --------------------------------------------------------------

    def add(
        self,
        articles: Iterable[Article | Skipped | Prepared],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
        prune: Sequence[str | os.PathLike[str]] | None = None,
        strict: bool = False,
    ) -> AddResult:
        """Add articles; an article whose id is already indexed is replaced if it changed.

        Unchanged articles (same id, same content) are not embedded again. The
        write is all or nothing, under the index's writer lock: the input is
        read once, in windows (each chunked, embedded and written as a segment
        before the next is read, so memory does not grow with the input), and
        every window becomes visible at one commit, or none does.
        :class:`Skipped` items (from :func:`load_paths`) pass through to the result.

        Args:
            prune: the files and folders these articles were read from, as given to
                :func:`load_paths`: any indexed article read from under them
                before but absent now is removed, in the same write. Articles of
                a file that had a skipped input this time are kept. Paths are
                compared resolved (``os.path.realpath``), however they were typed.
            strict: write nothing if any input is skipped (a bad row, a repeated
                id, an article with no text): raise instead, before the commit
                (the rest of the input is still read, to count what is skipped).

        An id given twice in one write keeps its first article; the later one
        is skipped, named by its file and line.

        Returns:
            counts of added, updated, unchanged and removed articles, chunks
            written and removed, and what was skipped.

        Raises:
            LockedError: if another process is writing and ``lock_timeout`` passes.
            BadInputError: with ``strict``, naming the first skipped input and the count.
        """
        return self._writer.add(
            articles, batch_size=batch_size, progress=progress, prune=prune, strict=strict
        )

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
        engine: str = "local",
        ray: RayOptions | None = None,
    ) -> AddResult:
        """Load files and folders (see :func:`semsearch.load_paths`) and add them.

        With ``prune=True``, articles once read from under these paths and gone
        now are removed in the same write; with ``strict=True`` nothing is
        written if any input is skipped (see :meth:`add`). ``date_order``
        (``"DMY"``/``"MDY"``) reads numeric dates such as ``09/08/2024``.
        ``clean=False`` keeps the page furniture of scraped pages (see
        :mod:`semsearch.clean`).

        ``engine="ray"`` loads, chunks and embeds on a Ray cluster
        (:mod:`semsearch.distributed`; ``pip install "semsearch[ray]"``),
        configured by ``ray`` (:class:`~semsearch.distributed.RayOptions`):
        this process holds the writer lock and commits, and the index is the
        one a local build makes, with the same guarantees; unchanged articles
        are not embedded. It reads files only, not standard input.

        Raises:
            BadInputError: for an unknown ``engine``, or a path that does not exist.
            MissingDependencyError: for ``engine="ray"`` without Ray installed.
        """
        items: Iterable[Article | Skipped | Prepared]
        if engine == "ray":
            from .distributed.ray_build import prepared_articles

            items = prepared_articles(
                self.path,
                self.manifest.store_file,
                asdict(self.manifest.model),
                asdict(self.manifest.chunker),
                paths,
                fields=fields,
                date_order=date_order,
                clean=clean,
                options=ray,
                batch_size=batch_size,
                progress=progress,
            )
        elif engine == "local":
            items = load_paths(paths, fields, date_order=date_order, clean=clean)
        else:
            choices = ", ".join(ENGINES)
            raise BadInputError(f"unknown engine {engine!r}; use one of {choices}")
        return self._writer.add(
            items,
            batch_size=batch_size,
            progress=progress,
            prune=list(paths) if prune else None,
            strict=strict,
            input_stage="workers" if engine == "ray" else "load",
        )

    def remove(self, article_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Remove articles and all their chunks, from FAISS and SQLite together.

        Returns:
            (removed ids, ids that were not in the index).
        """
        return self._writer.remove(article_ids)

    def rebuild(self, index_type: str | None = None) -> None:
        """Rebuild the vectors as one segment, optionally of another index type.

        Raises:
            BadInputError: for an index type FAISS cannot build; nothing is changed.
        """
        self._writer.rebuild(index_type)

    def optimize(self) -> OptimizeResult:
        """Merge every segment into one, dropping the vectors of removed chunks for good.

        Writes merge segments by themselves (tiered, bounded per write: see
        :attr:`merge_policy`); ``optimize`` is for a quiet hour: searches then
        cover one segment, and the disk holds no removed vector. Like any
        write it is one atomic generation switch: killed midway, the index is
        the one before.

        Raises:
            LockedError: if another process is writing.
            OSError: if the merged segment cannot be written; nothing is changed.
        """
        return self._writer.optimize()

    def tune(
        self,
        queries: Sequence[str] | np.ndarray | None = None,
        recall_target: float | None = None,
    ) -> list[dict[str, Any]]:
        """Tune the search of every compressed segment again, to a recall target.

        Segments are tuned when written, on held-out vectors of their own;
        with ``queries`` (texts, embedded as queries, or ``(n, dim)`` float32
        query vectors) they are tuned on the queries your users ask instead:
        for each segment, the fastest nprobe, quantizer efSearch and re-rank
        shortlist whose recall@10 against exact search on those queries
        reaches the target (see :mod:`semsearch.tuning`). One generation; no
        vector file is rewritten. Flat and HNSW segments need no tuning.

        Args:
            queries: what to tune on; default: held-out vectors of each segment.
            recall_target: recall@10 to reach, in (0, 1]; default: the index's
                (0.95 unless created otherwise). Recorded as the index's from now on.

        Returns:
            each compressed segment's new tuning (as in ``info().segment_list``),
            with its ``id``; empty if there is none.

        Raises:
            BadInputError: for a target out of range or query vectors of another dimension.
            LockedError: if another process is writing.
        """
        return self._writer.tune(queries, recall_target)

    def export_onnx(self) -> bool:
        """Give an index built without one the torch-free query encoder (``onnx/``).

        Returns whether an export was made (False if the model cannot be exported).
        """
        return self._writer.export_onnx()


def _renamed(old: str | None, new: str | None, call: str, stacklevel: int) -> str | None:
    """The value of ``build_backend=``, given under its former name ``backend=`` or not."""
    if old is None:
        return new
    if new not in (None, "auto"):
        raise TypeError(f"{call}() takes build_backend=, not also backend=")
    warnings.warn(f"{call}(backend=) is now build_backend=", DeprecationWarning, stacklevel)
    return old


def _creation_settings(
    settings: dict[str, Any], call: str
) -> tuple[CreationSettings, Encoder | None, bool]:
    """:meth:`Index.create`'s keyword arguments as (settings, encoder, onnx)."""
    settings = dict(settings)
    encoder = settings.pop("encoder", None)
    onnx = bool(settings.pop("onnx", True))
    # The caller's frame: above this function, the context manager's body and
    # contextlib's __enter__.
    settings["build_backend"] = _renamed(
        settings.pop("backend", None), settings.get("build_backend"), call, stacklevel=5
    )
    known = {f.name for f in fields(CreationSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"{call}() got unexpected keyword arguments: {', '.join(unknown)}")
    return CreationSettings(**settings), encoder, onnx
