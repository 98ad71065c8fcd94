"""Filtered search is exact: the top k among matching articles, as brute force gives it.

2,000 short articles embedded with the real model; a numeric metadata field
selects 50%, 5%, 0.5% and 0.1% of them. Each filtered search is checked
against brute force over exactly the matching articles' vectors (semantic)
or the unfiltered BM25 ranking cut to the matching articles (keyword). A flat
index must equal brute force; an HNSW index is searched through FAISS's own
filtered search above a lowered ``BRUTE_FORCE_LIMIT`` and may miss one of the top 10.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from semsearch import Article, Index
from semsearch import search as search_module
from semsearch.embed import Encoder

N = 2_000
K = 10
SELECTIVITY = {"50%": 500, "5%": 50, "0.5%": 5, "0.1%": 1}  # bucket < n, buckets 0..999
QUERIES = [
    "rain delays the harbour ferry",
    "new vaccine trial in children",
    "city council approves budget",
    "solar farm on old mine land",
]
_SUBJECTS = ["council", "ferry", "school", "hospital", "museum", "market", "farm", "bridge"]
_VERBS = ["approves", "delays", "opens", "closes", "funds", "expands", "studies", "cancels"]
_OBJECTS = ["budget", "route", "wing", "trial", "exhibition", "plan", "harvest", "vaccine"]
_PLACES = ["harbour", "valley", "capital", "island", "coast", "mine", "village", "river"]


def _article(i: int, rng: random.Random) -> Article:
    words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    text = f"The {words[0]} {words[1]} the {words[2]} near the {rng.choice(_PLACES)}."
    text += f" Item {i} was filed after a {rng.choice(_OBJECTS)} review."
    return Article(id=f"a{i:04d}", text=text, metadata={"bucket": i % 1000})


@pytest.fixture(scope="session")
def _filter_index_master(tmp_path_factory: pytest.TempPathFactory, real_encoder: Encoder) -> Path:
    folder = tmp_path_factory.mktemp("filtered") / "index"
    rng = random.Random(7)
    with Index.create(folder, encoder=real_encoder, index_type="flat") as index:
        index.add([_article(i, rng) for i in range(N)], batch_size=128)
    return folder


@pytest.fixture(scope="session")
def _article_of(_filter_index_master: Path, real_encoder: Encoder) -> dict[int, str]:
    """Each chunk's article, read through the exact (flat) index."""
    with Index.open(_filter_index_master, encoder=real_encoder) as index:
        n_chunks = len(index.chunk_vectors()[0])
        hits = index.search(QUERIES[0], k=n_chunks, mode="semantic", group=False)
    assert len(hits) == n_chunks
    return {h.chunk_id: h.article_id for h in hits}


@pytest.fixture(params=["flat", "hnsw"])
def filter_index(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    _filter_index_master: Path,
    real_encoder: Encoder,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Index]:
    folder = tmp_path / "index"
    shutil.copytree(_filter_index_master, folder)
    with Index.open(folder, encoder=real_encoder) as index:
        if request.param == "hnsw":
            index.rebuild("hnsw")
            # Scaled to 2,000 articles: the 50% and 5% filters (1,000 and 100 chunks)
            # go through FAISS's own filtered search (its IDSelector), the 0.5% and
            # 0.1% ones through the exact fallback, as 50,000 chunks do at full size.
            monkeypatch.setattr(search_module, "BRUTE_FORCE_LIMIT", 50)
        yield index


def _matching(index: Index, below: int) -> set[str]:
    return {f"a{i:04d}" for i in range(N) if i % 1000 < below}


def _brute_force(
    index: Index, article_of: dict[int, str], query: str, allowed: set[str], k: int
) -> dict[str, float]:
    """Exact inner products with the allowed articles' stored vectors: the top k, best first."""
    ids, vectors = index.chunk_vectors()
    keep = np.asarray([article_of[int(i)] in allowed for i in ids])
    vector = index.encoder.encode_queries([query])[0]
    scores = vectors[keep] @ vector
    order = np.argsort(-scores, kind="stable")[:k]
    return {
        article_of[int(i)]: float(s) for i, s in zip(ids[keep][order], scores[order], strict=True)
    }


@pytest.mark.parametrize("share", list(SELECTIVITY))
def test_filtered_semantic_search_equals_brute_force(filter_index, _article_of, share):
    below = SELECTIVITY[share]
    allowed = _matching(filter_index, below)
    approximate = "HNSW" in filter_index.info().faiss_factory
    through_faiss = approximate and len(allowed) > search_module.BRUTE_FORCE_LIMIT
    for query in QUERIES:
        hits = filter_index.search(query, k=K, mode="semantic", filter={"bucket": {"lt": below}})
        exact = _brute_force(filter_index, _article_of, query, allowed, K)
        if not through_faiss:
            assert [h.article_id for h in hits] == list(exact)
            continue
        # HNSW's tolerance: every hit allowed and scored exactly, as many as exact
        # search gives, and at most one of the exact top 10 missed (recall@10 >= 0.9).
        assert {h.article_id for h in hits} <= allowed and len(hits) == len(exact)
        scores = _brute_force(filter_index, _article_of, query, allowed, len(allowed))
        assert all(h.score == pytest.approx(scores[h.article_id], abs=1e-5) for h in hits)
        assert len(set(exact) & {h.article_id for h in hits}) >= len(exact) - 1


@pytest.mark.parametrize("share", list(SELECTIVITY))
def test_filtered_keyword_search_equals_the_ranking_cut_to_matches(filter_index, share):
    below = SELECTIVITY[share]
    allowed = _matching(filter_index, below)
    for query in QUERIES:
        everything = filter_index.search(query, k=N, mode="keyword")
        expected = [h.article_id for h in everything if h.article_id in allowed][:K]
        hits = filter_index.search(query, k=K, mode="keyword", filter={"bucket": {"lt": below}})
        assert [h.article_id for h in hits] == expected


@pytest.mark.parametrize("share", list(SELECTIVITY))
def test_filtered_hybrid_search_returns_only_matches_and_enough_of_them(filter_index, share):
    below = SELECTIVITY[share]
    allowed = _matching(filter_index, below)
    hits = filter_index.search(QUERIES[0], k=K, filter={"bucket": {"lt": below}})
    assert {h.article_id for h in hits} <= allowed
    assert len(hits) == min(K, len(allowed))
