"""Check that an index folder's parts agree: manifest, SQLite, FTS5 and the segments.

:func:`verify` reads everything without the writer lock, inside one SQLite
snapshot, and reports every disagreement it finds rather than stopping at
the first, so that a pipeline can log what is wrong before rebuilding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .commit import (
    CHECKSUM,
    FACTORY,
    GENERATION,
    LAYOUT,
    QUANTIZER,
    SEGMENTS,
    Moved,
    file_checksum,
    retry,
)
from .errors import IncompatibleIndexError, SemsearchError
from .keywords import keyword_text
from .manifest import read_manifest, vector_files, vectors_file
from .migrations import CHUNK_TEXT_QUERY
from .segments import Segment, SegmentMissing, key_table, open_segment, sort_keys
from .store import SegmentRow, Store
from .vectors import VectorIndex

_BATCH = 100_000
"""Vectors read at once when checking them (about 150 MB at 384 dimensions)."""


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found. ``ok`` is true when ``problems`` is empty."""

    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def verify(folder: Path) -> VerifyReport:
    """Check the index in ``folder``; every problem found is in the report.

    Raises:
        IndexNotFoundError: if the folder holds no index at all.
    """
    return retry(
        lambda: _verify_once(folder),
        pause=0.01,
        give_up=lambda moved: VerifyReport(str(folder), problems=[str(moved)]),
    )


def _verify_once(folder: Path) -> VerifyReport:
    report = VerifyReport(str(folder))
    problems, notes, checked = report.problems, report.notes, report.checked
    try:
        manifest = read_manifest(folder)
    except SemsearchError as e:
        if "no index at" in str(e):
            raise
        problems.append(str(e))
        return report
    try:
        store = Store(folder / manifest.store_file)
    except SemsearchError as e:
        problems.append(str(e))
        return report
    try:
        _check_store(store, problems, checked)  # outside the snapshot: FTS5's check is a write
        if problems:
            return report
        live: set[str] = set()
        with store.snapshot():
            generation = store.meta(GENERATION)
            legacy = store.meta(LAYOUT) != SEGMENTS
            factory = store.meta(FACTORY)
            if generation is None or (legacy and factory is None):
                problems.append(f"{store.path} has no commit record")
                return report
            checked["generation"] = int(generation)
            if legacy:
                file = folder / vectors_file(int(generation))
                recorded = store.meta(CHECKSUM)
                _check_vectors(store, file, str(factory), recorded, manifest.model.dim, problems)
                live.add(file.name)
            else:
                rows = store.segments()
                checked["segments"] = len(rows)
                live.update(name for row in rows for name in row.files)
                _check_segments(folder, store, rows, manifest.model.dim, problems, checked)
                quantizer = store.meta(QUANTIZER)
                if quantizer:
                    live.add(quantizer["file"])
                    _check_quantizer(folder / quantizer["file"], quantizer, problems)
            _check_keyword_text(store, problems, checked)
            n_articles, n_chunks = store.counts()
            checked.update(articles=n_articles, chunks=n_chunks)
            if manifest.counts != {"articles": n_articles, "chunks": n_chunks}:
                notes.append(
                    f"manifest counts {manifest.counts} lag the store ({n_articles} articles, "
                    f"{n_chunks} chunks): a write was interrupted after its commit; the next "
                    "write rewrites the manifest"
                )
        for extra in vector_files(folder):
            if extra.name not in live:
                notes.append(
                    f"{extra.name} is left from an interrupted write or a merge; "
                    "the next write removes it"
                )
    except IncompatibleIndexError as e:  # the store found damage while reading
        problems.append(str(e))
    finally:
        store.close()
    return report


def _check_store(store: Store, problems: list[str], checked: dict[str, Any]) -> None:
    result = store.integrity_check()
    checked["sqlite_integrity"] = result[:5]
    if result != ["ok"]:
        problems.append(f"{store.path} fails SQLite's integrity check: {'; '.join(result[:3])}")
        return
    disagreement = store.keyword_index_problem()
    if disagreement is None:
        checked["keyword_index"] = "ok"
    else:
        problems.append(
            f"the keyword index disagrees with the chunks ({disagreement}); rebuild the index"
        )


def _check_keyword_text(store: Store, problems: list[str], checked: dict[str, Any]) -> None:
    """Is each chunk's and title's stored keyword text what its text derives now?

    FTS5's own check compares the index with the keyword text; this compares
    the keyword text with the stored text (an older derivation rule, another
    ICU dictionary, or a hand edit would make keyword search miss or mislead).
    """
    stale = [
        chunk_id
        for chunk_id, text, stored in store.execute(CHUNK_TEXT_QUERY)
        if stored != keyword_text(text)
    ]
    titles = store.execute("SELECT id, title, keyword_title FROM articles")
    stale_titles = [
        article_id
        for article_id, title, stored in titles
        if stored != (keyword_text(title) if title is not None else None)
    ]
    checked["keyword_text"] = "ok" if not stale and not stale_titles else "stale"
    if stale or stale_titles:
        first = f"chunk {stale[0]}" if stale else f"article {stale_titles[0]!r}"
        problems.append(
            f"the keyword text of {len(stale)} chunks and {len(stale_titles)} titles differs "
            f"from what their stored text gives (first: {first}): keyword search would miss "
            "them; re-index those articles or rebuild the index"
        )


def _check_vectors(
    store: Store,
    file: Path,
    factory: str,
    recorded: dict[str, int] | None,
    dim: int,
    problems: list[str],
) -> None:
    try:
        checksum = file_checksum(file)
    except FileNotFoundError:
        # Gone: damage, or a writer committed and cleaned up since the snapshot began.
        raise Moved(f"{file} is missing (the commit names it)") from None
    if recorded is not None and checksum != recorded:
        problems.append(f"{file} does not match the size and checksum its commit recorded")
        return
    try:
        vectors = VectorIndex.read(file, factory)
    except SemsearchError as e:
        problems.append(str(e))
        return
    ids, _, stored = store.all_vectors(dim)
    if vectors.dim != dim:
        problems.append(f"{file.name} holds vectors of dimension {vectors.dim}, not {dim}")
        return
    held = np.sort(vectors.ids())
    if len(held) != len(ids) or not np.array_equal(held, ids):
        missing = len(np.setdiff1d(ids, held))
        extra = len(np.setdiff1d(held, ids))
        problems.append(
            f"{file.name} holds {len(held)} vectors for {len(ids)} chunks "
            f"({missing} chunks without a vector, {extra} vectors without a chunk)"
        )
        return
    found = vectors.reconstruct(ids)
    if found is not None and not np.allclose(found, stored, atol=1e-5):
        bad = int((~np.isclose(found, stored, atol=1e-5).all(axis=1)).sum())
        problems.append(f"{file.name}: {bad} vectors differ from the chunks' stored vectors")


def _check_quantizer(path: Path, record: dict[str, Any], problems: list[str]) -> None:
    """The shared trained quantizer's file against its record."""
    try:
        checksum = file_checksum(path)
    except FileNotFoundError:
        problems.append(f"{path} is missing (the commit names it as the trained quantizer)")
        return
    if checksum != {"size": record.get("size"), "crc32": record.get("crc32")}:
        problems.append(f"{path} does not match the size and checksum its commit recorded")


def _check_segments(
    folder: Path,
    store: Store,
    rows: list[SegmentRow],
    dim: int,
    problems: list[str],
    checked: dict[str, Any],
) -> None:
    """Each segment's files against their record (size and CRC-32), then ids and vectors.

    Every chunk must be live in exactly one segment; every tombstone must
    name a vector of its segment whose chunk is gone; every vector must be
    finite and of unit length (they are normalised when embedded).
    """
    chunk_ids = store.all_chunk_ids()
    tombstones = store.tombstones()
    checked["tombstones"] = sum(len(t) for t in tombstones.values())
    live_parts = []
    for row in rows:
        where = f"segment {row.id}"
        damaged_file = False
        for name, recorded in row.files.items():
            try:
                checksum = file_checksum(folder / name)
            except FileNotFoundError:
                # Gone: damage, or a merge committed and cleaned up since the snapshot began.
                raise Moved(f"{folder / name} is missing (the commit names it)") from None
            if checksum != recorded:
                problems.append(
                    f"{folder / name} does not match the size and checksum its commit recorded"
                )
                damaged_file = True
        if damaged_file:
            continue
        try:
            segment = open_segment(folder, row, dim)
        except SegmentMissing as e:
            raise Moved(str(e)) from None
        except SemsearchError as e:
            problems.append(str(e))
            continue
        ids = segment.ids
        if not segment.vectors.reconstructs and not np.array_equal(
            np.sort(segment.vectors.ids()), ids
        ):
            problems.append(f"{where}: its ids file disagrees with the ids its index holds")
            continue
        if len(np.unique(ids)) != len(ids):
            problems.append(f"{where} holds some chunk id twice")
            continue
        dead = tombstones.get(row.id, np.zeros(0, dtype=np.int64))
        held, _ = segment.positions(dead)
        if not held.all():
            problems.append(f"{where} has {int((~held).sum())} tombstones for ids it does not hold")
        live = np.setdiff1d(ids, dead)
        live_parts.append(live)
        _check_keys(store, segment, live, where, problems)
        for start in range(0, len(ids), _BATCH):
            positions = np.arange(start, min(start + _BATCH, len(ids)))
            vectors = segment.vectors_at(positions)
            norms = np.linalg.norm(vectors, axis=1)
            bad = ~np.isfinite(norms) | (np.abs(norms - 1) > 1e-3)
            if bad.any():
                problems.append(
                    f"{where}: {int(bad.sum())} vectors are not finite unit vectors "
                    f"(first: chunk {int(ids[positions[bad][0]])})"
                )
                break
    extra_tombstones = set(tombstones) - {row.id for row in rows}
    if extra_tombstones:
        problems.append(f"tombstones name segments that are not live: {sorted(extra_tombstones)}")
    live = np.concatenate(live_parts) if live_parts else np.zeros(0, dtype=np.int64)
    if len(np.unique(live)) != len(live):
        problems.append("some chunk is live in two segments")
    held = np.unique(live)
    if not np.array_equal(held, chunk_ids):
        missing = len(np.setdiff1d(chunk_ids, held))
        extra = len(np.setdiff1d(held, chunk_ids))
        problems.append(
            f"the segments hold {len(held)} live vectors for {len(chunk_ids)} chunks "
            f"({missing} chunks without a vector, {extra} vectors without a chunk)"
        )


def _check_keys(
    store: Store, segment: Segment, live: np.ndarray, where: str, problems: list[str]
) -> None:
    """The segment's key table: sorted, of its own chunks, and for its live chunks
    the text hashes their rows record."""
    try:
        keys = np.asarray(segment.keys)
    except SemsearchError as e:
        problems.append(str(e))
        return
    held, _ = segment.positions(keys["chunk"])
    if not held.all():
        problems.append(f"{where}: {int((~held).sum())} keys name chunks it does not hold")
        return
    if len(keys) and not np.array_equal(sort_keys(keys), keys):
        problems.append(f"{where}: its key table is not sorted")
        return
    recorded = key_table(store.text_hashes(live.tolist()), live)
    mine = keys[np.isin(keys["chunk"], live)]
    if not np.array_equal(sort_keys(mine), recorded):
        problems.append(
            f"{where}: its key table disagrees with the chunks' text hashes; "
            "embedding reuse would give wrong vectors: rebuild the index"
        )
