"""SQLite metadata store: articles, their chunks, and the list of vector segments.

Chunk ids are the FAISS ids. ``AUTOINCREMENT`` means an id is never reused,
so a removed chunk can never come back under another chunk's id, and a
tombstone names one chunk for good. The vectors themselves are in the
segment files (:mod:`semsearch.segments`); the ``segments`` and
``tombstones`` tables say which files and which of their chunks make the
committed generation. Indexes written before segments (format 3) kept every
vector here as a float32 blob too (the ``legacy_*`` reads), until their first
write converts them. All SQL takes its values as parameters. The schema and
its migrations are in :mod:`semsearch.migrations`.

SQLite's exceptions stop here (:func:`sqlite_errors`, after httpx's
``map_httpcore_exceptions``): no other module catches ``sqlite3`` errors.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

import numpy as np

from .errors import BadInputError, IncompatibleIndexError, damaged
from .keywords import CLOSE, OPEN, keyword_text
from .migrations import migrate
from .records import COMMON_FIELDS, Article, Chunk

P = ParamSpec("P")
T = TypeVar("T")
_SQLITE_ERROR = 1  # SQLite's generic error code: a statement it cannot run


@contextmanager
def sqlite_errors(path: Path, user_fts5: bool = False) -> Iterator[None]:
    """Turn SQLite's exceptions into semsearch's at the store's boundary.

    - An FTS5 expression the user wrote (``user_fts5``) that SQLite rejects:
      :class:`BadInputError` ``invalid FTS5 query: ...``.
    - ``SQLITE_CORRUPT``, ``SQLITE_NOTADB`` and their kin, and a fixed statement
      that the file's schema rejects (``SQLITE_ERROR``: "no such table", as
      ``semsearch verify`` has always reported it): :func:`semsearch.errors.damaged`.
    - Any other ``sqlite3.OperationalError`` (the database locked or busy, the
      disk full, an I/O error) passes through unchanged: it is about the
      machine, not the index, and nothing in semsearch retries it (writers
      queue on :mod:`semsearch.lock`; WAL readers do not wait for them).

    Args:
        path: the database file, named in the error.
        user_fts5: whether an FTS5 expression in the statements is the user's own.
    """
    try:
        yield
    except sqlite3.DatabaseError as e:
        ours = _ours(e, path, user_fts5)
        if ours is None:
            raise
        raise ours from None


def _ours(e: sqlite3.DatabaseError, path: Path, user_fts5: bool) -> Exception | None:
    """The semsearch error for an SQLite one (see :func:`sqlite_errors`); None: pass it on."""
    if isinstance(e, sqlite3.OperationalError):
        if user_fts5:
            return BadInputError(f"invalid FTS5 query: {e}")
        # Python 3.11+ gives the (extended) code; before, every OperationalError passes.
        code = getattr(e, "sqlite_errorcode", None)
        if code is None or code & 0xFF != _SQLITE_ERROR:
            return None
    return damaged(path, str(e))


def _mapped(method: Callable[Concatenate[Store, P], T]) -> Callable[Concatenate[Store, P], T]:
    """A :class:`Store` method whose SQLite errors are mapped (:func:`sqlite_errors`).

    A plain ``try``, not the context manager: it costs nothing until an error,
    and the store's methods run once per article in a write.
    """

    @functools.wraps(method)
    def mapped(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            ours = _ours(e, self.path, False)
            if ours is None:
                raise
            raise ours from None

    return mapped


# The common fields' columns, in COMMON_FIELDS order: fixed names, not values.
_COMMON = ", ".join(COMMON_FIELDS)
_HIT_QUERY = (
    'SELECT c.id, c.ordinal, c.start, c."end", substr(a.text, c.start + 1, c."end" - c.start),'
    " a.id, " + ", ".join("a." + f for f in COMMON_FIELDS) + ", a.tags, a.metadata"
    " FROM chunks c JOIN articles a ON a.pk = c.article_pk WHERE c.id IN (?)"
)
_ARTICLE_QUERY = "SELECT id, text, " + _COMMON + ", tags, metadata, path FROM articles WHERE id = ?"
_ARTICLE_COLUMNS = ("id", *COMMON_FIELDS, "tags", "metadata", "path", "text", "content_hash")
_INSERT_ARTICLE = (
    "INSERT INTO articles (" + ", ".join(_ARTICLE_COLUMNS) + ", added_at, updated_at)"
    " VALUES (" + ", ".join("?" * (len(_ARTICLE_COLUMNS) + 2)) + ")"
)


KEYWORD_TOKENIZERS = (
    "'porter unicode61 remove_diacritics 2 categories ''L* N* Co M*'''",
    "'porter unicode61 remove_diacritics 2'",
)
"""The ``tokenize`` arguments (as SQL) that semsearch's migrations give ``chunks_fts``:
the only ones put into SQL built at run time (tokens.py, the highlights' table)."""
_LIVE = "pk NOT IN (SELECT pk FROM removed_articles)"
"""An article not removed (a condition on ``articles``' ``pk``)."""
WRITE_CACHE_KIB = 256 * 1024
"""SQLite's page cache during a write transaction, at most (KiB; allocated as used)."""


class StoredVectors(NamedTuple):
    """Chunks' stored vectors: row ``i`` of each array is one chunk.

    Attributes:
        chunk_ids: ``(n,)`` int64, the chunks' ids (their FAISS ids).
        article_pks: ``(n,)`` int64, their articles' keys (``articles.pk``).
        vectors: ``(n, dim)`` float32, the unit vectors as embedded.
    """

    chunk_ids: np.ndarray
    article_pks: np.ndarray
    vectors: np.ndarray


class SegmentRow(NamedTuple):
    """A live segment as the ``segments`` table records it.

    Attributes:
        id: the segment's id (its files are ``segment.<id>.*``).
        factory: the FAISS factory string its index was built with.
        n_vectors: vectors in its files, tombstoned ones included.
        files: file name → ``{"size": bytes, "crc32": int}``, as written.
        generation: the generation that wrote it.
        settings: a compressed segment's tuned search settings and measured
            recall (see :class:`semsearch.tuning.Tuning`); empty for other types.
    """

    id: int
    factory: str
    n_vectors: int
    files: dict[str, dict[str, int]]
    generation: int
    settings: dict[str, Any] = {}  # noqa: RUF012 (a NamedTuple default, never mutated)


@dataclass(frozen=True)
class ChunkRow:
    """A chunk joined with its article, as search results need it.

    The article's common fields are :data:`semsearch.records.COMMON_FIELDS`.
    """

    chunk_id: int
    ordinal: int
    start: int
    end: int
    text: str
    article_id: str
    title: str | None
    url: str | None
    date: str | None
    source: str | None
    author: str | None
    tags: tuple[str, ...]
    metadata: dict[str, Any]


class Store:
    """The index's SQLite database.

    Writes happen inside :meth:`transaction`; outside one, the connection reads.
    """

    def __init__(self, path: Path, create: bool = False) -> None:
        if not create and not path.exists():
            raise IncompatibleIndexError(f"{path} is missing; the index is incomplete")
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA synchronous = FULL")
            # Statement journals (a multi-row DELETE with triggers keeps one) in
            # memory, not a temporary file: a third of a removal's bytes written.
            self._db.execute("PRAGMA temp_store = MEMORY")
            migrate(self._db, path, utc_now())
            self._snippets: str | None = None
        except sqlite3.DatabaseError as e:
            raise damaged(path, f"not an SQLite database ({e})") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: committed if the block ends normally, rolled back if it raises.

        For its length, SQLite's page cache may grow to :data:`WRITE_CACHE_KIB`:
        with the default 2 MiB, a write of thousands of rows spills dirty pages
        to the WAL and writes many of them again (three times the bytes of the
        commit itself, measured on 1,000 articles added to 100,000).
        """
        self._run(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
        try:
            self._run("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._run("ROLLBACK")
                raise
            self._run("COMMIT")
        finally:
            self._run("PRAGMA cache_size = -2000")  # SQLite's default, for reads

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one committed state, whatever writers commit meanwhile.

        Nested inside a transaction or another snapshot, it adds nothing.
        """
        if self._db.in_transaction:
            yield
            return
        self._run("BEGIN")
        try:
            self._run("SELECT 1 FROM meta LIMIT 1")  # starts the read
            yield
        finally:
            self._run("COMMIT")

    @_mapped
    def _run(self, statement: str) -> None:
        self._db.execute(statement).fetchall()

    @_mapped
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one fixed read-only statement (for checks such as :mod:`semsearch.verify`'s)."""
        return self._db.execute(sql, tuple(params)).fetchall()

    # -- checks (for semsearch.verify) ---------------------------------------

    @_mapped
    def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check``: ``["ok"]``, or the problems it found."""
        return [row[0] for row in self._db.execute("PRAGMA integrity_check")]

    def keyword_index_problem(self) -> str | None:
        """Why the FTS5 index disagrees with the chunks' keyword text, or None if it agrees.

        FTS5's ``integrity-check`` with rank 1, which for an external-content
        table also compares the index with its content. It writes nothing, but
        is a write statement: call it outside a snapshot.
        """
        try:
            self._db.execute(
                "INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)"
            )
        except sqlite3.DatabaseError as e:  # SQLITE_CORRUPT_VTAB: the check failed
            return str(e)
        return None

    # -- reads ---------------------------------------------------------------

    @_mapped
    def counts(self) -> tuple[int, int]:
        """(articles, chunks) held, removed ones not counted."""
        articles = self._db.execute(
            "SELECT (SELECT count(*) FROM articles) - (SELECT count(*) FROM removed_articles)"
        ).fetchone()[0]
        chunks = self._db.execute(
            "SELECT (SELECT count(*) FROM chunks) - (SELECT count(*) FROM chunks"
            " WHERE article_pk IN (SELECT pk FROM removed_articles))"
        ).fetchone()[0]
        return int(articles), int(chunks)

    @_mapped
    def has_chunks(self) -> bool:
        """Whether any chunk is held (removed ones not counted), without counting them all."""
        row = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM chunks"
            " WHERE article_pk NOT IN (SELECT pk FROM removed_articles))"
        ).fetchone()
        return bool(row[0])

    @_mapped
    def article_hashes(self, article_ids: Sequence[str]) -> dict[str, str]:
        """The stored article hash (column ``content_hash``) of each of these articles that exists.

        See :func:`semsearch.writer.article_hash`.
        """
        sql = "SELECT id, content_hash FROM articles WHERE id IN (?) AND " + _LIVE
        return dict(self._select_in(sql, article_ids))

    def article_hash_pages(self, page: int = 10_000) -> Iterator[list[tuple[str, str]]]:
        """Every stored article's (id, article hash), ``page`` rows at a time, in storage
        order: for a snapshot of the index's contents (a distributed build's diff)."""
        sql = (
            "SELECT pk, id, content_hash FROM articles WHERE pk > ? AND "
            + _LIVE
            + " ORDER BY pk LIMIT ?"
        )
        after = -(2**63)
        while rows := self.execute(sql, (after, page)):
            after = rows[-1][0]
            yield [(article_id, digest) for _pk, article_id, digest in rows]

    @_mapped
    def article_paths(self) -> list[tuple[str, str | None]]:
        """Every article's (id, path it was read from)."""
        return self._db.execute("SELECT id, path FROM articles WHERE " + _LIVE).fetchall()

    @_mapped
    def chunk_ids(self, article_ids: Sequence[str]) -> np.ndarray:
        """The ids of every chunk of these articles (not removed ones)."""
        sql = (
            "SELECT c.id FROM chunks c JOIN articles a ON a.pk = c.article_pk"
            " WHERE a.id IN (?) AND a." + _LIVE
        )
        return np.asarray([r[0] for r in self._select_in(sql, article_ids)], dtype=np.int64)

    @_mapped
    def chunk_articles(self, chunk_ids: Sequence[int]) -> dict[int, int]:
        """Map chunk id → article key, for grouping hits by article."""
        sql = "SELECT id, article_pk FROM chunks WHERE id IN (?)"
        return dict(self._select_in(sql, [int(i) for i in chunk_ids]))

    @_mapped
    def chunk_rows(self, chunk_ids: Sequence[int]) -> dict[int, ChunkRow]:
        """The chunks with their articles' fields, keyed by chunk id."""
        found = {}
        for row in self._select_in(_HIT_QUERY, [int(i) for i in chunk_ids]):
            chunk_id, ordinal, start, end, text, article_id, *common, tags, metadata = row
            found[chunk_id] = ChunkRow(
                chunk_id=chunk_id,
                ordinal=ordinal,
                start=start,
                end=end,
                text=text,
                article_id=article_id,
                **dict(zip(COMMON_FIELDS, common, strict=True)),
                tags=tuple(json.loads(tags)),
                metadata=json.loads(metadata),
            )
        return found

    @_mapped
    def filtered_chunks(self, where: str, params: Sequence[Any]) -> np.ndarray:
        """The ids of the chunks of the articles matching a compiled filter, ascending.

        ``where`` is SQL built by :mod:`semsearch.filters` from fixed fragments
        over ``articles AS a``; every value in it is a ``?`` bound from params.
        """
        sql = (
            "SELECT c.id FROM chunks c JOIN articles a ON a.pk = c.article_pk"
            " WHERE " + where + " ORDER BY c.id"
        )
        rows = self._db.execute(sql, tuple(params)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def keyword_matches(
        self,
        match: str,
        where: str | None = None,
        params: Sequence[Any] = (),
        *,
        user_fts5: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk matching an FTS5 expression: (chunk ids, BM25 scores), unordered.

        Scores are BM25 with FTS5's k1=1.2, b=0.75 over title and text, higher
        is better (FTS5's own rank is negated so that smaller sorts first).
        FTS5 scores every match whatever the LIMIT, so all are returned: the
        caller ranks them and also looks up the scores of other candidates.
        ``where`` optionally restricts to articles matching a compiled filter.
        ``user_fts5``: the expression is the user's own (not made by
        :func:`semsearch.keywords.match_expression`).

        Raises:
            BadInputError: for an invalid FTS5 expression of the user's.
        """
        if where is None:
            sql = "SELECT rowid, -rank FROM chunks_fts WHERE chunks_fts MATCH ?"
        else:
            # A join, not "rowid IN (subquery)": FTS5 would seek the expression once
            # per allowed rowid, 200 times slower when half the index is allowed.
            sql = (
                "SELECT chunks_fts.rowid, -chunks_fts.rank FROM chunks_fts"
                " JOIN chunks c ON c.id = chunks_fts.rowid JOIN articles a ON a.pk = c.article_pk"
                " WHERE chunks_fts MATCH ? AND " + where
            )
        with sqlite_errors(self.path, user_fts5):
            rows = self._db.execute(sql, (match, *params)).fetchall()
        table = np.asarray(rows, dtype=np.float64).reshape(len(rows), 2)  # ids < 2**53: exact
        return table[:, 0].astype(np.int64), table[:, 1]

    @_mapped
    def keyword_tokenizer(self) -> str:
        """The ``tokenize`` argument of the FTS5 table, as SQL: one of :data:`KEYWORD_TOKENIZERS`.

        Raises:
            IncompatibleIndexError: if the table is missing or has any other tokenizer.
        """
        row = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'chunks_fts'"
        ).fetchone()
        found = re.search(r"tokenize\s*=\s*('(?:[^']|'')*')", row[0] if row else "")
        if found is None or found.group(1) not in KEYWORD_TOKENIZERS:
            raise damaged(self.path, "the keyword index chunks_fts has no tokenizer semsearch made")
        return found.group(1)

    @_mapped
    def keyword_texts(self, chunk_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
        """Each chunk's (article key, title and text as the FTS5 table indexes them), by id."""
        sql = (
            "SELECT t.id, c.article_pk, coalesce(t.title, '') || ' ' || coalesce(t.text, '')"
            " FROM chunk_text t JOIN chunks c ON c.id = t.id WHERE t.id IN (?)"
        )
        rows = self._select_in(sql, [int(i) for i in chunk_ids])
        return {chunk: (article, text) for chunk, article, text in rows}

    @_mapped
    def keyword_rows(self, chunk_ids: Sequence[int]) -> list[tuple[int, str | None, str]]:
        """These chunks' (id, title, text) as the FTS5 table indexes them (keyword text)."""
        sql = "SELECT id, title, text FROM chunk_text WHERE id IN (?)"
        return self._select_in(sql, [int(i) for i in chunk_ids])

    def highlighted(
        self, match: str, chunk_ids: Sequence[int], *, user_fts5: bool = False
    ) -> dict[int, str]:
        """Chunk text with the terms matching an FTS5 expression wrapped in markers.

        Only the chunks that match are returned, as FTS5's ``highlight()`` over
        ``chunks_fts`` gives them. It runs over a copy of just these chunks in a
        temporary in-memory FTS5 table with the index's own tokenizer: whether a
        document matches an expression, and where, depends on that document
        alone, so the result is the same, but without reading the whole index's
        postings of the query's words (for 10 SciFact hits, 0.37 ms against 3.8
        ms over ``chunks_fts``, measured side by side). Nothing is written to the
        index's file.

        Raises:
            BadInputError: for an invalid FTS5 expression of the user's (``user_fts5``).
        """
        ids = [int(i) for i in chunk_ids]
        if not ids:
            return {}
        self._snippet_table()
        with sqlite_errors(self.path):
            rows = self._select_in("SELECT id, title, text FROM chunk_text WHERE id IN (?)", ids)
            # The last query's chunks go, these come: the FTS5 table is rebuilt from
            # its content table (twice as fast as FTS5 deleting row by row).
            self._db.execute("DELETE FROM temp.snippets_text")
            self._db.executemany(
                "INSERT INTO temp.snippets_text (id, title, text) VALUES (?, ?, ?)", rows
            )
            self._db.execute("INSERT INTO temp.snippets (snippets) VALUES ('rebuild')")
        with sqlite_errors(self.path, user_fts5):
            found = self._db.execute(
                "SELECT rowid, highlight(snippets, 1, ?, ?) FROM temp.snippets"
                " WHERE snippets MATCH ?",
                (OPEN, CLOSE, match),
            ).fetchall()
        return dict(found)

    @_mapped
    def _snippet_table(self) -> str:
        """The temporary FTS5 table :meth:`highlighted` uses (and its content table), made once.

        Its tokenizer is read from ``chunks_fts``' own definition, so the two
        always tokenize alike. It lives in this connection's temporary database
        (in memory: ``temp_store``), never in the index's file.
        """
        if self._snippets is None:
            tokenizer = self.keyword_tokenizer()  # one of a fixed list: safe to put in SQL
            self._db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS snippets_text"
                " (id INTEGER PRIMARY KEY, title TEXT, text TEXT)"
            )
            self._db.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.snippets USING fts5(title, text,"
                " content='snippets_text', content_rowid='id', tokenize=" + tokenizer + ")"
            )
            self._snippets = "snippets"
        return self._snippets

    @_mapped
    def all_chunk_ids(self) -> np.ndarray:
        """Every chunk's id, removed articles' excepted, ascending: ``(n,)`` int64."""
        rows = self._db.execute(
            "SELECT id FROM chunks WHERE article_pk NOT IN (SELECT pk FROM removed_articles)"
            " ORDER BY id"
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    @_mapped
    def chunks_of_articles(self, article_pks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk of these articles (by key): ``(chunk ids, article keys)``, int64."""
        sql = "SELECT id, article_pk FROM chunks WHERE article_pk IN (?)"
        rows = self._select_in(sql, [int(p) for p in article_pks])
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        pks = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        return ids, pks

    @_mapped
    def text_hashes(self, chunk_ids: Sequence[int]) -> list[bytes | None]:
        """Each of these chunks' text hash (``chunks.text_hash``; None where none), in order.

        A text hash is :func:`semsearch.writer._embedded_text_hash` of the exact
        text a chunk's vector was computed from. Writes look them up in the
        segments' key tables (:mod:`semsearch.segments`); this column is the
        record they are made from when an index is converted, and what verify
        checks them against.
        """
        sql = "SELECT id, text_hash FROM chunks WHERE id IN (?)"
        found = dict(self._select_in(sql, [int(i) for i in chunk_ids]))
        return [found.get(int(i)) for i in chunk_ids]

    # -- the generation's segments ---------------------------------------------

    @_mapped
    def segments(self) -> list[SegmentRow]:
        """The live segments of the committed generation, by id."""
        rows = self._db.execute(
            "SELECT id, factory, n_vectors, files, generation, settings FROM segments ORDER BY id"
        ).fetchall()
        return [
            SegmentRow(r[0], r[1], r[2], json.loads(r[3]), r[4], json.loads(r[5])) for r in rows
        ]

    @_mapped
    def tombstones(self) -> dict[int, np.ndarray]:
        """Segment id → its tombstoned chunk ids, ascending ``(n,)`` int64."""
        rows = self._db.execute(
            "SELECT segment, chunk_id FROM tombstones ORDER BY segment, chunk_id"
        ).fetchall()
        found: dict[int, list[int]] = {}
        for segment, chunk_id in rows:
            found.setdefault(segment, []).append(chunk_id)
        return {s: np.asarray(ids, dtype=np.int64) for s, ids in found.items()}

    @_mapped
    def new_segment(self, factory: str, n_vectors: int, generation: int) -> int:
        """Record a segment (its files follow with :meth:`set_segment_files`); returns its id."""
        cursor = self._db.execute(
            "INSERT INTO segments (factory, n_vectors, files, generation) VALUES (?, ?, '{}', ?)",
            (factory, int(n_vectors), int(generation)),
        )
        return int(cursor.lastrowid or 0)

    @_mapped
    def set_segment_files(self, segment: int, files: dict[str, dict[str, int]]) -> None:
        """Record a segment's files: name → ``{"size": bytes, "crc32": int}``."""
        self._db.execute(
            "UPDATE segments SET files = ? WHERE id = ?", (json.dumps(files), int(segment))
        )

    @_mapped
    def set_segment_settings(self, segment: int, settings: dict[str, Any]) -> None:
        """Record a compressed segment's tuned search settings (JSON)."""
        self._db.execute(
            "UPDATE segments SET settings = ? WHERE id = ?", (json.dumps(settings), int(segment))
        )

    @_mapped
    def delete_segments(self, segments: Sequence[int]) -> None:
        """Drop segments from the generation, with their tombstones (by cascade)."""
        self._db.executemany("DELETE FROM segments WHERE id = ?", [(int(s),) for s in segments])

    @_mapped
    def add_tombstones(self, segment: int, chunk_ids: Sequence[int]) -> None:
        """Mark removed chunks of a segment as tombstones."""
        self._db.executemany(
            "INSERT INTO tombstones (chunk_id, segment) VALUES (?, ?)",
            [(int(i), int(segment)) for i in chunk_ids],
        )

    @_mapped
    def remove_articles(self, article_ids: Sequence[str]) -> int:
        """Mark articles removed: gone from every read, their rows kept until a merge.

        Their chunks must be tombstoned in the same transaction; a merge that
        drops those tombstones deletes the rows (:meth:`purge_chunks`).
        Returns how many articles were marked.
        """
        sql = (
            "INSERT INTO removed_articles (pk) SELECT pk FROM articles WHERE id IN (?) AND " + _LIVE
        )
        marked = 0
        for batch in _batches(article_ids):
            marks = ",".join("?" * len(batch))
            marked += self._db.execute(sql.replace("IN (?)", "IN (" + marks + ")"), batch).rowcount
        return marked

    @_mapped
    def purge_removed(self, article_ids: Sequence[str] | None = None) -> None:
        """Delete the rows of removed articles for good (these ids, or all).

        Before an id is added again (ids are unique), or when every tombstone goes.
        """
        if article_ids is None:
            self._db.execute("DELETE FROM articles WHERE pk IN (SELECT pk FROM removed_articles)")
            return
        sql = "DELETE FROM articles WHERE id IN (?) AND pk IN (SELECT pk FROM removed_articles)"
        for batch in _batches(article_ids):
            marks = ",".join("?" * len(batch))
            self._db.execute(sql.replace("IN (?)", "IN (" + marks + ")"), batch)

    @_mapped
    def purge_chunks(self, chunk_ids: Sequence[int]) -> None:
        """Delete for good the removed articles that own these (tombstoned) chunks."""
        sql = (
            "DELETE FROM articles WHERE pk IN (SELECT pk FROM removed_articles)"
            " AND pk IN (SELECT article_pk FROM chunks WHERE id IN (?))"
        )
        for batch in _batches([int(i) for i in chunk_ids]):
            marks = ",".join("?" * len(batch))
            self._db.execute(sql.replace("IN (?)", "IN (" + marks + ")"), batch)

    @_mapped
    def drop_legacy_vectors(self) -> None:
        """Empty the ``chunks.vector`` blobs of a converted format-3 index."""
        self._db.execute("UPDATE chunks SET vector = x'' WHERE length(vector) > 0")

    @_mapped
    def delete_meta(self, key: str) -> None:
        self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    @_mapped
    def vacuum(self) -> None:
        """Give the free pages back to the file system (rewrites the database; no transaction)."""
        self._db.execute("VACUUM")

    # The vectors of a format-3 index (before segments), kept in chunks.vector:
    # StoredVectors of every chunk, of some chunks, or of some articles' chunks.

    @_mapped
    def all_vectors(self, dim: int) -> StoredVectors:
        """Every chunk's stored vector, in chunk id order (a format-3 index's)."""
        rows = self._db.execute("SELECT id, article_pk, vector FROM chunks ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        pks = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.empty((len(rows), dim), dtype=np.float32)
        for i, row in enumerate(rows):  # row by row: no second copy of every vector
            vectors[i] = np.frombuffer(row[2], dtype="<f4")
        return StoredVectors(ids, pks, vectors)

    @_mapped
    def vectors_of_chunks(self, chunk_ids: Sequence[int], dim: int) -> StoredVectors:
        """These chunks' vectors (those that exist), in no particular order."""
        sql = "SELECT id, article_pk, vector FROM chunks WHERE id IN (?)"
        return _stored_vectors(self._select_in(sql, [int(i) for i in chunk_ids]), dim)

    @_mapped
    def vectors_of_articles(self, article_pks: Sequence[int], dim: int) -> StoredVectors:
        """The vectors of every chunk of these articles (by key), in no particular order."""
        sql = "SELECT id, article_pk, vector FROM chunks WHERE article_pk IN (?)"
        return _stored_vectors(self._select_in(sql, [int(p) for p in article_pks]), dim)

    def _select_in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a query whose one ``IN (?)`` takes all the values, in batches."""
        rows: list[tuple[Any, ...]] = []
        for batch in _batches(values):
            marks = ",".join("?" * len(batch))
            # fetchall() steps through the rows in C, several times faster than iterating.
            rows += self._db.execute(sql.replace("IN (?)", "IN (" + marks + ")"), batch).fetchall()
        return rows

    @_mapped
    def article(self, article_id: str) -> Article | None:
        """One stored article, or None."""
        row = self._db.execute(_ARTICLE_QUERY + " AND " + _LIVE, (article_id,)).fetchone()
        if row is None:
            return None
        id_, text, *common, tags, metadata, path = row
        return Article(
            id=id_,
            text=text,
            **dict(zip(COMMON_FIELDS, common, strict=True)),
            tags=tuple(json.loads(tags)),
            metadata=json.loads(metadata),
            path=path,
        )

    @_mapped
    def meta(self, key: str, default: Any = None) -> Any:
        """A value from the meta table (JSON-decoded), or default."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- writes (inside a transaction) ----------------------------------------

    @_mapped
    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    @_mapped
    def delete_articles(self, article_ids: Sequence[str]) -> int:
        """Delete articles and (by cascade) their chunks; returns how many articles went."""
        deleted = 0
        for batch in _batches(article_ids):
            marks = ",".join("?" * len(batch))
            sql = "DELETE FROM articles WHERE id IN (" + marks + ")"
            deleted += self._db.execute(sql, batch).rowcount
        return deleted

    @_mapped
    def insert_article(
        self,
        article: Article,
        article_hash: str,
        chunks: Sequence[Chunk],
        vectors: np.ndarray | None = None,
        text_hashes: Sequence[bytes | None] | None = None,
    ) -> np.ndarray:
        """Insert an article and its chunks; returns the new chunk ids, ascending.

        ``article_hash`` goes into the ``content_hash`` column; ``text_hashes``
        (one per chunk, or None) into ``chunks.text_hash``, the embedding cache's
        key. ``vectors`` (``(len(chunks), dim)`` float32) are stored in
        ``chunks.vector`` only if given: the format-3 layout, for tests of its
        conversion; the segments hold the vectors of everything else.
        """
        now = utc_now()
        cursor = self._db.execute(
            _INSERT_ARTICLE,
            (
                article.id,
                *(getattr(article, f) for f in COMMON_FIELDS),
                json.dumps(list(article.tags), ensure_ascii=False),
                json.dumps(article.metadata, ensure_ascii=False, sort_keys=True),
                article.path,
                article.text,
                article_hash,
                now,
                now,
            ),
        )
        pk = cursor.lastrowid
        if article.title is not None and (title := keyword_text(article.title)) is not None:
            # Before the chunks: their insert trigger indexes the title with each.
            self._db.execute("UPDATE articles SET keyword_title = ? WHERE pk = ?", (title, pk))
        ids = np.empty(len(chunks), dtype=np.int64)
        hashes = text_hashes if text_hashes is not None else [None] * len(chunks)
        blobs = (
            [np.asarray(v, dtype="<f4").tobytes() for v in vectors]
            if vectors is not None
            else [b""] * len(chunks)
        )
        for i, (chunk, blob, text_hash) in enumerate(zip(chunks, blobs, hashes, strict=True)):
            cursor = self._db.execute(
                'INSERT INTO chunks (article_pk, ordinal, start, "end", n_tokens, vector,'
                " text_hash, keyword_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pk,
                    chunk.ordinal,
                    chunk.start,
                    chunk.end,
                    chunk.n_tokens,
                    blob,
                    text_hash,
                    keyword_text(article.text[chunk.start : chunk.end]),
                ),
            )
            ids[i] = int(cursor.lastrowid or 0)
        return ids


def _stored_vectors(rows: list[tuple[Any, ...]], dim: int) -> StoredVectors:
    """Rows of (chunk id, article key, vector blob) as arrays."""
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    pks = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    blob = b"".join(r[2] for r in rows)
    vectors = np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(len(rows), dim)
    return StoredVectors(ids, pks, vectors)


def _batches(values: Sequence[Any], size: int = 5_000) -> Iterator[list[Any]]:
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i : i + size]


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
