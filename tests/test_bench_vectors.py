"""The ANN and scaling benchmarks run end to end on a tiny real index.

They check that the scripts work and their figures are sane, never timings:
the machine is shared and noisy. The sizes are small so each test takes
seconds; the figures mean something only at the scripts' own sizes.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import ann, scaling
from benchmarks.common import TINY_BEIR
from semsearch import Index
from semsearch.embed import FINGERPRINT_TEXT

# HNSW's recall need not rise strictly with ef_search, query by query; over
# a few hundred queries a drop of more than half a point would be a bug.
HNSW_TOLERANCE = 0.005


def _outputs(out: Path, name: str) -> dict[str, Any]:
    for suffix in ("json", "md", "png"):
        assert (out / f"{name}.{suffix}").stat().st_size > 0
    return json.loads((out / f"{name}.json").read_text())


@pytest.fixture
def ann_result(sample_index_dir: Path, tmp_path: Path) -> dict[str, Any]:
    argv = ["--index", str(sample_index_dir), "--quick", "--synthetic", "3000"]
    ann.main([*argv, "--out", str(tmp_path / "out")])
    return _outputs(tmp_path / "out", "ann")


@pytest.mark.model
def test_ann_writes_results_for_both_sets(ann_result: dict[str, Any], tmp_path: Path) -> None:
    real, synthetic = ann_result["sets"]
    assert real["kind"] == "real" and real["queries"] >= 1
    assert synthetic["n"] == 3000 and synthetic["queries"] == 200
    types = {r["index_type"] for r in synthetic["results"]}
    assert {"Flat", "HNSW32", "IVF64,Flat"} <= types and any("IVF64,PQ48" in t for t in types)
    md = (tmp_path / "out" / "ann.md").read_text()
    assert "synthetic 3,000" in md and "--synthetic 3000" in md


@pytest.mark.model
def test_ann_recall_is_exact_for_flat_and_a_fraction_otherwise(ann_result: dict[str, Any]) -> None:
    for data in ann_result["sets"]:
        flat = [r for r in data["results"] if r["index_type"] == "Flat"]
        assert [r["recall_at_10"] for r in flat] == [1.0]
        for r in data["results"]:
            assert 0.0 <= r["recall_at_10"] <= 1.0
            assert r["latency"]["p50_ms"] > 0 and r["batch_qps"] > 0 and r["index_bytes"] > 0


@pytest.mark.model
def test_ann_hnsw_recall_rises_with_ef_search(ann_result: dict[str, Any]) -> None:
    for data in ann_result["sets"]:
        hnsw = [r for r in data["results"] if r["index_type"] == "HNSW32"]
        assert [r["value"] for r in hnsw] == list(ann.EF_SEARCH)
        recalls = [r["recall_at_10"] for r in hnsw]
        for lower, higher in itertools.pairwise(recalls):
            assert higher >= lower - HNSW_TOLERANCE, recalls


@pytest.mark.model
def test_ann_embeds_beir_queries(sample_index_dir: Path, tmp_path: Path) -> None:
    argv = ["--index", str(sample_index_dir), "--dataset", str(TINY_BEIR), "--synthetic", "0"]
    data = ann.main([*argv, "--quick", "--out", str(tmp_path)])
    (real,) = data["sets"]
    assert real["queries"] == 10 and "judged queries" in real["queries_from"]
    with Index.open(sample_index_dir) as index:
        assert real["n"] == index.info().chunks  # nothing held out


def test_choose_nlist_keeps_39_vectors_per_list() -> None:
    assert ann.choose_nlist(1_000_000) == 4096
    assert ann.choose_nlist(20_000) == 512
    for n in (1, 59, 3000, 9_000, 123_456):
        nlist = ann.choose_nlist(n)
        assert nlist & (nlist - 1) == 0 and (nlist == 1 or n >= 39 * nlist)


@pytest.mark.model
def test_scaling_builds_and_queries_each_size(sample_index_dir: Path, tmp_path: Path) -> None:
    argv = ["--index", str(sample_index_dir), "--quick", "--sizes", "500,2000"]
    scaling.main([*argv, "--out", str(tmp_path)])
    data = _outputs(tmp_path, "scaling")
    assert [r["size"] for r in data["sizes"]] == [500, 2000]
    for r in data["sizes"]:
        assert r["faiss_factory"] == "Flat" and r["build"]["chunks"] == r["size"]
        assert r["disk_bytes"] > r["size"] * 384 * 4
        assert r["build"]["peak_rss_bytes"] > 0 and r["query"]["peak_rss_bytes"] > 0
        assert r["query"]["hits"] == 10 and r["query"]["latency"]["n"] == scaling.QUERIES
    assert "Embedding is excluded" in (tmp_path / "scaling.md").read_text()


def test_precomputed_encoder_looks_vectors_up() -> None:
    vectors = np.eye(4, dtype=np.float32)
    encoder = scaling.PrecomputedEncoder(4, vectors)
    found = encoder.encode_documents(["v2", FINGERPRINT_TEXT, "v0"])
    assert found[0].tolist() == [0, 0, 1, 0] and found[2].tolist() == [1, 0, 0, 0]
    assert np.allclose(np.linalg.norm(found[1]), 1.0)
    assert encoder.token_spans("v12 v3") == [(0, 3), (4, 6)]
    with pytest.raises(ValueError):
        scaling.PrecomputedEncoder(4).encode_documents(["v1"])
