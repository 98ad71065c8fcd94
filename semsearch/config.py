"""Defaults, in one place, and the environment variables semsearch reads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_INDEX_DIR = Path("indexes") / "default"
DEFAULT_K = 10
# Overlap between consecutive chunks of one article, in tokens. Chunks break at
# sentence boundaries, so the overlap is the whole sentences that fit in it.
DEFAULT_OVERLAP_TOKENS = 32
DEFAULT_BATCH_SIZE = 32
# "auto" index type: exact inner product up to this many vectors, HNSW above.
# Exact search over 100k x 384 floats is still a few ms per query on 2 cores.
HNSW_THRESHOLD = 100_000
HNSW_FACTORY = "HNSW32"
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
# "auto" above the exact range: HNSW while its whole graph and vectors fit the
# memory budget, a compressed IVF index (4-bit PQ fast-scan codes, re-ranked
# with the exact vectors on disk) beyond. HNSW32 costs the float32 vector, 2 x 32
# neighbour ids at level 0, the id map, and FAISS's level bookkeeping.
HNSW_OVERHEAD_BYTES = 2 * 32 * 4 + 8 + 24
MEMORY_SHARE = 0.25
"""The default memory budget: this share of the machine's physical memory."""
RECALL_TARGET = 0.95
"""Default recall@10 against exact search that tuning must reach."""
TUNING_QUERIES = 500
"""Held-out vectors a compressed segment is tuned on (fewer in a smaller segment)."""
SMALL_SEGMENT = 20_000
"""A segment smaller than this is written flat (exact) even where the index as a
whole is HNSW or compressed: exact search over it costs about a millisecond.
Bigger segments of an index past the exact range take the index's type (a
write of many 65k-chunk windows made as many flat segments, 3-4 ms each)."""


@dataclass(frozen=True)
class MergePolicy:
    """When a write merges segments: tiered, after Lucene's ``TieredMergePolicy``.

    Segments are grouped in tiers by live size (tier ``t`` holds
    ``segments_per_tier ** t`` to ``segments_per_tier ** (t+1)`` chunks, every
    segment under ``floor_chunks`` in the lowest); when a tier holds
    ``segments_per_tier`` segments, a write merges them into one of the next
    tier. So each chunk is rewritten about ``log(N) / log(segments_per_tier)``
    times in its life, and a search never covers more than about
    ``segments_per_tier`` segments per tier. A segment whose tombstones pass
    ``max_tombstone_share`` of its vectors is rewritten without them.

    Attributes:
        segments_per_tier: how many similar-sized segments trigger a merge (>= 2).
        floor_chunks: segments smaller than this count as this size (chunks).
        max_merge_chunks: a write never merges more live chunks than this at once,
            so its work stays bounded; :meth:`semsearch.Index.optimize` has no bound.
        max_tombstone_share: a segment with more tombstones than this share is expunged.
        in_writes: merge inside writes at all (``False``: only ``optimize`` merges).
    """

    segments_per_tier: int = 10
    floor_chunks: int = 1_000
    max_merge_chunks: int = 2_000_000
    max_tombstone_share: float = 0.3
    in_writes: bool = True

    def __post_init__(self) -> None:
        """Raises BadInputError for a setting out of its range, naming it."""
        from .errors import BadInputError

        ranges = {
            "segments_per_tier": (self.segments_per_tier, 2, "at least 2"),
            "floor_chunks": (self.floor_chunks, 1, "at least 1"),
            "max_merge_chunks": (self.max_merge_chunks, 1, "at least 1"),
        }
        for name, (value, low, wanted) in ranges.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise BadInputError(f"MergePolicy({name}={value!r}): must be an integer {wanted}")
        share = self.max_tombstone_share
        if not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise BadInputError(
                f"MergePolicy(max_tombstone_share={share!r}): must be a share in (0, 1]"
            )


_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}  # fmt: skip


def parse_bytes(value: str | int) -> int:
    """A size in bytes from ``2GB``, ``512MiB``, ``1.5g`` or a number of bytes.

    Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB,
    GiB, TiB) powers of 1024, as IEC 80000-13 has it.

    Raises:
        BadInputError: naming the value, if it is not a positive size.
    """
    from .errors import BadInputError

    if isinstance(value, bool):
        raise BadInputError(f"memory budget {value!r}: not a size")
    if isinstance(value, int):
        size = value
    else:
        text = str(value).strip().lower().replace(" ", "")
        number = text.rstrip("kmgtib")
        unit = text[len(number) :]
        try:
            size = int(float(number) * _UNITS[unit])
        except (KeyError, ValueError):
            raise BadInputError(
                f"memory budget {value!r}: not a size (write e.g. 2GB, 512MiB or 1000000000)"
            ) from None
    if size <= 0:
        raise BadInputError(f"memory budget {value!r}: must be more than 0 bytes")
    return size


def default_memory_budget() -> int:
    """:data:`MEMORY_SHARE` of this machine's physical memory, in bytes."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(total * MEMORY_SHARE)


ENV_INDEX = "SEMSEARCH_INDEX"
ENV_MODEL = "SEMSEARCH_MODEL"
ENV_DEBUG = "SEMSEARCH_DEBUG"
ENV_BACKEND = "SEMSEARCH_BACKEND"
ENV_CACHE = "SEMSEARCH_CACHE"


class Backend(str, Enum):
    """What runs the model: one vocabulary for building an index and for its queries.

    ``torch`` is sentence-transformers on PyTorch, the reference. ``onnx`` is
    the model exported to ONNX and run by ONNX Runtime: the same vectors
    (cosine 1.0000 on every SciFact chunk, ``benchmarks/backends.py``), no
    torch imported. ``onnx-int8`` is that export dynamically quantised to
    int8 for this CPU. ``gpu`` builds with the torch model on a CUDA GPU, fed
    by the fast path (:class:`semsearch.torch_backend.TorchEncoder`: fp16
    checked against fp32); the manifest records it as ``torch``, the model it
    runs. ``auto`` chooses: for a build, ``gpu`` where torch sees a CUDA GPU,
    else ``onnx`` where the model exports (else ``torch``, with a warning
    saying why); for queries, ONNX Runtime when the index has an export, else
    sentence-transformers.
    """

    AUTO = "auto"
    TORCH = "torch"
    ONNX = "onnx"
    ONNX_INT8 = "onnx-int8"
    GPU = "gpu"

    def __str__(self) -> str:
        return self.value


BUILD_BACKENDS = (Backend.AUTO, Backend.TORCH, Backend.ONNX, Backend.ONNX_INT8, Backend.GPU)
"""What may embed an index's articles (``Index.create(build_backend=)``)."""
QUERY_BACKENDS = (Backend.AUTO, Backend.ONNX, Backend.TORCH)
"""What may embed its queries (``Index.open(query_backend=)``); an int8 index's
export is int8, so ``onnx`` there runs the int8 model."""


class IndexType(str, Enum):
    """Named vector index choices; any other value is taken as a FAISS factory string."""

    AUTO = "auto"
    FLAT = "flat"
    HNSW = "hnsw"


@dataclass(frozen=True)
class Environment:
    """The settings semsearch takes from the environment."""

    index_dir: Path
    model: str
    debug: bool
    backend: str
    cache_dir: Path


def environment() -> Environment:
    """Read every environment variable semsearch uses, with its default."""
    return Environment(
        index_dir=Path(os.environ.get(ENV_INDEX) or DEFAULT_INDEX_DIR),
        model=os.environ.get(ENV_MODEL) or DEFAULT_MODEL,
        debug=os.environ.get(ENV_DEBUG, "") not in ("", "0", "false", "no"),
        backend=os.environ.get(ENV_BACKEND) or "auto",
        cache_dir=Path(os.environ.get(ENV_CACHE) or "~/.cache/semsearch").expanduser(),
    )


def canonical_model_name(name: str) -> str:
    """Spell a model the way the manifest records it.

    Bare sentence-transformers names get their organisation, as
    sentence-transformers itself does; local paths become absolute.
    """
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if "/" not in name:
        return f"sentence-transformers/{name}"
    return name
