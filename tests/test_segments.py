"""Segments: a write costs what it changes, vectors are stored once, merges are exact.

Index logic runs on the fake encoder; the tests that compare search results
(merged against unmerged) use the real model on the sample articles.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch import IncompatibleIndexError, Index, MergePolicy, load_paths
from semsearch.cli import cli
from semsearch.config import MergePolicy as ConfigMergePolicy
from semsearch.manifest import KEYWORD_SUFFIXES
from semsearch.verify import verify
from tests.conftest import SAMPLE_ARTICLES, make_article

FORMAT3 = Path(__file__).parent / "data" / "format3"
NEVER = MergePolicy(in_writes=False)


def _notes(start: int, n: int, word: str = "Note") -> list:
    return [
        make_article(f"n{i}", f"{word} number {i} on harbours.") for i in range(start, start + n)
    ]


def _segment_files(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.glob("segment.*")
    }


def test_a_write_adds_one_segment_and_rewrites_none(fake_index):
    fake_index.merge_policy = NEVER
    fake_index.add(_notes(0, 5))
    before = _segment_files(fake_index.path)
    keywords = [f"segment.1{suffix}" for suffix in KEYWORD_SUFFIXES]  # semsearch.impacts
    assert sorted(before) == sorted(["segment.1.faiss", "segment.1.keys.npy", *keywords])
    result = fake_index.add(_notes(5, 3))
    after = _segment_files(fake_index.path)
    assert len(after) == 2 * len(before) and all(after[name] == before[name] for name in before)
    assert result.chunks_added == 3 and fake_index.info().segments == 2
    fake_index.remove(["n1"])  # a removal writes no vector file at all
    assert _segment_files(fake_index.path) == after
    assert fake_index.info().tombstones == 1 and len(fake_index) == 7


def test_vectors_are_stored_once_in_the_segments(fake_index):
    fake_index.add(_notes(0, 4))
    db = sqlite3.connect(fake_index.path / "store.sqlite")
    try:
        blobs = db.execute("SELECT sum(length(vector)), count(*) FROM chunks").fetchone()
    finally:
        db.close()
    assert blobs == (0, 4)
    ids, vectors = fake_index.chunk_vectors()
    assert vectors.shape == (4, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1)
    assert ids.tolist() == sorted(ids.tolist())


def test_removed_chunks_never_come_back_and_k_results_still_do(fake_index):
    fake_index.merge_policy = NEVER
    fake_index.add(_notes(0, 12))
    fake_index.add(_notes(12, 12))
    gone = [f"n{i}" for i in range(0, 24, 2)]
    fake_index.remove(gone)
    for mode in ("semantic", "hybrid"):
        hits = fake_index.search("Note number on harbours", k=10, mode=mode)
        assert len(hits) == 10 and not {h.article_id for h in hits} & set(gone), mode
    # With a filter, too (the filter's chunks are all live).
    hits = fake_index.search("Note number", k=5, filter={"id": {"in": ["n1", "n2", "n3"]}})
    assert sorted(h.article_id for h in hits) == ["n1", "n3"]


def test_an_update_is_a_tombstone_and_a_new_segment(fake_index):
    fake_index.merge_policy = NEVER
    fake_index.add(_notes(0, 3))
    fake_index.add([make_article("n1", "Rewritten: orchards and apples.")])
    info = fake_index.info()
    assert (info.segments, info.tombstones, info.chunks) == (2, 1, 3)
    hit = fake_index.search("orchards and apples", k=1)[0]
    assert hit.article_id == "n1" and "Rewritten" in hit.text


def test_tiered_merging_keeps_the_segment_count_bounded(fake_index):
    fake_index.merge_policy = MergePolicy(segments_per_tier=3)
    counts = []
    for night in range(12):
        fake_index.add(_notes(night * 2, 2))
        counts.append(fake_index.info().segments)
    assert max(counts) < 3 and len(fake_index) == 24
    assert verify(fake_index.path).ok


def test_a_segment_mostly_removed_is_rewritten_without_its_dead(fake_index):
    fake_index.merge_policy = MergePolicy(max_tombstone_share=0.5)
    fake_index.add(_notes(0, 10))
    fake_index.remove([f"n{i}" for i in range(5)])  # half: not past the share
    assert fake_index.info().tombstones == 5
    fake_index.remove(["n5"])
    info = fake_index.info()
    assert (info.segments, info.tombstones, info.chunks) == (1, 0, 4)


def test_optimize_merges_everything_and_drops_the_dead(fake_index):
    fake_index.merge_policy = NEVER
    for start in range(0, 20, 5):
        fake_index.add(_notes(start, 5))
    fake_index.remove(["n0", "n7"])
    size_before = sum(p.stat().st_size for p in fake_index.path.glob("segment.*"))
    result = fake_index.optimize()
    assert (result.segments_before, result.segments_after) == (4, 1)
    assert result.tombstones_dropped == 2 and fake_index.info().tombstones == 0
    assert sum(p.stat().st_size for p in fake_index.path.glob("segment.*")) < size_before
    assert len(fake_index) == 18 and verify(fake_index.path).ok
    again = fake_index.optimize()  # nothing left to merge: no new generation
    assert (again.segments_before, again.segments_after) == (1, 1)


def test_optimize_from_the_command_line(fake_index):
    fake_index.merge_policy = NEVER
    fake_index.add(_notes(0, 3))
    fake_index.add(_notes(3, 3))
    fake_index.close()
    runner = CliRunner()
    result = runner.invoke(cli, ["optimize", "--index", str(fake_index.path), "--json"])
    assert result.exit_code == 0, result.output
    assert '"segments_after": 1' in result.output
    info = runner.invoke(cli, ["info", "--index", str(fake_index.path)])
    assert "segments  1, 0 removed chunk(s)" in info.output


def test_many_segments_search_exactly_as_one(tmp_path, real_encoder):
    """The per-segment top k, merged, is the exact top k (flat segments)."""
    articles = list(load_paths([SAMPLE_ARTICLES]))
    with Index.create(tmp_path / "ix", encoder=real_encoder) as index:
        index.merge_policy = NEVER
        for article in articles:
            index.add([article])
        assert index.info().segments == len(articles) > 5
        queries = ["NATO Indo-Pacific", "climate and energy", "elections", "a new vaccine"]
        kw = {"k": 5, "group": False}
        unmerged = {
            (q, m): [(h.chunk_id, round(h.score, 5)) for h in index.search(q, mode=m, **kw)]
            for q in queries
            for m in ("semantic", "hybrid")
        }
        index.optimize()
        assert index.info().segments == 1
        for (q, m), expected in unmerged.items():
            got = [(h.chunk_id, round(h.score, 5)) for h in index.search(q, mode=m, **kw)]
            assert got == expected, (q, m)


def test_a_long_lived_reader_opens_only_the_new_segments(tmp_path, fake_encoder):
    folder = tmp_path / "ix"
    with Index.create(folder, encoder=fake_encoder) as index:
        index.add(_notes(0, 5))
    with Index.open(folder, encoder=fake_encoder) as reader:
        first = reader._vectors.segments[0]
        with Index.open(folder, encoder=fake_encoder) as writer:
            writer.add(_notes(5, 5, word="Memo"))
        assert reader.refresh()
        assert reader._vectors.segments[0] is first and len(reader._vectors.segments) == 2
        assert reader.search("Memo number 7 on harbours.", k=1)[0].article_id == "n7"


def test_merge_policy_is_the_documented_default():
    assert MergePolicy is ConfigMergePolicy
    policy = MergePolicy()
    assert (policy.segments_per_tier, policy.in_writes) == (10, True)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_format3_index_reads_and_is_converted_by_its_first_write(tmp_path, fake_encoder, kind):
    folder = tmp_path / kind
    shutil.copytree(FORMAT3 / kind, folder)
    with Index.open(folder, encoder=fake_encoder) as old:
        assert old.info().format_version == 3 and len(old) == 7
        hit = old.search("orchards and apples", k=1)[0]
        assert hit.article_id == "a3"
        filtered = old.search("harbours", k=2, filter={"id": {"in": ["a1", "a2"]}})
        assert sorted(h.article_id for h in filtered) == ["a1", "a2"]
        before = {q: [h.article_id for h in old.search(q, k=7)] for q in ("harbours", "ferries")}
    assert verify(folder).ok
    with Index.open(folder, encoder=fake_encoder) as index:
        index.add([make_article("b1", "A new article after the upgrade.")])
        # The text hashes were migrated: a text embedded before reuses its vector.
        copy = index.add([make_article("b2", index.get("a1").text)])
        assert copy.chunks_embedded == 0 and copy.chunks_added == 1
        index.remove(["b2"])
        info = index.info()
        assert info.format_version == 4 and info.segments == 2 and len(index) == 8
        for q, ids in before.items():
            assert [h.article_id for h in index.search(q, k=8) if h.article_id != "b1"] == ids
    assert not list(folder.glob("vectors.*.faiss"))
    db = sqlite3.connect(folder / "store.sqlite")
    try:
        assert db.execute("SELECT sum(length(vector)) FROM chunks").fetchone() == (0,)
    finally:
        db.close()
    report = verify(folder)
    assert report.ok and not report.notes, report


def test_an_older_semsearch_is_told_the_index_is_newer(fake_index, monkeypatch):
    """Format 3 readers (the previous release) refuse format 4 with a clear message."""
    from semsearch import manifest

    fake_index.add(_notes(0, 2))
    fake_index.close()
    monkeypatch.setattr(manifest, "FORMAT_VERSION", 3)
    with pytest.raises(IncompatibleIndexError, match="has format 4, newer than this semsearch"):
        manifest.read_manifest(fake_index.path)


def _rows(folder: Path, table: str) -> int:
    db = sqlite3.connect(folder / "store.sqlite")
    try:
        sql = {
            "articles": "SELECT count(*) FROM articles",
            "removed_articles": "SELECT count(*) FROM removed_articles",
        }[table]
        return int(db.execute(sql).fetchone()[0])
    finally:
        db.close()


def test_a_removed_article_is_gone_from_every_read_until_a_merge_deletes_its_rows(fake_index):
    fake_index.merge_policy = NEVER
    fake_index.add(_notes(0, 6))
    fake_index.add([make_article("n9", "Harbours at dawn.", tags=("port",), source="Wire")])
    fake_index.remove(["n2", "n9"])
    assert _rows(fake_index.path, "articles") == 7  # the rows wait for a merge
    assert fake_index.get("n2") is None and len(fake_index) == 5
    assert fake_index.info().chunks == 5 and fake_index.info().tombstones == 2
    for mode in ("keyword", "semantic", "hybrid"):
        found = {h.article_id for h in fake_index.search("number 2 harbours", k=10, mode=mode)}
        assert found == {"n0", "n1", "n3", "n4", "n5"}, mode
        tagged = fake_index.search("harbours", k=5, mode=mode, filter={"tags": "port"})
        assert tagged == [], mode
    assert fake_index.remove(["n2"]) == ([], ["n2"])  # already removed
    assert verify(fake_index.path).ok
    fake_index.add([make_article("n2", "Number 2 is back.")])  # the old rows go first
    assert fake_index.get("n2").text == "Number 2 is back." and len(fake_index) == 6
    fake_index.optimize()
    assert _rows(fake_index.path, "articles") == 6
    assert _rows(fake_index.path, "removed_articles") == 0
    assert verify(fake_index.path).ok


def test_pruned_articles_are_removed_the_same_way(tmp_path, fake_encoder):
    folder = tmp_path / "articles"
    folder.mkdir()
    for name in ("keep", "drop"):
        (folder / f"{name}.txt").write_text(f"{name} body text.")
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.add_paths([folder])
        (folder / "drop.txt").unlink()
        assert index.add_paths([folder], prune=True).removed == 1
        assert index.get("drop.txt") is None and len(index) == 1
        assert index.add_paths([folder], prune=True).removed == 0  # not pruned twice


def test_embedding_reuse_finds_vectors_in_any_segment_and_after_merges(fake_index):
    fake_index.merge_policy = NEVER
    text = "The same paragraph, word for word."
    assert fake_index.add([make_article("a", text)]).chunks_embedded == 1
    assert fake_index.add([make_article("b", text)]).chunks_embedded == 0
    fake_index.remove(["a"])  # a tombstoned chunk's vector is still exact
    assert fake_index.add([make_article("c", text)]).chunks_embedded == 0
    fake_index.optimize()
    assert fake_index.add([make_article("d", text)]).chunks_embedded == 0
    assert fake_index.add([make_article("e", "Something new.")]).chunks_embedded == 1
    b, d = fake_index.chunk_vectors()[1][[0, -2]]  # live: b, c, d, e
    assert np.array_equal(b, d) and verify(fake_index.path).ok


def test_verify_finds_a_changed_key_table(fake_index):
    from semsearch.segments import KEY_DTYPE

    fake_index.add(_notes(0, 3))
    keys_file = next(fake_index.path.glob("segment.*.keys.npy"))
    keys = np.load(keys_file)
    keys["lo"] = keys["lo"][::-1].copy()  # same size, wrong hashes
    assert keys.dtype == KEY_DTYPE
    with open(keys_file, "r+b") as f:
        np.save(f, keys)
    problems = verify(fake_index.path).problems
    assert problems and "checksum" in problems[0]  # the file's CRC catches it first


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"segments_per_tier": 1}, "segments_per_tier=1"),
        ({"floor_chunks": 0}, "floor_chunks=0"),
        ({"max_merge_chunks": -5}, "max_merge_chunks=-5"),
        ({"max_tombstone_share": 0}, "max_tombstone_share=0"),
        ({"max_tombstone_share": 1.5}, "max_tombstone_share=1.5"),
    ],
)
def test_a_merge_policy_out_of_range_is_refused_naming_the_setting(setting, message):
    from semsearch import BadInputError

    with pytest.raises(BadInputError, match=message):
        MergePolicy(**setting)


def test_merge_policy_takes_only_a_merge_policy(fake_index):
    with pytest.raises(TypeError, match=r"must be a semsearch\.MergePolicy, not dict"):
        fake_index.merge_policy = {"segments_per_tier": 3}
    assert fake_index.merge_policy == MergePolicy()


def test_optimize_with_nothing_to_merge_says_so(fake_index):
    fake_index.add(_notes(0, 2))
    fake_index.close()
    result = CliRunner().invoke(cli, ["optimize", "--index", str(fake_index.path)])
    assert result.exit_code == 0 and result.output.startswith("Nothing to merge: 1 segment(s)")


def test_info_lists_each_segment_with_what_the_merge_policy_decides_on(fake_index):
    fake_index.merge_policy = NEVER
    fake_index.add(_notes(0, 4))
    fake_index.add(_notes(4, 2))
    fake_index.remove(["n0"])
    listed = fake_index.info().segment_list
    assert [(s["vectors"], s["tombstones"]) for s in listed] == [(4, 1), (2, 0)]
    assert {s["factory"] for s in listed} == {"Flat"} and listed[0]["id"] < listed[1]["id"]
    fake_index.close()
    shown = CliRunner().invoke(cli, ["info", "--index", str(fake_index.path)]).output
    assert f"#{listed[0]['id']}: Flat, 4 vectors, 1 removed" in shown
    as_json = CliRunner().invoke(cli, ["info", "--index", str(fake_index.path), "--json"])
    assert '"segment_list": [' in as_json.output


def test_each_commit_records_its_live_chunks_and_a_reader_checks_its_segments_against_them(
    tmp_path, fake_encoder
):
    folder = tmp_path / "ix"
    with Index.create(folder, encoder=fake_encoder) as index:
        index.add([make_article(f"a{i}", f"Text {i} about harbours.") for i in range(6)])
        index.remove(["a1", "a2"])
    db = sqlite3.connect(folder / "store.sqlite")
    assert db.execute("SELECT value FROM meta WHERE key = 'live_chunks'").fetchone() == ("4",)
    # An index committed before the record existed is counted, as before.
    with db:
        db.execute("DELETE FROM meta WHERE key = 'live_chunks'")
    with Index.open(folder, encoder=fake_encoder) as index:
        assert len(index) == 4
    # A record its segments do not add up to is an inconsistent index.
    with db:
        db.execute("INSERT INTO meta (key, value) VALUES ('live_chunks', '5')")
    db.close()
    with pytest.raises(IncompatibleIndexError, match="hold 4 live vectors for 5 chunks"):
        Index.open(folder, encoder=fake_encoder)
