"""The store's schema and its numbered migrations.

Each migration is applied in the transaction that records it in
``schema_migrations`` (model: sqlite-utils' ``migrations.py``), so a crash
leaves the database at one version or the next, never between. A migration is
SQL, or a function of the connection where rows need Python. To change the
schema, append a migration; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import IncompatibleIndexError
from .keywords import keyword_text


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


TEXT_HASH_BYTES = 16
"""Bytes of SHA-256 kept as a chunk's text hash (``chunks.text_hash``, a blob)."""


def _binary_text_hash_migration(db: sqlite3.Connection) -> None:
    """Migration 6: text hashes as 16-byte blobs, the first half of the hex digest's bytes.

    The same key as before (a prefix of the same SHA-256), a quarter of the
    bytes, in the row and in the index a write updates.
    """
    rows = db.execute("SELECT id, text_hash FROM chunks WHERE typeof(text_hash) = 'text'")
    db.executemany(
        "UPDATE chunks SET text_hash = ? WHERE id = ?",
        ((bytes.fromhex(h[: 2 * TEXT_HASH_BYTES]), i) for i, h in rows.fetchall()),
    )


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
    (
        5,
        # Segments (format 4): a generation's vectors are immutable FAISS files,
        # one per segment, listed here with the size and CRC-32 recorded when
        # each was written; a chunk removed from a segment is a tombstone until
        # the segment is merged away. New chunks store an empty vector blob: the
        # segment files hold the vectors. An index written before this keeps its
        # vectors in chunks.vector and one vectors.<generation>.faiss file until
        # its first write converts it (semsearch.commit.convert_legacy).
        """
        CREATE TABLE segments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- segment.<id>.faiss
            factory TEXT NOT NULL,                 -- its FAISS factory string
            n_vectors INTEGER NOT NULL,            -- vectors in it, tombstoned ones too
            files TEXT NOT NULL,                   -- JSON: name -> {"size", "crc32"}
            generation INTEGER NOT NULL            -- the generation that wrote it
        );
        CREATE TABLE tombstones (
            chunk_id INTEGER PRIMARY KEY,          -- a removed chunk still in a segment
            segment INTEGER NOT NULL REFERENCES segments(id) ON DELETE CASCADE
        );
        CREATE INDEX tombstones_segment ON tombstones(segment);
        """,
    ),
    (6, _binary_text_hash_migration),
    (
        7,
        # Removed articles wait here, their rows in place and their chunks
        # tombstoned, until a merge drops their segment's tombstones and
        # deletes the rows for good: a removal then costs a row here, not a
        # page in each of the eight B-trees an article's rows are in.
        """
        CREATE TABLE removed_articles (
            pk INTEGER PRIMARY KEY REFERENCES articles(pk) ON DELETE CASCADE
        );
        """,
    ),
    (
        8,
        # The embedding cache's lookup moved to the segments' key tables
        # (segment.<id>.keys.npy): an index of random hashes took 83% of the
        # SQLite pages a write of new chunks touched.
        "DROP INDEX chunks_text_hash;",
    ),
    (
        9,
        # How a compressed segment is searched, as tuning chose it when the
        # segment was written (JSON: nprobe, ef_search, k_factor, and the
        # recall@10 measured against exact search); '{}' for other types.
        "ALTER TABLE segments ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';",
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(db: sqlite3.Connection, path: Path, now: str) -> None:
    """Bring the database up to :data:`SCHEMA_VERSION`, one transaction per migration.

    Args:
        db: a connection in autocommit mode (``isolation_level=None``), no transaction open.
        path: the database file, for messages.
        now: the time to record, ISO 8601 UTC.

    Raises:
        IncompatibleIndexError: if the database is newer than this semsearch.
        sqlite3.DatabaseError: as SQLite raises it; the store maps it.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    newest = max(done, default=0)
    if newest > SCHEMA_VERSION:
        raise IncompatibleIndexError(
            f"{path} has schema version {newest}, newer than this semsearch "
            f"understands ({SCHEMA_VERSION}); upgrade semsearch"
        )
    for version, sql in MIGRATIONS:
        if version in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            if callable(sql):
                sql(db)
            else:
                for statement in _statements(sql):
                    db.execute(statement)
            db.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (version, now),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements; a trigger's body holds semicolons of its own."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
