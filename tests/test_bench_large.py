"""The synthetic vector and text generators and the large-index harness.

The generators must give the same batch however it is reached (alone, in a
run, through the row cache), so that 10M vectors can be drawn in pieces; the
recall computation must be right on a case known by hand; the harness runs
end to end at a tiny size. No timings are asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import large, report, synth
from benchmarks.common import TINY_BEIR, recall_at_k, unit
from semsearch.embed import FINGERPRINT_TEXT


@pytest.fixture(scope="module")
def real_like() -> np.ndarray:
    """200 clustered unit vectors of dimension 16 standing in for real chunk vectors."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((10, 16))
    return unit(centres[rng.integers(0, 10, 200)] + 0.3 * rng.standard_normal((200, 16)))


@pytest.mark.parametrize("kind", ["blend", "harsh"])
def test_each_batch_is_reproducible_alone(real_like: np.ndarray, kind: str) -> None:
    model = synth.VectorModel.fit(real_like, kind)
    n = synth.BATCH + 100
    whole = model.vectors(n)
    assert whole.shape == (n, 16) and whole.dtype == np.float32
    assert np.allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(model.batch(1)[:100], whole[synth.BATCH :])
    assert np.array_equal(model.batch(0), model.batch(0))
    rows = np.array([5, synth.BATCH + 7, 3])
    assert np.array_equal(synth.RowCache(model).rows(rows), whole[rows])
    assert not np.allclose(model.batch(0, synth.QUERY_STREAM), model.batch(0))


def test_models_round_trip_through_npz(real_like: np.ndarray, tmp_path: Path) -> None:
    model = synth.VectorModel.fit(real_like, k=5, spread=0.4, noise=0.1, seed=3)
    model.save(tmp_path / "model.npz")
    again = synth.VectorModel.load(tmp_path / "model.npz")
    assert (again.kind, again.spread, again.noise, again.seed) == ("blend", 0.4, 0.1, 3)
    assert np.array_equal(again.batch(2), model.batch(2))
    texts = synth.TextModel.fit(["alpha beta beta gamma 42", "beta delta"], 3, 5)
    texts.save(tmp_path / "text.npz")
    assert list(synth.TextModel.load(tmp_path / "text.npz").texts(50)) == list(texts.texts(50))


def test_blend_neighbours_exclude_the_anchor_itself(real_like: np.ndarray) -> None:
    model = synth.VectorModel.fit(real_like, k=4)
    assert model.neighbours.shape == (200, 4)
    assert not (model.neighbours == np.arange(200)[:, None]).any()
    with pytest.raises(ValueError, match="unknown synthetic vector kind"):
        synth.VectorModel.fit(real_like, "uniform")


def test_texts_follow_the_word_frequencies() -> None:
    model = synth.TextModel.fit(["the the the the cell cell protein 12 x"], 5, 8)
    assert list(model.words) == ["the", "cell", "protein"]  # digits and 1-letter words left out
    texts = list(model.texts(2000, start=1990))
    assert len(texts) == 10 and texts == list(model.texts(2000))[1990:]
    words = " ".join(model.texts(500)).split()
    assert {len(t.split()) for t in model.texts(500)} <= set(range(5, 9))
    assert words.count("the") > words.count("cell") > words.count("protein") > 0


def test_keyword_load_counts_documents_and_postings() -> None:
    docs = ["cat sat here", "the dog", "cat and dog", "nothing"]
    load = synth.keyword_load(docs, ["Cat!", "dog cat"])
    assert load["matched"] == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert load["postings"] == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert load["vocabulary"] == 7


def test_neighbour_stats_on_pairs_of_known_cosine() -> None:
    # 50 pairs at cosine 0.8, each pair orthogonal to every other: nn1 is 0.8 for all.
    dim, c = 100, 0.8
    eye = np.eye(dim, dtype=np.float32)
    pairs = [v for i in range(50) for v in (eye[2 * i], c * eye[2 * i] + 0.6 * eye[2 * i + 1])]
    stats = synth.neighbour_stats(np.array(pairs), sample=40)
    assert stats["n"] == 100
    assert stats["nn1"]["median"] == pytest.approx(c, abs=1e-5)
    assert stats["nn10"]["median"] == pytest.approx(0.0, abs=1e-5)
    assert stats["gap"]["p10"] == pytest.approx(c, abs=1e-5)


def test_exact_top_k_over_blocks_equals_one_flat_search(real_like: np.ndarray) -> None:
    queries = real_like[:7] + 0.01
    _, ids = large.exact_top_k(unit(queries), iter(np.array_split(real_like, 5)), k=10)
    scores = unit(queries) @ real_like.T
    expected = np.argsort(-scores, axis=1)[:, :10]
    assert recall_at_k(ids, expected, 10) == 1.0
    assert ids[0, 0] == 0 and ids[3, 0] == 3


def test_recall_counts_the_intersection_of_the_top_10() -> None:
    truth = np.arange(20).reshape(2, 10)
    found = truth.copy()
    found[0, 7:] = [90, 91, 92]  # 7 of 10
    found[1] = found[1][::-1]  # the order does not matter
    assert recall_at_k(found, truth, 10) == pytest.approx(0.85)


def test_generated_encoder_reads_rows_and_maps_query_texts() -> None:
    vectors = np.eye(4, dtype=np.float32)
    encoder = large.GeneratedEncoder(4, lambda rows: vectors[rows], {"a claim": vectors[3]})
    found = encoder.encode_documents(["v2 some words", FINGERPRINT_TEXT, "v0"])
    assert found[0].tolist() == [0, 0, 1, 0] and found[2].tolist() == [1, 0, 0, 0]
    assert encoder.encode_queries(["a claim"])[0].tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="no generated vector"):
        encoder.encode_documents(["words only"])
    assert [large.size_label(n) for n in (10**7, 10**6, 50_000, 1234)] == [
        "10m",
        "1m",
        "50k",
        "1234",
    ]


@pytest.mark.model
def test_harness_runs_end_to_end_at_a_tiny_size(sample_index_dir: Path, tmp_path: Path) -> None:
    argv = ["--size", "1500", "--sets", "blend,real", "--queries", "50"]
    argv += ["--index", str(sample_index_dir), "--dataset", str(TINY_BEIR)]
    large.main([*argv, "--scratch", str(tmp_path / "scratch"), "--out", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "large_1500.json").read_text())
    blend, real = data["sets"]
    assert blend["size"] == 1500 and blend["queries"] == 50 and real["set"] == "real"
    for row in data["sets"]:
        assert row["build"]["info"]["faiss_factory"] == "Flat" and row["recall_at_10"] == 1.0
        assert row["query"]["memory"]["RssAnon"] > 0 and row["query"]["memory"]["RssFile"] > 0
        assert row["query"]["keyword"]["n"] == row["query"]["hybrid"]["n"] == 10
        assert row["build"]["peak_rss_bytes"] > 0 and row["disk_bytes"] > 0
    md = (tmp_path / "out" / "large_1500.md").read_text()
    assert "python -m benchmarks.large --size 1500" in md and "Targets of issue 13" in md
    assert list((tmp_path / "scratch").iterdir()) == []  # the scratch index is deleted


@pytest.mark.model
def test_keep_leaves_the_index_and_a_second_run_measures_it_without_building(
    sample_index_dir: Path, tmp_path: Path
) -> None:
    argv = ["--size", "400", "--sets", "blend", "--queries", "10", "--keep"]
    argv += ["--index", str(sample_index_dir), "--dataset", str(TINY_BEIR)]
    argv += ["--scratch", str(tmp_path / "s"), "--out", str(tmp_path / "out")]
    first = large.main(argv)
    kept = tmp_path / "s" / "large-blend-400"
    assert (kept / "index" / "manifest.json").exists() and (kept / "build.json").exists()
    built = (kept / "index" / "manifest.json").stat().st_mtime_ns
    second = large.main(argv)
    assert (kept / "index" / "manifest.json").stat().st_mtime_ns == built  # not built again
    assert second["sets"][0]["build"] == first["sets"][0]["build"]
    assert second["sets"][0]["recall_at_10"] == 1.0


@pytest.mark.model
def test_a_failing_set_is_recorded_and_exits_non_zero(
    sample_index_dir: Path, tmp_path: Path
) -> None:
    argv = ["--size", "500", "--sets", "blend", "--queries", "10", "--index-type", "NoSuchIndex"]
    argv += ["--index", str(sample_index_dir), "--dataset", str(TINY_BEIR)]
    with pytest.raises(SystemExit, match="1 set"):
        large.main([*argv, "--scratch", str(tmp_path / "s"), "--out", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "large_500.json").read_text())
    assert data["sets"] == [] and data["failed"][0]["set"] == "blend"
    assert "blend failed" in (tmp_path / "out" / "large_500.md").read_text()


@pytest.mark.model
def test_synth_check_writes_its_tables_and_plot(sample_index_dir: Path, tmp_path: Path) -> None:
    argv = ["--index", str(sample_index_dir), "--dataset", str(TINY_BEIR), "--sizes", "400"]
    data = synth.main([*argv, "--out", str(tmp_path)])
    assert [t["n"] for t in data["texts"]] == [40, 40]
    sets = [r["set"] for r in data["equal_size"]]
    assert sets[0] == "real chunk vectors" and len(sets) == 5
    assert [r["n"] for r in data["growth"]] == [400, 400]
    assert all(0.0 < r["nn1"]["median"] <= 1.0 for r in data["equal_size"])
    assert (tmp_path / "synth.png").stat().st_size > 0
    assert "| real chunk vectors |" in (tmp_path / "synth.md").read_text()


def test_report_names_the_large_benchmark_command(tmp_path: Path) -> None:
    text = report.render("{{large_10m}} {{large_1m}}", tmp_path)
    assert "`python -m benchmarks.large`" in text
    assert "`python -m benchmarks.large --quick`" in text


def test_create_options_keep_only_what_index_create_accepts() -> None:
    import inspect

    from semsearch import Index

    accepted = inspect.signature(Index.create).parameters
    assert large.create_options(None, None) == {}
    expected = {"memory_budget": "2GB"} if "memory_budget" in accepted else {}
    assert large.create_options("2GB", None) == expected
