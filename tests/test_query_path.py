"""The query path after ranking: hits, their rows and highlights, as FTS5 itself gives them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from semsearch import Index
from semsearch.keywords import CLOSE, OPEN, match_expression
from semsearch.store import Store
from tests.conftest import ROOT

QUERIES = [q["query"] for q in json.loads((ROOT / "tests/data/sample_queries.json").read_text())]
# Expressions a user may pass with keyword_syntax="fts5": phrases, NEAR, prefixes,
# a column filter, NOT; each matches per document, so a copy of a few chunks
# must highlight what the whole index's chunks_fts highlights.
USER_EXPRESSIONS = [
    '"interest rates"',
    "NEAR(nato partners, 5)",
    "coffe*",
    "title: nato",
    "{title text}: arctic NOT bananas",
    "^south",
    "rate OR prices OR heat",
]


def _reference(store: Store, match: str, chunk_ids: list[int]) -> dict[int, str]:
    """What highlight() over the index's own chunks_fts gives (the way it was done before)."""
    marks = ",".join("?" * len(chunk_ids))
    rows = store.execute(
        "SELECT rowid, highlight(chunks_fts, 1, ?, ?) FROM chunks_fts"
        f" WHERE chunks_fts MATCH ? AND rowid IN ({marks})",
        [OPEN, CLOSE, match, *chunk_ids],
    )
    return dict(rows)


@pytest.mark.parametrize("expression", USER_EXPRESSIONS)
def test_highlights_are_fts5s_own_for_a_users_expression(sample_index, expression):
    store = sample_index._store
    chunk_ids = store.all_chunk_ids().tolist()
    found = store.highlighted(expression, chunk_ids, user_fts5=True)
    assert found == _reference(store, expression, chunk_ids)
    assert found or expression == "^south"  # every other one matches in the sample


def test_highlights_are_fts5s_own_for_every_sample_query_and_mode(sample_index):
    store = sample_index._store
    for query in QUERIES:
        match = match_expression(query)
        for mode in ("semantic", "keyword", "hybrid"):
            hits = sample_index.search(query, k=5, mode=mode, group=False)
            ids = [h.chunk_id for h in hits]
            assert store.highlighted(match, ids) == _reference(store, match, ids)
            assert any(h.highlights for h in hits) or mode == "semantic"


def test_a_second_query_highlights_only_its_own_chunks(sample_index):
    store = sample_index._store
    first, second = store.all_chunk_ids().tolist()[:3], store.all_chunk_ids().tolist()[3:6]
    store.highlighted('"the"', first)
    assert set(store.highlighted('"the"', second)) <= set(second)
    assert store.highlighted('"the"', []) == {}


def _files(folder: Path) -> dict[str, str]:
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.iterdir())
        if f.is_file()
    }


def test_searching_writes_nothing_into_the_index_folder(sample_index_dir, real_encoder):
    with Index.open(sample_index_dir, encoder=real_encoder) as index:
        index.search("warm up", k=3)
        before = _files(sample_index_dir)
        for query in QUERIES:
            index.search(query, k=5)
            index.search(query, k=5, mode="semantic")
        assert _files(sample_index_dir) == before


def test_the_paired_benchmark_times_semsearch_beside_the_plain_peer(sample_index_dir):
    from benchmarks.latency import PAIRED, markdown_paired, paired

    figures = paired(sample_index_dir, QUERIES[:4], warmup=1)
    assert all(figures[f"{n} {m}"]["n"] == 4 for n, m in PAIRED)
    assert figures["ratios"]["peer-1-thread"].keys() == {"semantic", "hybrid"}
    assert figures["peer"]["faiss_factory"] == "Flat"
    assert figures["peer"]["torch_threads"]["peer-1-thread"] == 1
    assert "plain peer" in markdown_paired(figures)
