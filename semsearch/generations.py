"""Generations of the vector file, and how readers and writers agree on one.

Every write makes a new generation: ``vectors.<n+1>.faiss`` is written and
flushed beside ``vectors.<n>.faiss``, then one SQLite transaction records
``generation = n+1`` with the new file's size and CRC-32. That commit is the
switch: before it, the index is generation n in full; after it, n+1 in full.
The old file is deleted afterwards, and any file no commit names (left by a
crash) is deleted by the next writer.

A reader reads the generation and the SQLite rows it searches inside one read
transaction (a snapshot), so it never mixes two generations. If the file its
snapshot names is already gone (a writer switched and cleaned up in between),
it takes a new snapshot and loads the newer file.
"""

from __future__ import annotations

import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import IncompatibleIndexError
from .store import Store
from .vectors import VectorIndex

GENERATION = "generation"
FACTORY = "faiss_factory"
CHECKSUM = "faiss_file"
_ATTEMPTS = 20


def vectors_file(generation: int) -> str:
    return f"vectors.{generation}.faiss"


def file_checksum(path: Path) -> dict[str, int]:
    """Size and CRC-32 of a file (CRC-32 reads about 1 GB/s: 15 ms for SciFact's)."""
    with open(path, "rb") as f:
        return {"size": os.fstat(f.fileno()).st_size, "crc32": _crc32(f)}


@dataclass(frozen=True)
class Generation:
    """A committed generation: its number and its loaded vector index."""

    number: int
    vectors: VectorIndex


def load(folder: Path, store: Store, dim: int) -> Generation:
    """The committed generation's vectors, checked against what the commit recorded.

    Raises:
        IncompatibleIndexError: if the commit record or the file is missing or damaged,
            or the file does not hold one vector per chunk.
    """
    for _ in range(_ATTEMPTS):
        with store.snapshot():
            number = store.meta(GENERATION)
            factory = store.meta(FACTORY)
            recorded = store.meta(CHECKSUM)
            if number is None or factory is None:
                raise IncompatibleIndexError(f"{store.path} has no commit record; it is damaged")
            path = folder / vectors_file(int(number))
            try:
                # Opened once: checked and read through the same open file, which
                # stays readable even if a writer deletes the path meanwhile.
                file = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue  # a writer switched generations and removed it: look again
            with file:
                _check_file(path, file, recorded)
                vectors = VectorIndex.read(path, str(factory), file)
            n_chunks = store.counts()[1]
        if vectors.ntotal != n_chunks or vectors.dim != dim:
            raise IncompatibleIndexError(
                f"the index at {folder} is inconsistent: {path.name} holds {vectors.ntotal} "
                f"vectors of dimension {vectors.dim} for {n_chunks} chunks of dimension {dim}; "
                "run `semsearch verify`, or rebuild it"
            )
        return Generation(int(number), vectors)
    raise IncompatibleIndexError(
        f"{folder / vectors_file(int(number))} is missing; the index is incomplete"
    )


def _check_file(path: Path, file: BinaryIO, recorded: dict[str, int] | None) -> None:
    """Compare an open file with its commit record, then rewind it."""
    if recorded is None:  # written before checksums were recorded
        return
    size = os.fstat(file.fileno()).st_size
    if size != recorded["size"]:
        raise IncompatibleIndexError(
            f"{path} is damaged: {size} bytes, but {recorded['size']} were committed"
        )
    if _crc32(file) != recorded["crc32"]:
        raise IncompatibleIndexError(f"{path} is damaged: its checksum does not match the commit")
    file.seek(0)


def _crc32(file: BinaryIO) -> int:
    crc = 0
    while block := file.read(1 << 20):
        crc = zlib.crc32(block, crc)
    return crc


def remove_leftovers(folder: Path, committed: int) -> list[str]:
    """Delete vector files of other generations (crashed or finished writes).

    Only a writer holding the lock may call this: any other writer could be
    between writing its new file and committing it.
    """
    removed = []
    for path in folder.glob("vectors.*.faiss"):
        if path.name != vectors_file(committed):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    for path in folder.glob("*.tmp"):
        # An older semsearch left its half-made ONNX export as a folder, onnx.tmp.
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed
