"""TorchEncoder: sentence-transformers' vectors, batched by tokens, fed by a tokenising thread.

Runs on CPU with the real all-MiniLM-L6-v2; the GPU figures come from benchmarks/gpu.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from semsearch import torch_backend
from semsearch.embed import Encoder, SentenceTransformerEncoder
from semsearch.errors import BadInputError, ModelError
from semsearch.torch_backend import FP16_MIN_COSINE, TorchEncoder, min_cosine, plan_batches

LONG = " ".join(f"word{i} and more" for i in range(200))  # > 256 tokens: truncated
TEXTS = [
    "The cat sat on the mat.",
    LONG,
    "Ünïcödé, emoji 🙂, 東京は日本の首都です, α β γ",
    "",
    "duplicate text",
    "Mitochondria produce ATP through oxidative phosphorylation.",
    "duplicate text",
    "x",
    LONG[:700],
]


@pytest.fixture(scope="module")
def fast() -> TorchEncoder:
    return TorchEncoder(device="cpu")


@pytest.fixture(scope="module")
def prompted() -> tuple[SentenceTransformerEncoder, TorchEncoder]:
    prompt = "passage: "
    return (
        SentenceTransformerEncoder(device="cpu", document_prompt=prompt),
        TorchEncoder(device="cpu", document_prompt=prompt),
    )


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) * b).sum(axis=1)


@pytest.mark.model
def test_vectors_are_sentence_transformers_own_in_input_order(fast, real_encoder):
    expected = real_encoder.encode_documents(TEXTS)
    got = fast.encode_documents(TEXTS)
    assert got.shape == (len(TEXTS), fast.dim) and got.dtype == np.float32
    assert got.flags.c_contiguous
    assert cosines(got, expected).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(got[4], got[6])
    queries = ["what is ATP", "cat"]
    assert (
        cosines(fast.encode_queries(queries), real_encoder.encode_queries(queries)).min() >= 0.9999
    )


@pytest.mark.model
def test_it_describes_the_model_as_the_sentence_transformers_encoder_does(fast, real_encoder):
    assert isinstance(fast, Encoder)
    assert fast.backend == "torch" and fast.device == "cpu" and fast.precision == "fp32"
    for attribute in ("name", "dim", "max_tokens", "special_tokens", "query_prompt"):
        assert getattr(fast, attribute) == getattr(real_encoder, attribute)
    assert fast.token_spans(TEXTS[2]) == real_encoder.token_spans(TEXTS[2])
    assert fast.encode_documents([]).shape == (0, fast.dim)


@pytest.mark.model
def test_the_raw_tokenizer_gives_the_ids_of_the_model_s_own(fast):
    wrapper = fast._model.tokenizer(TEXTS, truncation=True, max_length=fast.max_tokens)
    raw = [e.ids for e in fast._encode_batch(TEXTS)]
    assert raw == wrapper["input_ids"]
    assert max(len(ids) for ids in raw) == fast.max_tokens == 256


@pytest.mark.model
def test_a_document_prompt_is_applied_as_sentence_transformers_applies_it(prompted):
    reference, fast = prompted
    assert fast.document_prompt == "passage: "
    assert cosines(fast.encode_documents(TEXTS), reference.encode_documents(TEXTS)).min() >= 0.9999


@pytest.mark.model
def test_a_pooling_that_excludes_the_prompt_excludes_the_same_tokens(prompted):
    reference, fast = prompted
    poolings = [m for enc in prompted for m in enc._model if hasattr(m, "include_prompt")]
    try:
        for pooling in poolings:
            pooling.include_prompt = False
        got, expected = fast.encode_documents(TEXTS), reference.encode_documents(TEXTS)
    finally:
        for pooling in poolings:
            pooling.include_prompt = True
    assert cosines(got, expected).min() >= 0.9999
    assert cosines(got, fast.encode_documents(TEXTS)).min() < 0.999  # the pooling did change


@pytest.mark.model
def test_many_windows_and_tiny_batches_give_the_same_vectors(fast, monkeypatch):
    texts = [f"{i} {TEXTS[i % len(TEXTS)]}" for i in range(20)]
    expected = fast.encode_documents(texts)
    monkeypatch.setattr(torch_backend, "FIRST_WINDOW", 3)
    monkeypatch.setattr(torch_backend, "WINDOW", 7)
    monkeypatch.setattr(fast, "token_budget", 300)  # one long row alone, short ones together
    assert cosines(fast.encode_documents(texts), expected).min() >= 0.9999
    monkeypatch.setattr(fast, "token_budget", 20_000)  # more than its buffers hold: new ones
    assert cosines(fast.encode_documents(texts), expected).min() >= 0.9999


# -- batch planning -------------------------------------------------------------------


def check_plan(lengths: list[int], budget: int) -> list[np.ndarray]:
    batches = plan_batches(lengths, budget)
    flat = np.concatenate(batches) if batches else np.array([], dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    ordered = [lengths[i] for i in flat]
    assert ordered == sorted(lengths, reverse=True)
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= budget or len(batch) == 1
    return batches


@given(st.lists(st.integers(1, 600), max_size=300), st.integers(1, 5000))
def test_every_text_is_in_one_batch_within_the_budget_longest_first(lengths, budget):
    check_plan(lengths, budget)


def test_a_row_over_the_budget_is_a_batch_alone():
    batches = check_plan([10, 300, 10, 10, 100, 100], budget=200)
    assert [b.tolist() for b in batches] == [[1], [4, 5], [0, 2, 3]]
    assert plan_batches([], 100) == []
    with pytest.raises(BadInputError, match="token budget"):
        plan_batches([3], 0)


# -- device and precision -------------------------------------------------------------


@pytest.mark.model
def test_auto_is_the_cpu_here_and_cuda_is_refused_in_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a GPU machine too
    assert torch_backend.resolve_device("auto") == torch_backend.resolve_device(None) == "cpu"
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ModelError, match="no CUDA GPU") as caught:
            TorchEncoder(device=device)
        assert "\n" not in str(caught.value)
    with pytest.raises(ModelError, match="unknown torch device"):
        TorchEncoder(device="toaster")
    with pytest.raises(BadInputError, match="unknown precision"):
        TorchEncoder(device="cpu", precision="fp8")


@pytest.mark.model
def test_fp16_on_cpu_passes_its_check(fast):
    half = TorchEncoder(device="cpu", precision="fp16")
    assert half.precision == "fp16"
    assert half.fp16_min_cosine is not None and half.fp16_min_cosine >= FP16_MIN_COSINE
    assert str(next(half._half.parameters()).dtype) == "torch.float16"
    assert str(next(half._model.parameters()).dtype) == "torch.float32"  # what exports
    assert min_cosine(half.encode_documents(TEXTS), fast.encode_documents(TEXTS)) >= 0.999


@pytest.mark.model
def test_fp16_too_far_from_fp32_warns_and_stays_fp32(fast, monkeypatch):
    forward = TorchEncoder._forward

    def noisy(self: TorchEncoder, model: Any, features: dict[str, Any]) -> Any:
        import torch

        vectors = forward(self, model, features)
        if next(model.parameters()).dtype == torch.float16:
            vectors = vectors + 0.1 * torch.randn_like(vectors)
        return vectors

    monkeypatch.setattr(TorchEncoder, "_forward", noisy)
    half = TorchEncoder(device="cpu", precision="fp16")
    with pytest.warns(UserWarning, match="too far from fp32.*embedding in fp32"):
        assert half.precision == "fp32"
    assert half.fp16_min_cosine is not None and half.fp16_min_cosine < FP16_MIN_COSINE
    assert str(next(half._model.parameters()).dtype) == "torch.float32"
    assert cosines(half.encode_documents(TEXTS), fast.encode_documents(TEXTS)).min() >= 0.9999


# -- the tokenising thread --------------------------------------------------------------


def run_with_timeout(fn: Any, seconds: float = 60) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=seconds)


def tokenising_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("semsearch-")]


@pytest.fixture
def many_windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    monkeypatch.setattr(torch_backend, "FIRST_WINDOW", 2)
    monkeypatch.setattr(torch_backend, "WINDOW", 2)
    yield [f"text number {i}" for i in range(12)]
    assert not tokenising_threads()


@pytest.mark.model
def test_a_tokenizer_error_reaches_the_caller_rather_than_hanging(fast, monkeypatch, many_windows):
    calls = []
    encode_batch = fast._encode_batch

    def failing(texts: list[str]) -> Any:
        calls.append(len(texts))
        if len(calls) == 3:  # after two windows went to the model
            raise RuntimeError("tokenizer exploded")
        return encode_batch(texts)

    monkeypatch.setattr(fast, "_encode_batch", failing)
    with pytest.raises(RuntimeError, match="tokenizer exploded"):
        run_with_timeout(lambda: fast.encode_documents(many_windows))


@pytest.mark.model
def test_a_model_error_stops_the_tokenising_thread(fast, monkeypatch, many_windows):
    def failing(self: TorchEncoder, model: Any, features: dict[str, Any]) -> Any:
        raise ValueError("forward failed")

    monkeypatch.setattr(TorchEncoder, "_forward", failing)
    with pytest.raises(ValueError, match="forward failed"):
        run_with_timeout(lambda: fast.encode_documents(many_windows))


def test_importing_the_module_imports_no_torch():
    code = (
        "import sys, semsearch.torch_backend; "
        "assert not {'torch', 'tokenizers', 'sentence_transformers'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
