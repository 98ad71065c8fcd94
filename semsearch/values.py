r"""How a loaded value becomes what semsearch stores: one rule per kind of value.

Every format (CSV, JSONL, front matter, HTML metadata, plain text) goes
through these rules, once, at load (:mod:`semsearch.load`), so that what is
stored, embedded, keyword-indexed and shown is the same string, and the same
data gives the same index whatever format it came in:

- Text (:func:`normalize_text`): Unicode NFC; every line boundary that
  ``str.splitlines`` knows (``\r\n``, ``\r``, vertical tab, form feed,
  U+001C-U+001E, U+0085, U+2028, U+2029) becomes ``\n``; other control
  characters but tab, noncharacters and a stray byte-order mark are removed; a
  lone surrogate (half of a UTF-16 pair, e.g. a JSON ``"\ud83d"`` cut from an emoji) becomes
  U+FFFD, the replacement character.
- Dates (:func:`normalize_date`): ISO 8601 text of the precision given
  (``2024``, ``2024-08``, ``2024-08-09``, or a datetime with its offset, if any).
  Any common spelling with a year is read (``9 August 2024``, RFC 2822,
  ``2024年8月9日``); a numeric day and month that could be either way round
  (``09/08/2024``) need a ``date_order``. A date that cannot be read skips its
  article, never kept as text that would compare wrongly.
- Metadata values (:func:`typed_value`): a string that is a JSON number
  (``1500``, ``-2.5``, ``1e3``; not ``01234``, ``1,500`` or ``NaN``) becomes that
  number, ``true``/``false`` in any case become booleans, so CSV and JSONL give the
  same index.
- Common fields (title, url, source, author, id) are text: a mapping with a
  ``name`` (``author: {name: ..., email: ...}``) gives that name, a list of
  authors is joined with ``", "``, any other list or mapping skips the article.
  Tags are a list of texts or one comma-separated text.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import BadInputError

# A date with an optional time and zone, or a bare year or year-month.
_ISO_DATE = re.compile(
    r"(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)\s*"
    r"([Zz]|[+-]\d{2}(?::?\d{2})?)?)?|(\d{4}(?:-\d{2})?)"
)
_SLASHED_DATE = re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})")
# A day and a month in either order, then a year: 09/08/2024, 9.8.24, 09-08-2024.
_NUMERIC_DATE = re.compile(r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})")
_HAS_YEAR = re.compile(r"(?<!\d)\d{4}(?!\d)")
DATE_ORDERS = ("DMY", "MDY")
"""How to read a numeric date whose day and month could be either way round."""
# JSON's number grammar: what a typed reader would take as a number.
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")
# Characters removed from text: C0/C1 controls but tab and newline, noncharacters,
# and U+FEFF (a byte-order mark inside text is an artefact of concatenated files).
_REMOVED = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\ufeff\ufdd0-\ufdef\ufffe\uffff]")
# What str.splitlines() takes for a line boundary, \r\n counted once.
_LINE_BREAKS = re.compile("\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize_text(text: str) -> str:
    """Text as semsearch stores, embeds, keyword-indexes and shows it.

    Unicode NFC (the W3C's form for the web: composed accents compare equal
    however they were typed); every line boundary of ``str.splitlines``
    becomes ``\\n``; other control characters but tab, Unicode
    noncharacters and U+FEFF are removed; a lone surrogate becomes U+FFFD, as a
    UTF-8 decoder does with a broken sequence (SQLite, JSON and the terminal
    cannot carry one).

    Example:
        >>> normalize_text("cafe\\u0301\\r\\nbroken \\ud83d emoji")
        'café\\nbroken \\ufffd emoji'
    """
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    text = _REMOVED.sub("", _LINE_BREAKS.sub("\n", text))
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def normalized(value: Any) -> Any:
    """Every text inside a loaded value normalised (:func:`normalize_text`)."""
    if isinstance(value, str):
        return normalize_text(value)
    if isinstance(value, Mapping):
        return {normalize_text(str(k)): normalized(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [normalized(v) for v in value]
    return value


def typed_value(value: Any) -> Any:
    """A metadata value as JSON, typed by one rule whatever the format.

    A string that is a JSON number (``"1500"``, ``"-2.5"``, ``"1e3"``) becomes
    that number and ``true``/``false`` in any case (``TRUE`` as spreadsheets
    write it) become booleans, so a CSV column
    filters like the same JSONL field. Strings that merely contain digits stay
    text: ``"01234"`` (a code with a leading zero), ``"1,500"``, ``"NaN"``.
    Dates become ISO text; mappings and lists are typed element by element.
    """
    if isinstance(value, str):
        number = _NUMBER.fullmatch(value.strip())
        if number:
            parsed = float(value) if number.group(1) or number.group(2) else int(value)
            return parsed if not isinstance(parsed, float) or math.isfinite(parsed) else value
        return {"true": True, "false": False}.get(value.lower(), value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): typed_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [typed_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def text_field(record: Mapping[str, Any], key: str, named: bool = False) -> str | None:
    """A common field as text; a ``{name: ...}`` mapping gives its name where ``named``."""
    value = record.get(key)
    if named and isinstance(value, Mapping) and isinstance(value.get("name"), str):
        value = value["name"]
    if isinstance(value, (Mapping, list, tuple, set)):
        kind = "mapping" if isinstance(value, Mapping) else "list"
        hint = " with a 'name'" if named else ""
        raise BadInputError(f"field {key!r} holds a {kind}; expected text{hint}")
    return _opt_str(value)


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def normalize_date(value: Any, date_order: str | None = None) -> str | None:
    """A date as ISO 8601 text of the precision given, so that dates compare as text.

    ISO dates and datetimes are kept (``Z`` becomes ``+00:00``, a space between
    date and time becomes ``T``); ``YYYY/MM/DD`` and RFC 2822 (RSS) are
    converted; any other spelling that names a year is read by dateparser
    (``9 August 2024``, ``Aug 9, 2024 5pm EST``, ``2024年8月9日``, ``9 tháng 8 năm
    2024``). A numeric date whose first two numbers are both 12 or less
    (``09/08/2024``) is read in ``date_order``.

    Args:
        value: text, a ``date``/``datetime``, or None.
        date_order: ``"DMY"`` or ``"MDY"``, for numeric dates that could be read
            either way; None refuses them.

    Returns:
        ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS][+HH:MM]``;
        None for None or blank text.

    Raises:
        BadInputError: for a date that cannot be read, has no year (``Monday``,
            ``yesterday``), or is ambiguous without a ``date_order``.
    """
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (Mapping, list, tuple, set, bool)):
        raise BadInputError(f"{value!r} is not a date")
    text = _opt_str(value)
    if text is None:
        return None
    iso = _ISO_DATE.fullmatch(text)
    if iso:
        day, clock, zone, partial = iso.groups()
        if partial or not clock:
            return partial or day
        if zone and zone.upper() == "Z":
            zone = "+00:00"
        elif zone and ":" not in zone:
            zone = f"{zone[:3]}:{zone[3:] or '00'}"
        return f"{day}T{clock.replace(',', '.')}{zone or ''}"
    slashed = _SLASHED_DATE.fullmatch(text)
    try:
        if slashed:
            return dt.date(*(int(part) for part in slashed.groups())).isoformat()
        if re.search(r"[A-Za-z]{3}", text):  # a month or day name: try RFC 2822 first
            return email.utils.parsedate_to_datetime(text).isoformat()
    except (TypeError, ValueError, IndexError, OverflowError):
        pass
    return _parsed_date(text, date_order)


def _parsed_date(text: str, date_order: str | None) -> str:
    numeric = _NUMERIC_DATE.fullmatch(text)
    order = date_order
    if numeric:
        first, second = int(numeric.group(1)), int(numeric.group(3))
        if first > 12 >= second:
            order = "DMY"
        elif second > 12 >= first:
            order = "MDY"
        elif first != second and order is None:
            raise BadInputError(
                f"date {text!r} could be day/month or month/day; "
                "give the order, DMY or MDY (--date-order on the command line, "
                "date_order= in Python and over HTTP)"
            )
    elif not _HAS_YEAR.search(text):
        raise BadInputError(f"date {text!r} names no year; use ISO 8601 (YYYY-MM-DD)")
    parsed = _date_parser(order or "DMY").get_date_data(text)
    moment = parsed.date_obj
    if moment is None:
        raise BadInputError(f"cannot read date {text!r}; use ISO 8601 (YYYY-MM-DD)")
    if parsed.period == "year":
        return f"{moment.year:04d}"
    if parsed.period == "month":
        return f"{moment.year:04d}-{moment.month:02d}"
    if parsed.period == "day":
        return moment.date().isoformat()
    return moment.isoformat(timespec="seconds" if moment.second else "minutes")


@functools.cache
def _date_parser(order: str) -> Any:
    # dateparser: a well-kept reader of dates in 200+ languages; only absolute
    # dates (no "yesterday"), with the period named so that "2024-08" stays a month.
    from dateparser.date import DateDataParser

    settings = {
        "PARSERS": ["custom-formats", "absolute-time"],
        "DATE_ORDER": order,
        "PREFER_DAY_OF_MONTH": "first",
        "RETURN_TIME_AS_PERIOD": True,
    }
    return DateDataParser(settings=settings)


def author_field(value: Any, key: str) -> str | None:
    if isinstance(value, (list, tuple)):
        names = [v.get("name") if isinstance(v, Mapping) else v for v in value]
        if not all(isinstance(n, (str, int, float)) for n in names):
            raise BadInputError(f"field {key!r} holds a list of {value!r}; expected names")
        return ", ".join(str(n).strip() for n in names if str(n).strip()) or None
    return text_field({key: value}, key, named=True)


def tags_field(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = value.split(",") if value.lstrip()[:1] != "[" else _json_list(value)
    elif isinstance(value, (list, tuple, set)):
        items = value
    elif isinstance(value, Mapping):
        raise BadInputError(f"field {key!r} holds a mapping; expected a list of tags")
    else:
        items = [value]
    if any(isinstance(i, (Mapping, list, tuple, set)) for i in items):
        raise BadInputError(f"field {key!r} holds nested values; expected a list of tags")
    return tuple(t for t in (str(i).strip() for i in items) if t)


def _json_list(value: str) -> list[Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return value.split(",")
    return parsed if isinstance(parsed, list) else [parsed]
