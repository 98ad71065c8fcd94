"""User text → an FTS5 query that cannot fail, and highlight offsets.

A query typed by a user is text, not FTS5 syntax: quotes, ``*``, ``-``, ``:``,
parentheses and words such as ``NEAR``, ``AND`` or ``NOT`` must never raise or
change the meaning. So the text is cut into words (letters and digits; FTS5's
``unicode61`` tokenizer cuts the same way), each word is quoted as an FTS5
string, and the words are ORed: BM25 then ranks chunks by how many of the
words they hold, and how rare those words are.

Common English words are dropped from the query (not from the index): they
match nearly every chunk, add almost nothing to BM25, and make the query slow.
A query made only of such words keeps them.
"""

from __future__ import annotations

import re

# English function words: NLTK's stop word list without its contractions.
_STOPWORD_TEXT = """
a about above after again against all am an and any are as at be because been before
being below between both but by can did do does doing don down during each few for from
further had has have having he her here hers herself him himself his how i if in into is
it its itself just me more most my myself no nor not now of off on once only or other
our ours ourselves out over own s same she should so some such t than that the their
theirs them themselves then there these they this those through to too under until up
very was we were what when where which while who whom why will with you your yours
yourself yourselves
"""
STOPWORDS = frozenset(re.split(r"\s+", _STOPWORD_TEXT.strip()))

# Runs of letters and digits: what the unicode61 tokenizer keeps as tokens.
_WORD = re.compile(r"[^\W_]+")
# Highlight markers: private-use characters that article text should not hold.
OPEN, CLOSE = "\ue000", "\ue001"


def query_terms(text: str) -> list[str]:
    """The distinct words of a query, in order, without stop words (unless that leaves none)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    kept = [w for w in words if w not in STOPWORDS]
    return kept or words


def match_expression(text: str) -> str | None:
    """An FTS5 MATCH expression for user text: every word quoted, ORed; None if no words."""
    terms = query_terms(text)
    if not terms:
        return None
    # A word never holds a double quote, so quoting needs no escaping.
    return " OR ".join(f'"{term}"' for term in terms)


def marked_spans(marked: str, original: str) -> tuple[tuple[int, int], ...]:
    """Offsets in ``original`` of the spans FTS5's highlight() wrapped in OPEN/CLOSE.

    Returns no spans if the text itself held a marker character, rather than wrong ones.
    """
    spans: list[tuple[int, int]] = []
    plain: list[str] = []
    position = 0
    start = -1
    for part in re.split(f"([{OPEN}{CLOSE}])", marked):
        if part == OPEN:
            start = position
        elif part == CLOSE:
            if start >= 0:
                spans.append((start, position))
            start = -1
        else:
            plain.append(part)
            position += len(part)
    if "".join(plain) != original:
        return ()
    return tuple(spans)
