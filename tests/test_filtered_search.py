"""Filtered search is exact: the top k among matching articles, as brute force gives it.

2,000 short articles embedded with the real model; a numeric metadata field
selects 50%, 5%, 0.5% and 0.1% of them. Each filtered search is checked
against brute force over exactly the matching articles' vectors (semantic)
or the unfiltered BM25 ranking cut to the matching articles (keyword).
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


@pytest.fixture(params=["flat", "hnsw"])
def filter_index(
    request: pytest.FixtureRequest, tmp_path: Path, _filter_index_master: Path, real_encoder
) -> Iterator[Index]:
    folder = tmp_path / "index"
    shutil.copytree(_filter_index_master, folder)
    with Index.open(folder, encoder=real_encoder) as index:
        if request.param == "hnsw":
            index.rebuild("hnsw")
        yield index


def _matching(index: Index, below: int) -> set[str]:
    return {f"a{i:04d}" for i in range(N) if i % 1000 < below}


def _brute_force(index: Index, query: str, allowed: set[str], k: int) -> list[str]:
    """Exact inner product over the stored vectors of the allowed articles only."""
    ids, vectors = index.chunk_vectors()
    article_of = {
        h.chunk_id: h.article_id
        for h in index.search(query, k=len(ids), mode="semantic", group=False)
    }
    keep = np.asarray([article_of[int(i)] in allowed for i in ids])
    vector = index.encoder.encode_queries([query])[0]
    scores = vectors[keep] @ vector
    order = np.argsort(-scores, kind="stable")[:k]
    return [article_of[int(i)] for i in ids[keep][order]]


@pytest.mark.parametrize("share", list(SELECTIVITY))
def test_filtered_semantic_search_equals_brute_force(filter_index, share):
    below = SELECTIVITY[share]
    allowed = _matching(filter_index, below)
    for query in QUERIES:
        hits = filter_index.search(query, k=K, mode="semantic", filter={"bucket": {"lt": below}})
        assert [h.article_id for h in hits] == _brute_force(filter_index, query, allowed, K)


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


def test_an_ann_index_uses_the_faiss_selector_above_the_brute_force_limit(
    tmp_path, _filter_index_master, real_encoder, monkeypatch
):
    folder = tmp_path / "index"
    shutil.copytree(_filter_index_master, folder)
    monkeypatch.setattr(search_module, "BRUTE_FORCE_LIMIT", 0)
    with Index.open(folder, encoder=real_encoder) as index:
        index.rebuild("hnsw")
        allowed = _matching(index, 500)
        for query in QUERIES:
            hits = index.search(query, k=K, mode="semantic", filter={"bucket": {"lt": 500}})
            assert {h.article_id for h in hits} <= allowed
            exact = set(_brute_force(index, query, allowed, K))
            assert len(exact & {h.article_id for h in hits}) >= K - 1
