"""Check that an index folder's parts agree: manifest, SQLite, FTS5 and FAISS.

:func:`verify` reads everything without the writer lock, inside one SQLite
snapshot, and reports every disagreement it finds rather than stopping at
the first, so that a pipeline can log what is wrong before rebuilding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .commit import CHECKSUM, FACTORY, GENERATION, Moved, file_checksum, retry
from .errors import IncompatibleIndexError, SemsearchError
from .keywords import keyword_text
from .manifest import read_manifest, vector_files, vectors_file
from .migrations import CHUNK_TEXT_QUERY
from .store import Store
from .vectors import VectorIndex


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
        with store.snapshot():
            generation = store.meta(GENERATION)
            factory = store.meta(FACTORY)
            recorded = store.meta(CHECKSUM)
            if generation is None or factory is None:
                problems.append(f"{store.path} has no commit record")
                return report
            file = folder / vectors_file(int(generation))
            checked["generation"] = int(generation)
            _check_vectors(store, file, str(factory), recorded, manifest.model.dim, problems)
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
            if extra.name != vectors_file(int(generation)):
                notes.append(
                    f"{extra.name} is left from an interrupted write; the next write removes it"
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
