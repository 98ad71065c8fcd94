"""Page furniture: what scrapers and HTML extraction leave around an article.

Two cases, both conservative (a leftover menu word is better than a lost
paragraph), both switched off by ``load_paths(..., clean=False)``:

**A ``.txt`` file saved from a web page** (:func:`clean_page`). It is treated
as a scraped page only when one of these holds, and is otherwise left exactly
as it is:

1. *A dated by-line in the header*: the second or third non-blank line
   (short, as are those above it) holds a date set off from its words (at
   the start or end of the line, next to a separator such as ``|`` ``·``
   ``-`` ``,``, glued to a word as scrapers leave it, after "Published" or
   "Updated", or anywhere in a line that starts with "By"), and does not end
   as a sentence. A time after the date ("14:30 Uhr", "2:30 pm", "à 08h15")
   is dropped. The line above it is the headline, the one above that (if
   any) the site's name. The by-line gives the date (numeric dates are read
   in the ``date_order`` given, else day first, ``09/08/2024`` is 9 August,
   unless that is impossible; a month name in any language dateparser
   knows), the source (the site's name line when the by-line names none) and
   the author ("By NAME"). "By", "Published"/"Updated" and the words before a
   time are tables by language in :mod:`semsearch.page_words` (``BY_WORDS``,
   ``LABEL_WORDS``) and ``_TIME``.
2. *A furniture marker in the tail*: the file ends with a run of furniture
   lines that includes a known marker ("Comment (0)", "Related articles",
   "Same tag", "Share", a cookie banner, "Tin liên quan", "Kommentare (3)",
   "À lire aussi", ...; ``page_words.MARKER_TABLE``, by language: English, Vietnamese,
   German, French, Spanish, Italian, Portuguese, Dutch). The header is then
   read as for any text file.

What is removed: the site and by-line lines, marker lines right under the
by-line ("Share this article"), and the tail. The tail is the longest run of
lines at the end of the file that are each a marker, or a short line that
does not end as a sentence (no closing ``.``, ``!``, ``?``) and that jusText
does not rate as prose (``good`` or ``neargood``, with the stop words of the
page's language), cut to start at its first marker (or at a link label such
as "Source" right before it, ``_LABEL_MARKERS``); a run without a marker is
no tail. So a by-line alone never removes the end of a text, and short lines
before the first marker (a list's last items, a poem's last lines) stay.
Nothing inside the article goes (captions and pull quotes stay, and so does
a "Read more" between two paragraphs), nor any line after the article that
ends as a sentence or reads as prose, unless it is a marker.

**HTML** (:func:`strip_section_label`): trafilatura sometimes keeps the
section label ("Cyber security") and the repeated headline as the first body
lines; when the headline repeats within the first three lines and the lines
before it are short labels, they go.

What was removed is kept in :attr:`Page.removed` (and then in
:attr:`semsearch.records.Article.removed_lines`) for inspection.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import re
from dataclasses import dataclass

from .page_words import BY_WORDS, LABEL_WORDS, MARKER_TABLE

_HEADER_LINES = 3
_HEADER_MAX_CHARS = 150
_BYLINE_MAX_CHARS = 120
_FURNITURE_MAX_CHARS = 150
_LABEL_MAX_CHARS = 60

_MARKER_PHRASES = [phrase for phrases in MARKER_TABLE.values() for phrase in phrases]
# A lone label where the page had a link ("Source" above "Comment (0)"): furniture only
# next to a marker, so it may start a tail but never licenses removing one.
_LABEL_MARKERS = re.compile(r"(?:source|nguồn|quelle|fuente|fonte|bron|källa|kilde|źródło)", re.I)
_MARKERS = re.compile(r"(?:" + "|".join(_MARKER_PHRASES) + r")", re.I)
# A cookie or consent banner: about cookies, and asking the reader to do something.
_COOKIES = re.compile(r"\bcookies?\b", re.I)
_CONSENT = re.compile(
    r"\b(?:accept|agree|consent|cookie (?:policy|settings|preferences)"
    r"|akzeptieren|zustimmen|einverstanden|accepter|j'accepte|aceptar|acepto|accetta|accetto"
    r"|aceitar|aceito|accepteren|akkoord|chấp nhận|đồng ý)\b",
    re.I,
)
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)\]]*$")
_SEPARATORS = re.compile(r"\s*(?:[|·•—–]|\s-\s|^-\s)\s*")
_WEEKDAY = re.compile(
    r"(?:mon|tues?|wed(?:nes)?|thu(?:rs)?|fri|sat(?:ur)?|sun)(?:day)?\.?"
    r"|thứ (?:hai|ba|tư|năm|sáu|bảy|2|3|4|5|6|7)|chủ nhật"
    r"|montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonnabend|sonntag"
    r"|lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche"
    r"|lunes|martes|miércoles|jueves|viernes|sábado|domingo"
    r"|lunedì|martedì|mercoledì|giovedì|venerdì|sabato|domenica"
    r"|(?:segunda|terça|quarta|quinta|sexta)-feira"
    r"|maandag|dinsdag|woensdag|donderdag|vrijdag|zaterdag|zondag",
    re.I,
)
_WEEKDAY_AT_END = re.compile(r"(?:^|\s)(?:" + _WEEKDAY.pattern + r"),?$", re.I)
_BY = re.compile(r"^(?:" + "|".join(BY_WORDS.values()) + r")\s+", re.I)
_BY_ALWAYS = {"by", "bởi", "theo"}  # never the start of a name
_LABEL_TEXT = (
    r"(?:" + "|".join(LABEL_WORDS.values()) + r")"
    r"(?: (?:on|ngày|am|le|el|em|il|op|den|dnia))?:?"
)
_LABEL = re.compile(_LABEL_TEXT, re.I)
# A time after a by-line's date: "14:30", "14:30 Uhr", "2:30 pm", "à 08h15", "08h15",
# "um 14.30 Uhr", "3pm", with the word before it ("at", "um", "à", ...) and a zone.
_TIME = re.compile(
    r"(?:,\s*)?(?:\b(?:at|um|à|a las|a la|às|alle|ore|om|kl\.?|klo|lúc|godz\.)\s*)?"
    r"(?:\b\d{1,2}[:h]\d{2}(?::\d{2})?|\b\d{1,2}\.\d{2}(?=\s*uhr\b)|\b\d{1,2}(?=\s?[ap]\.?m\.?))"
    r"(?:\s*(?:[ap]\.?m\.?|uhr\b|h\b|hrs?\b|horas\b))?"
    r"(?:\s*\(?(?:gmt|utc|cet|cest|mez|mesz)\s*[+-]?\d*\)?)?",
    re.I,
)
_NUMERIC_DATE = re.compile(r"(?<!\d)(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})(?!\d)")
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
# "3 March 2024", "March 3, 2024", "Mar. 3rd 2024", "9 tháng 8, 2024", "3. April 2024",
# "1er septembre 2023", "5 de septiembre de 2023" (each checked by dateparser).
_WORD_DATE = re.compile(
    r"(?<!\w)(?:\d{1,2}(?:st|nd|rd|th|er|º)?\.?\s+(?:de\s+)?(?:tháng\s+\d{1,2}|[^\W\d_]{3,10}\.?),?"
    r"(?:\s+(?:năm|de|del))?\s+\d{4}"
    r"|[^\W\d_]{3,10}\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4})(?!\d)"
)
# Where a date is set off from the words of a by-line: at an end of the line, after
# or before a separator, glued to a word (as scrapers join a link and a date), or
# after a label such as "Updated".
_OFFSET_BEFORE = re.compile(
    r"(?:^\s*|[|·•—–,:(\[-]\s*|[^\W\d_]"
    r"|^\s*" + _LABEL_TEXT + r"\s*"
    r"|^\s*(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,\s*)$",
    re.I,
)
_OFFSET_AFTER = re.compile(r"^\s*(?:$|[|·•—–,)\]-])")


@dataclass(frozen=True)
class Page:
    """An article cleaned of its page furniture.

    Attributes:
        text: the article's body.
        title: the headline from the header, or None if the header was not read
            (the caller then finds the title as for any text file).
        date: the by-line's date as ``YYYY-MM-DD``, if any.
        source: the by-line's source (or the site's name line), if any.
        author: the by-line's author ("By NAME"), if any.
        removed: the lines removed (site line, by-line, furniture), in file order.
    """

    text: str
    title: str | None = None
    date: str | None = None
    source: str | None = None
    author: str | None = None
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Byline:
    date: str
    source: str | None
    author: str | None


def clean_page(text: str, date_order: str | None = None) -> Page | None:
    """Split a scraped page into its article and its furniture.

    Args:
        text: the whole file.
        date_order: ``"DMY"`` or ``"MDY"``: how to read a by-line's numeric date
            whose day and month could be either way round (``09/08/2024``); None
            reads it day first. A date impossible in that order is read the other way.

    Returns:
        The cleaned page, or None when the text is not a scraped page by the
        rule in this module's docstring (it must then be used as it is).
    """
    lines = text.splitlines()
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if not filled:
        return None
    header = [i for i in filled[:_HEADER_LINES] if len(lines[i].strip()) <= _HEADER_MAX_CHARS]
    byline_at, byline = None, None
    for position, i in enumerate(header):
        if header[: position + 1] != filled[: position + 1]:
            break  # a long line came first: no header
        if position == 0:
            continue  # a by-line follows a headline
        byline = parse_byline(lines[i].strip(), date_order)
        if byline is not None:
            byline_at = position
            break
    body = filled[byline_at + 1 :] if byline_at is not None else filled
    # Furniture right under the by-line ("Share", "5 min read").
    if byline_at is not None:
        while body and _is_marker(lines[body[0]]):
            body = body[1:]
    tail = _tail(lines, body)
    if byline is None and tail == len(body):
        return None
    kept = body[:tail]
    if not kept:
        return None
    title_at = filled[byline_at - 1] if byline_at is not None else None
    header_lines = set(filled[: byline_at + 1]) if byline_at is not None else set()
    source = byline.source if byline else None
    if byline is not None and source is None and byline_at == 2:
        source = lines[filled[0]].strip()
    start, end = kept[0], kept[-1]
    if byline is None:
        start = 0  # the header is the caller's to read, as for any text file
    removed = [
        lines[i].strip()
        for i in filled
        if (i in header_lines or i < start or i > end) and i != title_at
    ]
    return Page(
        text="\n".join(lines[start : end + 1]).strip(),
        title=lines[title_at].strip() if title_at is not None else None,
        date=byline.date if byline else None,
        source=source,
        author=byline.author if byline else None,
        removed=tuple(removed),
    )


def strip_section_label(body: str, title: str | None) -> tuple[str, tuple[str, ...]]:
    """Remove section labels and the repeated headline from the top of an extracted body.

    Args:
        body: the main text trafilatura extracted, one paragraph a line.
        title: the page's title.

    Returns:
        The body without them, and the label lines removed (the repeated headline
        is not counted: it is the title).
    """
    if not title:
        return body, ()
    lines = body.split("\n")
    head = [line.strip() for line in lines[:_HEADER_LINES]]
    if title.strip() not in head:
        return body, ()
    at = head.index(title.strip())
    labels = head[:at]
    if not "\n".join(lines[at + 1 :]).strip():
        return body, ()
    if any(len(label) > _LABEL_MAX_CHARS or _SENTENCE_END.search(label) for label in labels):
        return body, ()
    return "\n".join(lines[at + 1 :]), tuple(label for label in labels if label)


def parse_byline(line: str, date_order: str | None = None) -> _Byline | None:
    """Read a by-line: a short line with a date set off from its words.

    Args:
        line: the line, trimmed.
        date_order: as for :func:`clean_page`.

    Returns:
        Its date, source and author, or None if the line is not a by-line.
    """
    if len(line) > _BYLINE_MAX_CHARS or _SENTENCE_END.search(line):
        return None
    found = _find_date(line, date_order)
    if found is None:
        return None
    date, start, end = found
    before, after = line[:start], line[end:]
    by = bool(_BY.match(line))
    set_off = _OFFSET_BEFORE.search(before) and _OFFSET_AFTER.match(_TIME.sub("", after, count=1))
    if not by and not set_off:
        return None
    rest = _TIME.sub(" ", f"{before} | {after}")
    parts = [p.strip(" ,;:-–—()[]") for p in _SEPARATORS.split(rest)]
    author = source = None
    parts = [_WEEKDAY_AT_END.sub("", p).strip(" ,") for p in parts]
    named = [p for p in parts if p and not _WEEKDAY.fullmatch(p) and not _LABEL.fullmatch(p)]
    for part in named:
        # "By" starts an author; a by-word of another language ("Von", "Par", "Door")
        # also starts names ("Door County Pulse"), so only beside a source.
        word = _BY.match(part)
        always = word is not None and word.group(0).strip().lower() in _BY_ALWAYS
        if word and author is None and (always or len(named) > 1):
            author = _BY.sub("", part).strip() or None
        elif source is None:
            source = _undouble(part)
    return _Byline(date=date, source=source, author=author)


def _find_date(line: str, date_order: str | None = None) -> tuple[str, int, int] | None:
    """The first date in a line, as ISO text, and where it is."""
    for match in _NUMERIC_DATE.finditer(line):
        first, second, year = (int(g) for g in match.groups())
        # Day first unless told otherwise, as most of the world writes.
        orders = [(first, second), (second, first)]
        if date_order == "MDY":
            orders.reverse()
        for d, m in orders:
            iso = _valid(year, m, d)
            if iso:
                return iso, match.start(), match.end()
    for match in _ISO_DATE.finditer(line):
        iso = _valid(*(int(g) for g in match.groups()))
        if iso:
            return iso, match.start(), match.end()
    for match in _WORD_DATE.finditer(line):
        parsed = _dateparser(match.group(0), date_order or "DMY")
        if parsed:
            return parsed, match.start(), match.end()
    return None


def _valid(year: int, month: int, day: int) -> str | None:
    if not 1900 <= year <= dt.date.today().year + 1:
        return None
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


@functools.lru_cache(maxsize=1024)
def _dateparser(text: str, order: str) -> str | None:
    import dateparser  # only by-lines with a month name need it

    settings = {
        "DATE_ORDER": order,
        "STRICT_PARSING": True,
        "REQUIRE_PARTS": ["day", "month", "year"],
    }
    parsed = dateparser.parse(text, settings=settings)
    if parsed is None:
        return None
    return _valid(parsed.year, parsed.month, parsed.day)


def _undouble(text: str) -> str:
    """``"Tin TứcTin Tức"`` → ``"Tin Tức"``: scrapers run a link's two labels together."""
    half = len(text) // 2
    if len(text) % 2 == 0 and text[:half] == text[half:]:
        return text[:half].strip()
    return text


def _is_marker(line: str) -> bool:
    line = line.strip()
    if _MARKERS.fullmatch(line):
        return True
    return len(line) <= 300 and bool(_COOKIES.search(line) and _CONSENT.search(line))


def _tail(lines: list[str], body: list[int]) -> int:
    """Where the furniture at the end of ``body`` starts (``len(body)`` if none).

    The tail is the run of furniture lines at the end, cut to start at its first
    marker (or a link label such as "Source" right before it), and only if it
    holds a marker: short lines before that (a list's last items, a poem's last
    lines) stay.
    """
    prose = _prose(lines, body)
    run = len(body)
    while run > 0 and _is_furniture(lines[body[run - 1]], prose[run - 1]):
        run -= 1
    first = next((k for k in range(run, len(body)) if _is_marker(lines[body[k]])), None)
    if first is None:
        return len(body)
    if first > run and _is_label(lines[body[first - 1]]):
        first -= 1
    return first


def _is_label(line: str) -> bool:
    return bool(_LABEL_MARKERS.fullmatch(line.strip().rstrip(":")))


def _is_furniture(line: str, prose: bool) -> bool:
    line = line.strip()
    if _is_marker(line):
        return True
    if prose or len(line) > _FURNITURE_MAX_CHARS:
        return False
    return not _SENTENCE_END.search(line)


def _prose(lines: list[str], indices: list[int]) -> list[bool]:
    """Whether jusText rates each line as prose (good or near-good), context-free."""
    if not indices:
        return []
    import justext  # only scraped pages need it

    texts = [lines[i].strip() for i in indices]
    document = "".join(f"<p>{html.escape(t)}</p>" for t in texts)
    paragraphs = justext.justext(
        f"<html><body>{document}</body></html>", _stoplist(" ".join(texts))
    )
    if len(paragraphs) != len(texts):  # cannot line them up: call everything prose
        return [True] * len(texts)
    return [p.cf_class in ("good", "neargood") for p in paragraphs]


def _stoplist(text: str) -> frozenset[str]:
    """The jusText stop words of the language whose stop words the text uses most."""
    words = [w.lower() for w in re.findall(r"[^\W\d_]+", text)]
    lists = _stoplists()
    best = max(lists, key=lambda name: sum(w in lists[name] for w in words))
    return lists[best]


@functools.cache
def _stoplists() -> dict[str, frozenset[str]]:
    import justext

    return {name: justext.get_stoplist(name) for name in sorted(justext.get_stoplists())}
