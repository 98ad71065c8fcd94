"""Files and folders → :class:`~semsearch.records.Article` objects.

Supported: ``.txt``, ``.md``/``.markdown`` (optional YAML front matter),
``.html``/``.htm`` (main text and metadata by trafilatura), ``.jsonl`` and
``.csv``/``.tsv`` (one article per row, separated by commas, tabs, semicolons or
vertical bars; field names configurable with :class:`FieldMap`),
and ``-`` for JSONL on standard input.

Problems with one file or row never stop the others: they come out as
:class:`~semsearch.records.Skipped` records naming the file and line, so the
caller decides whether to warn or to fail. Only a path that does not exist is
an error at once, before anything is read.

Every value is normalised here, once, by the rules below, so that what is
stored, embedded, keyword-indexed and shown is the same string:

- Text (:func:`normalize_text`): Unicode NFC; every line boundary that
  ``str.splitlines`` knows (``\r\n``, ``\r``, vertical tab, form feed,
  U+001C-U+001E, U+0085, U+2028, U+2029) becomes ``\n``; other control
  characters but tab, noncharacters and a stray byte-order mark are removed; a lone surrogate
  (half of a UTF-16 pair, e.g. a JSON ``"\ud83d"`` cut from an emoji) becomes
  U+FFFD, the replacement character.
- Dates (:func:`normalize_date`): ISO 8601 text of the precision given
  (``2024``, ``2024-08``, ``2024-08-09``, or a datetime with its offset, if any).
  Any common spelling with a year is read (``9 August 2024``, RFC 2822,
  ``2024年8月9日``); a numeric day and month that could be either way round
  (``09/08/2024``) need a ``date_order``. A date that cannot be read skips its
  article, never kept as text that would compare wrongly.
- Metadata values (:func:`typed_value`): a string that is a JSON number
  (``1500``, ``-2.5``, ``1e3``; not ``01234``, ``1,500`` or ``NaN``) becomes that
  number, ``true``/``false`` become booleans, so CSV and JSONL give the same index.
- Common fields (title, url, source, author, id) are text: a mapping with a
  ``name`` (``author: {name: ..., email: ...}``) gives that name, a list of
  authors is joined with ``", "``, any other list or mapping skips the article.
  Tags are a list of texts or one comma-separated text.
"""

from __future__ import annotations

import csv
import datetime as dt
import email.utils
import functools
import hashlib
import io
import json
import math
import os
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from .clean import clean_page, strip_section_label
from .errors import BadInputError
from .records import Article, Skipped

TEXT_SUFFIXES = {".txt"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
ROW_SUFFIXES = {".jsonl", ".csv", ".tsv"}
STDIN_NAME = "<stdin>"
"""The source name of rows read from standard input (``-``)."""
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | ROW_SUFFIXES
STDIN = "-"

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)
_ATX_HEADING = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.M)
_TITLE_MAX_CHARS = 150
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
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8 (surrogateescape)


@dataclass(frozen=True)
class FieldMap:
    """Which JSONL/CSV field holds each common article field.

    Every field not named here is kept in the article's ``metadata``.
    """

    id: str = "id"
    title: str = "title"
    text: str = "text"
    url: str = "url"
    date: str = "date"
    source: str = "source"
    author: str = "author"
    tags: str = "tags"

    @classmethod
    def from_pairs(cls, pairs: Iterable[str]) -> FieldMap:
        """Build from ``["text=body", "id=doc_id"]``.

        Raises:
            BadInputError: for a malformed pair or an unknown article field.
        """
        known = {f.name for f in dataclass_fields(cls)}
        values: dict[str, str] = {}
        for pair in pairs:
            name, sep, column = pair.partition("=")
            name, column = name.strip(), column.strip()
            if not sep or not column:
                raise BadInputError(f"field mapping {pair!r} is not ARTICLE_FIELD=COLUMN")
            if name not in known:
                choices = ", ".join(sorted(known))
                raise BadInputError(f"unknown article field {name!r} in {pair!r} ({choices})")
            values[name] = column
        return cls(**values)


def load_paths(
    paths: Sequence[str | os.PathLike[str]],
    fields: FieldMap | None = None,
    *,
    date_order: str | None = None,
    clean: bool = True,
) -> Iterator[Article | Skipped]:
    """Yield the articles in files and folders (recursively), and what was skipped.

    An article's ``path`` is its file's absolute path (``os.path.abspath``: ``./``,
    ``..`` and repeated slashes resolved, symbolic links kept), or
    ``FILE:LINE`` for a row; ids stay relative to the path given.

    Args:
        paths: files, folders, or ``"-"`` for JSONL on standard input.
        fields: JSONL/CSV field names; the defaults are ``id,title,text,url,date,source``.
        date_order: ``"DMY"`` or ``"MDY"``: how to read numeric dates such as
            ``09/08/2024``; None skips an article with such a date (see
            :func:`normalize_date`).
        clean: remove page furniture from ``.txt`` files saved from web pages and
            section labels from HTML (see :mod:`semsearch.clean`; each article's
            ``removed_lines`` lists what went). False reads every file as it is.

    Yields:
        An :class:`Article` per article read, a :class:`Skipped` per file or row
        that could not be read, in path order.

    Raises:
        BadInputError: if a path does not exist (checked before anything is read).
    """
    fields = fields or FieldMap()
    if date_order is not None and date_order not in DATE_ORDERS:
        raise BadInputError(f"date order {date_order!r} is not one of {', '.join(DATE_ORDERS)}")
    for p in paths:
        if str(p) != STDIN and not Path(p).exists():
            raise BadInputError("no such file or directory", path=str(p))
    for p in paths:
        if str(p) == STDIN:
            # Bytes, decoded as files are: a stray byte is a warning, not a crash.
            stream = getattr(sys.stdin, "buffer", None)
            try:
                text = _decode(stream.read(), STDIN_NAME, rows=True) if stream else sys.stdin.read()
            except BadInputError as e:
                yield Skipped(STDIN_NAME, e.reason)
                continue
            yield from _rows_jsonl(text, STDIN_NAME, fields, date_order)
            continue
        path = Path(p)
        if path.is_dir():
            for file in _walk(path):
                yield from load_file(
                    file, root=path, fields=fields, date_order=date_order, clean=clean
                )
        else:
            yield from load_file(
                path, root=path.parent, fields=fields, date_order=date_order, clean=clean
            )


def load_file(
    path: Path,
    root: Path | None = None,
    fields: FieldMap | None = None,
    *,
    date_order: str | None = None,
    clean: bool = True,
) -> Iterator[Article | Skipped]:
    """Yield the articles in one file (several for JSONL and CSV), or why it was skipped.

    ``clean`` is as for :func:`load_paths`.
    """
    fields = fields or FieldMap()
    root = root if root is not None else path.parent
    suffix = path.suffix.lower()
    # One spelling of each file, whatever the user typed: --prune compares these.
    name = os.path.abspath(path)
    if suffix not in SUPPORTED_SUFFIXES:
        known = ", ".join(sorted(SUPPORTED_SUFFIXES))
        yield Skipped(name, f"unsupported file type {suffix or '(none)'!r} (supported: {known})")
        return
    try:
        text = _read_text(path)
    except BadInputError as e:
        yield Skipped(name, e.reason)
        return
    if not text.strip():
        yield Skipped(name, "empty file")
        return
    if suffix not in ROW_SUFFIXES:
        # Rows are normalised value by value: a JSON string may hold a raw U+2028.
        text = normalize_text(text)
    # Lexical, not resolved: a symlink may point outside the folder.
    rel_id = Path(os.path.relpath(path, root)).as_posix()
    try:
        if suffix in ROW_SUFFIXES:
            rows = _rows_jsonl if suffix == ".jsonl" else _rows_csv
            yield from rows(text, name, fields, date_order)
        elif suffix in MARKDOWN_SUFFIXES:
            yield _markdown(text, name, rel_id, date_order)
        elif suffix in HTML_SUFFIXES:
            yield _html(text, name, rel_id, date_order, clean)
        else:
            yield _plain(text, name, rel_id, clean, date_order)
    except BadInputError as e:
        yield Skipped(name, e.reason, e.line)


def first_of_each_id(items: Iterable[Article | Skipped]) -> Iterator[Article | Skipped]:
    """Pass items through, an article whose id came earlier turned into a :class:`Skipped`.

    The first article of each id is kept; a later one is skipped, named by its
    file and line, with where the first one was read.
    """
    first: dict[str, str] = {}
    for item in items:
        if isinstance(item, Article):
            if item.id in first:
                yield skipped_article(
                    item,
                    f"duplicate id {item.id!r}, first at {first[item.id]}; this one is skipped",
                )
                continue
            first[item.id] = item.path or "an earlier article"
        yield item


def skipped_article(article: Article, reason: str) -> Skipped:
    """A :class:`Skipped` for an article, named by its file and, for a row, its line."""
    path = article.path or article.id
    file = source_file(path)
    line = path[len(file) + 1 :]
    return Skipped(file, reason, int(line) if line else None)


def source_file(path: str) -> str:
    """The file an article was read from: its path without a row's ``:line``."""
    file, _, line = path.rpartition(":")
    return file if file and line.isdigit() else path


def content_hash(title: str | None, text: str) -> str:
    """A short, stable hash of an article's title and text, used as its id when none is given."""
    digest = hashlib.sha256(f"{title or ''}\n{text}".encode()).hexdigest()
    return digest[:16]


def _walk(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            file = Path(dirpath) / filename
            if not filename.startswith(".") and file.suffix.lower() in SUPPORTED_SUFFIXES:
                yield file


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:  # a broken link or an unreadable file must not stop the others
        raise BadInputError(f"cannot read: {e.strerror or e}", path=str(path)) from None
    return _decode(data, str(path), rows=path.suffix.lower() in ROW_SUFFIXES)


def _decode(data: bytes, name: str, rows: bool = False) -> str:
    """UTF-8 text; in a file of rows, bytes that are not UTF-8 are kept as escapes
    (U+DC80-U+DCFF) so that only their rows are skipped (:func:`_undecoded`)."""
    if b"\x00" in data[:8192]:
        raise BadInputError("binary file, not text", path=name)
    if rows:
        return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        byte = data[e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)]
        raise BadInputError(
            f"not valid UTF-8 (byte 0x{byte:02X} at offset {e.start}); convert it to UTF-8",
            path=name,
        ) from None


def _undecoded(values: Iterable[str]) -> str | None:
    """Why a row is skipped if it holds bytes that were not UTF-8, else None."""
    for value in values:
        bad = _ESCAPED_BYTE.search(value)
        if bad:
            byte = ord(bad.group()) - 0xDC00
            return f"not valid UTF-8 (byte 0x{byte:02X} after {value[: bad.start()][-20:]!r})"
    return None


def _plain(
    text: str, name: str, rel_id: str, clean: bool = True, date_order: str | None = None
) -> Article:
    page = clean_page(text, date_order) if clean else None
    if page is not None and page.title is not None:  # a scraped page with a by-line
        return Article(
            id=rel_id,
            text=page.text,
            title=page.title,
            date=page.date,
            source=page.source,
            author=page.author,
            path=name,
            removed_lines=page.removed,
        )
    if page is not None:  # furniture at the end only: the rest is read as usual
        text = page.text
    # A short first line followed by a blank line is the headline.
    first, sep, rest = text.lstrip().partition("\n")
    title = None
    if sep and len(first.strip()) <= _TITLE_MAX_CHARS and rest.startswith(("\n", "\r\n")):
        title, text = first.strip(), rest.strip()
    if not text.strip():
        raise BadInputError("no text after the title line")
    removed = page.removed if page is not None else ()
    return Article(
        id=rel_id, text=text, title=title or Path(name).stem, path=name, removed_lines=removed
    )


def _markdown(text: str, name: str, rel_id: str, date_order: str | None = None) -> Article:
    meta: dict[str, Any] = {}
    match = _FRONT_MATTER.match(text)
    if match:
        import yaml  # only Markdown with front matter needs it

        try:
            loaded = yaml.safe_load(match.group(1))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 2 if mark is not None else None  # +1 for 1-based, +1 for '---'
            problem = getattr(e, "problem", None) or "cannot parse"
            raise BadInputError(f"invalid YAML front matter: {problem}", line=line) from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise BadInputError("YAML front matter must be a mapping of key: value", line=2)
        meta = dict(loaded or {})
        text = text[match.end() :]
    body = text.strip()
    if not body:
        raise BadInputError("no text after the front matter")
    if not meta.get("title"):
        heading = _ATX_HEADING.search(body)
        meta["title"] = heading.group(1).strip() if heading else Path(name).stem
    record = {**meta, "text": body}
    return _from_mapping(record, FieldMap(), default_id=rel_id, path=name, date_order=date_order)


def _html(
    text: str, name: str, rel_id: str, date_order: str | None = None, clean: bool = True
) -> Article:
    import trafilatura  # heavy (lxml); only HTML needs it

    doc: Any = trafilatura.bare_extraction(
        text, with_metadata=True, include_comments=False, include_tables=True, as_dict=False
    )
    body = getattr(doc, "text", None) if doc is not None else None
    if not body or not body.strip():
        raise BadInputError("no main text found in the HTML page")
    title = doc.title
    # trafilatura keeps the headline as the body's first line; the title is
    # embedded with every chunk anyway, so drop the repeat.
    first, _, rest = body.partition("\n")
    removed: tuple[str, ...] = ()
    if clean:  # also drops section labels ("Cyber security") above the repeat
        body, removed = strip_section_label(body, title)
    elif title and first.strip() == title.strip() and rest.strip():
        body = rest
    record: dict[str, Any] = {
        "title": title or Path(name).stem,
        "text": body.strip(),
        "url": doc.url,
        "date": doc.date,
        "source": doc.sitename or doc.hostname,
        "author": doc.author,
        "tags": list(doc.tags or []) or list(doc.categories or []),
        "description": doc.description,
    }
    article = _from_mapping(record, FieldMap(), default_id=rel_id, path=name, date_order=date_order)
    return replace(article, removed_lines=removed) if removed else article


def _rows_jsonl(
    text: str, name: str, fields: FieldMap, date_order: str | None = None
) -> Iterator[Article | Skipped]:
    # Only "\n" ends a JSONL line: splitlines() would also split on U+2028,
    # U+0085 and others, which JSON strings may hold unescaped.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        undecoded = _undecoded([line])
        if undecoded:
            yield Skipped(name, undecoded, lineno)
            continue
        try:
            # strict=False: a raw control character in a string is read, then
            # removed by the text rule, rather than losing the row.
            record = json.loads(line, strict=False)
        except json.JSONDecodeError as e:
            yield Skipped(name, f"invalid JSON: {e.msg} (column {e.colno})", lineno)
            continue
        if not isinstance(record, dict):
            yield Skipped(name, f"expected a JSON object, got {type(record).__name__}", lineno)
            continue
        yield _row(record, fields, name, lineno, date_order)


def _rows_csv(
    text: str, name: str, fields: FieldMap, date_order: str | None = None
) -> Iterator[Article | Skipped]:
    csv.field_size_limit(2**31 - 1)
    delimiter = _csv_delimiter(text, fields.text)
    # Physical lines, endings kept, so that reading can start again after a bad one.
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.DictReader(lines, delimiter=delimiter)
    try:
        header = reader.fieldnames or []
    except csv.Error as e:
        yield Skipped(name, f"cannot parse CSV header: {e}", 1)
        return
    reader.fieldnames = header = [h.strip() for h in header]
    if fields.text not in header:
        columns = ", ".join(header) or "none"
        yield Skipped(
            name,
            f"no {fields.text!r} column (columns: {columns}; read as separated by "
            f"{_DELIMITER_NAMES[delimiter]}); name the text column with --field text=COLUMN",
            1,
        )
        return
    offset = 0  # lines before the current reader's first line
    while True:
        lineno = offset + reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield Skipped(name, f"cannot parse CSV: {e}", lineno)
            if offset + reader.line_num < lineno:  # the reader cannot move past it
                return
            continue
        last = offset + reader.line_num
        if last > lineno and _swallowed_rows(record, lines[lineno:last], len(header), delimiter):
            # A quote left open on this line took the rows after it as text: skip
            # this line alone and read the rest again.
            yield Skipped(
                name,
                f"a quote opened on this line runs on to line {last}, taking the rows between "
                f"as text; this row "
                f"is skipped and the lines after it are read again",
                lineno,
            )
            offset = lineno
            reader = csv.DictReader(lines[lineno:], fieldnames=header, delimiter=delimiter)
            continue
        record = {k: v for k, v in record.items() if k is not None and v not in (None, "")}
        undecoded = _undecoded([*record, *(v for v in record.values() if isinstance(v, str))])
        if undecoded:
            yield Skipped(name, undecoded, lineno)
            continue
        yield _row(record, fields, name, lineno, date_order)


def _swallowed_rows(record: dict[Any, Any], later: list[str], width: int, delimiter: str) -> bool:
    """Whether a row read over several lines looks like an open quote that took other rows.

    It does when its number of fields is not the header's and one of the later
    lines it took has exactly the header's number of fields by itself. A
    quoted field that really holds line breaks keeps the header's width.
    """
    if None not in record and None not in record.values():
        return False
    for line in later:
        try:
            if len(next(csv.reader([line], delimiter=delimiter), [])) == width:
                return True
        except csv.Error:
            continue
    return False


_DELIMITER_NAMES = {",": "commas", "\t": "tabs", ";": "semicolons", "|": "vertical bars"}


def _csv_delimiter(text: str, text_column: str) -> str:
    """The delimiter under which the header names the text column (commas first).

    A header that names the text column is a surer sign than the sniffing of
    the standard library's :class:`csv.Sniffer`, which article text (full of
    commas and semicolons) can mislead; the sniffer decides only when no
    delimiter gives that column, for the error message.
    """
    head = text[:65536]
    for delimiter in _DELIMITER_NAMES:
        try:
            header = next(csv.reader(io.StringIO(head, newline=""), delimiter=delimiter), [])
        except csv.Error:
            continue
        if text_column in (h.strip() for h in header):
            return delimiter
    try:
        return csv.Sniffer().sniff(head, delimiters="".join(_DELIMITER_NAMES)).delimiter
    except csv.Error:
        return ","


def _row(
    record: dict[str, Any], fields: FieldMap, name: str, lineno: int, date_order: str | None
) -> Article | Skipped:
    try:
        where = f"{name}:{lineno}"
        return _from_mapping(record, fields, default_id=None, path=where, date_order=date_order)
    except BadInputError as e:
        return Skipped(name, e.reason, lineno)


def _from_mapping(
    record: Mapping[str, Any],
    fields: FieldMap,
    default_id: str | None,
    path: str,
    date_order: str | None = None,
) -> Article:
    record = {normalize_text(str(k)): _normalized(v) for k, v in record.items()}
    text = record.get(fields.text)
    if not isinstance(text, str) or not text.strip():
        raise BadInputError(f"no text: field {fields.text!r} is missing or empty")
    title = _text_field(record, fields.title)
    article_id = _text_field(record, fields.id) or default_id or content_hash(title, text)
    mapped = {getattr(fields, f.name) for f in dataclass_fields(fields)}
    metadata = {k: typed_value(v) for k, v in record.items() if k not in mapped and v is not None}
    try:
        date = normalize_date(record.get(fields.date), date_order)
    except BadInputError as e:
        raise BadInputError(f"field {fields.date!r}: {e.reason}") from None
    return Article(
        id=article_id,
        text=text,
        title=title,
        url=_text_field(record, fields.url),
        date=date,
        source=_text_field(record, fields.source, named=True),
        author=_author(record.get(fields.author), fields.author),
        tags=_tags(record.get(fields.tags), fields.tags),
        metadata=metadata,
        path=path,
    )


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


def _normalized(value: Any) -> Any:
    """Every text inside a loaded value normalised (:func:`normalize_text`)."""
    if isinstance(value, str):
        return normalize_text(value)
    if isinstance(value, Mapping):
        return {normalize_text(str(k)): _normalized(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_normalized(v) for v in value]
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


def _text_field(record: Mapping[str, Any], key: str, named: bool = False) -> str | None:
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
                "give the order with --date-order DMY or MDY (date_order=)"
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


def _author(value: Any, key: str) -> str | None:
    if isinstance(value, (list, tuple)):
        names = [v.get("name") if isinstance(v, Mapping) else v for v in value]
        if not all(isinstance(n, (str, int, float)) for n in names):
            raise BadInputError(f"field {key!r} holds a list of {value!r}; expected names")
        return ", ".join(str(n).strip() for n in names if str(n).strip()) or None
    return _text_field({key: value}, key, named=True)


def _tags(value: Any, key: str) -> tuple[str, ...]:
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
