"""SQLite metadata store: articles, their chunks, and the chunks' vectors.

Chunk ids are the FAISS ids. ``AUTOINCREMENT`` means an id is never reused,
so a removed chunk can never come back under another chunk's id. The chunks'
vectors are kept here too (float32 blobs), so the FAISS index can always be
rebuilt exactly, whatever its type. All SQL takes its values as parameters.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IncompatibleIndexError, damaged
from .keywords import CLOSE, OPEN, keyword_text
from .records import Article, Chunk


def _keyword_text_migration(db: sqlite3.Connection) -> None:
    """Migration 4: keyword text (see :func:`semsearch.keywords.keyword_text`).

    Chunks and titles get the derived text where it differs from their own
    (NULL elsewhere, so English rows are indexed exactly as before); the view
    the FTS5 table reads gives it in their place. The FTS5 table is made again
    with combining marks as word characters (Thai, Khmer or Devanagari vowel
    signs split words before) and rebuilt, all in the migration's transaction.
    """
    db.execute("ALTER TABLE chunks ADD COLUMN keyword_text TEXT")
    db.execute("ALTER TABLE articles ADD COLUMN keyword_title TEXT")
    titles = db.execute("SELECT pk, title FROM articles WHERE title IS NOT NULL")
    derived = [(keyword_text(title), pk) for pk, title in titles]
    db.executemany(
        "UPDATE articles SET keyword_title = ? WHERE pk = ?", [d for d in derived if d[0]]
    )
    derived = [(keyword_text(text), chunk_id) for chunk_id, text, _ in db.execute(CHUNK_TEXT_QUERY)]
    db.executemany("UPDATE chunks SET keyword_text = ? WHERE id = ?", [d for d in derived if d[0]])
    for statement in _statements(_KEYWORD_INDEX):
        db.execute(statement)


# Every chunk's (id, text, stored keyword text).
CHUNK_TEXT_QUERY = """
    SELECT c.id, substr(a.text, c.start + 1, c."end" - c.start), c.keyword_text
    FROM chunks c JOIN articles a ON a.pk = c.article_pk
"""
# The triggers of migration 2 read this view and write this table by name, so
# they keep working on the new ones.
_KEYWORD_INDEX = """
    DROP VIEW chunk_text;
    CREATE VIEW chunk_text AS
        SELECT c.id AS id, coalesce(a.keyword_title, a.title) AS title,
               coalesce(c.keyword_text, substr(a.text, c.start + 1, c."end" - c.start)) AS text
        FROM chunks c JOIN articles a ON a.pk = c.article_pk;
    DROP TABLE chunks_fts;
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        title, text, content='chunk_text', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2 categories ''L* N* Co M*'''
    );
    INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild');
"""

# Numbered migrations, applied in order, each in the transaction that records it:
# SQL, or a function of the connection where rows need Python.
MIGRATIONS: tuple[tuple[int, str | Callable[[sqlite3.Connection], None]], ...] = (
    (
        1,
        """
        CREATE TABLE articles (
            pk INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            title TEXT,
            url TEXT,
            date TEXT,
            source TEXT,
            author TEXT,
            tags TEXT NOT NULL DEFAULT '[]',      -- JSON array
            metadata TEXT NOT NULL DEFAULT '{}',  -- JSON object: every other field
            path TEXT,
            text TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            added_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX articles_source ON articles(source);
        CREATE INDEX articles_date ON articles(date);
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS id
            article_pk INTEGER NOT NULL REFERENCES articles(pk) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            start INTEGER NOT NULL,
            "end" INTEGER NOT NULL,
            n_tokens INTEGER NOT NULL,
            vector BLOB NOT NULL                   -- float32, little-endian
        );
        CREATE INDEX chunks_article ON chunks(article_pk);
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL                    -- JSON
        );
        """,
    ),
    (
        2,
        # Keyword search: an FTS5 index over every chunk's title and text. It is an
        # external-content table reading from a view, so the text is stored once
        # (in articles) and highlight() can still quote it. Triggers keep it in
        # step with the chunks inside the same transaction, whatever writes them.
        """
        CREATE VIEW chunk_text AS
            SELECT c.id AS id, a.title AS title,
                   substr(a.text, c.start + 1, c."end" - c.start) AS text
            FROM chunks c JOIN articles a ON a.pk = c.article_pk;
        CREATE VIRTUAL TABLE chunks_fts USING fts5(
            title, text, content='chunk_text', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts (rowid, title, text)
                SELECT id, title, text FROM chunk_text WHERE id = new.id;
        END;
        -- Before the article goes (and its chunks by cascade), while the view can
        -- still give the exact text that was indexed, as FTS5's delete needs.
        CREATE TRIGGER chunks_fts_delete BEFORE DELETE ON articles BEGIN
            INSERT INTO chunks_fts (chunks_fts, rowid, title, text)
                SELECT 'delete', id, title, text FROM chunk_text
                WHERE id IN (SELECT id FROM chunks WHERE article_pk = old.pk);
        END;
        CREATE TRIGGER chunks_fts_update_before BEFORE UPDATE OF title, text ON articles BEGIN
            INSERT INTO chunks_fts (chunks_fts, rowid, title, text)
                SELECT 'delete', id, title, text FROM chunk_text
                WHERE id IN (SELECT id FROM chunks WHERE article_pk = old.pk);
        END;
        CREATE TRIGGER chunks_fts_update_after AFTER UPDATE OF title, text ON articles BEGIN
            INSERT INTO chunks_fts (rowid, title, text)
                SELECT id, title, text FROM chunk_text
                WHERE id IN (SELECT id FROM chunks WHERE article_pk = new.pk);
        END;
        INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild');
        """,
    ),
    (
        3,
        # The embedding cache: a hash of the exact text each chunk's vector was
        # computed from, so that a write can reuse the vector of any chunk whose
        # text it has already embedded (an edited article's untouched paragraphs).
        # Chunks written before this migration have none and are not reused.
        """
        ALTER TABLE chunks ADD COLUMN text_hash TEXT;
        CREATE INDEX chunks_text_hash ON chunks(text_hash);
        """,
    ),
    (4, _keyword_text_migration),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_HIT_QUERY = """
    SELECT c.id, c.ordinal, c.start, c."end", substr(a.text, c.start + 1, c."end" - c.start),
           a.id, a.title, a.url, a.date, a.source, a.author, a.tags, a.metadata
    FROM chunks c JOIN articles a ON a.pk = c.article_pk
    WHERE c.id IN (?)
"""


@dataclass(frozen=True)
class ChunkRow:
    """A chunk joined with its article, as search results need it."""

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
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise damaged(path, f"not an SQLite database ({e})") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: committed if the block ends normally, rolled back if it raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one committed state, whatever writers commit meanwhile.

        Nested inside a transaction or another snapshot, it adds nothing.
        """
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            self._db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()  # starts the read
            yield
        finally:
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in self._db.execute("SELECT version FROM schema_migrations")}
        newest = max(done, default=0)
        if newest > SCHEMA_VERSION:
            raise IncompatibleIndexError(
                f"{self.path} has schema version {newest}, newer than this semsearch "
                f"understands ({SCHEMA_VERSION}); upgrade semsearch"
            )
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            with self.transaction():
                if callable(sql):
                    sql(self._db)
                else:
                    for statement in _statements(sql):
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, utc_now()),
                )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one fixed statement (for checks such as ``PRAGMA integrity_check``)."""
        return self._db.execute(sql, tuple(params)).fetchall()

    # -- reads ---------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(articles, chunks) held."""
        articles = self._db.execute("SELECT count(*) FROM articles").fetchone()[0]
        chunks = self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return int(articles), int(chunks)

    def content_hashes(self, article_ids: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of these articles that exists."""
        sql = "SELECT id, content_hash FROM articles WHERE id IN (?)"
        return dict(self._select_in(sql, article_ids))

    def article_paths(self) -> list[tuple[str, str | None]]:
        """Every article's (id, path it was read from)."""
        return self._db.execute("SELECT id, path FROM articles").fetchall()

    def chunk_ids(self, article_ids: Sequence[str]) -> np.ndarray:
        """The ids of every chunk of these articles."""
        sql = "SELECT c.id FROM chunks c JOIN articles a ON a.pk = c.article_pk WHERE a.id IN (?)"
        return np.asarray([r[0] for r in self._select_in(sql, article_ids)], dtype=np.int64)

    def chunk_articles(self, chunk_ids: Sequence[int]) -> dict[int, int]:
        """Map chunk id → article key, for grouping hits by article."""
        sql = "SELECT id, article_pk FROM chunks WHERE id IN (?)"
        return dict(self._select_in(sql, [int(i) for i in chunk_ids]))

    def chunk_rows(self, chunk_ids: Sequence[int]) -> dict[int, ChunkRow]:
        """The chunks with their articles' fields, keyed by chunk id."""
        found = {}
        for row in self._select_in(_HIT_QUERY, [int(i) for i in chunk_ids]):
            chunk_id, ordinal, start, end, text, article_id = row[:6]
            title, url, date, source, author, tags, metadata = row[6:]
            found[chunk_id] = ChunkRow(
                chunk_id=chunk_id,
                ordinal=ordinal,
                start=start,
                end=end,
                text=text,
                article_id=article_id,
                title=title,
                url=url,
                date=date,
                source=source,
                author=author,
                tags=tuple(json.loads(tags)),
                metadata=json.loads(metadata),
            )
        return found

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
        self, match: str, where: str | None = None, params: Sequence[Any] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk matching an FTS5 expression: (chunk ids, BM25 scores), unordered.

        Scores are BM25 with FTS5's k1=1.2, b=0.75 over title and text, higher
        is better (FTS5's own rank is negated so that smaller sorts first).
        FTS5 scores every match whatever the LIMIT, so all are returned: the
        caller ranks them and also looks up the scores of other candidates.
        ``where`` optionally restricts to articles matching a compiled filter.

        Raises:
            sqlite3.OperationalError: for an invalid FTS5 expression.
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
        rows = self._db.execute(sql, (match, *params)).fetchall()
        table = np.asarray(rows, dtype=np.float64).reshape(len(rows), 2)  # ids < 2**53: exact
        return table[:, 0].astype(np.int64), table[:, 1]

    def highlighted(self, match: str, chunk_ids: Sequence[int]) -> dict[int, str]:
        """Chunk text with the terms matching an FTS5 expression wrapped in markers."""
        sql = (
            "SELECT rowid, highlight(chunks_fts, 1, ?, ?) FROM chunks_fts"
            " WHERE chunks_fts MATCH ? AND rowid IN (?)"
        )
        found: dict[int, str] = {}
        for batch in _batches([int(i) for i in chunk_ids]):
            marks = ",".join("?" * len(batch))
            query = sql.replace("IN (?)", "IN (" + marks + ")")
            found.update(self._db.execute(query, (OPEN, CLOSE, match, *batch)).fetchall())
        return found

    def article_vectors(
        self, article_pks: Sequence[int], dim: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every chunk of these articles: (chunk ids, article keys, vectors)."""
        sql = "SELECT id, article_pk, vector FROM chunks WHERE article_pk IN (?)"
        return _id_pk_vectors(self._select_in(sql, [int(p) for p in article_pks]), dim)

    def chunk_vectors(
        self, chunk_ids: Sequence[int], dim: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """These chunks: (chunk ids, article keys, vectors)."""
        sql = "SELECT id, article_pk, vector FROM chunks WHERE id IN (?)"
        return _id_pk_vectors(self._select_in(sql, [int(i) for i in chunk_ids]), dim)

    def _select_in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a query whose one ``IN (?)`` takes all the values, in batches."""
        rows: list[tuple[Any, ...]] = []
        for batch in _batches(values):
            marks = ",".join("?" * len(batch))
            # fetchall() steps through the rows in C, several times faster than iterating.
            rows += self._db.execute(sql.replace("IN (?)", "IN (" + marks + ")"), batch).fetchall()
        return rows

    def vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk's (ids, vectors), in id order, to rebuild the vector index."""
        rows = self._db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.empty((len(rows), dim), dtype=np.float32)
        for i, (_, blob) in enumerate(rows):
            vectors[i] = np.frombuffer(blob, dtype="<f4")
        return ids, vectors

    def article(self, article_id: str) -> Article | None:
        """One stored article, or None."""
        row = self._db.execute(
            "SELECT id, text, title, url, date, source, author, tags, metadata, path"
            " FROM articles WHERE id = ?",
            (article_id,),
        ).fetchone()
        if row is None:
            return None
        id_, text, title, url, date, source, author, tags, metadata, path = row
        return Article(
            id=id_,
            text=text,
            title=title,
            url=url,
            date=date,
            source=source,
            author=author,
            tags=tuple(json.loads(tags)),
            metadata=json.loads(metadata),
            path=path,
        )

    def meta(self, key: str, default: Any = None) -> Any:
        """A value from the meta table (JSON-decoded), or default."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- writes (inside a transaction) ----------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def delete_articles(self, article_ids: Sequence[str]) -> int:
        """Delete articles and (by cascade) their chunks; returns how many articles went."""
        deleted = 0
        for batch in _batches(article_ids):
            marks = ",".join("?" * len(batch))
            sql = "DELETE FROM articles WHERE id IN (" + marks + ")"
            deleted += self._db.execute(sql, batch).rowcount
        return deleted

    def cached_vectors(self, text_hashes: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """Stored vectors of chunks whose embedded text had these hashes."""
        sql = "SELECT text_hash, vector FROM chunks WHERE text_hash IN (?)"
        return {
            h: np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(dim)
            for h, blob in self._select_in(sql, list(text_hashes))
        }

    def insert_article(
        self,
        article: Article,
        content_hash: str,
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
        text_hashes: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """Insert an article and its chunks; returns the new chunk ids."""
        now = utc_now()
        cursor = self._db.execute(
            "INSERT INTO articles (id, title, url, date, source, author, tags, metadata, path,"
            " text, content_hash, added_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                article.id,
                article.title,
                article.url,
                article.date,
                article.source,
                article.author,
                json.dumps(list(article.tags), ensure_ascii=False),
                json.dumps(article.metadata, ensure_ascii=False, sort_keys=True),
                article.path,
                article.text,
                content_hash,
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
        for i, (chunk, vector, text_hash) in enumerate(zip(chunks, vectors, hashes, strict=True)):
            cursor = self._db.execute(
                'INSERT INTO chunks (article_pk, ordinal, start, "end", n_tokens, vector,'
                " text_hash, keyword_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pk,
                    chunk.ordinal,
                    chunk.start,
                    chunk.end,
                    chunk.n_tokens,
                    np.asarray(vector, dtype="<f4").tobytes(),
                    text_hash,
                    keyword_text(article.text[chunk.start : chunk.end]),
                ),
            )
            ids[i] = int(cursor.lastrowid or 0)
        return ids


def _id_pk_vectors(
    rows: list[tuple[Any, ...]], dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    pks = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    blob = b"".join(r[2] for r in rows)
    vectors = np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(len(rows), dim)
    return ids, pks, vectors


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements; a trigger's body holds semicolons of its own."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def _batches(values: Sequence[Any], size: int = 5_000) -> Iterator[list[Any]]:
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i : i + size]


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
