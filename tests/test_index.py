"""Index logic with the fake encoder: writes, replacement, removal, grouping, failures."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from semsearch import (
    BadInputError,
    IncompatibleIndexError,
    Index,
    IndexExistsError,
    IndexNotFoundError,
    Skipped,
)
from semsearch import segments as segments_module
from semsearch import vectors as vectors_module
from semsearch.vectors import VectorIndex
from tests.conftest import FakeEncoder, make_article

FRUIT = [
    make_article("apple", "Apples are crisp red fruit grown in orchards.", title="Apples"),
    make_article("banana", "Bananas are long yellow fruit from the tropics.", title="Bananas"),
    make_article("cherry", "Cherries are small dark stone fruit.", title="Cherries"),
]


def chunk_ids_in_faiss(index: Index) -> set[int]:
    return set(index._vectors.ids().tolist())


def test_add_then_search_finds_the_matching_article(fake_index):
    result = fake_index.add(FRUIT)
    assert (result.added, result.updated, result.unchanged) == (3, 0, 0)
    hits = fake_index.search("long yellow fruit from the tropics", k=2)
    assert hits[0].article_id == "banana"
    assert hits[0].title == "Bananas"
    assert hits[0].score == pytest.approx(max(h.score for h in hits))


def test_hit_offsets_slice_the_stored_article(fake_index):
    fake_index.add([make_article("a", "First sentence here. " * 60, title="Long", tags=("x",))])
    for hit in fake_index.search("first sentence", k=5, group=False):
        article = fake_index.get(hit.article_id)
        assert article is not None
        assert article.text[hit.start : hit.end] == hit.text
        assert hit.tags == ("x",)


def test_adding_the_same_articles_twice_changes_nothing(fake_index):
    fake_index.add(FRUIT)
    before = fake_index.info()
    ids_before = chunk_ids_in_faiss(fake_index)
    result = fake_index.add(FRUIT)
    assert (result.added, result.updated, result.unchanged, result.chunks_added) == (0, 0, 3, 0)
    assert fake_index.info().chunks == before.chunks
    assert chunk_ids_in_faiss(fake_index) == ids_before


def test_changed_article_replaces_all_its_chunks(fake_index):
    fake_index.add([make_article("a", "Old words. " * 200), *FRUIT])
    old = set(fake_index._store.chunk_ids(["a"]).tolist())
    result = fake_index.add([make_article("a", "Completely new text about rivers.")])
    assert (result.updated, result.chunks_removed, result.chunks_added) == (1, len(old), 1)
    assert not old & chunk_ids_in_faiss(fake_index)
    assert len(fake_index._store.chunk_ids(["a"])) == 1
    assert fake_index.info().chunks == fake_index._vectors.ntotal


def test_remove_deletes_chunks_from_faiss_and_sqlite(fake_index):
    fake_index.add([make_article("long", "Words and more words. " * 100), *FRUIT])
    doomed = set(fake_index._store.chunk_ids(["long"]).tolist())
    assert len(doomed) > 1
    removed, missing = fake_index.remove(["long", "nope"])
    assert (removed, missing) == (["long"], ["nope"])
    assert not doomed & chunk_ids_in_faiss(fake_index)
    assert len(fake_index._store.chunk_ids(["long"])) == 0
    assert fake_index.get("long") is None
    assert all(h.article_id != "long" for h in fake_index.search("words", k=10))


def test_grouped_search_returns_k_distinct_articles_even_when_one_crowds_the_top(
    tmp_path, fake_encoder
):
    crowd = make_article("crowd", "\n\n".join(["Zebra zebra zebra stripes."] * 60))
    others = [make_article(f"o{i}", f"Zebra mention number {i} among words.") for i in range(5)]
    with Index.create(tmp_path / "ix", encoder=fake_encoder, chunk_tokens=16) as index:
        index.add([crowd, *others])
        assert len(index._store.chunk_ids(["crowd"])) > 20
        hits = index.search("zebra stripes", k=4)
        assert len(hits) == 4
        assert len({h.article_id for h in hits}) == 4
        raw = index.search("zebra stripes", k=4, group=False)
        assert [h.article_id for h in raw] == ["crowd"] * 4


def test_grouped_search_stops_when_the_index_is_exhausted(fake_index):
    fake_index.add(FRUIT)
    assert len(fake_index.search("fruit", k=50)) == 3


def test_batch_and_vector_queries_match_single_text_queries(fake_index, fake_encoder):
    fake_index.add(FRUIT)
    queries = ["red orchard fruit", "small dark stone fruit"]
    batch = fake_index.search_batch(queries, k=2)
    assert len(batch) == 2
    for query, hits in zip(queries, batch, strict=True):
        assert hits == fake_index.search(query, k=2)
        semantic = fake_index.search(query, k=2, mode="semantic")
        by_vector = fake_index.search(fake_encoder.encode_queries([query])[0], k=2)
        assert by_vector == [replace(h, highlights=()) for h in semantic]


def test_reopening_gives_identical_results(fake_index, fake_encoder):
    fake_index.add(FRUIT)
    before = fake_index.search_batch(["fruit", "orchard"], k=3)
    fake_index.close()
    with Index.open(fake_index.path, encoder=fake_encoder) as reopened:
        assert reopened.search_batch(["fruit", "orchard"], k=3) == before
        assert reopened.info().articles == 3


def test_duplicate_ids_in_one_batch_are_skipped(fake_index):
    result = fake_index.add([FRUIT[0], FRUIT[0], FRUIT[1]])
    assert result.added == 2
    assert len(result.skipped) == 1
    assert "duplicate id 'apple'" in result.skipped[0].reason


def test_skipped_inputs_pass_through(fake_index):
    result = fake_index.add([Skipped("bad.jsonl", "invalid JSON", 3), FRUIT[0]])
    assert result.added == 1
    assert str(result.skipped[0]) == "bad.jsonl:3: invalid JSON"


def test_bad_queries_are_refused(fake_index):
    fake_index.add(FRUIT)
    for query in ("", "   \n"):
        with pytest.raises(BadInputError, match="empty query"):
            fake_index.search(query)
    with pytest.raises(BadInputError, match="k must be"):
        fake_index.search("fruit", k=0)
    with pytest.raises(BadInputError, match="shape"):
        fake_index.search_batch(np.zeros((1, 5), dtype=np.float32))


def test_search_on_an_empty_index_returns_nothing(fake_index):
    assert fake_index.search("anything") == []


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "HNSW16,Flat", "IVF4,Flat"])
def test_index_types_support_add_replace_remove(tmp_path, fake_encoder, index_type):
    articles = [make_article(f"a{i}", f"Article {i} about topic {i % 7}. " * 3) for i in range(60)]
    with Index.create(tmp_path / "ix", encoder=fake_encoder, index_type=index_type) as index:
        index.add(articles)
        index.add([make_article("a0", "Replaced text entirely.")])
        index.remove(["a1", "a2"])
        assert index.info().articles == 58
        assert index._vectors.ntotal == index.info().chunks
        assert index.search("Replaced text entirely", k=1)[0].article_id == "a0"


def test_invalid_index_type_is_refused_before_anything_is_written(tmp_path, fake_encoder):
    with pytest.raises(BadInputError, match="invalid FAISS index type 'Nonsense42'"):
        Index.create(tmp_path / "ix", encoder=fake_encoder, index_type="Nonsense42")
    assert not Index.exists(tmp_path / "ix")


def test_a_segment_too_small_to_train_its_type_is_kept_exact_until_merged(tmp_path, fake_encoder):
    # 39 vectors per list is what FAISS wants to train IVF on: 78 for IVF2.
    with Index.create(tmp_path / "ix", encoder=fake_encoder, index_type="IVF2,Flat") as index:
        index.add(FRUIT)
        assert index.info().faiss_factory == "Flat"
        assert index.search("apple", k=1)[0].article_id == "apple"
        index.add([make_article(f"n{i}", f"Note number {i}.") for i in range(80)])
        index.optimize()
        assert index.info().faiss_factory == "IVF2,Flat"
        assert index.info().segments == 1
        assert index.search("Note number 7.", k=1)[0].article_id == "n7"


def test_auto_switches_to_hnsw_above_the_threshold(fake_index, monkeypatch):
    monkeypatch.setattr(vectors_module, "HNSW_THRESHOLD", 10)
    monkeypatch.setattr(segments_module, "SMALL_SEGMENT", 11)
    fake_index.add(FRUIT)
    assert fake_index.info().faiss_factory == "Flat"
    fake_index.add([make_article(f"n{i}", f"Note {i}.") for i in range(10)])
    assert fake_index.info().faiss_factory == "Flat"  # each segment is small (< SMALL_SEGMENT)
    fake_index.optimize()  # one segment of 13
    assert fake_index.info().faiss_factory == "HNSW32"
    assert fake_index.search("Note 3.", k=1)[0].article_id == "n3"


def test_a_first_add_above_the_threshold_builds_hnsw_with_every_chunk(fake_index, monkeypatch):
    monkeypatch.setattr(vectors_module, "HNSW_THRESHOLD", 5)
    monkeypatch.setattr(segments_module, "SMALL_SEGMENT", 5)
    fake_index.add([make_article(f"n{i}", f"Note number {i}.") for i in range(12)])
    assert fake_index.info().faiss_factory == "HNSW32"
    assert chunk_ids_in_faiss(fake_index) == set(fake_index._store.all_chunk_ids().tolist())
    assert fake_index.search("Note number 7.", k=1)[0].article_id == "n7"


class ExplodingEncoder(FakeEncoder):
    def encode_documents(self, texts, batch_size=32, progress=False):
        raise RuntimeError("boom while embedding")


def test_failure_while_embedding_leaves_the_index_unchanged(fake_index):
    fake_index.add(FRUIT)
    before = fake_index.search_batch(fake_encoder_vectors(["fruit"]), k=3)[0]
    fake_index._writer._encoder = ExplodingEncoder()  # what embeds the articles
    with pytest.raises(RuntimeError, match="boom"):
        fake_index.add([make_article("new", "New text.")])
    assert fake_index.search_batch(fake_encoder_vectors(["fruit"]), k=3)[0] == before
    assert fake_index.info().articles == 3


def fake_encoder_vectors(texts):
    return FakeEncoder().encode_queries(texts)


def test_failure_while_writing_vectors_leaves_the_index_unchanged(fake_index, monkeypatch):
    fake_index.add(FRUIT)
    files_before = sorted(p.name for p in fake_index.path.iterdir())

    def broken_write(self, path):
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(VectorIndex, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        fake_index.add([make_article("new", "New text.")])
    monkeypatch.undo()
    assert sorted(p.name for p in fake_index.path.iterdir()) == files_before
    with Index.open(fake_index.path, encoder=FakeEncoder()) as reopened:
        assert reopened.info().articles == 3
        assert reopened.get("new") is None


def test_open_without_an_index_names_the_folder_and_what_to_do(tmp_path):
    with pytest.raises(IndexNotFoundError, match="run `semsearch index PATH` first"):
        Index.open(tmp_path / "nothing")


def test_create_twice_is_refused(fake_index, fake_encoder):
    with pytest.raises(IndexExistsError):
        Index.create(fake_index.path, encoder=fake_encoder)


def test_default_folder_comes_from_the_environment(tmp_path, fake_encoder, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_INDEX", str(tmp_path / "from-env"))
    with Index.create(encoder=fake_encoder):
        pass
    assert Index.exists(tmp_path / "from-env")


def test_another_model_is_refused(fake_index):
    fake_index.add(FRUIT)
    fake_index.close()
    with pytest.raises(IncompatibleIndexError, match="built with model 'fake/hashed-words'"):
        Index.open(fake_index.path, model="sentence-transformers/all-mpnet-base-v2")


class ImpostorEncoder(FakeEncoder):
    """Same name, other vectors: what a changed model folder would look like."""

    def encode_documents(self, texts, batch_size=32, progress=False):
        return -super().encode_documents(texts)


def test_same_name_but_different_vectors_is_refused(fake_index):
    fake_index.add(FRUIT)
    fake_index.close()
    with pytest.raises(IncompatibleIndexError, match="does not give the vectors"):
        Index.open(fake_index.path, encoder=ImpostorEncoder())


def test_damaged_manifest_is_a_clear_error(fake_index, fake_encoder):
    fake_index.close()
    (fake_index.path / "manifest.json").write_text("{not json")
    with pytest.raises(IncompatibleIndexError, match=r"manifest\.json is damaged"):
        Index.open(fake_index.path, encoder=fake_encoder)


def test_newer_format_is_refused(fake_index, fake_encoder):
    fake_index.close()
    path = fake_index.path / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(IncompatibleIndexError, match="newer than this semsearch"):
        Index.open(fake_index.path, encoder=fake_encoder)


@pytest.mark.parametrize("victim", ["vectors", "store"])
def test_damaged_data_files_are_clear_errors(fake_index, fake_encoder, victim):
    fake_index.add(FRUIT)
    fake_index.close()
    pattern = "segment.*.faiss" if victim == "vectors" else "store.sqlite"
    for file in fake_index.path.glob(pattern):
        file.write_bytes(b"garbage" * 10)
    for file in fake_index.path.glob("store.sqlite-*"):
        file.unlink()
    with pytest.raises(IncompatibleIndexError, match="damaged"):
        Index.open(fake_index.path, encoder=fake_encoder)


def test_rebuild_as_another_type_keeps_every_vector(fake_index):
    fake_index.add(FRUIT)
    before = fake_index.search("fruit", k=3)
    fake_index.rebuild("hnsw")
    assert fake_index.info().faiss_factory == "HNSW32"
    assert [h.article_id for h in fake_index.search("fruit", k=3)] == [h.article_id for h in before]
