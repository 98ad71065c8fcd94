"""The store's boundary: SQLite errors mapped inside it, stored vectors, the article round trip."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from semsearch import Article
from semsearch.errors import BadInputError, IncompatibleIndexError
from semsearch.records import COMMON_FIELDS, Chunk
from semsearch.store import Store, StoredVectors
from semsearch.vectors import VectorIndex
from semsearch.verify import verify

DIM = 4


def _insert(store: Store, article: Article, n_chunks: int = 2) -> np.ndarray:
    """Insert an article cut into n chunks; returns the chunk ids."""
    step = len(article.text) // n_chunks
    chunks = [
        Chunk(article.id, i, i * step, (i + 1) * step, article.text[i * step : (i + 1) * step], 1)
        for i in range(n_chunks)
    ]
    vectors = np.eye(DIM, dtype=np.float32)[:n_chunks]
    hashes = [f"{article.id}-{i}" for i in range(n_chunks)]
    with store.transaction():
        return store.insert_article(article, "article-hash", chunks, vectors, hashes)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "store.sqlite", create=True)
    yield store
    store.close()


def _break(path: Path, statement: str) -> None:
    """Change the database behind the store's back, as a hand edit would."""
    db = sqlite3.connect(path)
    db.execute(statement)
    db.commit()
    db.close()


def test_a_users_invalid_fts5_expression_is_bad_input(store):
    _insert(store, Article("a", "Harbours and ferries."))
    with pytest.raises(BadInputError, match="invalid FTS5 query: unterminated string"):
        store.keyword_matches('"harbours AND', user_fts5=True)
    with pytest.raises(BadInputError, match="invalid FTS5 query"):
        store.highlighted("harbours AND", [1], user_fts5=True)
    ids, _ = store.keyword_matches("harbours")
    assert ids.tolist() == [1]


def test_a_table_missing_from_the_schema_is_damage_naming_the_file(store):
    _insert(store, Article("a", "Harbours and ferries."))
    _break(store.path, "DROP TABLE chunks_fts")
    with pytest.raises(IncompatibleIndexError, match=r"store\.sqlite is damaged: no such table"):
        store.keyword_matches("harbours")
    assert store.counts() == (1, 2)  # what does not touch the table still reads


def test_verify_reports_a_missing_table_instead_of_crashing(fake_index):
    fake_index.close()
    _break(fake_index.path / "store.sqlite", "DROP TABLE meta")
    problems = verify(fake_index.path).problems
    assert problems and "store.sqlite is damaged: no such table: meta" in problems[0]


def test_stored_vectors_have_one_shape_whatever_selects_them(store):
    first = _insert(store, Article("a", "Harbours and ferries.", title="Ports"))
    second = _insert(store, Article("b", "Apples and orchards.", title="Fruit"), n_chunks=3)
    every = store.all_vectors(DIM)
    assert isinstance(every, StoredVectors)
    assert every.chunk_ids.tolist() == [*first, *second]
    assert every.article_pks.tolist() == [1, 1, 2, 2, 2]
    assert every.vectors.shape == (5, DIM) and every.vectors.dtype == np.float32
    some = store.vectors_of_chunks(second[:2].tolist(), DIM)
    assert sorted(some.chunk_ids.tolist()) == second[:2].tolist()
    of_b = store.vectors_of_articles([2], DIM)
    assert sorted(of_b.chunk_ids.tolist()) == second.tolist() and set(of_b.article_pks) == {2}
    assert store.text_hashes([int(second[2]), 999]) == ["b-2", None]
    ids, pks = store.chunks_of_articles([2])
    assert ids.tolist() == second.tolist() and set(pks.tolist()) == {2}


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)


@given(
    common=st.fixed_dictionaries({f: st.none() | _text for f in COMMON_FIELDS}),
    tags=st.lists(_text, max_size=3).map(tuple),
    metadata=st.dictionaries(_text, st.integers() | _text, max_size=3),
)
def test_an_article_comes_back_as_it_was_stored(tmp_path_factory, common, tags, metadata):
    store = Store(tmp_path_factory.mktemp("rt") / "store.sqlite", create=True)
    article = Article("id", "Some text here.", tags=tags, metadata=metadata, path="f", **common)
    _insert(store, article, n_chunks=1)
    assert store.article("id") == article
    (row,) = store.chunk_rows([1]).values()
    assert {f: getattr(row, f) for f in COMMON_FIELDS} == common
    store.close()


def test_a_vector_file_that_cannot_be_written_is_an_oserror(tmp_path):
    vectors = VectorIndex.create("Flat", DIM)
    with pytest.raises(OSError, match="cannot write"):
        vectors.write(tmp_path / "no such folder" / "vectors.0.faiss")
