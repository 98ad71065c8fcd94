"""A torch-free encoder: ONNX Runtime and the ``tokenizers`` library.

Queries are where latency matters, and importing sentence-transformers means
importing torch and transformers: seconds before the first query is read.
:func:`export` turns a sentence-transformers model's transformer into an ONNX
file once, at build time (torch is there then), and copies what the query
side needs beside it: the fast tokenizer, and the pooling, truncation and
normalisation settings read from the model folder's sentence-transformers
configuration (nothing is hard-coded for one model). :class:`OnnxEncoder`
then embeds with ``onnxruntime`` and ``tokenizers`` only, giving the same
vectors (cosine 1.0 to sentence-transformers' on the sample corpus; tested).

Why these libraries: ONNX Runtime is the well-kept CPU inference engine with
the operator fusions BERT-style models need, and ``tokenizers`` is the same
Rust tokenizer sentence-transformers uses, so tokenisation is identical.
The export itself is ``torch.onnx.export`` of the Hugging Face model: optimum
would do it too, but adds a dependency for one call.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .config import DEFAULT_BATCH_SIZE, Backend
from .errors import MissingDependencyError, ModelError

FOLDER = "onnx"
"""The index folder's subfolder holding its export; named here and nowhere else."""
MODEL_FILE = "model.onnx"
SETTINGS_FILE = "encoder.json"
TOKENIZER_FILE = "tokenizer.json"
OPSET = 17
EXPORT_VERSION = 2  # what export() writes; part of the cache key
OPTIMIZED_FILE = "model.optimized.onnx"
RAW_FILE = "model.raw.onnx"
WEIGHTS_FILE = "model.data"
_PROVIDER = "CPUExecutionProvider"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def install(
    model: Any,
    folder: Path,
    name: str,
    identity: str,
    prompts: tuple[str, str],
    cache: Path,
    quantize: bool = False,
) -> dict[str, Any]:
    """Give an index folder ``onnx/``: the model's export (made once per machine, cached).

    The export is cached under ``cache/onnx/<key>``, the key a hash of the
    model's identity (name and vector fingerprint), the exporter's settings and
    the torch version; the index gets a copy of it and its own
    ``encoder.json`` with the prompts. With ``quantize``, the cached model is
    the int8 one for this CPU (see :func:`quantization_config`). Returns the
    settings, recorded in the manifest.
    """
    import torch

    recipe = f"{identity}|export={EXPORT_VERSION}|opset={OPSET}|torch={torch.__version__}"
    key = hashlib.sha256(recipe.encode()).hexdigest()
    cached = cache / "onnx" / key[:20]
    with _cache_lock(cached):
        if not (cached / SETTINGS_FILE).exists():
            export(model, cached, name)
    if quantize:
        config = quantization_config()
        suffix = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
        quantized = cached.with_name(f"{cached.name}-int8-{suffix}")
        with _cache_lock(quantized):
            if not (quantized / SETTINGS_FILE).exists():
                try:
                    _quantize(cached, quantized, config)
                except Exception as e:  # onnx and ORT raise their own types
                    raise ModelError(f"cannot quantise {name!r}: {e}") from None
        cached = quantized
    settings = {**json.loads((cached / SETTINGS_FILE).read_text()), "cache_key": cached.name}
    settings.update(query_prompt=prompts[0], document_prompt=prompts[1])
    # The caller holds the index's writer lock: what is left of earlier installs is
    # a crashed one's (the temporary names are unique all the same).
    for pattern in (".tmp*", ".old-*"):
        for leftover in folder.parent.glob(folder.name + pattern):
            shutil.rmtree(leftover, ignore_errors=True)
    tmp = _temporary_folder(folder)
    for file in (MODEL_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
        # A copy, not a hard link: onnx refuses external data with several links.
        if (cached / file).exists():
            shutil.copyfile(cached / file, tmp / file)
    (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    _publish(tmp, folder)
    return settings


def quantization_config() -> dict[str, Any]:
    """Dynamic int8 settings for this CPU, as ONNX Runtime's documentation advises.

    With VNNI (x86 AVX512-VNNI or AVX-VNNI) or on ARM64, signed 8-bit weights at
    full range; on x86 without VNNI, reduced range (7 bits), which avoids the
    saturation of AVX2's 8-bit multiply-add. Weights per output channel and
    only MatMuls: per-tensor weights moved SciFact abstracts' vectors much
    further from fp32 in trials (benchmarks/backends.py measures the result).
    """
    import platform

    machine = platform.machine().lower()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    arm = machine in ("aarch64", "arm64")
    vnni = bool(flags & {"avx512_vnni", "avx_vnni"})
    return {
        "cpu": "arm64" if arm else "avx512-vnni" if vnni else "avx2" if "avx2" in flags else "x86",
        "weight_type": "QInt8",
        "reduce_range": not (arm or vnni),
        "per_channel": True,
        "op_types": ["MatMul"],
    }


def _quantize(source: Path, target: Path, config: dict[str, Any]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _temporary_folder(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # its advice to pre-process, on the root logger
        try:
            quantize_dynamic(
                str(source / RAW_FILE),
                str(tmp / RAW_FILE),
                weight_type=getattr(QuantType, config["weight_type"]),
                reduce_range=config["reduce_range"],
                per_channel=config["per_channel"],
                op_types_to_quantize=config["op_types"],
            )
        finally:
            logging.disable(logging.NOTSET)
    _optimise(tmp / RAW_FILE, tmp / MODEL_FILE, external=False)
    shutil.copyfile(source / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
    settings = json.loads((source / SETTINGS_FILE).read_text())
    settings["quantization"] = config
    (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    _publish(tmp, target)


def _optimise(source: Path, target: Path, external: bool) -> None:
    """ONNX Runtime's graph fusions (attention, GELU, layer norm), done once, saved."""
    import onnx
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target.with_name(OPTIMIZED_FILE))
    onnxruntime.InferenceSession(str(source), options, providers=[_PROVIDER])
    if not external:
        os.replace(target.with_name(OPTIMIZED_FILE), target)
        return
    # Weights in a file of their own, which ONNX Runtime maps into memory rather
    # than copying: a query process holds 53 MB for them instead of 124 MB.
    optimized = onnx.load(str(target.with_name(OPTIMIZED_FILE)))
    target.with_name(OPTIMIZED_FILE).unlink()
    onnx.save_model(
        optimized,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=WEIGHTS_FILE,
        size_threshold=1024,
    )


def export(model: Any, folder: Path, name: str) -> dict[str, Any]:
    """Export a loaded sentence-transformers model for :class:`OnnxEncoder`.

    Reads the pooling mode, maximum length and tokenizer from the model
    itself; writes ``model.onnx``, ``tokenizer.json`` and ``encoder.json`` into
    ``folder`` (through a temporary folder renamed into place) and returns the
    settings written.

    Raises:
        ModelError: if the model is not transformer → pooling (→ normalize).
    """
    import torch

    kinds = [type(m).__name__ for m in model]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise ModelError(f"cannot export {name!r} to ONNX: modules {kinds}")
    pooling = str(model[1].get_config_dict().get("pooling_mode", "mean"))
    if pooling not in ("mean", "cls", "max"):
        raise ModelError(f"cannot export {name!r} to ONNX: pooling {pooling!r}")
    transformer = model[0].auto_model.eval()
    settings: dict[str, Any] = {
        "model": name,
        "dim": int(
            getattr(model, "get_embedding_dimension", model.get_sentence_embedding_dimension)()
        ),
        "max_seq_length": int(model.max_seq_length),
        "pooling": pooling,
        "normalize": True,
        "opset": OPSET,
        "torch": torch.__version__,
    }
    accepted = set(inspect.signature(transformer.forward).parameters)
    inputs = [i for i in _INPUTS if i in accepted]
    settings["inputs"] = inputs

    class _Transformer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = transformer

        def forward(self, *values: Any) -> Any:
            return self.model(**dict(zip(inputs, values, strict=True)))[0]

    example = tuple(torch.ones((1, 8), dtype=torch.long) for _ in inputs)
    tmp = _temporary_folder(folder)
    axes = {n: {0: "batch", 1: "tokens"} for n in [*inputs, "hidden"]}
    attention = getattr(transformer.config, "_attn_implementation", None)
    try:
        # The eager attention traces to plain ONNX operators; SDPA may not.
        transformer.config._attn_implementation = "eager"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Transformer(),
                example,
                str(tmp / MODEL_FILE),
                input_names=inputs,
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"cannot export {name!r} to ONNX: {e}") from None
    finally:
        transformer.config._attn_implementation = attention
    # The raw export stays in the cache: quantisation works on it, not on the
    # fused graph (whose contrib operators its shape inference cannot type).
    os.replace(tmp / MODEL_FILE, tmp / RAW_FILE)
    _optimise(tmp / RAW_FILE, tmp / MODEL_FILE, external=True)
    settings["optimized"] = "extended"
    (tmp / TOKENIZER_FILE).write_text(model.tokenizer.backend_tokenizer.to_str())
    (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    _publish(tmp, folder)
    return settings


def _temporary_folder(target: Path) -> Path:
    """A new, empty folder beside ``target``, named for this process alone."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    # mkdtemp makes it 0700; the published folder is read like the index's other
    # files (0777 less the umask), e.g. by a server running as another user.
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    return folder


def _publish(tmp: Path, target: Path) -> None:
    """Put a finished folder in place of ``target`` (whose readers keep their files).

    The old folder is renamed aside first, then removed: ``target`` is never
    half-written, and a failure between the two renames leaves no target, which
    the next export or install makes again.
    """
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    try:
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _cache_lock(entry: Path) -> Iterator[None]:
    """Hold ``<entry>.lock`` in the cache: one process makes an entry, others wait for it.

    An export takes seconds to minutes; two processes making the same one would
    race on its files. A waiting process finds the entry made and uses it. The
    kernel drops the lock if its holder dies; what a dead holder left half-made
    is a ``.tmp-*`` folder, removed here before a new attempt.
    """
    import fcntl

    entry.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(entry.with_name(entry.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not (entry / SETTINGS_FILE).exists():
            for leftover in entry.parent.glob(entry.name + ".tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        yield
    finally:
        os.close(fd)


class OnnxEncoder:
    """An encoder over an exported model folder: ``onnxruntime`` + ``tokenizers``, no torch.

    Raises:
        MissingDependencyError: if onnxruntime or tokenizers is not installed.
        ModelError: if the folder is not an export of :func:`export`.
    """

    backend = Backend.ONNX.value
    """``onnx``; ``onnx-int8`` for a quantised export."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        """``threads``: ONNX Runtime's intra-op threads (None: one per core), e.g. the
        CPUs a distributed build's worker was given."""
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MissingDependencyError(
                f"the ONNX backend needs {e.name}: pip install onnxruntime tokenizers"
            ) from None
        try:
            settings = json.loads((folder / SETTINGS_FILE).read_text())
            tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            # Idle pool threads sleep rather than spin: a spinning thread holds a
            # core after run() returns, which SQLite, FAISS and other processes
            # then wait for. Semantic SciFact queries on 2 busy cores: p50 20.6
            # ms spinning off, 29.5 on (interleaved, same index); same vectors.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if threads is not None:
                options.intra_op_num_threads = threads
            if settings.get("optimized"):  # fused at export: nothing left to do
                options.graph_optimization_level = (
                    onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
                )
            self._session = onnxruntime.InferenceSession(
                str(folder / MODEL_FILE), options, providers=[_PROVIDER]
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"cannot load the ONNX model in {folder}: {e}") from None
        self.settings = settings
        if settings.get("quantization"):
            self.backend = Backend.ONNX_INT8.value
        self.name: str = settings["model"]
        self.dim: int = int(settings["dim"])
        self.max_tokens: int = int(settings["max_seq_length"])
        self.query_prompt: str = settings.get("query_prompt", "")
        self.document_prompt: str = settings.get("document_prompt", "")
        self._inputs: list[str] = settings["inputs"]
        self._pooling: str = settings["pooling"]
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._plain = tokenizer  # for offsets: no special tokens, no truncation
        self.special_tokens = len(tokenizer.encode("", add_special_tokens=True).ids)
        batched = Tokenizer.from_str(tokenizer.to_str())
        batched.enable_truncation(self.max_tokens)
        batched.enable_padding()
        self._tokenizer = batched

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [tuple(o) for o in self._plain.encode(text, add_special_tokens=False).offsets]  # type: ignore[misc]

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False
    ) -> np.ndarray:
        return self._encode([self.document_prompt + t for t in texts], batch_size)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.query_prompt + t for t in texts], DEFAULT_BATCH_SIZE)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Longest first, in batches of similar length: little padding to compute.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            encoded = self._tokenizer.encode_batch([texts[i] for i in rows])
            arrays = {
                "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
            }
            hidden = self._session.run(None, {n: arrays[n] for n in self._inputs})[0]
            out[rows] = _pool(hidden, arrays["attention_mask"], self._pooling)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out / np.where(norms == 0, 1, norms), dtype=np.float32)


def _pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    if mode == "cls":
        return hidden[:, 0]
    weights = mask[..., None].astype(hidden.dtype)
    if mode == "max":
        return np.where(weights > 0, hidden, -1e9).max(axis=1)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
