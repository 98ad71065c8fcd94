"""Files and folders → :class:`~semsearch.records.Article` objects.

Supported: ``.txt``, ``.md``/``.markdown`` (optional YAML front matter),
``.html``/``.htm`` (main text and metadata by trafilatura), ``.jsonl`` and
``.csv`` (one article per row, field names configurable with :class:`FieldMap`),
and ``-`` for JSONL on standard input.

Problems with one file or row never stop the others: they come out as
:class:`~semsearch.records.Skipped` records naming the file and line, so the
caller decides whether to warn or to fail. Only a path that does not exist is
an error at once, before anything is read.
"""

from __future__ import annotations

import csv
import datetime as dt
import email.utils
import hashlib
import io
import json
import os
import re
import sys
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
ROW_SUFFIXES = {".jsonl", ".csv"}
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
    clean: bool = True,
) -> Iterator[Article | Skipped]:
    """Yield the articles in files and folders (recursively), and what was skipped.

    Args:
        paths: files, folders, or ``"-"`` for JSONL on standard input.
        fields: JSONL/CSV field names; the defaults are ``id,title,text,url,date,source``.
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
    for p in paths:
        if str(p) != STDIN and not Path(p).exists():
            raise BadInputError("no such file or directory", path=str(p))
    for p in paths:
        if str(p) == STDIN:
            yield from _rows_jsonl(sys.stdin.read(), STDIN_NAME, fields)
            continue
        path = Path(p)
        if path.is_dir():
            for file in _walk(path):
                yield from load_file(file, root=path, fields=fields, clean=clean)
        else:
            yield from load_file(path, root=path.parent, fields=fields, clean=clean)


def load_file(
    path: Path,
    root: Path | None = None,
    fields: FieldMap | None = None,
    *,
    clean: bool = True,
) -> Iterator[Article | Skipped]:
    """Yield the articles in one file (several for JSONL and CSV), or why it was skipped.

    ``clean`` is as for :func:`load_paths`.
    """
    fields = fields or FieldMap()
    root = root if root is not None else path.parent
    suffix = path.suffix.lower()
    name = str(path)
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
    # Lexical, not resolved: a symlink may point outside the folder.
    rel_id = Path(os.path.relpath(path, root)).as_posix()
    try:
        if suffix in ROW_SUFFIXES:
            rows = _rows_jsonl if suffix == ".jsonl" else _rows_csv
            yield from rows(text, name, fields)
        elif suffix in MARKDOWN_SUFFIXES:
            yield _markdown(text, name, rel_id)
        elif suffix in HTML_SUFFIXES:
            yield _html(text, name, rel_id, clean)
        else:
            yield _plain(text, name, rel_id, clean)
    except BadInputError as e:
        yield Skipped(name, e.reason, e.line)


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
    if b"\x00" in data[:8192]:
        raise BadInputError("binary file, not text", path=str(path))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInputError(
            f"not valid UTF-8 (byte {e.start}); convert it to UTF-8", path=str(path)
        ) from None


def _plain(text: str, name: str, rel_id: str, clean: bool = True) -> Article:
    page = clean_page(text) if clean else None
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


def _markdown(text: str, name: str, rel_id: str) -> Article:
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
    return _from_mapping({**meta, "text": body}, FieldMap(), default_id=rel_id, path=name)


def _html(text: str, name: str, rel_id: str, clean: bool = True) -> Article:
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
    article = _from_mapping(record, FieldMap(), default_id=rel_id, path=name)
    return replace(article, removed_lines=removed) if removed else article


def _rows_jsonl(text: str, name: str, fields: FieldMap) -> Iterator[Article | Skipped]:
    # Only "\n" ends a JSONL line: splitlines() would also split on U+2028,
    # U+0085 and others, which JSON strings may hold unescaped.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            yield Skipped(name, f"invalid JSON: {e.msg} (column {e.colno})", lineno)
            continue
        if not isinstance(record, dict):
            yield Skipped(name, f"expected a JSON object, got {type(record).__name__}", lineno)
            continue
        yield _row(record, fields, name, lineno)


def _rows_csv(text: str, name: str, fields: FieldMap) -> Iterator[Article | Skipped]:
    csv.field_size_limit(2**31 - 1)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
    except csv.Error as e:
        yield Skipped(name, f"cannot parse CSV header: {e}", 1)
        return
    if fields.text not in header:
        columns = ", ".join(header) or "none"
        yield Skipped(
            name,
            f"no {fields.text!r} column (columns: {columns}); "
            f"name the text column with --field text=COLUMN",
            1,
        )
        return
    while True:
        lineno = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield Skipped(name, f"cannot parse CSV: {e}", lineno)
            return
        record = {k: v for k, v in record.items() if k is not None and v not in (None, "")}
        yield _row(record, fields, name, lineno)


def _row(record: dict[str, Any], fields: FieldMap, name: str, lineno: int) -> Article | Skipped:
    try:
        return _from_mapping(record, fields, default_id=None, path=f"{name}:{lineno}")
    except BadInputError as e:
        return Skipped(name, e.reason, lineno)


def _from_mapping(
    record: Mapping[str, Any], fields: FieldMap, default_id: str | None, path: str
) -> Article:
    text = record.get(fields.text)
    if not isinstance(text, str) or not text.strip():
        raise BadInputError(f"no text: field {fields.text!r} is missing or empty")
    title = _opt_str(record.get(fields.title))
    given_id = record.get(fields.id)
    article_id = _opt_str(given_id) or default_id or content_hash(title, text)
    mapped = {getattr(fields, f.name) for f in dataclass_fields(fields)}
    metadata = {
        str(k): _jsonable(v) for k, v in record.items() if k not in mapped and v is not None
    }
    return Article(
        id=article_id,
        text=text,
        title=title,
        url=_opt_str(record.get(fields.url)),
        date=_date(record.get(fields.date)),
        source=_opt_str(record.get(fields.source)),
        author=_author(record.get(fields.author)),
        tags=_tags(record.get(fields.tags)),
        metadata=metadata,
        path=path,
    )


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _date(value: Any) -> str | None:
    """A date as ISO 8601 text, so that dates compare correctly as text.

    ISO dates and datetimes are kept (``Z`` becomes ``+00:00``, a space between
    date and time becomes ``T``); RFC 2822 dates (RSS) and ``YYYY/MM/DD`` are
    converted; anything else is kept as given rather than failing the article.
    """
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
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
        if re.search(r"[A-Za-z]{3}", text):  # a month or day name: try RFC 2822
            return email.utils.parsedate_to_datetime(text).isoformat()
    except (TypeError, ValueError, IndexError, OverflowError):
        pass
    return text


def _author(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or None
    return _opt_str(value)


def _tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = value.split(",") if value.lstrip()[:1] != "[" else _json_list(value)
    elif isinstance(value, (list, tuple, set)):
        items = value
    else:
        items = [value]
    return tuple(t for t in (str(i).strip() for i in items) if t)


def _json_list(value: str) -> list[Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return value.split(",")
    return parsed if isinstance(parsed, list) else [parsed]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
