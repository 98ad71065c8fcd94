"""The torch-free ONNX backend: same vectors as sentence-transformers, no torch on queries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from semsearch import BadInputError, Index, ModelError, load_paths
from semsearch.onnx_backend import OnnxEncoder
from tests.conftest import ROOT, SAMPLE_ARTICLES

QUERIES = json.loads((ROOT / "tests" / "data" / "sample_queries.json").read_text())


def test_the_export_gives_sentence_transformers_vectors(sample_index, real_encoder):
    onnx = OnnxEncoder(sample_index.path / "onnx")
    chunker = sample_index.chunker()
    texts = [
        chunker.embed_text(a, c)
        for a in load_paths([SAMPLE_ARTICLES])
        if not isinstance(a, type(None)) and hasattr(a, "text")
        for c in chunker.chunks(a)
    ]
    ours, reference = onnx.encode_documents(texts), real_encoder.encode_documents(texts)
    assert len(texts) > 100
    assert float((ours * reference).sum(axis=1).min()) >= 0.9999
    queries = [q["query"] for q in QUERIES]
    cosines = (onnx.encode_queries(queries) * real_encoder.encode_queries(queries)).sum(axis=1)
    assert float(cosines.min()) >= 0.9999


def test_the_export_tokenises_as_the_model_does(sample_index, real_encoder):
    onnx = OnnxEncoder(sample_index.path / "onnx")
    text = "NATO's ITPP talks: Japan, Australia — and New Zealand. " * 40
    assert onnx.token_spans(text) == real_encoder.token_spans(text)
    assert (onnx.max_tokens, onnx.special_tokens, onnx.dim) == (256, 2, 384)


def test_both_backends_rank_alike(sample_index_dir):
    fast = Index.open(sample_index_dir, query_backend="onnx")
    reference = Index.open(sample_index_dir, query_backend="torch")
    with fast, reference:
        for case in QUERIES:
            ours = fast.search(case["query"], k=5)
            theirs = reference.search(case["query"], k=5)
            assert [h.article_id for h in ours] == [h.article_id for h in theirs]
            np.testing.assert_allclose(
                [h.score for h in ours], [h.score for h in theirs], atol=1e-4
            )
        assert type(fast.encoder).__name__ == "OnnxEncoder"
        assert type(reference.encoder).__name__ == "SentenceTransformerEncoder"


_PROBE = """
import sys
from semsearch import Index
from semsearch.cli import main
index = Index.open(sys.argv[1])
assert index.search("NATO Indo-Pacific", k=3)[0].article_id == "world/nato-ap4-itpp.md"
heavy = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
print("heavy:", heavy)
"""


def test_a_query_imports_no_torch(sample_index_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, str(sample_index_dir)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert "heavy: []" in probe.stdout


def test_the_cli_query_imports_no_torch(sample_index_dir):
    code = (
        "import sys, runpy; sys.argv = ['semsearch', 'query', 'NATO', '--index', sys.argv[1]];"
        "\ntry: runpy.run_module('semsearch', run_name='__main__')"
        "\nexcept SystemExit: pass"
        "\nprint('heavy:', [m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = subprocess.run(
        [sys.executable, "-c", code, str(sample_index_dir)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert "Asia-Pacific partners" in probe.stdout, probe.stderr[-2000:]
    assert "heavy: []" in probe.stdout


def test_an_index_without_an_export_uses_torch_and_can_get_one(tmp_path, real_encoder):
    articles = list(load_paths([SAMPLE_ARTICLES / "world"]))
    with Index.create(tmp_path / "ix", encoder=real_encoder, onnx=False) as index:
        index.add(articles)
    # Refused when opened, not at the first semantic search.
    with pytest.raises(ModelError, match=r"no ONNX export; Index\.export_onnx"):
        Index.open(tmp_path / "ix", query_backend="onnx")
    with Index.open(tmp_path / "ix") as index:
        assert type(index.encoder).__name__ == "SentenceTransformerEncoder"
        assert index.export_onnx()
    with Index.open(tmp_path / "ix") as index:
        assert index.search("NATO", k=1)[0].article_id == "nato-ap4-itpp.md"
        assert type(index.encoder).__name__ == "OnnxEncoder"


def test_an_int8_index_is_built_and_queried_with_the_same_quantised_model(tmp_path, monkeypatch):
    articles = list(load_paths([SAMPLE_ARTICLES]))
    with Index.create(tmp_path / "ix", build_backend="onnx-int8") as index:
        index.add(articles)
        quantization = index.manifest.model.onnx["quantization"]
        assert index.manifest.model.backend == "onnx-int8"
        assert quantization["weight_type"] == "QInt8" and quantization["per_channel"]
        int8 = index.chunk_vectors()[1]
    with Index.open(tmp_path / "ix") as index:
        assert index.search("NATO Indo-Pacific", k=1)[0].article_id == "world/nato-ap4-itpp.md"
        assert type(index.encoder).__name__ == "OnnxEncoder"
    with pytest.raises(ModelError, match="int8 ONNX model; its queries must use it too"):
        Index.open(tmp_path / "ix", query_backend="torch")
    # A reader's $SEMSEARCH_BACKEND never stops a write; a query names the variable.
    monkeypatch.setenv("SEMSEARCH_BACKEND", "bogus")
    with Index.open(tmp_path / "ix") as index:
        index.add(load_paths([SAMPLE_ARTICLES / "world"]))
        with pytest.raises(BadInputError, match=r"'bogus' in \$SEMSEARCH_BACKEND"):
            index.search("NATO")
    monkeypatch.delenv("SEMSEARCH_BACKEND")
    with Index.create(tmp_path / "fp32", build_backend="onnx") as index:
        index.add(articles)
        fp32 = index.chunk_vectors()[1]
    assert float((int8 * fp32).sum(axis=1).min()) >= 0.98


def test_an_unknown_build_backend_is_refused(tmp_path):
    with pytest.raises(BadInputError, match="unknown build backend 'tpu'"):
        Index.create(tmp_path / "ix", build_backend="tpu")


def test_the_default_build_is_the_onnx_export_with_the_reference_vectors(tmp_path, real_encoder):
    articles = list(load_paths([SAMPLE_ARTICLES / "world"]))
    with Index.create(tmp_path / "ix") as index:  # the model by name: the library loads it
        index.add(articles)
        assert type(index.encoder).__name__ == "OnnxEncoder"
        assert index.info().build_backend == "onnx"
        vectors = index.chunk_vectors()[1]
        chunker = index.chunker()
    reference = real_encoder.encode_documents(
        [chunker.embed_text(a, c) for a in articles for c in chunker.chunks(a)]
    )
    assert len(vectors) == len(reference) > 5
    # Each stored vector is sentence-transformers' vector of some chunk, to 4 decimals.
    assert float((vectors @ reference.T).max(axis=1).min()) >= 0.9999
    recorded = json.loads((tmp_path / "ix" / "manifest.json").read_text())["model"]["backend"]
    assert recorded == "onnx"
    # The same vectors: sentence-transformers may embed its queries, while new
    # articles are still embedded by the backend that built the index.
    with Index.open(tmp_path / "ix", query_backend="torch") as index:
        assert index.search("NATO Indo-Pacific", k=1)[0].article_id == "nato-ap4-itpp.md"
        assert type(index.encoder).__name__ == "SentenceTransformerEncoder"
        assert index.add(load_paths([SAMPLE_ARTICLES / "science"])).added > 0
        assert type(index._writer.encoder).__name__ == "OnnxEncoder"


def test_auto_falls_back_to_torch_with_a_warning_when_the_export_fails(tmp_path, monkeypatch):
    from semsearch.embed import SentenceTransformerEncoder

    def fail(*args, **kwargs):
        raise ModelError("cannot export this model")

    monkeypatch.setattr(SentenceTransformerEncoder, "install_onnx", fail)
    with pytest.warns(UserWarning, match="no ONNX export .cannot export this model.; articles"):
        index = Index.create(tmp_path / "ix")
    with index:
        index.add(load_paths([SAMPLE_ARTICLES / "world"]))
        assert type(index.encoder).__name__ == "SentenceTransformerEncoder"
        assert index.info().build_backend == "torch" and not index.info().onnx_export
        assert index.search("NATO Indo-Pacific", k=1)[0].article_id == "nato-ap4-itpp.md"
    with Index.open(tmp_path / "ix") as index:  # an add embeds as the build did: torch
        assert type(index._writer.encoder).__name__ == "SentenceTransformerEncoder"
    # The manifest keeps the spelling older semsearch reads.
    recorded = json.loads((tmp_path / "ix" / "manifest.json").read_text())["model"]["backend"]
    assert recorded == "sentence-transformers"
    with pytest.raises(ModelError, match="cannot export this model"):
        Index.create(tmp_path / "explicit", build_backend="onnx")
    assert not (tmp_path / "explicit" / "manifest.json").exists()


def test_a_given_encoder_or_no_export_builds_with_torch_silently(tmp_path, real_encoder, recwarn):
    with Index.create(tmp_path / "given", encoder=real_encoder) as index:
        assert index.encoder is real_encoder and index.info().onnx_export
        assert index.manifest.model.backend == "torch"
    with Index.create(tmp_path / "plain", onnx=False) as index:
        assert type(index.encoder).__name__ == "SentenceTransformerEncoder"
        assert not index.info().onnx_export
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_backend_is_the_old_name_of_build_and_query_backend(tmp_path, sample_index_dir):
    with pytest.warns(DeprecationWarning, match="build_backend"):
        Index.create(tmp_path / "ix", backend="torch").close()
    assert Index.open(tmp_path / "ix").manifest.model.backend == "torch"
    with pytest.warns(DeprecationWarning, match="query_backend"):
        index = Index.open(sample_index_dir, backend="torch")
    with index:
        assert index.query_backend == "torch"
        with pytest.warns(DeprecationWarning, match="query_backend"):
            assert index.backend == "torch"
    with pytest.raises(BadInputError, match="unknown query backend 'gpu'"):
        Index.open(sample_index_dir, query_backend="gpu")


def test_open_or_create_lists_every_difference_the_model_included(tmp_path, real_encoder):
    from semsearch.errors import SettingsConflictError

    with Index.open_or_create(tmp_path / "ix", encoder=real_encoder) as index:
        index.add(load_paths([SAMPLE_ARTICLES / "world"]))
    other = {"model": "paraphrase-multilingual-MiniLM-L12-v2", "overlap_tokens": 8}
    with (
        pytest.raises(SettingsConflictError) as caught,
        Index.open_or_create(tmp_path / "ix", **other),
    ):
        pass
    assert [name for name, _, _ in caught.value.conflicts] == ["model", "overlap_tokens"]
    # A misspelt backend is an unknown name, not a difference.
    with (
        pytest.raises(BadInputError, match="unknown build backend 'bogus'"),
        Index.open_or_create(tmp_path / "ix", build_backend="bogus"),
    ):
        pass


def test_an_unwritable_export_cache_falls_back_to_torch(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("SEMSEARCH_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.warns(UserWarning, match="no ONNX export .cannot write the export"):
        index = Index.create(tmp_path / "ix")
    with index:
        assert index.manifest.model.backend == "torch" and not index.info().onnx_export
    with pytest.raises(ModelError, match="cannot write the export"):
        Index.create(tmp_path / "explicit", build_backend="onnx")


def test_the_export_folder_is_readable_like_the_other_files(sample_index_dir):
    folder = (sample_index_dir / "onnx").stat().st_mode
    store = (sample_index_dir / "store.sqlite").stat().st_mode
    assert folder & 0o044 == store & 0o044  # mkdtemp alone gives 0700


def test_the_cli_says_a_fallback_in_one_warning_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from semsearch.cli import cli

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("SEMSEARCH_CACHE", str(tmp_path / "file" / "cache"))
    runner = CliRunner()
    args = ["index", str(SAMPLE_ARTICLES / "world"), "--index", str(tmp_path / "ix")]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "ONNX" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: no ONNX export (cannot write")
    info = runner.invoke(cli, ["info", "--index", str(tmp_path / "ix")]).stdout
    assert "built with torch; queries on sentence-transformers" in info
