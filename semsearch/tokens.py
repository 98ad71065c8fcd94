"""FTS5's own tokens and highlights, outside the index: an in-memory database.

The keyword postings (:mod:`semsearch.impacts`) must hold exactly the terms
the index's FTS5 table makes (Porter stems, ``unicode61`` folding, the
categories it keeps), and a query must be cut the same way. Rather than
imitate the tokenizer, semsearch runs it: an in-memory SQLite database holds
FTS5 tables made with the index's own ``tokenize`` argument (read from its
schema), and ``fts5vocab`` lists the tokens of whatever is inserted. The
tokenizer never joins tokens across whitespace, so a text's tokens are its
whitespace-separated pieces' tokens in order, and each distinct piece is
tokenized once (cached).

Highlights of the k hits are made there too: a row's ``highlight()``
depends only on its own text, and on the index's table the expression is
evaluated over every query term's whole doclist.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence

from .keywords import CLOSE, OPEN
from .store import KEYWORD_TOKENIZERS, Store, sqlite_errors


class Tokenizer:
    """The FTS5 tokenizer of an index, run in an in-memory database; pieces are cached.

    Args:
        spec: the ``tokenize`` argument of the index's FTS5 table, as SQL (quoted):
            one of :data:`~semsearch.store.KEYWORD_TOKENIZERS`.

    Raises:
        ValueError: for any other spec (it goes into SQL as it is).
    """

    def __init__(self, spec: str) -> None:
        if spec not in KEYWORD_TOKENIZERS:
            raise ValueError(f"unknown FTS5 tokenizer {spec!r}")
        self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._db.execute(f"CREATE VIRTUAL TABLE pieces USING fts5(x, content='', tokenize={spec})")
        self._db.execute("CREATE VIRTUAL TABLE piece_tokens USING fts5vocab(pieces, instance)")
        self._db.execute(f"CREATE VIRTUAL TABLE marks USING fts5(title, text, tokenize={spec})")
        self._cache: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def tokens(self, pieces: Sequence[str]) -> list[tuple[str, ...]]:
        """Each piece's tokens (stemmed, folded), in order."""
        with self._lock:
            missing = list(dict.fromkeys(p for p in pieces if p not in self._cache))
            for start in range(0, len(missing), 50_000):
                self._tokenize(missing[start : start + 50_000])
            if len(self._cache) > 2_000_000:  # bounded: a reader lives long
                self._cache.clear()
                self._tokenize(list(dict.fromkeys(pieces)))
            return [self._cache[p] for p in pieces]

    def highlight(self, match: str, rows: Sequence[tuple[int, str | None, str]]) -> dict[int, str]:
        """FTS5's ``highlight()`` of the text of these (id, title, text) rows that match.

        A row's highlights depend on its own text only, so a table of just
        these rows marks them as the index's table would, for a fraction of
        the cost: there, the expression is evaluated over every term's doclist.

        Raises:
            sqlite3.OperationalError: for an expression FTS5 rejects.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO marks (rowid, title, text) VALUES (?, ?, ?)", rows
                )
                found = self._db.execute(
                    "SELECT rowid, highlight(marks, 1, ?, ?) FROM marks WHERE marks MATCH ?",
                    (OPEN, CLOSE, match),
                ).fetchall()
            finally:
                self._db.execute("ROLLBACK")
        return dict(found)

    def _tokenize(self, pieces: list[str]) -> None:
        found: list[list[str]] = [[] for _ in pieces]
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT INTO pieces (rowid, x) VALUES (?, ?)", enumerate(pieces, start=1)
            )
            rows = self._db.execute(
                "SELECT doc, term FROM piece_tokens ORDER BY doc, offset"
            ).fetchall()
        finally:
            self._db.execute("ROLLBACK")  # nothing kept: the table stays empty
        for doc, term in rows:
            found[doc - 1].append(term)
        self._cache.update(zip(pieces, map(tuple, found), strict=True))


_TOKENIZERS: dict[str, Tokenizer] = {}
_TOKENIZERS_LOCK = threading.Lock()


def tokenizer(store: Store) -> Tokenizer:
    """The (shared) tokenizer of this store's FTS5 table."""
    spec = store.keyword_tokenizer()
    with _TOKENIZERS_LOCK:
        if spec not in _TOKENIZERS:
            _TOKENIZERS[spec] = Tokenizer(spec)
        return _TOKENIZERS[spec]


def highlighted(
    store: Store, match: str, chunk_ids: Sequence[int], *, user_fts5: bool = False
) -> dict[int, str]:
    """Chunk text with the terms matching an FTS5 expression wrapped in markers, by chunk id.

    Chunks that do not match are left out.

    Raises:
        BadInputError: for an invalid FTS5 expression of the user's (``user_fts5``).
    """
    rows = store.keyword_rows(chunk_ids)
    with sqlite_errors(store.path, user_fts5):
        return tokenizer(store).highlight(match, rows)


_PLAIN = re.compile(r'"([^"\s]+)"')


def query_tokens(store: Store, match: str) -> list[str] | None:
    """The FTS5 token of each word of an expression made by ``match_expression``.

    Args:
        store: the index's store (its FTS5 table's tokenizer is used).
        match: the expression, ``"word" OR "word" ...``.

    Returns:
        One token per word (none for a word FTS5 makes no token of), or None
        where a part is not a plain quoted word (a prefix, two-word
        alternatives, the user's own syntax) or makes several tokens: search
        FTS5 then.
    """
    words = []
    for part in match.split(" OR "):
        plain = _PLAIN.fullmatch(part)
        if plain is None:
            return None
        words.append(plain.group(1))
    tokens: list[str] = []
    for made in tokenizer(store).tokens(words):
        if len(made) > 1:
            return None  # a phrase: positions matter
        tokens += made  # none: the word matches nothing, as in FTS5
    return tokens
