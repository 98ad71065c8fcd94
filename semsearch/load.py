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

Every value is normalised once, at load, by the rules of
:mod:`semsearch.values` (text, dates, metadata types, common fields), so that
the same data gives the same index whatever its format.
"""

from __future__ import annotations

import csv
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

from .errors import BadInputError, MissingDependencyError
from .records import Article, Skipped
from .values import (
    DATE_ORDERS,
    author_field,
    normalize_date,
    normalize_text,
    normalized,
    tags_field,
    text_field,
    typed_value,
)

TEXT_SUFFIXES = {".txt"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
ROW_SUFFIXES = {".jsonl", ".csv", ".tsv"}
PARQUET_SUFFIXES = {".parquet"}
STDIN_NAME = "<stdin>"
"""The source name of rows read from standard input (``-``)."""
SUPPORTED_SUFFIXES = (
    TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | ROW_SUFFIXES | PARQUET_SUFFIXES
)
STDIN = "-"

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)
_ATX_HEADING = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.M)
_TITLE_MAX_CHARS = 150
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
        for file, root in input_files([p]):
            yield from load_file(file, root=root, fields=fields, date_order=date_order, clean=clean)


def input_files(paths: Sequence[str | os.PathLike[str]]) -> Iterator[tuple[Path, Path]]:
    """Each file to read under these paths, with the root its articles' ids are relative to.

    A folder gives its supported files, recursively, in sorted order (hidden
    files and folders left out), each with the folder as root; a file gives
    itself with its parent folder as root. This is the order :func:`load_paths`
    reads in, and a distributed build's order (:mod:`semsearch.distributed`).
    """
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for file in _walk(path):
                yield file, path
        else:
            yield path, path.parent


def load_file(
    path: Path,
    root: Path | None = None,
    fields: FieldMap | None = None,
    *,
    date_order: str | None = None,
    clean: bool = True,
    row_groups: Sequence[int] | None = None,
) -> Iterator[Article | Skipped]:
    """Yield the articles in one file (several for JSONL, CSV and Parquet), or why it was
    skipped.

    ``clean`` is as for :func:`load_paths`. ``row_groups`` reads only these row
    groups of a Parquet file (a distributed build reads each in its own task).
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
    if suffix in PARQUET_SUFFIXES:
        yield from _rows_parquet(path, name, fields, date_order, row_groups)
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


def default_article_id(title: str | None, text: str) -> str:
    """The id of a row that gives none: 16 hex digits of SHA-256 of its title and text.

    Only an id. Not the article hash that decides whether a stored article
    changed (:func:`semsearch.writer.article_hash`, kept in ``articles.content_hash``),
    nor the embedding cache's text hash (``chunks.text_hash``).
    """
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
    from .clean import clean_page  # its tables cost 13 ms to compile: not on the query path

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
        from .clean import strip_section_label

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


def read_jsonl(
    text: str, name: str, fields: FieldMap | None = None, date_order: str | None = None
) -> Iterator[Article | Skipped]:
    """The articles of JSONL text, read as ``semsearch index -`` reads standard input.

    Args:
        text: one JSON object per line (``\\n`` ends a line; blank lines are ignored).
        name: what to call the input in an article's ``path`` (``NAME:LINE``) and
            in a skipped row.
        fields: field names; the defaults are ``id,title,text,url,date,source``.
        date_order: ``"DMY"`` or ``"MDY"``, as for :func:`load_paths`.

    Yields:
        An :class:`Article` per good line, a :class:`Skipped` (with its line) per bad one.
    """
    return _rows_jsonl(text, name, fields or FieldMap(), date_order)


def read_records(
    records: Iterable[Any],
    name: str,
    fields: FieldMap | None = None,
    date_order: str | None = None,
) -> Iterator[Article | Skipped]:
    """Articles from parsed JSON values, each read as one line of JSONL (see :func:`read_jsonl`).

    The n-th value counts as line n, so a skipped one is named ``NAME`` line n.
    """
    fields = fields or FieldMap()
    for number, record in enumerate(records, start=1):
        if isinstance(record, dict):
            yield _row(record, fields, name, number, date_order)
        else:
            yield Skipped(name, f"expected a JSON object, got {type(record).__name__}", number)


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


def parquet_row_groups(path: Path) -> list[tuple[int, int]]:
    """Each row group of a Parquet file: (its number, its rows), from the file's footer.

    Raises:
        MissingDependencyError: if pyarrow is not installed.
        BadInputError: if the file is not Parquet.
    """
    return _row_groups(_parquet_file(path))


def _row_groups(reader: Any) -> list[tuple[int, int]]:
    meta = reader.metadata
    return [(g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]


def _parquet_file(path: Path) -> Any:
    """pyarrow's reader of a Parquet file (its footer read).

    Raises:
        MissingDependencyError: if pyarrow is not installed.
        BadInputError: if the file is not Parquet.
    """
    parquet = _pyarrow_parquet()
    try:
        return parquet.ParquetFile(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise BadInputError(f"cannot read Parquet: {e}", path=os.path.abspath(path)) from None


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet
    except ImportError:
        raise MissingDependencyError(
            'reading Parquet needs pyarrow: pip install "semsearch[parquet]"'
        ) from None
    return pyarrow.parquet


def _rows_parquet(
    path: Path,
    name: str,
    fields: FieldMap,
    date_order: str | None,
    row_groups: Sequence[int] | None = None,
) -> Iterator[Article | Skipped]:
    """The rows of a Parquet file as articles, each named ``FILE:ROW`` (rows count from 1
    over the whole file, as lines do in JSONL)."""
    try:
        reader = _parquet_file(path)
    except (BadInputError, MissingDependencyError) as e:
        yield Skipped(name, e.reason if isinstance(e, BadInputError) else str(e))
        return
    first_row = 0
    for group, rows in _row_groups(reader):
        if row_groups is None or group in row_groups:
            try:
                records = reader.read_row_group(group).to_pylist()
            except (OSError, ValueError) as e:
                yield Skipped(name, f"cannot read Parquet row group {group}: {e}", first_row + 1)
            else:
                for n, record in enumerate(records, start=first_row + 1):
                    present = {k: v for k, v in record.items() if v is not None and v != ""}
                    yield _row(present, fields, name, n, date_order)
        first_row += rows


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
    record = {normalize_text(str(k)): normalized(v) for k, v in record.items()}
    text = record.get(fields.text)
    if not isinstance(text, str) or not text.strip():
        raise BadInputError(f"no text: field {fields.text!r} is missing or empty")
    title = text_field(record, fields.title)
    article_id = text_field(record, fields.id) or default_id or default_article_id(title, text)
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
        url=text_field(record, fields.url),
        date=date,
        source=text_field(record, fields.source, named=True),
        author=author_field(record.get(fields.author), fields.author),
        tags=tags_field(record.get(fields.tags), fields.tags),
        metadata=metadata,
        path=path,
    )
