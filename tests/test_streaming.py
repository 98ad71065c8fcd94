"""A bounded-memory add: the input streamed in windows, each its own segment, one generation.

The window is a few chunks here (``WINDOW_CHUNKS`` patched), so that a few
dozen articles make several windows. The fake encoder: these test the
index's bookkeeping, not search quality.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import ClassVar
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch import Article, BadInputError, Index, MergePolicy
from semsearch import writer as writer_module
from semsearch.records import Skipped
from semsearch.verify import verify
from semsearch.writer import SeenIds
from tests.conftest import ROOT, FakeEncoder, make_article


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of 4 chunks, inputs read 3 articles at a time, pruning 5 stored at a time."""
    monkeypatch.setattr(writer_module, "WINDOW_CHUNKS", 4)
    monkeypatch.setattr(writer_module, "READ_ARTICLES", 3)
    monkeypatch.setattr(writer_module, "PAGE_ARTICLES", 5)


def _texts(n: int, start: int = 0, word: str = "harbour") -> dict[str, str]:
    return {f"a{i}": f"Text number {i} about the {word} {i}." for i in range(start, start + n)}


def _articles(texts: dict[str, str]) -> list[Article]:
    return [make_article(i, t) for i, t in texts.items()]


def _index(folder: Path, encoder: FakeEncoder) -> Index:
    index = Index.create(folder, encoder=encoder)
    index.merge_policy = MergePolicy(in_writes=False)  # count the add's own segments
    return index


def _segment_files(folder: Path) -> set[int]:
    return {int(p.name.split(".")[1]) for p in folder.glob("segment.*")}


def test_an_add_of_many_windows_is_one_generation_of_one_segment_per_window(
    tmp_path, fake_encoder, small_windows
):
    with _index(tmp_path / "ix", fake_encoder) as index:
        before = index._generation
        result = index.add(_articles(_texts(18)))
        info = index.info()
        assert index._generation == before + 1
        assert (result.added, result.chunks_added, result.chunks_embedded) == (18, 18, 18)
        assert (info.articles, info.chunks, info.segments) == (18, 18, 5)  # 4+4+4+4+2
        assert set(result.timings) >= {"load", "diff", "chunk", "embed", "sqlite", "faiss"}
        assert _segment_files(index.path) == {s.id for s in index._vectors.segments}
    assert verify(tmp_path / "ix").ok


def test_a_large_add_merges_its_windows_as_far_as_its_size_allows(
    tmp_path, fake_encoder, small_windows
):
    # 60 windows of 4 chunks: three merges (the bound of any write) would leave
    # 48 segments. A write may rewrite up to MERGE_WORK times what it wrote, so
    # the tiers come out as the policy wants them: fewer than 4 segments in each.
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.merge_policy = MergePolicy(segments_per_tier=4, floor_chunks=4)
        index.add(_articles(_texts(240)))
        sizes = sorted(index._vectors.live(s) for s in index._vectors.segments)
        tiers = Counter(int(math.log(size, 4) + 1e-9) for size in sizes)
        assert max(tiers.values()) < 4 and len(sizes) <= 9, sizes
        assert index.info().chunks == 240
        # A small write after it merges no more than MERGES_PER_WRITE times.
        index.add(_articles(_texts(4, start=1000)))
        assert len(index) == 244
    assert verify(tmp_path / "ix").ok


def test_windows_search_exactly_as_one_window(tmp_path, fake_encoder, monkeypatch):
    texts = _texts(23)
    with _index(tmp_path / "one", fake_encoder) as index:
        index.add(_articles(texts))
        whole = index.search("harbour 7", k=10, mode="semantic")
    monkeypatch.setattr(writer_module, "WINDOW_CHUNKS", 5)
    with _index(tmp_path / "many", fake_encoder) as index:
        index.add(_articles(texts))
        assert index.info().segments == 5
        windowed = index.search("harbour 7", k=10, mode="semantic")
    assert [(h.article_id, h.score) for h in windowed] == [(h.article_id, h.score) for h in whole]


def test_updates_in_any_window_replace_what_is_stored(tmp_path, fake_encoder, small_windows):
    with _index(tmp_path / "ix", fake_encoder) as index:
        index.add(_articles(_texts(10)))
        changed = {**_texts(10), **_texts(5, start=5, word="orchard"), **_texts(4, start=10)}
        result = index.add(_articles(changed))
        assert (result.added, result.updated, result.unchanged) == (4, 5, 5)
        assert (result.chunks_added, result.chunks_removed) == (9, 5)
        assert len(index) == 14 and index.info().tombstones == 5
        assert index.get("a7").text == "Text number 7 about the orchard 7."
        hits = index.search("orchard", k=20, mode="keyword")
        assert sorted(h.article_id for h in hits) == [f"a{i}" for i in range(5, 10)]


def test_an_id_repeated_in_a_later_window_keeps_the_first(tmp_path, fake_encoder, small_windows):
    rows = [make_article(f"b{i}", f"Row {i} text.", path=f"in.jsonl:{i + 1}") for i in range(9)]
    rows.insert(7, make_article("b1", "A second b1.", path="in.jsonl:99"))
    with _index(tmp_path / "ix", fake_encoder) as index:
        result = index.add(rows)
        (skipped,) = result.skipped
        assert (skipped.path, skipped.line) == ("in.jsonl", 99)
        assert skipped.reason == "duplicate id 'b1', first at in.jsonl:2; this one is skipped"
        assert index.get("b1").text == "Row 1 text." and len(index) == 9


def test_repeated_ids_are_told_apart_from_colliding_hashes(monkeypatch):
    # Every id hashes alike: the spool's ids still tell a repeat from a collision.
    monkeypatch.setattr(writer_module, "id_hashes", lambda ids: np.zeros(len(ids), np.uint64))
    skipped: list[Skipped] = []
    with SeenIds() as seen:
        kept = [
            a.id
            for batch in (["x", "y"], ["x", "z", "z"], ["y", "w"])
            for a in seen.first_of_each_id([make_article(i, "t", path=i) for i in batch], skipped)
        ]
        assert kept == ["x", "y", "z", "w"]
        assert [s.reason.split(",")[0] for s in skipped] == [
            "duplicate id 'x'",
            "duplicate id 'z'",
            "duplicate id 'y'",
        ]
        assert seen.contains(["x", "q"]).tolist() == [True, True]  # by hash: kept, not pruned


def test_seen_ids_stay_exact_over_many_merged_runs():
    skipped: list[Skipped] = []
    with SeenIds() as seen:
        for start in range(0, 300, 7):  # 43 batches: runs merge as they grow
            batch = [
                make_article(f"id{i % 250}", "t", path=f"f:{i}") for i in range(start, start + 7)
            ]
            seen.first_of_each_id(batch, skipped)
        assert len(skipped) == 301 - 250
        assert skipped[0].reason.startswith("duplicate id 'id0', first at f:0")
        assert seen.contains(["id0", "id249", "id250"]).tolist() == [True, True, False]
        assert len(seen._runs) <= 8


def test_strict_refuses_a_skip_in_a_later_window_and_writes_nothing(
    tmp_path, fake_encoder, small_windows
):
    with _index(tmp_path / "ix", fake_encoder) as index:
        index.add(_articles(_texts(3)))
        generation, live = index._generation, _segment_files(index.path)
        items = [*_articles(_texts(12, start=3)), Skipped("bad.jsonl", "not JSON", 4)]
        items += _articles(_texts(2, start=3))  # repeats a3 and a4
        with pytest.raises(BadInputError, match=r"^3 input\(s\) skipped .*bad.jsonl:4: not JSON"):
            index.add(items, strict=True)
        assert index._generation == generation and len(index) == 3
        assert _segment_files(index.path) == live  # the windows' files were deleted
    assert verify(tmp_path / "ix").ok


def test_a_failure_in_a_later_window_deletes_the_earlier_windows_files(
    tmp_path, fake_encoder, small_windows
):
    class FailsOnBoom(FakeEncoder):
        def encode_documents(self, texts, batch_size=32, progress=False):
            if any("boom" in t for t in texts):
                raise RuntimeError("the model ran out of memory")
            return super().encode_documents(texts, batch_size, progress)

    with _index(tmp_path / "ix", FailsOnBoom()) as index:
        index.add(_articles(_texts(2)))
        generation, live = index._generation, _segment_files(index.path)
        with pytest.raises(RuntimeError, match="out of memory"):
            # Two windows written, the third fails.
            index.add(_articles({**_texts(8, start=2), **_texts(4, start=10, word="boom")}))
        assert index._generation == generation and len(index) == 2
        assert _segment_files(index.path) == live
        assert index.search("harbour", k=5, mode="keyword")  # the reader still reads


def test_a_read_during_an_add_sees_the_last_commit(tmp_path, small_windows):
    class Reads(FakeEncoder):
        index: Index | None = None
        seen: ClassVar[list[tuple[int, int]]] = []

        def encode_documents(self, texts, batch_size=32, progress=False):
            if self.index is not None:  # windows already written, not committed
                hits = self.index.search("text", k=50, mode="keyword")
                self.seen.append((len(self.index), len(hits)))
            return super().encode_documents(texts, batch_size, progress)

    encoder = Reads()
    with _index(tmp_path / "ix", encoder) as index:
        index.add(_articles(_texts(3)))
        encoder.index = index
        index.add(_articles(_texts(10, start=3)))
        encoder.index = None
        assert encoder.seen == [(3, 3)] * 3 and len(index) == 13


def test_prune_pages_through_the_stored_articles(tmp_path, fake_encoder, small_windows):
    docs = tmp_path / "docs"
    docs.mkdir()
    paths = {i: str(docs / f"{i}.md") for i in range(13)}
    with _index(tmp_path / "ix", fake_encoder) as index:
        index.add([make_article(f"a{i}", f"Text {i}.", path=p) for i, p in paths.items()])
        index.add([make_article("other", "Elsewhere.", path=str(tmp_path / "x.md"))])
        kept = [i for i in paths if i % 3 == 0]
        result = index.add(
            [make_article(f"a{i}", f"Text {i}.", path=paths[i]) for i in kept], prune=[docs]
        )
        assert (result.unchanged, result.removed, result.chunks_removed) == (5, 8, 8)
        assert sorted(a for a in (f"a{i}" for i in paths) if index.get(a)) == sorted(
            f"a{i}" for i in kept
        )
        assert index.get("other") is not None


def test_an_unchanged_add_of_many_windows_commits_nothing(tmp_path, fake_encoder, small_windows):
    with _index(tmp_path / "ix", fake_encoder) as index:
        index.add(_articles(_texts(11)))
        generation = index._generation
        result = index.add(_articles(_texts(11)))
        assert (result.unchanged, result.chunks_embedded) == (11, 0)
        assert index._generation == generation


def test_one_progress_bar_counts_every_window(tmp_path, fake_encoder, small_windows, capsys):
    with _index(tmp_path / "ix", fake_encoder) as index:
        index.add(_articles(_texts(10)), progress=True)
    err = capsys.readouterr().err
    assert err.count("Embedding: 0 chunks") == 1 and "Embedding: 10 chunks" in err


_CRASHING_WRITER = """
import os, sys
from semsearch import Index, commit, writer
from tests.conftest import FakeEncoder, make_article
writer.WINDOW_CHUNKS = 4
apply = commit.Write.apply

def apply_then_arm(self, change):  # the fail point fires from the second window on
    apply(self, change)
    os.environ["SEMSEARCH_FAILPOINT"] = sys.argv[2]

commit.Write.apply = apply_then_arm
with Index.open(sys.argv[1], encoder=FakeEncoder()) as index:
    index.add([make_article(f"n{i}", f"New text {i} about ferries.") for i in range(10)])
"""
STAGES = ["after-embed", "before-faiss-write", "mid-faiss-write", "after-window", "before-commit"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_crash_after_a_window_leaves_the_index_as_it_was(tmp_path, fake_encoder, stage):
    folder = tmp_path / "ix"
    with _index(folder, fake_encoder) as index:
        index.add(_articles(_texts(3)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SEMSEARCH_FAILPOINT", None)
    child = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(folder), stage], cwd=ROOT, env=env, timeout=120
    )
    assert child.returncode == -signal.SIGKILL
    assert len(_segment_files(folder)) >= 2  # the first window's segment, left behind
    report = verify(folder)
    assert report.ok, report.problems
    with Index.open(folder, encoder=fake_encoder) as index:
        assert len(index) == 3 and index.get("n0") is None
        index.add([make_article("z", "One more text.")])  # recovers: the leftovers go
        assert _segment_files(folder) == {s.id for s in index._vectors.segments}
        assert len(index._vectors.segments) == 2
    assert verify(folder).ok and not verify(folder).notes


@settings(max_examples=20)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 9), st.sampled_from(["harbour", "orchard", "ferry", ""])),
        max_size=25,
    ),
    window=st.integers(1, 5),
    read=st.integers(1, 4),
)
def test_any_windows_give_what_one_window_gives(tmp_path_factory, rows, window, read):
    # Updates, repeated ids and articles with no text, in windows of any size.
    base = [make_article(f"r{i}", f"Base text {i}.") for i in range(0, 10, 2)]
    items = [
        make_article(f"r{i}", f"{word} {n}" if word else " ", path=f"in:{n}")
        for n, (i, word) in enumerate(rows)
    ]
    outcomes = []
    for window_chunks, read_articles in ((10**6, 10**6), (window, read)):
        folder = tmp_path_factory.mktemp("ix") / "ix"
        with (
            patch.object(writer_module, "WINDOW_CHUNKS", window_chunks),
            patch.object(writer_module, "READ_ARTICLES", read_articles),
            _index(folder, FakeEncoder()) as index,
        ):
            index.add(base)
            result = index.add(items)
            stored = {f"r{i}": getattr(index.get(f"r{i}"), "text", None) for i in range(10)}
            counts = (result.added, result.updated, result.unchanged, result.chunks_added)
            skipped = sorted(map(str, result.skipped))  # each batch's repeats before its chunks
            outcomes.append((stored, counts, result.chunks_removed, skipped, len(index)))
        assert verify(folder).ok
    assert outcomes[1] == outcomes[0]
