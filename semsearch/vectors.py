"""The FAISS vector index: stable 64-bit ids, inner product on unit vectors.

Every chunk keeps its 64-bit id for life: IVF indexes store ids in their
inverted lists; every other type is wrapped in ``IndexIDMap`` (whose id map is
one int64 per vector, and whose inner index holds vector ``i`` of the map at
position ``i``, so :meth:`VectorIndex.reconstruct_at` needs no reverse map).
A segment's index is written once and read memory-mapped
(``IO_FLAG_MMAP_IFC``): opening costs the id map, not the vectors. Indexes of
format 3 used ``IndexIDMap2`` and were changed in place; they still read.

FAISS's exceptions stop here (:func:`_faiss_errors`): it raises ``RuntimeError``
for everything, so each call that can fail says what its failure means to a
caller (a bad index type, a damaged file, a file that cannot be written).
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .config import (
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_FACTORY,
    HNSW_OVERHEAD_BYTES,
    HNSW_THRESHOLD,
    IndexType,
)
from .errors import BadInputError, IncompatibleIndexError, damaged

# IVF default probes: enough for recall near exact on typical embedding sets.
IVF_NPROBE = 16


def _faiss() -> Any:
    import faiss

    return faiss


def resolve_factory(
    index_type: str, n_vectors: int, memory_budget: int | None = None, dim: int = 384
) -> str:
    """The FAISS factory string for an index type at a given size.

    ``auto`` is exact (``Flat``) up to ``HNSW_THRESHOLD`` vectors; above,
    ``HNSW32`` while an HNSW index of ``n_vectors`` fits ``memory_budget``
    bytes (:func:`hnsw_bytes`; no budget: always), and beyond that the
    compressed type of :func:`compressed_factory`. ``flat`` and ``hnsw`` name
    those two; anything else is taken as a FAISS factory string (e.g.
    ``IVF1024,Flat``, ``IVF256,PQ32``).

    The rule follows autofaiss's (``autofaiss/external/optimize.py``): exact
    while it is fast, a graph while memory allows, inverted lists of
    compressed codes beyond.
    """
    kind = index_type.strip()
    if kind.lower() == IndexType.AUTO.value:
        if n_vectors <= HNSW_THRESHOLD:
            return "Flat"
        if memory_budget is None or n_vectors * hnsw_bytes(dim) <= memory_budget:
            return HNSW_FACTORY
        return compressed_factory(n_vectors, dim)
    if kind.lower() == IndexType.FLAT.value:
        return "Flat"
    if kind.lower() == IndexType.HNSW.value:
        return HNSW_FACTORY
    return kind


def hnsw_bytes(dim: int) -> int:
    """Memory an HNSW32 index needs per vector to search fast, in bytes: its
    float32 vector, level-0 links and id (mapped files count: a graph search
    touches pages all over them)."""
    return 4 * dim + HNSW_OVERHEAD_BYTES


def compressed_factory(n_vectors: int, dim: int) -> str:
    """The compressed type for ``n_vectors`` of ``dim`` dimensions.

    ``IVF{nlist}_HNSW32,PQ{M}x4fs``: inverted lists (``nlist`` the power of two
    nearest ``sqrt(n)``, 16 to 65,536, so each list holds ~sqrt(n) vectors and
    training on 64 points per list stays minutes on 2 cores) under an HNSW
    coarse quantizer, and 4-bit PQ codes of ``M = dim / 8`` sub-vectors scanned
    with SIMD ("fast-scan", André et al., *Quicker ADC*, 2019): ``M / 2`` bytes
    a vector (24 for 384 dimensions) plus its 8-byte id. Search re-ranks a
    shortlist with the exact vectors kept memory-mapped beside the segment
    (:class:`semsearch.segments.Segment`).
    """
    nlist = 2 ** round(math.log2(max(1.0, math.sqrt(max(1, n_vectors)))))
    nlist = min(65_536, max(16, nlist))
    m = dim // 8 if dim % 8 == 0 else next(m for m in range(dim // 4, 0, -1) if dim % m == 0)
    return f"IVF{nlist}_HNSW32,PQ{m}x4fs"


def release_pages(array: np.ndarray) -> None:
    """Unmap from this process the pages of the file mapped under ``array``.

    Reading a memory-mapped file once through (a merge, the ground truth of
    tuning) maps every page it touches, and they count in the process's
    resident set (``RssFile``) until the mapping goes: a build merging and
    tuning a 10M-chunk segment would show 15 GB of it. ``MADV_DONTNEED`` on a
    read-only file mapping only unmaps them; they stay in the page cache, and a
    later read maps them again. Does nothing for an array not backed by a
    mapping, or where the platform has no ``madvise``.
    """
    base: object = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            if hasattr(base, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                base.madvise(mmap.MADV_DONTNEED)
            return
        base = getattr(base, "base", None)


@dataclass(frozen=True)
class SearchSettings:
    """How a compressed segment is searched, as tuning chose.

    Attributes:
        nprobe: inverted lists visited per query.
        ef_search: efSearch of the HNSW coarse quantizer (>= nprobe).
        k_factor: the re-ranked shortlist is ``k_factor * k`` candidates.
    """

    nprobe: int = 16
    ef_search: int = 64
    k_factor: int = 4

    def to_dict(self) -> dict[str, int]:
        return {"nprobe": self.nprobe, "ef_search": self.ef_search, "k_factor": self.k_factor}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSettings:
        return cls(
            nprobe=int(data.get("nprobe", cls.nprobe)),
            ef_search=int(data.get("ef_search", cls.ef_search)),
            k_factor=int(data.get("k_factor", cls.k_factor)),
        )


class VectorIndex:
    """A FAISS index of unit vectors under 64-bit ids."""

    def __init__(self, index: Any, factory: str) -> None:
        faiss = _faiss()
        self._index = index
        # IVF keeps ids itself; IndexIDMap2's remove_ids would corrupt it.
        self._ivf = _ivf(index)
        self._inner = index if self._ivf is not None else faiss.downcast_index(index.index)
        self.factory = factory
        self._params_cache: dict[tuple[int, SearchSettings], tuple[Any, Exclusion | None]] = {}

    @classmethod
    def create(cls, factory: str, dim: int) -> VectorIndex:
        """A new, empty index (IVF types are trained on their first add).

        Raises:
            BadInputError: if FAISS cannot build ``factory``.
        """
        faiss = _faiss()
        if factory.upper().startswith("IDMAP"):
            raise BadInputError(f"index type {factory!r}: leave out IDMap, semsearch adds its own")
        with _faiss_errors(
            lambda reason: BadInputError(
                f"invalid FAISS index type {factory!r} for {dim}-dimensional vectors: {reason}"
            )
        ):
            inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        hnsw = getattr(inner, "hnsw", None)
        if hnsw is not None:
            hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            hnsw.efSearch = HNSW_EF_SEARCH
        ivf = _ivf(inner)
        if ivf is not None:
            ivf.nprobe = min(IVF_NPROBE, ivf.nlist)
            ivfpq = faiss.downcast_index(ivf)
            if getattr(ivfpq, "do_polysemous_training", False):
                # FAISS's default for IVF-PQ: minutes of training for a code
                # ordering that only its polysemous filter uses; we never do.
                ivfpq.do_polysemous_training = False
            return cls(inner, factory)
        return cls(faiss.IndexIDMap(inner), factory)

    @classmethod
    def read(
        cls, path: Path, factory: str, file: BinaryIO | None = None, mmap: bool = False
    ) -> VectorIndex:
        """Read an index file written by :meth:`write`.

        Args:
            file: the file already open (read from its current position), so
                that it is the same file even if the path is replaced meanwhile.
            mmap: map the file's vectors (and HNSW graph, IVF lists) into memory
                instead of reading them (FAISS's ``IO_FLAG_MMAP_IFC``): they cost
                page cache, shared between processes, not this process's memory.
                The file must then never change (segments never do).

        Raises:
            IncompatibleIndexError: if the file is missing or damaged.
        """
        faiss = _faiss()
        if file is None and not path.exists():
            raise IncompatibleIndexError(f"{path} is missing; the index is incomplete")
        with _faiss_errors(lambda reason: damaged(path, f"not a FAISS index ({reason})")):
            if file is not None:
                index = faiss.read_index(faiss.PyCallbackIOReader(file.read))
            elif mmap:
                index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
            else:
                index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIDMap) and _ivf(index) is None:
            raise IncompatibleIndexError(f"{path} is not a semsearch vector index (no id map)")
        return cls(index, factory)

    def write(self, path: Path) -> None:
        """Write to ``path`` (flushed to disk); the caller renames it into place.

        Raises:
            OSError: if the file cannot be written.
        """
        with _faiss_errors(lambda reason: OSError(f"cannot write {path}: {reason}")):
            _faiss().write_index(self._index, str(path))
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def exact(self) -> bool:
        """Whether search is exhaustive (a flat index), so filtered search is exact too."""
        return isinstance(self._inner, _faiss().IndexFlat)

    def ids(self) -> np.ndarray:
        """The ids held (in insertion order, except for IVF: list by list)."""
        faiss = _faiss()
        if self._ivf is None:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        lists = self._ivf.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(lists.nlist)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    @property
    def nlist(self) -> int:
        """Inverted lists of an IVF index (0 for other types)."""
        return int(self._ivf.nlist) if self._ivf is not None else 0

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def min_train(self) -> int:
        """Vectors worth training this type on: 39 per IVF list (below that FAISS
        warns of poor centroids); 10,000 for other trained types (a PQ's 256
        centroids per sub-quantizer, 39 points each)."""
        if self._ivf is not None:
            return 39 * int(self._ivf.nlist)
        return 10_000 if self.trains else 0

    @property
    def trains(self) -> bool:
        """Whether the type learns from data (IVF centroids, PQ codebooks) before adding."""
        return not self.reconstructs

    @property
    def reconstructs(self) -> bool:
        """Whether the index holds its vectors exactly (Flat, HNSW over Flat), by position."""
        faiss = _faiss()
        return self._ivf is None and isinstance(self._inner, (faiss.IndexFlat, faiss.IndexHNSWFlat))

    def reconstruct_at(self, positions: np.ndarray) -> np.ndarray:
        """The exact vectors at these positions of the id map: ``(n, dim)`` float32.

        Only where :attr:`reconstructs` is true.
        """
        assert self.reconstructs, "this index type keeps no exact vectors"
        if len(positions) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        positions = np.ascontiguousarray(positions, dtype=np.int64)
        return np.asarray(self._inner.reconstruct_batch(positions), dtype=np.float32)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray | None:
        """The stored vectors of these ids, or None where the type cannot give them back.

        Flat and HNSW keep the vectors themselves; IVF and PQ need a direct map
        or keep only codes.
        """
        if self._ivf is not None or not isinstance(
            self._inner, (_faiss().IndexFlat, _faiss().IndexHNSW)
        ):
            return None
        try:
            return np.asarray(self._index.reconstruct_batch(np.ascontiguousarray(ids)))
        except RuntimeError:
            return None

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add vectors under ids, training the index first if it needs it.

        Raises:
            BadInputError: if an untrained index (IVF, PQ) has too few vectors to train on.
        """
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self._index.is_trained:
            self.train(vectors)
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def train(self, vectors: np.ndarray) -> None:
        """Train the index (IVF centroids, PQ codebooks) on these vectors."""
        needed = self._ivf.nlist if self._ivf is not None else 1
        if len(vectors) < needed:
            raise BadInputError(
                f"index type {self.factory!r} needs at least {needed} vectors to train, "
                f"got {len(vectors)}; use fewer lists or index more text first"
            )
        with _faiss_errors(
            lambda reason: BadInputError(
                f"cannot train index type {self.factory!r} on {len(vectors)} vectors: {reason}"
            )
        ):
            self._index.train(np.ascontiguousarray(vectors, dtype=np.float32))

    @property
    def search_params(self) -> dict[str, int]:
        """The stored search-time settings: ``ef_search`` (HNSW) or ``nprobe`` (IVF)."""
        hnsw = getattr(self._inner, "hnsw", None)
        if hnsw is not None:
            return {"ef_search": int(hnsw.efSearch)}
        if self._ivf is not None:
            return {"nprobe": int(self._ivf.nprobe)}
        return {}

    def set_search_params(self, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Trade speed for recall; saved with the index. Settings that do not apply are ignored."""
        hnsw = getattr(self._inner, "hnsw", None)
        if ef_search is not None and hnsw is not None:
            hnsw.efSearch = int(ef_search)
        if nprobe is not None and self._ivf is not None:
            self._ivf.nprobe = min(int(nprobe), int(self._ivf.nlist))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        only: np.ndarray | None = None,
        exclude: Exclusion | None = None,
        settings: SearchSettings | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best (scores, ids) per query; ids are -1 past the end of the index.

        Args:
            queries: ``(n, dim)`` float32 unit vectors.
            only: if given, search only among these ids (FAISS's ``IDSelector``,
                applied inside the search, not by discarding results afterwards).
            exclude: if given (and ``only`` is not), never return these ids
                (tombstones), also inside the search: an :meth:`exclusion`,
                made once and kept, since making one costs more than a search
                (a hash set of every id: about 10 ms for 100k).
            settings: an IVF index's nprobe and its HNSW quantizer's efSearch
                (default: those stored in the index).

        Returns:
            ``(n, k)`` float32 scores and ``(n, k)`` int64 ids, best first.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.ntotal if only is None else len(only)))
        hnsw = getattr(self._inner, "hnsw", None)
        # HNSW cannot return more neighbours than it explores.
        saved = hnsw.efSearch if hnsw is not None else None
        if hnsw is not None and hnsw.efSearch < k:
            hnsw.efSearch = k
        # FAISS parallelises over queries: for one query, waking OpenMP threads
        # costs more than the search (0.2 ms vs 4-8 ms on a busy 2-core box).
        faiss = _faiss()
        threads = faiss.omp_get_max_threads()
        if len(queries) == 1:
            faiss.omp_set_num_threads(1)
        try:
            if only is not None:
                selection: Exclusion | None = self.exclusion(only, invert=False)
            else:
                selection = exclude
            if selection is None and settings is None:
                scores, ids = self._index.search(queries, k)
            else:
                params = self._params(selection, settings)
                scores, ids = self._index.search(queries, k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
            if hnsw is not None:
                hnsw.efSearch = saved
        return scores, ids

    def quantization_error(self, vectors: np.ndarray) -> float:
        """Mean squared distance from unit vectors to their nearest IVF centroid
        (0 for a type without one): how well the trained quantizer fits them."""
        if self._ivf is None or len(vectors) == 0:
            return 0.0
        quantizer = self._ivf.quantizer
        # Centroids of unit vectors are not unit: |x - c|^2 = 1 - 2 x.c + |c|^2.
        scores, assigned = quantizer.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        centroids = quantizer.reconstruct_batch(np.ascontiguousarray(assigned[:, 0]))
        norms = np.einsum("ij,ij->i", centroids, centroids)
        return float(np.mean(1.0 - 2.0 * scores[:, 0] + norms))

    def clone(self) -> VectorIndex:
        """An independent copy (of a trained, empty index: the shared quantizer)."""
        return VectorIndex(_faiss().clone_index(self._index), self.factory)

    @staticmethod
    def exclusion(ids: np.ndarray, invert: bool = True) -> Exclusion:
        """A FAISS selector of every id but these (or, ``invert=False``, only these)."""
        faiss = _faiss()
        batch = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        return Exclusion(faiss.IDSelectorNot(batch) if invert else batch, batch)

    def _params(self, exclusion: Exclusion | None, settings: SearchSettings | None) -> Any:
        """Search parameters: a selector, and the index's own settings or these.

        An IVF index's parameters for given settings are made once per selector
        and kept (making them costs 0.05 ms, a quarter of a small segment's
        search: a millisecond a query at 18 segments)."""
        if settings is None or self._ivf is None or hasattr(self._inner, "hnsw"):
            return self._make_params(exclusion, settings)
        cache = self._params_cache
        key = (id(exclusion), settings)
        found = cache.get(key)
        if found is None or found[1] is not exclusion:
            if len(cache) >= 8:
                cache.clear()
            found = cache[key] = (self._make_params(exclusion, settings), exclusion)
        return found[0]

    def _make_params(self, exclusion: Exclusion | None, settings: SearchSettings | None) -> Any:
        faiss = _faiss()
        selector = exclusion.selector if exclusion is not None else None
        hnsw = getattr(self._inner, "hnsw", None)
        if hnsw is not None:
            params = faiss.SearchParametersHNSW(efSearch=int(hnsw.efSearch))
        elif self._ivf is not None:
            nprobe = int(self._ivf.nprobe)
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            if settings is not None:
                params.nprobe = min(int(settings.nprobe), int(self._ivf.nlist))
                if getattr(faiss.downcast_index(self._ivf.quantizer), "hnsw", None) is not None:
                    quantizer = faiss.SearchParametersHNSW(
                        efSearch=max(int(settings.ef_search), params.nprobe)
                    )
                    params.quantizer_params = quantizer
                    params._quantizer = quantizer  # SWIG does not keep it alive for us
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
            params._selector = exclusion  # SWIG does not keep it alive for us
        return params


@dataclass(frozen=True)
class Exclusion:
    """A FAISS ``IDSelector`` and the objects it points to (kept alive with it)."""

    selector: Any
    batch: Any


@contextmanager
def _faiss_errors(error: Callable[[str], Exception]) -> Iterator[None]:
    """FAISS's ``RuntimeError`` becomes ``error(reason)``, FAISS's reason without its C++ frame.

    (After httpx's ``map_httpcore_exceptions``.)
    """
    try:
        yield
    except RuntimeError as e:
        raise error(_faiss_reason(e)) from None


def _faiss_reason(error: RuntimeError) -> str:
    """FAISS's message without its C++ signature and source location."""
    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return text.rpartition("Error: ")[2] or text


def _ivf(index: Any) -> Any:
    try:
        return _faiss().extract_index_ivf(index)
    except RuntimeError:
        return None
