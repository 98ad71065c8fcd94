"""Compressed vector indexes: chosen by size and memory budget, tuned to a recall target.

Index logic on synthetic clustered vectors (a precomputed encoder: embedding
is not what is tested here); recall is always measured against exact search
over the same vectors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.scaling import PrecomputedEncoder
from semsearch import BadInputError, Index, MergePolicy
from semsearch import segments as segments_module
from semsearch import vectors as vectors_module
from semsearch.cli import cli
from semsearch.config import parse_bytes
from semsearch.records import Article
from semsearch.tuning import exact_top_k, recall_at, tune
from semsearch.vectors import VectorIndex, compressed_factory, resolve_factory
from semsearch.verify import verify

DIM = 384
TOLERANCE = 0.03
"""Recall measured on fresh queries may fall this far below the tuned target:
tuning measures it on a sample of 500 (or fewer) held-out vectors."""


def clustered(n: int, seed: int = 0, clusters: int = 200, centres: int = 1234) -> np.ndarray:
    """Unit vectors around random centres: neighbourhoods like embeddings', not ties.

    The centres are the same for every seed: vectors of two seeds are queries
    and documents of one collection.
    """
    points = np.random.default_rng(centres).standard_normal((clusters, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = points[rng.integers(0, clusters, n)] + 0.7 * rng.standard_normal((n, DIM)).astype(
        np.float32
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def notes(start: int, stop: int) -> Iterator[Article]:
    for row in range(start, stop):
        yield Article(id=f"v{row}", text=f"v{row}")


def recall_of(index: Index, base: np.ndarray, queries: np.ndarray, **search: object) -> float:
    """Recall@10 of the index's semantic search against exact search over ``base``."""
    truth = exact_top_k(queries, base, 10)
    found = []
    for q in queries:
        hits = index.search(q, k=10, mode="semantic", **search)  # type: ignore[arg-type]
        found.append([int(h.article_id[1:]) for h in hits])
    width = max(len(f) for f in found)
    padded = np.array([f + [-1] * (width - len(f)) for f in found])
    return recall_at(padded, truth)


def compressed(folder: Path, base: np.ndarray, n: int) -> Index:
    """A new index with a 1 MB budget (compressed past the scaled-down thresholds),
    merging only on ``optimize``, holding ``v0`` to ``v{n-1}``."""
    with Index.creating(
        folder, encoder=PrecomputedEncoder(DIM, base), memory_budget="1MB", onnx=False
    ) as index:
        index.merge_policy = MergePolicy(in_writes=False)
        index.add(notes(0, n))
    return index


@pytest.fixture
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto``'s size thresholds scaled down 100x, so a few thousand vectors exercise them."""
    monkeypatch.setattr(vectors_module, "HNSW_THRESHOLD", 1_000)
    monkeypatch.setattr(segments_module, "SMALL_SEGMENT", 500)


def test_parse_bytes_reads_units_and_names_a_bad_value():
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("1.5g") == 1_500_000_000
    assert parse_bytes(4096) == 4096
    for bad in ("lots", "-1GB", "0", "2 parsecs"):
        with pytest.raises(BadInputError, match="memory budget"):
            parse_bytes(bad)


def test_auto_is_exact_then_hnsw_while_it_fits_then_compressed():
    assert resolve_factory("auto", 50_000, 10**9) == "Flat"
    assert resolve_factory("auto", 1_000_000, 4 * 10**9) == "HNSW32"  # 1.8 GB fits
    assert resolve_factory("auto", 1_000_000, 10**9).startswith("IVF1024_HNSW32,PQ48x4fs")
    assert resolve_factory("auto", 10_000_000, 10**9) == "IVF4096_HNSW32,PQ48x4fs"
    assert resolve_factory("auto", 1_000_000) == "HNSW32"  # no budget: no limit
    assert resolve_factory("IVF64,Flat", 10, 1) == "IVF64,Flat"  # the user's own type
    assert compressed_factory(10**9, 768) == "IVF32768_HNSW32,PQ96x4fs"
    assert compressed_factory(1, 100).startswith("IVF16_")


def test_exact_top_k_matches_brute_force_and_leaves_out_the_query_itself():
    base = clustered(3_000, seed=1)
    queries = base[:20]
    found = exact_top_k(queries, base, 10, skip=np.arange(20))
    scores = queries @ base.T
    scores[np.arange(20), np.arange(20)] = -np.inf
    assert np.array_equal(found, np.argsort(-scores, axis=1, kind="stable")[:, :10])
    assert recall_at(found, found) == 1.0
    assert recall_at(found[:, ::-1], found) == 1.0  # order within the top 10 does not count
    assert recall_at(np.full_like(found, -1), found) == 0.0


def test_exact_top_k_and_rerank_give_the_same_answer_in_small_batches(monkeypatch):
    # The ground truth and the re-ranking work in bounded batches (the build's peak
    # memory); many tiny ones must give exactly what one batch gives.
    from semsearch import tuning

    base = clustered(3_000, seed=4)
    queries = base[:40]
    whole = exact_top_k(queries, base, 10, skip=np.arange(40))
    ids = np.arange(len(base), dtype=np.int64) * 3
    candidates = ids[np.argsort(-(queries @ base.T), axis=1)[:, :50]]
    candidates[:, -5:] = -1
    one_batch = tuning.rerank(queries, candidates, ids, base, 10)
    monkeypatch.setattr(tuning, "BLOCK", 7)  # 429 blocks, some smaller than k
    monkeypatch.setattr(tuning, "RERANK_FLOATS", 50 * DIM * 3)  # 3 queries a batch
    assert np.array_equal(exact_top_k(queries, base, 10, skip=np.arange(40)), whole)
    batched = tuning.rerank(queries, candidates, ids, base, 10)
    assert np.array_equal(batched[1], one_batch[1])
    assert np.allclose(batched[0], one_batch[0])


def two_segments(n_queries: int, width: int, seed: int) -> tuple:
    """Two stand-in segments holding alternate chunks of 400 (ids 0, 5, 10...), each
    with its own exact vectors; queries; random candidates of both, and their owners."""
    from types import SimpleNamespace

    base = clustered(400, seed=seed)
    ids = np.arange(400, dtype=np.int64) * 5
    parts = [SimpleNamespace(ids=ids[i::2], _exact=base[i::2]) for i in (0, 1)]
    queries = clustered(n_queries, seed=seed + 1)
    rng = np.random.default_rng(seed)
    candidates = np.stack([rng.choice(ids, width, replace=False) for _ in range(n_queries)])
    owner = ((candidates // 5) % 2).astype(np.int32)
    return base, parts, queries, candidates, owner


def test_shortlists_of_several_segments_are_re_ranked_once_with_each_ones_vectors():
    from semsearch.segments import exact_scores
    from semsearch.tuning import shortlist_size, top_k

    base, parts, queries, candidates, owner = two_segments(6, 30, seed=8)
    candidates[:, -3:] = -1  # fewer candidates than the width
    exact_all = exact_scores(queries, candidates, owner, parts)  # type: ignore[arg-type]
    scores, found = top_k(exact_all, candidates, 10)
    for q in range(6):
        valid = candidates[q][candidates[q] >= 0]
        exact = base[valid // 5] @ queries[q]
        expected = valid[np.lexsort((valid, -exact))][:10]
        assert np.array_equal(found[q], expected)
        assert np.allclose(scores[q], np.sort(exact)[::-1][:10], atol=1e-6)
    # Tuned for the top 10; more results asked for add one candidate each.
    assert shortlist_size(10, 16) == 160 and shortlist_size(40, 16) == 190
    assert shortlist_size(3, 0) == 3


def test_adaptive_re_ranking_reads_only_what_can_enter_the_top_k(monkeypatch):
    from semsearch.tuning import top_k

    base, parts, queries, candidates, owner = two_segments(4, 60, seed=10)
    exact = np.stack([base[c // 5] @ queries[q] for q, c in enumerate(candidates)])
    read: list[int] = []
    original = segments_module.exact_scores

    def counting(*args):  # type: ignore[no-untyped-def]
        read.append(int((args[1] >= 0).sum()))
        return original(*args)

    monkeypatch.setattr(segments_module, "exact_scores", counting)
    every = top_k(original(queries, candidates, owner, parts), candidates, 5)  # type: ignore[arg-type]
    # Exact approximate scores: no error, so nothing past the first 10 can matter.
    read.clear()
    found = segments_module.rerank_adaptive(
        queries,
        exact.astype(np.float32),
        candidates,
        owner,
        parts,
        5,
        first=10,  # type: ignore[arg-type]
    )
    assert read == [40] and np.array_equal(found[1], every[1])
    # Noisy ones (errors bounded, as a quantiser's are): the rest are read as far as
    # the largest error among the first 10 allows, and the top 5 is the exact one.
    noisy = (exact + np.random.default_rng(0).uniform(-0.03, 0.03, exact.shape)).astype(np.float32)
    read.clear()
    found = segments_module.rerank_adaptive(
        queries,
        noisy,
        candidates,
        owner,
        parts,
        5,
        first=10,  # type: ignore[arg-type]
    )
    assert read[0] == 40 and 0 < sum(read[1:]) < 200
    assert np.array_equal(found[1], every[1]) and np.allclose(found[0], every[0])


def test_tuning_reaches_the_target_on_fresh_queries():
    base = clustered(20_000, seed=2)
    ids = np.arange(len(base), dtype=np.int64) * 7
    index = VectorIndex.create("IVF128_HNSW32,PQ48x4fs", DIM)
    index.add(base, ids)
    tuning = tune(index, ids, base, target=0.95)
    assert tuning.reached and tuning.held_out and tuning.queries == 500
    # Measured again on queries tuning never saw, through the same search path.
    fresh = clustered(200, seed=3)
    truth = ids[exact_top_k(fresh, base, 10)]
    from semsearch.tuning import rerank

    _, candidates = index.search(fresh, 10 * tuning.settings.k_factor, settings=tuning.settings)
    _, found = rerank(fresh, candidates, ids, base, 10)
    assert recall_at(found, truth) >= 0.95 - TOLERANCE
    # An unreachable target: the setting of highest recall, marked not reached.
    strict = tune(index, ids, base, target=1.0, queries=fresh[:50])
    assert not strict.held_out and strict.queries == 50
    assert strict.reached or strict.recall >= tuning.recall - TOLERANCE


def test_auto_compresses_past_the_budget_shares_the_quantizer_and_records_its_tuning(
    tmp_path, small_thresholds
):
    base = clustered(6_000, seed=4)
    folder = tmp_path / "ix"
    with compressed(folder, base, 4_000) as index:
        info = index.info()
        assert info.faiss_factory.startswith("IVF") and "PQ48x4fs" in info.faiss_factory
        assert info.memory_budget == 10**6 and info.recall_target == 0.95
        assert info.tuning["recall_at_10"] >= 0.95 and info.tuning["queries"] == 400
        trained = sorted(p.name for p in folder.glob("quantizer.*.faiss"))
        assert trained == ["quantizer.1.faiss"]
        # The next segment reuses the trained quantizer: nothing is trained again.
        index.add(notes(4_000, 6_000))
        assert sorted(p.name for p in folder.glob("quantizer.*.faiss")) == trained
        segments = index.info().segment_list
        assert [s["factory"] for s in segments] == [info.faiss_factory] * 2
        assert all(s["tuning"]["recall_at_10"] >= 0.95 for s in segments)
        assert recall_of(index, base, clustered(100, seed=5)) >= 0.95 - TOLERANCE
        # A removed chunk never comes back from a compressed segment; filters are exact.
        top = index.search(base[10], k=1, mode="semantic")[0].article_id
        assert top == "v10"
        index.remove(["v10"])
        assert index.search(base[10], k=5, mode="semantic")[0].article_id != "v10"
        wanted = {"id": {"in": ["v11", "v12", "v4500"]}}
        only = index.search(base[10], k=3, mode="semantic", filter=wanted)
        assert {h.article_id for h in only} == {"v11", "v12", "v4500"}
    report = verify(folder)
    assert report.ok and not report.notes, (report.problems, report.notes)
    # The manifest and `semsearch info` say what was chosen and what it measured.
    result = CliRunner().invoke(cli, ["info", "--index", str(folder)])
    assert result.exit_code == 0, result.output
    assert re.search(r"recall@10 (0\.9[5-9]\d|1\.000)", result.output), result.output
    assert "(aimed at 0.9875), target 0.95 reached" in result.output


def test_optimize_merges_compressed_segments_into_one_tuned_segment(tmp_path, small_thresholds):
    base = clustered(5_000, seed=6)
    folder = tmp_path / "ix"
    with compressed(folder, base, 2_500) as index:
        index.add(notes(2_500, 5_000))
        index.remove([f"v{i}" for i in range(0, 5_000, 10)])
        index.optimize()
        info = index.info()
        assert info.segments == 1 and info.tombstones == 0 and info.chunks == 4_500
        assert info.faiss_factory.startswith("IVF") and info.tuning["recall_at_10"] >= 0.95
        kept = np.array([i for i in range(5_000) if i % 10])
        queries = clustered(100, seed=7)
        truth = kept[exact_top_k(queries, base[kept], 10)]
        found = [
            [int(h.article_id[1:]) for h in index.search(q, k=10, mode="semantic")] for q in queries
        ]
        assert recall_at(np.array(found), truth) >= 0.95 - TOLERANCE
    assert verify(folder).ok


def test_a_bad_budget_or_target_is_refused_before_anything_is_written(tmp_path):
    encoder = PrecomputedEncoder(DIM, clustered(10))
    with pytest.raises(BadInputError, match="memory budget 'lots'"):
        Index.create(tmp_path / "a", encoder=encoder, memory_budget="lots", onnx=False)
    with pytest.raises(BadInputError, match=r"recall target 1\.5"):
        Index.create(tmp_path / "b", encoder=encoder, recall_target=1.5, onnx=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    result = CliRunner().invoke(
        cli, ["index", "--index", str(tmp_path / "c"), "--recall-target", "2", "x.txt"]
    )
    assert result.exit_code == 2 and "--recall-target" in result.output


def test_optimize_trains_the_quantizer_again_when_new_vectors_drift_from_it(
    tmp_path, small_thresholds
):
    old = clustered(3_000, seed=8)
    other = clustered(3_000, seed=9, centres=99)  # topics the first vectors never had
    base = np.concatenate([old, other])
    folder = tmp_path / "ix"
    with compressed(folder, base, 3_000) as index:
        assert index.optimize().retrained == ""  # nothing new since it was trained
        index.add(notes(3_000, 6_000))
        result = index.optimize()
        assert "drift" in result.retrained or "far from its centroids" in result.retrained
        assert result.segments_after == 1
        quantizers = sorted(p.name for p in folder.glob("quantizer.*.faiss"))
        assert quantizers != ["quantizer.1.faiss"] and len(quantizers) == 1
        assert index.info().tuning["recall_at_10"] >= 0.95
        assert index.optimize().retrained == ""  # trained on what it holds now
    assert verify(folder).ok


def test_tune_on_the_users_queries_is_a_generation_that_readers_pick_up(tmp_path, small_thresholds):
    base = clustered(3_000, seed=10)
    folder = tmp_path / "ix"
    compressed(folder, base, 3_000).close()
    encoder = PrecomputedEncoder(DIM, base)
    reader = Index.open(folder, encoder=encoder)
    writer = Index.open(folder, encoder=encoder)
    before = reader.info().generation
    tuned = writer.tune(clustered(60, seed=11), recall_target=0.9)
    assert len(tuned) == 1 and tuned[0]["queries"] == 60 and not tuned[0]["held_out"]
    assert tuned[0]["recall_target"] == 0.9 and tuned[0]["recall_at_10"] >= 0.9
    info = reader.info()  # a reader open before sees the new settings
    assert info.generation == before + 1 and info.recall_target == 0.9
    assert info.segment_list[0]["tuning"]["queries"] == 60
    with pytest.raises(BadInputError, match="recall target 0"):
        writer.tune(recall_target=0)
    with pytest.raises(BadInputError, match="need \\(n, 384\\)"):
        writer.tune(np.zeros((3, 5), dtype=np.float32))
    reader.close()
    writer.close()
    assert verify(folder).ok


def test_semsearch_tune_reports_each_segment(tmp_path, small_thresholds):
    folder = tmp_path / "ix"
    compressed(folder, clustered(3_000, seed=12), 3_000).close()
    queries = tmp_path / "queries.txt"
    queries.write_text("v1\nv2\n\nv3\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["tune", "--index", str(folder), "--recall-target", "0"])
    assert result.exit_code == 2 and "--recall-target" in result.output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    result = runner.invoke(cli, ["tune", "--index", str(folder), "--queries", str(empty)])
    assert result.exit_code == 1 and "no queries in" in result.output


def test_semsearch_tune_on_a_flat_index_says_there_is_nothing_to_tune(sample_index_dir):
    result = CliRunner().invoke(cli, ["tune", "--index", str(sample_index_dir)])
    assert result.exit_code == 0, result.output
    assert "Nothing to tune" in result.output
    result = CliRunner().invoke(cli, ["tune", "--index", str(sample_index_dir), "--json"])
    assert result.exit_code == 0 and result.output.strip() == "[]"


def test_segments_written_before_the_index_outgrew_them_are_rewritten_by_a_later_write(
    tmp_path, small_thresholds
):
    base = clustered(3_000, seed=13)
    folder = tmp_path / "ix"
    with (
        Index.creating(
            folder, encoder=PrecomputedEncoder(DIM, base), memory_budget="1MB", onnx=False
        ) as index,
        index,
    ):
        index.add(notes(0, 800))  # within the (scaled) exact range: flat
        assert [s["factory"] for s in index.info().segment_list] == ["Flat"]
        index.add(notes(800, 3_000))  # past it: the flat segment no longer fits
        kinds = {s["factory"].split(",")[-1] for s in index.info().segment_list}
        assert kinds == {"PQ48x4fs"}, index.info().segment_list
        assert recall_of(index, base, clustered(50, seed=14)) >= 0.95 - TOLERANCE


def test_tune_takes_one_string_as_one_query_and_refuses_empty_ones(tmp_path, small_thresholds):
    base = clustered(2_000, seed=15)
    folder = tmp_path / "ix"
    compressed(folder, base, 2_000).close()
    with Index.open(folder, encoder=PrecomputedEncoder(DIM, base)) as index:
        assert index.tune("v7")[0]["queries"] == 1
        with pytest.raises(BadInputError, match="no tuning queries"):
            index.tune([])
        with pytest.raises(BadInputError, match="tuning query 1 is empty"):
            index.tune(["v1", " "])
    result = CliRunner().invoke(
        cli, ["index", "--index", str(tmp_path / "new"), "--memory-budget", "lots", "nowhere.txt"]
    )
    assert result.exit_code == 2 and "memory budget 'lots'" in result.output
    assert not (tmp_path / "new").exists()
