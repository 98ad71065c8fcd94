"""Search modes, scores, highlights, filters and hostile queries, with the real model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semsearch import BadInputError
from semsearch.errors import QueryTruncatedWarning
from semsearch.search import HYBRID_WEIGHT, MIN_BEST_BM25

AP4 = "world/nato-ap4-itpp.md"
# Hostile text → the plain words its keyword query must equal ("" where none are left).
HOSTILE = {
    '"': "",
    "'": "",
    "*": "",
    "-": "",
    ":": "",
    "(": "",
    ")": "",
    '"NATO': "NATO",
    "NATO*": "NATO",
    "-NATO": "NATO",
    "title:NATO": "title NATO",
    "NEAR(NATO Pacific)": "near NATO Pacific",
    "NATO AND OR NOT": "NATO",  # stop words go when other words are left
    "^NATO": "NATO",
    "NATO + Pacific": "NATO Pacific",
    "{title text}: NATO": "title text NATO",
    "a AND (b OR": "b",  # which no article holds
    "'; DROP TABLE chunks; --": "drop table chunks",
    "\x00NATO": "NATO",
    "NATO\u200b\u202e": "NATO",
    "北约 印太": "北约 印太",  # which no article holds
}


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "keyword"])
def test_every_mode_ranks_the_ap4_article_first(sample_index, mode):
    hits = sample_index.search("NATO Indo-Pacific partners", k=5, mode=mode)
    assert hits[0].article_id == AP4
    assert all(h.mode == mode for h in hits)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_the_default_mode_is_hybrid(sample_index):
    assert sample_index.search("NATO", k=1)[0].mode == "hybrid"


def test_semantic_score_is_the_cosine_of_the_snippet_chunk(sample_index, real_encoder):
    hit = sample_index.search("coral reefs losing colour", k=1, mode="semantic")[0]
    chunker = sample_index.chunker()
    article = sample_index.get(hit.article_id)
    chunk = next(c for c in chunker.chunks(article) if c.start == hit.start)
    vector = real_encoder.encode_documents([chunker.embed_text(article, chunk)])[0]
    query = real_encoder.encode_queries(["coral reefs losing colour"])[0]
    assert hit.score == pytest.approx(float(vector @ query), abs=1e-5)
    assert hit.keyword_score is None


def test_hybrid_score_is_the_documented_blend(sample_index):
    hits = sample_index.search("offshore wind farm approval", k=5)
    best_bm25 = sample_index.search("offshore wind farm approval", k=1, mode="keyword")[0].score
    for hit in hits:
        blend = HYBRID_WEIGHT * hit.semantic_score + (1 - HYBRID_WEIGHT) * (
            hit.keyword_score / best_bm25
        )
        assert hit.score == pytest.approx(blend, abs=1e-5)
    assert hits[0].semantic_score == pytest.approx(
        sample_index.search("offshore wind farm approval", k=1, mode="semantic")[0].score, abs=1e-5
    )


def test_keyword_mode_finds_an_exact_acronym(sample_index):
    hits = sample_index.search("ITPP", k=3, mode="keyword")
    assert [h.article_id for h in hits] == [AP4]
    assert hits[0].keyword_score == hits[0].score > 0


def test_keyword_mode_returns_nothing_when_no_word_matches(sample_index):
    assert sample_index.search("zyxwvut qqqqq", k=5, mode="keyword") == []
    assert len(sample_index.search("zyxwvut qqqqq", k=5, mode="hybrid")) == 5


def test_highlights_mark_the_query_words_in_the_snippet(sample_index):
    hit = sample_index.search("tailored partnership NATO", k=1)[0]
    marked = {hit.text[s:e].lower() for s, e in hit.highlights}
    assert {"nato", "tailored", "partnership"} <= marked
    assert all(0 <= s < e <= len(hit.text) for s, e in hit.highlights)


def test_highlights_include_stemmed_forms(sample_index):
    hit = sample_index.search("partner", k=1, mode="keyword")[0]
    assert "partners" in {hit.text[s:e].lower() for s, e in hit.highlights}


def test_stop_words_alone_still_search(sample_index):
    assert sample_index.search("the and of", k=3, mode="keyword")


def test_words_in_most_chunks_do_not_sway_hybrid(sample_index):
    # Each word is in over half the chunks: BM25 ~1e-6 at FTS5's idf floor, no evidence.
    hits = sample_index.search("the and of", k=5)
    assert hits and all(0 < h.keyword_score < MIN_BEST_BM25 for h in hits)
    for hit in hits:
        assert hit.score == pytest.approx(HYBRID_WEIGHT * hit.semantic_score)
    semantic = sample_index.search("the and of", k=5, mode="semantic")
    assert [h.article_id for h in hits] == [h.article_id for h in semantic]


def _matched(hits) -> list[tuple[str, float | None, set[str]]]:
    """What keyword search found: articles, BM25 scores, highlighted words."""
    return [(h.article_id, h.keyword_score, _marked(h)) for h in hits]


def _marked(hit) -> set[str]:
    return {hit.text[s:e].lower() for s, e in hit.highlights}


@pytest.mark.parametrize("text", HOSTILE)
def test_fts5_syntax_in_a_keyword_query_is_just_text(sample_index, text):
    hits = sample_index.search(text, k=3, mode="keyword")
    words = HOSTILE[text]
    expected = sample_index.search(words, k=3, mode="keyword") if words else []
    assert _matched(hits) == _matched(expected)
    if "NATO" in words:
        assert hits[0].article_id == AP4 and "nato" in _marked(hits[0])
    elif words in ("", "b", "北约 印太"):
        assert hits == []
    else:
        assert len(hits) == 3


@pytest.mark.parametrize("text", HOSTILE)
def test_fts5_syntax_in_a_hybrid_query_is_just_text(sample_index, text):
    hits = sample_index.search(text, k=3)
    words = HOSTILE[text]
    matches = sample_index.search(words, k=40, mode="keyword") if words else []
    bm25 = {h.article_id: h.score for h in matches}
    assert len(hits) == 3
    for hit in hits:  # its keyword part is its words' BM25 (0 for an article they miss)
        assert hit.keyword_score == pytest.approx(bm25.get(hit.article_id, 0.0))
    if "NATO" in words:
        assert hits[0].article_id == AP4 and "nato" in _marked(hits[0])
    if not any(h.keyword_score for h in hits):  # no word matched: the semantic ranking
        semantic = sample_index.search(text, k=3, mode="semantic")
        assert [h.article_id for h in hits] == [h.article_id for h in semantic]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_no_query_text_makes_keyword_search_raise(sample_index, text):
    if not text.strip():
        with pytest.raises(BadInputError, match="empty query"):
            sample_index.search(text, mode="keyword")
    else:
        sample_index.search(text, k=2, mode="keyword")


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
@pytest.mark.parametrize("mode", ["hybrid", "semantic", "keyword"])
def test_empty_queries_are_refused(sample_index, text, mode):
    with pytest.raises(BadInputError, match="empty query"):
        sample_index.search(text, mode=mode)


def test_a_long_query_warns_and_keeps_all_its_keywords(sample_index):
    long = "weather " * 400 + "ITPP"
    with pytest.warns(QueryTruncatedWarning, match="first 254"):
        assert len(sample_index.search(long, k=3)) == 3
    # The word past the model's limit still counts for keywords.
    assert sample_index.search(long, k=1, mode="keyword")[0].article_id == AP4


def test_fts5_syntax_can_be_asked_for(sample_index):
    hits = sample_index.search('"tailored partnership"', k=3, mode="keyword", keyword_syntax="fts5")
    assert [h.article_id for h in hits] == [AP4]
    with pytest.raises(BadInputError, match="invalid FTS5 query"):
        sample_index.search('"unbalanced', mode="keyword", keyword_syntax="fts5")


def test_bad_mode_and_weight_are_refused(sample_index):
    with pytest.raises(BadInputError, match="unknown search mode 'fuzzy'"):
        sample_index.search("NATO", mode="fuzzy")
    with pytest.raises(BadInputError, match="between 0 and 1"):
        sample_index.search("NATO", hybrid_weight=1.5)
    with pytest.raises(BadInputError, match="semantic mode"):
        sample_index.search(np.zeros(384, dtype=np.float32), mode="keyword")


def test_hybrid_weight_one_ranks_as_semantic(sample_index):
    hybrid = sample_index.search("songbirds tracked on migration", k=5, hybrid_weight=1.0)
    semantic = sample_index.search("songbirds tracked on migration", k=5, mode="semantic")
    assert [h.article_id for h in hybrid] == [h.article_id for h in semantic]


# -- filters on the sample corpus ---------------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "keyword"])
def test_a_source_filter_keeps_only_that_source(sample_index, mode):
    hits = sample_index.search("news", k=20, mode=mode, filter={"source": "The Daily Ledger"})
    assert hits and all(h.source == "The Daily Ledger" for h in hits)


def test_date_tag_and_custom_filters_combine(sample_index):
    hits = sample_index.search(
        "security cooperation",
        k=10,
        filter={"date": {"gte": "2023-06-01", "lte": "2023-06-30"}, "tags": {"in": ["NATO"]}},
    )
    assert [h.article_id for h in hits] == [AP4]
    regional = sample_index.search("talks", k=40, filter={"region": "Asia-Pacific"})
    assert AP4 in [h.article_id for h in regional]
    assert all(h.metadata.get("region") == "Asia-Pacific" for h in regional)


def test_a_filter_nothing_matches_gives_no_hits(sample_index):
    assert sample_index.search("NATO", filter={"source": "Nobody"}) == []


def test_bad_filters_are_refused_by_name(sample_index):
    with pytest.raises(BadInputError, match="gtee"):
        sample_index.search("NATO", filter={"date": {"gtee": "2023-01-01"}})
    with pytest.raises(BadInputError, match="2023-13-45"):
        sample_index.search("NATO", filter={"date": {"gte": "2023-13-45"}})
