"""The FAISS wrapper on its own: settings, training, threads."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from semsearch import BadInputError
from semsearch.vectors import VectorIndex, resolve_factory


def unit_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_is_exact_up_to_the_threshold_then_hnsw():
    assert resolve_factory("auto", 100_000) == "Flat"
    assert resolve_factory("auto", 100_001) == "HNSW32"
    assert resolve_factory("IVF64,Flat", 5) == "IVF64,Flat"


def test_ivf_pq_skips_polysemous_training():
    index = VectorIndex.create("IVF4,PQ8", 32)
    assert faiss.downcast_index(index._ivf).do_polysemous_training is False
    index.add(unit_vectors(2000), np.arange(2000))
    assert index.ntotal == 2000


def test_search_params_are_set_and_saved(tmp_path):
    index = VectorIndex.create("HNSW32", 32)
    index.add(unit_vectors(300), np.arange(300))
    index.set_search_params(ef_search=40, nprobe=3)  # nprobe does not apply: ignored
    index.write(tmp_path / "v.faiss")
    assert VectorIndex.read(tmp_path / "v.faiss", "HNSW32").search_params == {"ef_search": 40}


def test_single_query_search_restores_threads_and_ef_search():
    index = VectorIndex.create("HNSW32", 32)
    vectors = unit_vectors(500)
    index.add(vectors, np.arange(500))
    threads = faiss.omp_get_max_threads()
    _, ids = index.search(vectors[:1], 300)  # k above efSearch
    assert (ids[0] >= 0).sum() == 300 and ids[0][0] == 0
    assert faiss.omp_get_max_threads() == threads
    assert index.search_params == {"ef_search": 128}


def test_training_errors_are_clear():
    with pytest.raises(BadInputError, match=r"needs at least 64 vectors to train, got 10"):
        VectorIndex.create("IVF64,Flat", 32).add(unit_vectors(10), np.arange(10))


@pytest.mark.skipif(
    not Path("/proc/self/smaps").exists(),
    reason="a mapping's resident pages are read from /proc/self/smaps (Linux only)",
)
def test_release_pages_unmaps_what_was_read_and_the_data_reads_the_same(tmp_path):
    from semsearch.vectors import release_pages

    path = tmp_path / "v.npy"
    data = np.arange(4096 * 64, dtype=np.float32).reshape(4096, 64)
    np.save(path, data)
    mapped = np.load(path, mmap_mode="r").view(np.ndarray)

    def resident() -> int:  # pages of the file mapped into this process (Linux)
        lines = Path("/proc/self/smaps").read_text().splitlines()
        for i, line in enumerate(lines):
            if line.endswith(str(path)):
                return next(int(x.split()[1]) for x in lines[i + 1 :] if x.startswith("Rss:"))
        return 0

    assert float(mapped[2000:4000].sum()) == float(data[2000:4000].sum())
    assert resident() > 0
    release_pages(mapped[10:20])  # any view of the mapping releases the whole of it
    assert resident() == 0
    assert np.array_equal(mapped[100], data[100])  # read again from the page cache
    release_pages(data)  # not mapped: nothing to do
