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

Keyword text (:func:`keyword_text`): SQLite's tokenizer cuts words at spaces
and punctuation, so a run of Chinese, Japanese, Thai, Lao, Khmer or Burmese
would be one token, and it folds diacritics only where Unicode decomposes
them. So documents and queries are indexed and searched through one derived
text: runs of those scripts are cut into words by ICU's dictionary-based word
breaker, the words separated by spaces, and Latin letters without a
decomposition (``đ``, ``ł``, ``ø``, ``ß``...) are spelt in ASCII. A query word
of such a script also matches a document word it begins (``研究`` finds
``研究者``) or a document's two words it spells (for cuts that differ in context).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

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

# Highlight markers: private-use characters that article text should not hold.
OPEN, CLOSE = "\ue000", "\ue001"

# Scripts written without spaces between words, whose runs ICU cuts into words.
_NO_SPACE = re.compile(
    "["
    "\u0e00-\u0e7f"  # Thai
    "\u0e80-\u0eff"  # Lao
    "\u1000-\u109f\ua9e0-\ua9ff\uaa60-\uaa7f"  # Myanmar
    "\u1780-\u17ff\u19e0-\u19ff"  # Khmer
    "\u3005\u3007\u3021-\u3029\u3038-\u303b"  # CJK iteration marks, numerals
    "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"  # Han
    "]+"
)
# Latin letters that unicode61's remove_diacritics leaves alone (no Unicode
# decomposition), spelt as people type them without the letter. Checked against
# SQLite's own folding in tests/test_scripts.py.
_FOLD = {
    "Đ": "D", "đ": "d", "Ð": "D", "ð": "d",
    "Ø": "O", "ø": "o", "Ǿ": "O", "ǿ": "o",
    "Ł": "L", "ł": "l", "Ŀ": "L", "ŀ": "l",
    "Ħ": "H", "ħ": "h", "Ŧ": "T", "ŧ": "t",
    "Ɨ": "I", "ɨ": "i", "ı": "i", "Ƀ": "B", "ƀ": "b",
    "ß": "ss", "ẞ": "SS", "Þ": "TH", "þ": "th",
    "Æ": "AE", "æ": "ae", "Ǽ": "AE", "ǽ": "ae", "Ǣ": "AE", "ǣ": "ae",
    "Œ": "OE", "œ": "oe", "Ĳ": "IJ", "ĳ": "ij",
}  # fmt: skip
_FOLDABLE = re.compile("[" + "".join(_FOLD) + "]")
# Han and kana, where every character is a syllable: a query word of these this
# long or shorter also matches as any two document words that spell it (ICU may
# cut a word in context where it does not cut it alone).
_SYLLABIC = re.compile(
    "[\u3005\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+"
)
_MAX_SPLIT = 6


def keyword_text(text: str) -> str | None:
    """The text the keyword index holds for ``text``, or None where it is ``text`` itself.

    The rule: every run of Han, Hiragana, Katakana, Thai, Lao, Khmer or Myanmar
    characters is cut into words by ICU's word breaker (dictionary based), and
    the words are separated by spaces (also from letters or digits next to the
    run); each Latin letter in ``_FOLD`` is replaced by its ASCII spelling. The
    FTS5 tokenizer does the rest (lower case, other diacritics, Porter stems).
    English text comes back as None, so its index is exactly as before.

    Args:
        text: a chunk's text, a title or a query.

    Returns:
        The derived text, or None if it would equal ``text``.
    """
    derived = _derive(text)
    return None if derived is None else derived[0]


def query_terms(text: str) -> list[str]:
    """The distinct words of a query, in order, without stop words (unless that leaves none).

    The query is read through :func:`keyword_text`, as documents are indexed.
    """
    words = list(dict.fromkeys(w.lower() for w in _words(keyword_text(text) or text)))
    kept = [w for w in words if w not in STOPWORDS]
    return kept or words


def match_expression(text: str) -> str | None:
    """An FTS5 MATCH expression for user text: every word quoted, ORed; None if no words.

    A word of two or more characters of a no-space script also matches as the
    first part of a longer document word (FTS5 prefix); one of Han or kana also
    as any two adjacent document words that spell it.
    """
    terms = query_terms(text)
    if not terms:
        return None
    # A word never holds a double quote, so quoting needs no escaping.
    return " OR ".join(_term_expression(term) for term in terms)


def _term_expression(term: str) -> str:
    # One Han or kana character is a word a reader types alone (桜 in 桜の開花),
    # which ICU keeps joined to what follows: it matches as a prefix too.
    if not _NO_SPACE.search(term) or (len(term) < 2 and not _SYLLABIC.fullmatch(term)):
        return f'"{term}"'
    alternatives = [f'"{term}"*']
    if len(term) <= _MAX_SPLIT and _SYLLABIC.fullmatch(term):
        alternatives += [f'"{term[:i]} {term[i:]}"' for i in range(1, len(term))]
    return alternatives[0] if len(alternatives) == 1 else "(" + " OR ".join(alternatives) + ")"


def _is_word_char(char: str) -> bool:
    """A character the index's tokenizer keeps in tokens: categories L*, N*, M*, Co."""
    return unicodedata.category(char)[0] in "LNM" or unicodedata.category(char) == "Co"


def _words(text: str) -> list[str]:
    """Runs of word characters (letters, digits, marks), as the index's tokenizer cuts."""
    words: list[str] = []
    current: list[str] = []
    for char in text:
        if _is_word_char(char):
            current.append(char)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return words


def _derive(text: str) -> tuple[str, list[int], list[int]] | None:
    """Keyword text, and for each of its characters the original span it came from.

    An inserted space has an empty span at the place it was inserted.
    """
    if not (_NO_SPACE.search(text) or _FOLDABLE.search(text)):
        return None
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []

    def emit(piece: str, start: int, end: int) -> None:
        out.append(piece)
        starts.extend([start] * len(piece))
        ends.extend([end] * len(piece))

    def copy(segment: str, offset: int) -> None:
        for i, char in enumerate(segment):
            emit(_FOLD.get(char, char), offset + i, offset + i + 1)

    position = 0
    for run in _NO_SPACE.finditer(text):
        copy(text[position : run.start()], position)
        offset = run.start()
        if offset > 0 and _is_word_char(text[offset - 1]):
            emit(" ", offset, offset)
        for n, word in enumerate(_segment(run.group())):
            if n:
                emit(" ", offset, offset)
            copy(word, offset)
            offset += len(word)
        position = run.end()
        if position < len(text) and _is_word_char(text[position]):
            emit(" ", position, position)
    copy(text[position:], position)
    derived = "".join(out)
    return None if derived == text else (derived, starts, ends)


@lru_cache(maxsize=4096)
def _segment(run: str) -> tuple[str, ...]:
    """ICU's words of a run of one no-space script (imported only when one is met)."""
    from icu4py.breakers import WordBreaker

    # The segments as strings: ICU's numeric offsets count UTF-16 code units.
    words = tuple(WordBreaker(run, "root"))
    return words if "".join(words) == run else (run,)


def marked_spans(marked: str, original: str) -> tuple[tuple[int, int], ...]:
    """Offsets in ``original`` of the spans FTS5's highlight() wrapped in OPEN/CLOSE.

    ``marked`` is either ``original`` or its :func:`keyword_text` with markers;
    spans in keyword text are mapped back to the characters they came from.
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
    if "".join(plain) == original:
        return tuple(spans)
    derived = _derive(original)
    if derived is None or derived[0] != "".join(plain):
        return ()
    _, starts, ends = derived
    return tuple((starts[s], ends[e - 1]) for s, e in spans if e > s)
