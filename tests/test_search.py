"""Search with the real all-MiniLM-L6-v2 over the sample corpus (no fake encoder here)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from semsearch import IncompatibleIndexError, Index, load_paths
from semsearch.chunk import Chunker

QUERIES = json.loads((Path(__file__).parent / "data" / "sample_queries.json").read_text())
AP4 = "world/nato-ap4-itpp.md"


def test_nato_query_returns_the_ap4_article_first(sample_index):
    hits = sample_index.search("NATO Indo-Pacific", k=5)
    assert hits[0].article_id == AP4
    assert "Individually Tailored Partnership Programme" in sample_index.get(AP4).text
    assert hits[0].score > hits[1].score + 0.1
    assert hits[0].source == "Meridian Wire"
    assert "nato" in hits[0].tags


@pytest.mark.parametrize("case", QUERIES, ids=[q["query"] for q in QUERIES])
def test_topical_queries_find_their_article_in_the_top_3(sample_index, case):
    hits = sample_index.search(case["query"], k=3)
    assert case["article"] in [h.article_id for h in hits]


def test_every_loader_contributes_searchable_articles(sample_index):
    formats = {"md": "world/", "html": "web/", "jsonl": "wire-"}
    hits = sample_index.search_batch([q["query"] for q in QUERIES], k=1)
    found = {h[0].article_id for h in hits}
    for prefix in formats.values():
        assert any(a.startswith(prefix) for a in found), prefix


def test_no_chunk_exceeds_the_model_limit_with_its_title(sample_index, real_encoder):
    chunker: Chunker = sample_index.chunker()
    for article in load_paths([Path(__file__).parent.parent / "examples" / "articles"]):
        for chunk in chunker.chunks(article):
            tokens = len(real_encoder.token_spans(chunker.embed_text(article, chunk)))
            assert tokens + real_encoder.special_tokens <= real_encoder.max_tokens


def test_grouped_results_are_distinct_articles_and_raw_chunks_may_repeat(sample_index):
    hits = sample_index.search("salmon return after dam demolition", k=10)
    assert len(hits) == 10
    assert len({h.article_id for h in hits}) == 10
    chunks = sample_index.search("salmon return after dam demolition", k=10, group=False)
    assert len({h.chunk_id for h in chunks}) == 10
    assert len({h.article_id for h in chunks}) < 10  # the long dam article has several chunks


def test_removing_an_article_removes_all_its_chunks(sample_index):
    doomed = set(sample_index._store.chunk_ids([AP4]).tolist())
    assert doomed
    before = sample_index.info()
    assert sample_index.remove([AP4]) == ([AP4], [])
    assert not doomed & set(sample_index._vectors.ids().tolist())
    assert sample_index.info().chunks == before.chunks - len(doomed)
    assert sample_index._vectors.ntotal == sample_index.info().chunks
    assert AP4 not in [h.article_id for h in sample_index.search("NATO Indo-Pacific", k=10)]


def test_reopening_gives_identical_results(sample_index_dir, real_encoder):
    queries = [q["query"] for q in QUERIES]
    with Index.open(sample_index_dir, encoder=real_encoder) as index:
        before = index.search_batch(queries, k=5)
    # The model resolved from the manifest (test_onnx compares the ONNX backend).
    with Index.open(sample_index_dir, query_backend="torch") as index:
        assert index.search_batch(queries, k=5) == before


def test_a_precomputed_query_vector_gives_the_same_hits(sample_index, real_encoder):
    vector = real_encoder.encode_queries(["NATO Indo-Pacific"])[0]
    by_text = sample_index.search("NATO Indo-Pacific", k=3, mode="semantic")
    assert sample_index.search(vector, k=3) == [replace(h, highlights=()) for h in by_text]


def test_opening_with_another_model_is_refused(sample_index_dir):
    with pytest.raises(IncompatibleIndexError, match="all-MiniLM-L6-v2"):
        Index.open(sample_index_dir, model="sentence-transformers/paraphrase-MiniLM-L3-v2")


def test_a_changed_article_is_re_embedded_and_found_by_its_new_text(sample_index, real_encoder):
    article = sample_index.get(AP4)
    changed = type(article)(**{**article.__dict__, "text": "The orchestra toured Brazil."})
    result = sample_index.add([changed])
    assert (result.updated, result.chunks_added) == (1, 1)
    assert sample_index.search("orchestra tour in Brazil", k=1)[0].article_id == AP4
