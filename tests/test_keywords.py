"""Keyword plumbing: user text → safe FTS5 expression; FTS5 kept in step with the chunks."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semsearch import Index
from semsearch.keywords import CLOSE, OPEN, marked_spans, match_expression, query_terms
from semsearch.manifest import STORE_FILE
from tests.conftest import make_article


def test_words_are_quoted_deduplicated_and_ored():
    assert match_expression("NATO, nato and the Indo-Pacific!") == ('"nato" OR "indo" OR "pacific"')


def test_stop_words_stay_when_there_is_nothing_else():
    assert query_terms("the and of") == ["the", "and", "of"]
    assert query_terms("the ocean") == ["ocean"]


@pytest.mark.parametrize("text", ["", "   ", "!!! ---", "()*:^"])
def test_text_without_words_gives_no_expression(text):
    assert match_expression(text) is None


@given(st.text())
def test_any_text_gives_a_valid_fts5_expression(text):
    expression = match_expression(text)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body)")
    db.execute("INSERT INTO t VALUES ('some body text')")
    if expression is not None:
        db.execute("SELECT * FROM t WHERE t MATCH ?", (expression,)).fetchall()


def test_marked_spans_are_offsets_in_the_original_text():
    original = "NATO talks with partners"
    marked = f"{OPEN}NATO{CLOSE} talks with {OPEN}partners{CLOSE}"
    assert marked_spans(marked, original) == ((0, 4), (16, 24))
    assert marked_spans(marked, "another text") == ()


def _keyword_ids(index: Index, query: str) -> list[str]:
    return [h.article_id for h in index.search(query, k=10, mode="keyword")]


def _fts_is_consistent(index: Index) -> None:
    db = sqlite3.connect(index.path / STORE_FILE)
    # For an external-content table, rank=1 also compares the index with the content.
    db.execute("INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)")
    db.close()


def test_keyword_index_follows_adds_updates_and_removals(fake_index):
    fake_index.add([make_article("a", "Walruses haul out on ice."), make_article("b", "Gulls.")])
    assert _keyword_ids(fake_index, "walruses") == ["a"]
    fake_index.add([make_article("a", "Seals bask on rocks.")])  # changed: replaced
    assert _keyword_ids(fake_index, "walruses") == []
    assert _keyword_ids(fake_index, "seals") == ["a"]
    fake_index.remove(["a"])
    assert _keyword_ids(fake_index, "seals") == []
    _fts_is_consistent(fake_index)


def test_titles_are_searchable_by_keyword(fake_index):
    fake_index.add([make_article("a", "Body words only.", title="Lighthouse keepers")])
    assert _keyword_ids(fake_index, "lighthouse") == ["a"]


def test_an_index_from_before_the_keyword_index_gets_one_on_open(fake_index, fake_encoder):
    fake_index.add([make_article("a", "Walruses haul out on ice.")])
    fake_index.close()
    db = sqlite3.connect(fake_index.path / STORE_FILE)
    for name in ("chunks_fts_insert", "chunks_fts_delete"):
        db.execute(f"DROP TRIGGER {name}")
    db.executescript(
        "DROP TRIGGER chunks_fts_update_before; DROP TRIGGER chunks_fts_update_after;"
        "DROP TABLE chunks_fts; DROP VIEW chunk_text;"
        "DELETE FROM schema_migrations WHERE version = 2;"
    )
    db.close()
    with Index.open(fake_index.path, encoder=fake_encoder) as reopened:
        assert _keyword_ids(reopened, "walruses") == ["a"]
        _fts_is_consistent(reopened)
