"""The index folder's ``manifest.json`` and the names of the folder's files.

The manifest says what the index is and how to read it. It is written last
and atomically (temporary file, fsync, rename), so a folder with a readable
manifest holds a complete index. :func:`read_manifest` refuses formats it
does not know.

The folder's files are named here and nowhere else: ``manifest.json``,
``store.sqlite`` (with SQLite's ``-wal``, ``-shm`` and ``-journal``) and the
segments' ``segment.<id>.faiss`` and ``segment.<id>.keys.npy`` (with
``segment.<id>.npy``, the exact vectors, beside a compressed type; see
:mod:`semsearch.segments`). Indexes of format 3
had one ``vectors.<generation>.faiss`` per generation instead.
The writer lock (``write.lock``, :mod:`semsearch.lock`) and the ONNX export
(``onnx/``, :mod:`semsearch.onnx_backend`) are named by their own modules.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import IncompatibleIndexError, IndexNotFoundError, damaged

# 2: prompts in the model section; the store gained its keyword index (schema 2).
# 3: the model section records the ONNX export used for queries.
# 4: segments: vectors in immutable segment files, stored once (store schema 5).
FORMAT_VERSION = 4
MANIFEST = "manifest.json"
VECTORS_FILE = "vectors.faiss"
STORE_FILE = "store.sqlite"
_VECTORS_GLOB = "vectors.*.faiss"
_SEGMENT_GLOB = "segment.*"
_QUANTIZER_GLOB = "quantizer.*.faiss"
# Manifests spell the torch build backend "sentence-transformers" (formats 1-3,
# which older semsearch reads); in memory it is Backend.TORCH like everywhere else.
_RECORDED_TORCH = "sentence-transformers"


@dataclass
class ModelInfo:
    name: str
    dim: int
    max_tokens: int
    special_tokens: int
    backend: str
    """What embedded the articles: a :class:`semsearch.config.Backend` value."""
    normalized: bool = True
    fingerprint: list[float] = field(default_factory=list)
    query_prompt: str = ""
    document_prompt: str = ""
    onnx: dict[str, Any] | None = None
    """The torch-free export in the folder's ``onnx/`` (settings, cache key), if any."""


@dataclass
class ChunkerInfo:
    overlap_tokens: int
    chunk_tokens: int | None
    title_prefix: bool = True
    max_title_tokens: int = 64


@dataclass
class VectorsInfo:
    index_type: str
    faiss_factory: str
    metric: str = "inner_product"
    file: str = ""
    """Format 3: the generation's FAISS file; empty since segments."""
    generation: int = 0
    segments: int = 0
    memory_budget: int = 0
    """Bytes the index's vectors may take in memory (0: a share of the machine's
    memory, decided at each write; see :func:`semsearch.config.default_memory_budget`)."""
    recall_target: float = 0.95
    """Recall@10 against exact search that compressed segments are tuned to."""
    tuning: dict[str, Any] = field(default_factory=dict)
    """The largest compressed segment's tuned settings and measured recall
    (:meth:`semsearch.tuning.Tuning.to_dict`); empty without one."""


@dataclass
class Manifest:
    """The parsed manifest. ``counts`` are ``{"articles": n, "chunks": m}``."""

    model: ModelInfo
    chunker: ChunkerInfo
    vectors: VectorsInfo
    counts: dict[str, int]
    created_at: str
    updated_at: str
    semsearch_version: str
    library_versions: dict[str, str] = field(default_factory=dict)
    store_file: str = STORE_FILE
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["model"]["backend"] == "torch":
            data["model"]["backend"] = _RECORDED_TORCH
        return data


def manifest_path(folder: Path) -> Path:
    return folder / MANIFEST


def vectors_file(generation: int) -> str:
    """The name of a generation's FAISS file."""
    return f"vectors.{generation}.faiss"


def segment_file(segment: int, suffix: str = ".faiss") -> str:
    """The name of a segment's FAISS file (``.faiss``) or exact vectors (``.npy``)."""
    return f"segment.{segment}{suffix}"


def quantizer_file(generation: int) -> str:
    """The file of the shared trained quantizer a generation trained (an empty FAISS index)."""
    return f"quantizer.{generation}.faiss"


# A segment's keyword postings (semsearch.impacts): terms, postings, chunk lengths, and
# each term's bound on its BM25 tf part (a segment written before bounds has none).
KEYWORD_TERMS = ".kw-terms.npy"
KEYWORD_POSTINGS = ".kw-postings.npy"
KEYWORD_DOCS = ".kw-docs.npy"
KEYWORD_BOUNDS = ".kw-bounds.npy"
KEYWORD_SUFFIXES = (KEYWORD_TERMS, KEYWORD_POSTINGS, KEYWORD_DOCS, KEYWORD_BOUNDS)


def segment_of(path: Path) -> int | None:
    """The segment id a file name belongs to, or None if it is no segment file."""
    parts = path.name.split(".")
    if len(parts) >= 3 and parts[0] == "segment" and parts[1].isdigit():
        return int(parts[1])
    return None


def legacy_vector_files(folder: Path) -> list[Path]:
    """Format 3's per-generation FAISS files in the folder, sorted."""
    return sorted(folder.glob(_VECTORS_GLOB))


def vector_files(folder: Path) -> list[Path]:
    """Every segment file (vectors, keys) and format-3 vector file in the folder,
    live or left by a crash."""
    segments = [p for p in folder.glob(_SEGMENT_GLOB) if segment_of(p) is not None]
    quantizers = sorted(folder.glob(_QUANTIZER_GLOB))
    return sorted(segments) + quantizers + legacy_vector_files(folder)


def store_files(store_file: str = STORE_FILE) -> tuple[str, ...]:
    """The SQLite database's file names: the database and its journals."""
    return tuple(store_file + suffix for suffix in ("", "-wal", "-shm", "-journal"))


def read_manifest(folder: Path) -> Manifest:
    """Read and check the manifest of the index in ``folder``.

    Raises:
        IndexNotFoundError: if the folder holds no index.
        IncompatibleIndexError: if the manifest is damaged or of a newer format.
    """
    path = manifest_path(folder)
    if not path.exists():
        raise IndexNotFoundError(f"no index at {folder} — run `semsearch index PATH` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(path, str(e)) from None
    if not isinstance(data, dict):
        raise damaged(path, "not a JSON object")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise IncompatibleIndexError(f"{path} has no format version; it is not a semsearch index")
    if version > FORMAT_VERSION:
        raise IncompatibleIndexError(
            f"the index at {folder} has format {version}, newer than this semsearch reads "
            f"({FORMAT_VERSION}); upgrade semsearch"
        )
    try:
        return Manifest(
            model=_model_info(data["model"]),
            chunker=ChunkerInfo(**data["chunker"]),
            vectors=VectorsInfo(**data["vectors"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            semsearch_version=data["semsearch_version"],
            library_versions=data.get("library_versions", {}),
            store_file=data.get("store_file", STORE_FILE),
            format_version=version,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise damaged(path, f"missing or bad field {e}") from None


def _model_info(data: dict[str, Any]) -> ModelInfo:
    model = ModelInfo(**data)
    if model.backend == _RECORDED_TORCH:
        model.backend = "torch"
    return model


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest atomically: whole new file, flushed, renamed over the old."""
    path = manifest_path(folder)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest.to_dict(), f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
