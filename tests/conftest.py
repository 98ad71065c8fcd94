"""Shared fixtures.

Unit tests of index logic use :class:`FakeEncoder`: a deterministic bag of
hashed words, so scores are exact and no model loads. Anything that claims to
test search quality uses the real all-MiniLM-L6-v2 (``real_encoder``), loaded
once per session.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from semsearch import Article, Index, load_paths
from semsearch.embed import Encoder, load_encoder

# No timing is asserted in a test, Hypothesis's deadlines included: on a shared
# 2-core machine a first call that imports ICU took 373 ms against its 200 ms.
settings.register_profile("semsearch", deadline=None)
settings.load_profile("semsearch")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_ARTICLES = ROOT / "examples" / "articles"
_WORD = re.compile(r"\w+|[^\w\s]")


class FakeEncoder:
    """Words hashed into a fixed dimension, summed and normalised."""

    name = "fake/hashed-words"
    dim = 32
    max_tokens = 128
    special_tokens = 2
    backend = "fake"
    query_prompt = ""
    document_prompt = ""

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norm = np.linalg.norm(v)
        return v / norm if norm else np.full(self.dim, self.dim**-0.5, dtype=np.float32)

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        return np.array([self._vector(t) for t in texts], dtype=np.float32).reshape(-1, self.dim)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_documents(texts)


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """ONNX exports go to a cache of this test session, not ~/.cache (session-wide, so
    that session fixtures building indexes use it too, and each model exports once)."""
    saved = os.environ.get("SEMSEARCH_CACHE")
    os.environ["SEMSEARCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("SEMSEARCH_BACKEND", None)
    yield
    if saved is None:
        os.environ.pop("SEMSEARCH_CACHE", None)
    else:
        os.environ["SEMSEARCH_CACHE"] = saved


@pytest.fixture(autouse=True)
def _isolated_index_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches indexes/: the default index is a temporary folder."""
    monkeypatch.setenv("SEMSEARCH_INDEX", str(tmp_path / "default-index"))
    monkeypatch.delenv("SEMSEARCH_DEBUG", raising=False)


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture(scope="session")
def real_encoder() -> Encoder:
    return load_encoder()


def make_article(article_id: str, text: str, **fields: object) -> Article:
    return Article(id=article_id, text=text, **fields)  # type: ignore[arg-type]


@pytest.fixture
def fake_index(tmp_path: Path, fake_encoder: FakeEncoder) -> Iterator[Index]:
    with Index.create(tmp_path / "fake-index", encoder=fake_encoder) as index:
        yield index


@pytest.fixture(scope="session")
def _sample_index_master(tmp_path_factory: pytest.TempPathFactory, real_encoder: Encoder) -> Path:
    folder = tmp_path_factory.mktemp("sample") / "index"
    with Index.create(folder, encoder=real_encoder) as index:
        result = index.add(load_paths([SAMPLE_ARTICLES]))
    assert not result.skipped, result.skipped
    return folder


@pytest.fixture
def sample_index_dir(tmp_path: Path, _sample_index_master: Path) -> Path:
    """A private copy of the sample corpus indexed with the real model."""
    folder = tmp_path / "sample-index"
    shutil.copytree(_sample_index_master, folder)
    return folder


@pytest.fixture
def sample_index(sample_index_dir: Path, real_encoder: Encoder) -> Iterator[Index]:
    with Index.open(sample_index_dir, encoder=real_encoder) as index:
        yield index
