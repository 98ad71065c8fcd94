"""The values semsearch hands out: frozen dataclasses with a ``to_dict()``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SNIPPET_CHARS = 240
"""Characters of a hit's text that a snippet shows (``semsearch query``, the search page)."""


COMMON_FIELDS = ("title", "url", "date", "source", "author")
"""The common fields: optional text on every :class:`Article` and :class:`Hit`,
each a column of the store's ``articles`` table, in this order."""

# Adding a common field: put it in COMMON_FIELDS and on Article (with its
# docstring line); the store's INSERT and SELECTs and search's Hit follow from
# that tuple. What remains by hand:
#   records.py     Hit (the attribute); store.py ChunkRow (the attribute)
#   migrations.py  a new migration adding the column (never edit a shipped one)
#   load.py        FieldMap (its --field name) and _from_mapping; values.py if
#                  it needs a value rule of its own (as author_field); the page
#                  reader (load.py's HTML fields, clean.py's by-line) if pages carry it
#   filters.py     TEXT_FIELDS, to filter on it
#   cli.py         the --field help text and the text output, if shown
#   README.md      the field tables
# writer.article_hash covers every field of Article.to_dict(), so a new field
# makes every stored article "changed" once: the next write re-chunks and
# rewrites them all (their vectors come from the embedding cache).


@dataclass(frozen=True)
class Article:
    """One article, as loaded from a file or a row.

    Attributes:
        id: stable identifier: the id given in the data, else the path relative to
            the indexed root, else :func:`semsearch.load.default_article_id`.
        text: the body text; chunk offsets index into it.
        title, url, date, source, author: the common fields (``date`` as ISO 8601 text).
        tags: tag names, in the order given.
        metadata: every other field the source carried.
        path: where the article was read from (file, or ``file:line`` for rows).
        removed_lines: lines of page furniture removed when the file was loaded
            (see :mod:`semsearch.clean`); not indexed, not part of the article hash.
    """

    id: str
    text: str
    title: str | None = None
    url: str | None = None
    date: str | None = None
    source: str | None = None
    author: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    removed_lines: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        data["removed_lines"] = list(self.removed_lines)
        return data


@dataclass(frozen=True)
class Chunk:
    """A piece of an article small enough for the model.

    ``text == article.text[start:end]`` always holds; ``ordinal`` counts chunks
    within the article from 0.
    """

    article_id: str
    ordinal: int
    start: int
    end: int
    text: str
    n_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Hit:
    """One search result: an article and its best-matching chunk.

    ``score`` depends on ``mode``:

    - ``semantic``: the cosine similarity of the query to the best chunk (-1 to 1).
    - ``keyword``: the BM25 score of the best chunk (0 and up; not comparable across queries).
    - ``hybrid``: ``0.7 × semantic_score + 0.3 × keyword_score / (best BM25 for the
      query)``, so 0.7 to 1.0 for a result that is both the closest in meaning and the
      best keyword match.

    ``semantic_score`` and ``keyword_score`` are the article's best chunk scores in
    each mode (None where a mode was not run; a keyword score of 0 means no word
    matched). ``text`` is the snippet chunk's text, ``start``/``end`` its character
    offsets in the article, and ``highlights`` the ``(start, end)`` offsets within
    ``text`` of the query's words (stemmed matches included, stop words not).
    """

    rank: int
    score: float
    article_id: str
    title: str | None
    url: str | None
    date: str | None
    source: str | None
    author: str | None
    tags: tuple[str, ...]
    text: str
    start: int
    end: int
    chunk_id: int
    chunk_ordinal: int
    metadata: dict[str, Any] = field(default_factory=dict)
    mode: str = "semantic"
    semantic_score: float | None = None
    keyword_score: float | None = None
    highlights: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        data["highlights"] = [list(span) for span in self.highlights]
        return data

    def snippet(self, chars: int = SNIPPET_CHARS) -> list[tuple[str, bool]]:
        """About ``chars`` characters of :attr:`text` around the first highlight.

        Returns:
            ``(piece, highlighted)`` pairs that join to the snippet, "…" marking
            a cut at either end; the query's words are the highlighted pieces.
        """
        return snippet(self.text, self.highlights, chars)


def snippet(
    text: str, highlights: Sequence[tuple[int, int]] = (), chars: int = SNIPPET_CHARS
) -> list[tuple[str, bool]]:
    """A window of about ``chars`` characters of ``text`` around its first highlight.

    Args:
        text: a chunk's text.
        highlights: ``(start, end)`` character offsets in ``text``, in order.
        chars: the window's length in characters (cut at a space where there is one).

    Returns:
        ``(piece, highlighted)`` pairs that join to the window, with "… " before
        it and " …" after it where ``text`` was cut.
    """
    start = 0
    if highlights and highlights[0][0] > chars // 3:
        # Begin a little before the first match, at a word boundary.
        start = text.rfind(" ", 0, highlights[0][0] - chars // 4) + 1
    end = len(text)
    if end - start > chars:
        cut = text.rfind(" ", start, start + chars)
        end = cut if cut > start else start + chars
    parts: list[tuple[str, bool]] = [("… ", False)] if start > 0 else []
    position = start
    for s, e in highlights:
        if s >= position and e <= end:
            parts += [(text[position:s], False), (text[s:e], True)]
            position = e
    parts.append((text[position:end], False))
    if end < len(text):
        parts.append((" …", False))
    return [(piece, marked) for piece, marked in parts if piece]


@dataclass(frozen=True)
class Skipped:
    """An input that was not indexed, and why."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AddResult:
    """What one write to the index did."""

    added: int
    updated: int
    unchanged: int
    chunks_added: int
    chunks_removed: int
    skipped: tuple[Skipped, ...] = ()
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: load, diff, chunk, embed, sqlite, faiss."""
    removed: int = 0
    """Articles removed because their source is gone (``prune``)."""
    chunks_embedded: int = 0
    """Chunks embedded now; the other new chunks reused a vector of the same text."""
    lines_removed: int = 0
    """Lines of page furniture removed from the articles read (unchanged ones included)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped"] = [s.to_dict() for s in self.skipped]
        return data


@dataclass(frozen=True)
class IndexInfo:
    """What an index holds and how it was built."""

    path: str
    model: str
    dim: int
    max_tokens: int
    chunk_tokens: int
    overlap_tokens: int
    index_type: str
    faiss_factory: str
    articles: int
    chunks: int
    size_bytes: int
    format_version: int
    semsearch_version: str
    created_at: str
    updated_at: str
    query_prompt: str = ""
    document_prompt: str = ""
    build_backend: str = "sentence-transformers"
    """What embedded the articles: sentence-transformers, onnx or onnx-int8."""
    onnx_export: bool = False
    """Whether queries can run on ONNX Runtime without torch."""
    generation: int = 0
    """The committed generation read (each write, merge or optimize makes one)."""
    segments: int = 0
    """Live segments (see :mod:`semsearch.segments`)."""
    tombstones: int = 0
    """Removed chunks whose vectors are still in a segment, until it is merged."""
    segment_list: tuple[dict[str, Any], ...] = ()
    """Each live segment, oldest first: ``id``, ``factory`` (its FAISS type),
    ``vectors`` (held, removed ones included), ``tombstones``, ``generation``
    (the one that wrote it): what the merge policy decides on; a compressed
    segment's ``tuning`` too (see :attr:`tuning`)."""
    memory_budget: int = 0
    """Bytes the vectors may take in memory when searched (the manifest's, or
    this machine's default share): what ``auto`` chooses a type by."""
    recall_target: float = 0.95
    """Recall@10 against exact search that compressed segments are tuned to."""
    tuning: dict[str, Any] = field(default_factory=dict)
    """The largest compressed segment's tuning, empty without one: ``nprobe``,
    ``ef_search`` (of the HNSW coarse quantizer), ``k_factor`` (the shortlist
    re-ranked with exact vectors is ``k_factor * k``), ``recall_at_10``
    measured against exact search on ``queries`` held-out vectors,
    ``recall_target``, ``query_ms`` and ``tuning_seconds``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OptimizeResult:
    """What :meth:`semsearch.Index.optimize` did.

    Attributes:
        segments_before: live segments before.
        segments_after: live segments after (1, or 0 for an empty index).
        tombstones_dropped: removed chunks whose vectors were dropped for good.
        seconds: wall time of the merge.
        retrained: why the shared quantizer of a compressed index was trained
            again (the data drifted from it, or outgrew its lists); empty if it was not.
    """

    segments_before: int
    segments_after: int
    tombstones_dropped: int
    seconds: float
    retrained: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
