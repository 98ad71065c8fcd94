"""Keyword search from the segments' postings: the same BM25 and top k as FTS5 scoring every match.

The reference is FTS5 itself on a fresh index holding exactly the live
articles (the postings' statistics leave tombstoned chunks out, as a fresh
index would hold them).
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from semsearch import Index, MergePolicy, impacts, tokens
from semsearch.keywords import match_expression
from semsearch.manifest import KEYWORD_SUFFIXES, STORE_FILE
from semsearch.store import Store
from semsearch.verify import verify
from tests.conftest import ROOT, make_article

_VOCABULARY = [f"w{i}" for i in range(60)] + ["running", "runs", "walruses", "ice", "Đối", "tác"]
QUERIES = ["w1 w2", "w3 running", "run walrus ice", "w0 w5 w7 w11 w50", "doi tac w9", "w1 w1 w59"]


def _texts(seed: int, n: int) -> dict[str, str]:
    rng = random.Random(seed)
    weights = [1 / (r + 1) for r in range(len(_VOCABULARY))]  # Zipfian
    return {
        f"a{seed}-{i}": " ".join(rng.choices(_VOCABULARY, weights, k=rng.randint(3, 40)))
        for i in range(n)
    }


def _add(index: Index, texts: dict[str, str]) -> None:
    index.add(
        [make_article(i, t, title=f"On {t.split()[0]}", source=i[-1]) for i, t in texts.items()]
    )


def _scores(index: Index, query: str, **options) -> dict[str, float]:
    hits = index.search(query, k=1000, mode="keyword", **options)
    return {h.article_id: h.keyword_score for h in hits}


def _fts5_scores(folder: Path, query: str) -> dict[str, float]:
    """FTS5's own BM25 of every matching article (one chunk each): scoring every match."""
    db = sqlite3.connect(folder / STORE_FILE)
    rows = db.execute(
        "SELECT a.id, -f.rank FROM chunks_fts f JOIN chunks c ON c.id = f.rowid"
        " JOIN articles a ON a.pk = c.article_pk WHERE chunks_fts MATCH ?",
        (match_expression(query),),
    ).fetchall()
    db.close()
    return dict(rows)


def _assert_same(found: dict[str, float], expected: dict[str, float]) -> None:
    assert found.keys() == expected.keys()
    for article, score in expected.items():
        assert found[article] == pytest.approx(score, rel=1e-9, abs=1e-12), article


def _fresh(tmp_path: Path, encoder, texts: dict[str, str]) -> Path:
    folder = tmp_path / "fresh"
    with Index.create(folder, encoder=encoder) as index:
        _add(index, texts)
    return folder


def test_scores_equal_fts5_after_add_replace_remove_and_merge(tmp_path, fake_encoder):
    live = {}
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.merge_policy = MergePolicy(in_writes=False)
        for seed in range(3):
            texts = _texts(seed, 25)
            _add(index, texts)
            live.update(texts)
        replaced = {i: t + " w1 ice" for i, t in list(live.items())[5:15]}
        _add(index, replaced)
        live.update(replaced)
        gone = list(live)[20:30]
        index.remove(gone)
        live = {i: t for i, t in live.items() if i not in gone}
        assert index.info().tombstones > 0 and index.info().segments > 1
        assert impacts.available(index.path, index._vectors)
        fresh = _fresh(tmp_path, fake_encoder, live)
        for query in QUERIES:
            _assert_same(_scores(index, query), _fts5_scores(fresh, query))
            expected = _fts5_scores(fresh, query)  # hybrid's keyword half too
            for hit in index.search(query, k=20):
                assert hit.keyword_score == pytest.approx(expected.get(hit.article_id, 0.0))
        index.optimize()
        for query in QUERIES:
            _assert_same(_scores(index, query), _fts5_scores(fresh, query))


def test_the_top_k_is_the_top_of_every_match(tmp_path, fake_encoder):
    """MaxScore's top k (pruning, several segments, tombstones) is FTS5's, for many
    queries and k: common and rare words, words repeated, words no chunk holds."""
    live = {}
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.merge_policy = MergePolicy(in_writes=False)
        for seed in (7, 8, 9):
            texts = _texts(seed, 120)
            _add(index, texts)
            live.update(texts)
        gone = list(live)[::9]
        index.remove(gone)
        live = {i: t for i, t in live.items() if i not in gone}
        fresh = _fresh(tmp_path, fake_encoder, live)
        rng = random.Random(1)
        for _ in range(150):
            query = " ".join(rng.choices([*_VOCABULARY, "absent"], k=rng.randint(1, 8)))
            k = rng.choice([1, 3, 10, 25])
            best = sorted(_fts5_scores(fresh, query).values(), reverse=True)[:k]
            for group in (True, False):
                top = index.search(query, k=k, mode="keyword", group=group)
                assert [h.keyword_score for h in top] == pytest.approx(best), (query, k)


def test_the_top_k_articles_are_those_of_their_best_chunks(tmp_path, fake_encoder):
    """Grouped by article (several chunks each), MaxScore's top k articles are FTS5's."""
    rng = random.Random(3)
    weights = [1 / (r + 1) for r in range(len(_VOCABULARY))]
    texts = {
        f"m{i}": " ".join(rng.choices(_VOCABULARY, weights, k=rng.randint(20, 500)))
        for i in range(80)
    }
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        _add(index, texts)
        assert index.info().chunks > 2 * len(texts)
        db = sqlite3.connect(index.path / STORE_FILE)
        for _ in range(40):
            query = " ".join(rng.choices(_VOCABULARY, k=rng.randint(1, 6)))
            rows = db.execute(
                "SELECT a.id, max(-f.rank) FROM chunks_fts f JOIN chunks c ON c.id = f.rowid"
                " JOIN articles a ON a.pk = c.article_pk WHERE chunks_fts MATCH ? GROUP BY a.id",
                (match_expression(query),),
            ).fetchall()
            k = rng.choice([1, 5, 10])
            best = sorted((score for _, score in rows), reverse=True)[:k]
            top = index.search(query, k=k, mode="keyword")
            assert [h.keyword_score for h in top] == pytest.approx(best), (query, k)
        db.close()


def test_the_postings_of_common_words_are_not_scored(tmp_path, fake_encoder):
    """A rare word's few chunks set the bar; a common word's postings are only looked up."""
    from semsearch import maxscore

    texts = {f"c{i}": "common " * (1 + i % 3) + f"filler{i}" for i in range(300)}
    texts.update({f"r{i}": f"rare common filler{i}" for i in range(12)})
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        _add(index, texts)
        terms = tokens.query_tokens(index._store, match_expression("rare common"))
        scorer = maxscore.scorer(index.path, index._vectors, terms)
        assert scorer is not None
        scores, _, _ = scorer.top(5)
        assert scorer.scored == 12 and scorer.postings == 324
        expected = sorted(_fts5_scores(index.path, "rare common").values(), reverse=True)
        assert scores.tolist() == pytest.approx(expected[:5])


def test_filters_apply_inside_the_search(tmp_path, fake_encoder):
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        texts = _texts(3, 300)
        _add(index, texts)  # source: the id's last digit
        every = _fts5_scores(index.path, "w1 w3")
        wanted = {a: s for a, s in every.items() if a.endswith("7")}
        best = sorted(wanted.items(), key=lambda item: (-item[1], item[0]))[:5]
        for mode in ("keyword", "hybrid"):
            hits = index.search("w1 w3", k=5, mode=mode, filter={"source": "7"})
            assert {h.article_id for h in hits} <= set(wanted)
        keyword = index.search("w1 w3", k=5, mode="keyword", filter={"source": "7"})
        assert [h.article_id for h in keyword] == [a for a, _ in best]


def test_keyword_hits_are_highlighted(fake_index):
    fake_index.add(
        [make_article("a", "Walruses haul out on the ice."), make_article("b", "Gulls.")]
    )
    (hit,) = fake_index.search("walruses", k=5, mode="keyword")
    assert [hit.text[s:e] for s, e in hit.highlights] == ["Walruses"]


def test_a_cjk_query_finds_words_inside_a_run(fake_index):
    fake_index.add(
        [
            make_article("zh", "海洋塑料污染日益严重。"),
            make_article("en", "Plastic pollution in the ocean."),
        ]
    )
    assert [h.article_id for h in fake_index.search("塑料", mode="keyword")] == ["zh"]
    assert [h.article_id for h in fake_index.search("plastic", mode="keyword")] == ["en"]


def test_each_segment_has_its_postings_files_and_verify_checks_them(fake_index):
    _add(fake_index, _texts(1, 10))
    segment = fake_index._vectors.segments[0]
    assert all(f"segment.{segment.id}{s}" in segment.row.files for s in KEYWORD_SUFFIXES)
    path = fake_index.path / f"segment.{segment.id}{KEYWORD_SUFFIXES[1]}"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not verify(fake_index.path).ok


_WRITER = """
import sys
from semsearch import Index
from tests.conftest import FakeEncoder, make_article
with Index.open(sys.argv[1], encoder=FakeEncoder()) as index:
    if sys.argv[2] == "add":
        index.add([make_article(f"n{i}", f"New w1 text {i}") for i in range(5)])
    else:
        index.optimize()
"""


@pytest.mark.parametrize("action", ["add", "optimize"])
@pytest.mark.parametrize("stage", ["before-keywords-write", "mid-keywords-write"])
def test_a_writer_killed_while_writing_postings_loses_nothing(
    tmp_path, fake_encoder, action, stage
):
    folder = tmp_path / "ix"
    with Index.create(folder, encoder=fake_encoder) as index:
        index.merge_policy = MergePolicy(in_writes=False)
        _add(index, _texts(1, 10))
        _add(index, _texts(2, 10))
        before = _scores(index, "w1 w2")
    stage = stage if action == "add" else "merge-" + stage
    env = {"SEMSEARCH_FAILPOINT": stage, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", _WRITER, str(folder), action], cwd=ROOT, env=env, timeout=120
    )
    assert child.returncode == -signal.SIGKILL
    assert verify(folder).ok
    with Index.open(folder, encoder=fake_encoder) as index:
        assert _scores(index, "w1 w2") == pytest.approx(before)
        index.add([make_article("z", "One more w1 text.")])  # recovers, cleans up
        live = {s.id for s in index._vectors.segments}
    assert {int(p.name.split(".")[1]) for p in folder.glob("segment.*")} == live
    assert verify(folder).ok


_PIECES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(st.lists(_PIECES, max_size=8))
def test_the_tokenizer_gives_fts5s_own_tokens(pieces):
    text = " ".join(pieces)
    db = sqlite3.connect(":memory:")
    spec = "'porter unicode61 remove_diacritics 2 categories ''L* N* Co M*'''"
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize={spec})")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, instance)")
    db.execute("INSERT INTO t (rowid, x) VALUES (1, ?)", (text,))
    expected = [r[0] for r in db.execute("SELECT term FROM v ORDER BY offset")]
    found = tokens.Tokenizer(spec).tokens(text.split())
    assert [t for piece in found for t in piece] == expected


def test_a_plain_query_is_tokens_and_anything_else_goes_to_fts5(fake_index):
    store: Store = fake_index._store
    assert tokens.query_tokens(store, match_expression("Running walruses")) == ["run", "walrus"]
    assert tokens.query_tokens(store, match_expression("塑料")) is None
    assert tokens.query_tokens(store, '"a" AND "b"') is None


def test_postings_gone_under_an_open_reader_fall_back_to_fts5(tmp_path, fake_encoder):
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        _add(index, _texts(4, 30))
        expected = _scores(index, "w1 w2")
    with Index.open(tmp_path / "ix", encoder=fake_encoder) as reader:
        for path in (tmp_path / "ix").glob("segment.*.kw-*"):
            path.unlink()  # as a merge deletes a segment's files after switching
        assert _scores(reader, "w1 w2") == pytest.approx(expected)


def test_a_merge_makes_the_postings_tokenizing_the_text_again_would(tmp_path, fake_encoder):
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.merge_policy = MergePolicy(in_writes=False)
        for seed in range(3):
            _add(index, _texts(seed, 20))
        _add(index, {"a0-3": "w1 w2 walruses"})  # a replacement, and removals
        index.remove(["a1-0", "a2-5"])
        vectors = index._vectors
        parts = [
            (impacts._open(index.path, s), vectors.tombstones.get(s.id)) for s in vectors.segments
        ]
        live = np.sort(np.concatenate([s.ids for s in vectors.segments]))
        live = live[~np.isin(live, vectors.dead)]
        merged = impacts.merge_postings(parts, live)
        again = impacts._postings(index._store, live)
    for made, expected in zip(merged, again, strict=True):
        assert made.dtype == expected.dtype and np.array_equal(made, expected)
    assert np.array_equal(impacts.term_bounds(*merged), impacts.term_bounds(*again))


def test_each_terms_bound_is_its_largest_tf_part(tmp_path, fake_encoder, monkeypatch):
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.merge_policy = MergePolicy(in_writes=False)
        for seed in range(2):
            _add(index, _texts(seed, 40))
        index.remove(["a0-1"])
        index.optimize()  # a merged segment's bounds too
        for segment in index._vectors.segments:
            found = impacts._open(index.path, segment)
            assert found is not None and found.bounds is not None
            length = found.docs["length"].astype(np.float64)
            avgdl = length.mean()
            for row, (start, count) in enumerate(found.terms[:, [impacts.START, impacts.COUNT]]):
                block = found.postings[int(start) : int(start + count)]
                tf = block["tf"].astype(np.float64)
                part = tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length[block["pos"]] / avgdl))
                assert part.max() <= found.bounds[row] <= np.nextafter(np.float32(part.max()), 9)
            monkeypatch.setattr(impacts, "_BOUND_BATCH", 7)  # terms split across batches
            again = impacts.term_bounds(found.terms, found.postings, found.docs)
            assert np.array_equal(again, found.bounds)


def test_segments_written_before_bounds_give_the_same_top_k(tmp_path, fake_encoder, monkeypatch):
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        _add(index, _texts(5, 150))
    # As segments written before bounds were.
    monkeypatch.setattr(impacts, "KEYWORD_BOUNDS", ".kw-absent.npy")
    with Index.open(tmp_path / "ix", encoder=fake_encoder) as index:
        assert impacts._open(index.path, index._vectors.segments[0]).bounds is None
        for query in QUERIES:
            best = sorted(_fts5_scores(index.path, query).values(), reverse=True)[:10]
            top = index.search(query, k=10, mode="keyword")
            assert [h.keyword_score for h in top] == pytest.approx(best), query


def test_the_keyword_benchmark_measures_every_mode_beside_semantic(tmp_path):
    from benchmarks import keyword

    out = tmp_path / "results"
    tiny = str(ROOT / "tests" / "data" / "tiny-beir")
    argv = ["--size", "300", "--batch", "100", "--queries", "5", "--dataset", tiny]
    keyword.main([*argv, "--out", str(out), "--work", str(tmp_path)])
    result = json.loads((out / "keyword.json").read_text())
    assert result["build"]["chunks"] == 300 and result["machine"]["cpu"]
    latency = result["query"]["latency"]
    assert set(latency) == {"semantic", "keyword", "hybrid", "keyword, FTS5 every match"}
    assert all(row["n"] == 5 for row in latency.values())


def test_the_postings_know_each_chunks_article_as_the_store_does(fake_index):
    _add(fake_index, _texts(5, 20))
    _add(fake_index, {"a5-0": "w1 w2 w3 replaced"})
    ids = np.concatenate([s.ids for s in fake_index._vectors.segments])
    ids = ids[~np.isin(ids, fake_index._vectors.dead)]  # a replaced article's rows are gone
    found = impacts.articles_of(fake_index.path, fake_index._vectors, ids)
    assert found == fake_index._store.chunk_articles(ids.tolist())
