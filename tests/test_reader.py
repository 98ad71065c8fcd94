"""The seams of the split: a reader shared by threads, the commit protocol's retry and Change."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from semsearch import IncompatibleIndexError, Index
from semsearch.commit import ATTEMPTS, Change, Generation, Moved, commit, retry
from semsearch.manifest import KEYWORD_SUFFIXES
from semsearch.reader import Reader
from tests.conftest import make_article


def _corpus(version: int) -> list:
    return [make_article(f"a{i}", f"Version v{version} text of article {i}.") for i in range(8)]


def test_threads_sharing_an_index_see_one_generation_while_it_writes(tmp_path, fake_encoder):
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.add(_corpus(0))

        def read(mode: str) -> set[str]:
            seen = set()
            for _ in range(15):
                hits = index.search("version text article", k=8, mode=mode)
                assert len(hits) == 8
                versions = {h.text.split()[1] for h in hits}
                assert len(versions) == 1, versions  # never two generations in one result
                seen |= versions
            return seen

        with ThreadPoolExecutor(4) as pool:
            readers = [pool.submit(read, m) for m in ("semantic", "keyword", "hybrid") * 2]
            for version in range(1, 6):
                index.add(_corpus(version))
            seen = set().union(*(r.result() for r in readers))
        assert seen <= {f"v{v}" for v in range(6)}
        assert index.search("version", k=1, mode="semantic")[0].text.split()[1] == "v5"


def test_a_reader_follows_another_objects_commits(tmp_path, fake_encoder):
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.add(_corpus(0))
        with Reader.open(index.path, encoder=fake_encoder) as reader:
            assert not hasattr(reader, "add")  # the reader cannot write
            index.add(_corpus(1))
            hits = reader.search("version text", k=8, mode="semantic")
            assert {h.text.split()[1] for h in hits} == {"v1"}
            assert len(reader) == 8


def test_retry_looks_again_then_gives_up_with_the_last_reason():
    tries = []

    def moving(until: int) -> int:
        tries.append(1)
        if len(tries) < until:
            raise Moved(f"moved on try {len(tries)}")
        return len(tries)

    assert retry(lambda: moving(3)) == 3
    tries.clear()
    with pytest.raises(IncompatibleIndexError, match=f"moved on try {ATTEMPTS}$"):
        retry(lambda: moving(ATTEMPTS + 1))
    assert len(tries) == ATTEMPTS
    tries.clear()
    assert retry(lambda: moving(ATTEMPTS + 1), give_up=str) == f"moved on try {ATTEMPTS}"


def test_a_change_is_applied_as_one_generation(fake_index):
    fake_index.add(_corpus(0))
    before = fake_index._generation
    current = Generation(before, fake_index._vectors)
    change = Change(drop=["a0", "a1"])
    done = commit(fake_index.path, fake_index._store, current, fake_index.manifest, change)
    assert done.generation == before + 1 and done.chunks_removed == 2
    assert done.manifest.counts == {"articles": 6, "chunks": 6}
    # A removal writes no vector file: its chunks are tombstones of the one segment.
    keywords = [f"segment.1{suffix}" for suffix in KEYWORD_SUFFIXES]  # semsearch.impacts
    assert sorted(p.name for p in fake_index.path.glob("segment.*")) == sorted(
        ["segment.1.faiss", "segment.1.keys.npy", *keywords]
    )
    with Index.open(fake_index.path, encoder=fake_index.encoder) as reopened:
        assert len(reopened) == 6 and reopened.get("a0") is None
        assert np.array_equal(np.sort(reopened._vectors.ids()), reopened.chunk_vectors()[0])
