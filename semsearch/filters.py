"""Metadata filters: a small spec language compiled to parameterised SQL.

A spec maps a field to a condition; several fields are ANDed::

    {"source": "Reuters", "date": {"gte": "2023-06-01"}, "tags": {"in": ["nato"]}}

A condition is a scalar (``eq``), a list (``in``) or a dict of operators
(several are ANDed: ``{"gte": a, "lt": b}``). Operators: ``eq ne gt gte lt lte
in nin``; ``in`` and ``nin`` take a non-empty list.

Fields:
    id, title, url, source, author, path: the article's columns, compared as text.
        ``ne``/``nin`` match articles without the field.
    date: ISO 8601 text (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or a datetime with
        optional ``Z``/offset). A value stands for the whole period it names, so
        ``eq "2023-06"`` is all of June, ``lte "2023-06-01"`` includes
        ``2023-06-01T23:59:00+00:00`` (it compiles to ``< "2023-06-02"``) and
        ``gt "2023-06-01"`` starts at ``"2023-06-02"``. Times are compared as
        written (offsets are not converted to UTC), and a stored date-only value
        sorts before any time on that day. Articles without a date (or with one
        that does not start with a year) never match a date condition.
    tags: membership, case-insensitive for ASCII letters: ``eq``/``in`` match
        articles with any of the tags, ``ne``/``nin`` those with none of them.
    anything else: a key of the article's ``metadata`` (keys are case-sensitive);
        dots reach into nested objects (``region.name``), unless a key is
        spelled with the dot itself.
        ``eq``/``in`` match a scalar value or any element of an array; a number
        matches only numbers, a string only strings, ``true``/``false`` only
        booleans. ``ne``/``nin`` are their negation (a missing key matches).
        Ranges compare a scalar of the same kind (numbers as numbers, strings as
        strings); other values never match.

The SQL refers to the articles table as ``a``. No key or value of the spec ever
enters the SQL text: columns come from a whitelist and values are parameters.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadInputError

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
TEXT_FIELDS = ("id", "title", "url", "source", "author", "path")
STANDARD_FIELDS = (*TEXT_FIELDS, "date", "tags")
DATE_FORMATS = "YYYY-MM-DD, YYYY-MM, YYYY or YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|+HH:MM]"

_COLUMNS = {name: f"a.{name}" for name in TEXT_FIELDS}
_RANGE_SQL = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_STEPS = {
    "minutes": dt.timedelta(minutes=1),
    "seconds": dt.timedelta(seconds=1),
    "microseconds": dt.timedelta(microseconds=1),
}
_HAS_DATE = "a.date GLOB '[0-9][0-9][0-9][0-9]*'"
_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?"
    r"(?:Z|[+-]\d{2}(?::?\d{2})?)?)?)?)?"
)


@dataclass(frozen=True)
class Filter:
    """A compiled filter: a boolean SQL expression over ``articles AS a``.

    Attributes:
        sql: e.g. ``"(a.source = ?) AND (a.date >= ?)"``; values only as ``?``.
        params: the values for the placeholders, in order.
        spec: the normalised spec (``{"source": {"eq": "Reuters"}}``), JSON-serialisable.
    """

    sql: str
    params: tuple[Any, ...]
    spec: dict[str, Any]


def compile_filter(spec: Mapping[str, Any] | None) -> Filter | None:
    """Compile a filter spec (see the module docstring) to SQL over ``articles AS a``.

    Args:
        spec: field → condition, or None.

    Returns:
        The compiled filter, or None for None or an empty spec.

    Raises:
        BadInputError: for an unknown operator, a malformed date, a bad key or value.

    Example:
        >>> compile_filter({"source": "Reuters"}).sql
        '(a.source = ?)'
    """
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise BadInputError(f"a filter must be a JSON object of field: condition, not {spec!r}")
    parts: list[str] = []
    params: list[Any] = []
    normal: dict[str, Any] = {}
    for field, condition in spec.items():
        if not isinstance(field, str):
            raise BadInputError(f"filter field names must be strings, not {field!r}")
        normal[field] = {}
        for op, value in condition_operators(field, condition).items():
            sql, args, normal[field][op] = _compile_one(field, op, value)
            parts.append(f"({sql})")
            params.extend(args)
    if not parts:
        return None
    return Filter(sql=" AND ".join(parts), params=tuple(params), spec=normal)


def condition_operators(field: str, condition: Any) -> dict[str, Any]:
    """One field's condition as a dict of operators: a scalar is ``eq``, a list ``in``.

    Args:
        field: the field the condition is on (named in errors).
        condition: a scalar, a list, or a dict of operators.

    Returns:
        operator → value, e.g. ``{"eq": "Reuters"}``; the values are not checked yet.

    Raises:
        BadInputError: for an empty dict or an unknown operator.
    """
    if isinstance(condition, Mapping):
        if not condition:
            raise BadInputError(f"filter on {field!r} has no operators; use {', '.join(OPERATORS)}")
        for op in condition:
            if op not in OPERATORS:
                raise BadInputError(
                    f"unknown filter operator {op!r} for {field!r}; "
                    f"valid operators: {', '.join(OPERATORS)}"
                )
        return dict(condition)
    if isinstance(condition, (list, tuple)):
        return {"in": list(condition)}
    return {"eq": condition}


def _compile_one(field: str, op: str, value: Any) -> tuple[str, list[Any], Any]:
    """SQL, parameters and normalised value of one field's operator."""
    if op in ("in", "nin"):
        if not isinstance(value, (list, tuple)) or not value:
            raise BadInputError(
                f"filter on {field!r}: {op!r} needs a non-empty list, not {value!r}"
            )
        values = [_scalar(field, v) for v in value]
    else:
        values = [_scalar(field, value)]
    positive = op in ("eq", "in")
    if field == "date":
        sql, args = _date_sql(op, values)
    elif field == "tags":
        if op in _RANGE_SQL:
            raise BadInputError(f"filter on 'tags': {op!r} does not apply; use eq, ne, in or nin")
        marks = ", ".join(["lower(?)"] * len(values))
        sql = f"EXISTS (SELECT 1 FROM json_each(a.tags) AS t WHERE lower(t.value) IN ({marks}))"
        sql, args = (sql if positive else f"NOT {sql}"), values
    elif field in _COLUMNS:
        col, marks = _COLUMNS[field], ", ".join("?" * len(values))
        sql = {
            "eq": f"{col} = ?",
            "ne": f"{col} IS NOT ?",
            "in": f"{col} IN ({marks})",
            "nin": f"{col} IS NULL OR {col} NOT IN ({marks})",
        }.get(op) or f"{col} {_RANGE_SQL[op]} ?"
        args = values
    else:
        sql, args = _metadata_sql(field, op, values)
    return sql, args, values if op in ("in", "nin") else values[0]


def _scalar(field: str, value: Any) -> Any:
    """Check one value; standard fields take text, so numbers become strings there."""
    if isinstance(value, dt.date):
        value = value.isoformat()
    ok = isinstance(value, (str, int, float)) and not (
        isinstance(value, float) and not math.isfinite(value)
    )
    if not ok or (field in STANDARD_FIELDS and isinstance(value, bool)):
        kinds = "a string" if field in STANDARD_FIELDS else "a string, number or boolean"
        raise BadInputError(f"filter on {field!r}: {value!r} is not a valid value; use {kinds}")
    return str(value) if field in STANDARD_FIELDS else value


def _date_sql(op: str, values: list[str]) -> tuple[str, list[Any]]:
    ranges = [_date_range(v) for v in values]
    if op in _RANGE_SQL:
        lo, hi = ranges[0]
        bound = lo if op in ("gte", "lt") else hi
        if bound is None:  # the period runs to the end of year 9999
            return (f"{_HAS_DATE} AND 0" if op == "gt" else _HAS_DATE), []
        return f"{_HAS_DATE} AND a.date {'>=' if op in ('gte', 'gt') else '<'} ?", [bound]
    alternatives, args = [], []
    for lo, hi in ranges:
        alternatives.append("(a.date >= ?" + (" AND a.date < ?)" if hi else ")"))
        args += [lo, hi] if hi else [lo]
    within = " OR ".join(alternatives)
    return f"{_HAS_DATE} AND {'' if op in ('eq', 'in') else 'NOT '}({within})", args


def _date_range(value: str) -> tuple[str, str | None]:
    """The period a date value names, as [start, end) text; end None past year 9999."""
    match = _DATE.fullmatch(value.strip())
    try:
        if match is None:
            raise ValueError
        year, month, day, hour, minute, second, fraction = match.groups()
        micro = int((fraction or "0").ljust(6, "0"))
        y, mo = int(year), int(month or 1)
        clock = (int(hour or 0), int(minute or 0), int(second or 0), micro)
        start = dt.datetime(y, mo, int(day or 1), *clock)
    except ValueError:
        raise BadInputError(
            f"filter on 'date': {value!r} is not an ISO 8601 date; use {DATE_FORMATS}"
        ) from None
    width = 4 if month is None else 7 if day is None else 10
    timespec = "microseconds" if micro else "seconds" if second else "minutes"
    step = dt.timedelta(days=1) if hour is None else _STEPS[timespec]

    def text(moment: dt.datetime) -> str:
        return moment.isoformat()[:width] if hour is None else moment.isoformat(timespec=timespec)

    try:
        if month is None:
            end = start.replace(year=y + 1)
        elif day is None:
            end = start.replace(year=y + mo // 12, month=mo % 12 + 1)
        else:
            end = start + step
    except (ValueError, OverflowError):  # past year 9999
        return text(start), None
    return text(start), text(end)


def _metadata_sql(key: str, op: str, values: list[Any]) -> tuple[str, list[Any]]:
    path, path_args = _json_path(key)
    if op in _RANGE_SQL:
        value = values[0]
        if isinstance(value, bool):
            raise BadInputError(
                f"filter on {key!r}: {op!r} compares numbers or strings, not {value}"
            )
        kind = "'text'" if isinstance(value, str) else "'integer', 'real'"
        compare = f"json_extract(a.metadata, {path}) {_RANGE_SQL[op]} ?"
        sql = f"json_type(a.metadata, {path}) IN ({kind}) AND {compare}"
        return sql, [*path_args, *path_args, value]
    tests, args = [], list(path_args)
    for value in values:
        if isinstance(value, bool):  # fixed SQL text chosen by the value's truth, not the value
            tests.append("m.type = 'true'" if value else "m.type = 'false'")
        else:
            kind = "'text'" if isinstance(value, str) else "'integer', 'real'"
            tests.append(f"(m.type IN ({kind}) AND m.value = ?)")
            args.append(value)
    sql = f"EXISTS (SELECT 1 FROM json_each(a.metadata, {path}) AS m WHERE {' OR '.join(tests)})"
    return (sql if op in ("eq", "in") else f"NOT {sql}"), args


def _json_path(key: str) -> tuple[str, list[str]]:
    """SQL for the JSON path of a metadata key, and its parameters.

    A dot separates levels: ``region.name`` is ``{"region": {"name": ...}}``,
    unless the article has a key spelled ``region.name`` itself, which then wins.
    """
    # SQLite matches a quoted path label against the key as stored, escapes and
    # all, so keys that JSON escapes cannot be looked up reliably: refuse them.
    if not key:
        raise BadInputError("filter keys cannot be empty")
    if '"' in key or "\\" in key or any(unicodedata.category(c) == "Cc" for c in key):
        raise BadInputError(
            f"filter key {key!r} cannot contain double quotes, backslashes or control characters"
        )
    literal = f'$."{key}"'
    if "." not in key:
        return "?", [literal]
    parts = key.split(".")
    if not all(parts):
        raise BadInputError(
            f"filter key {key!r} has an empty level; use dots between keys, e.g. region.name"
        )
    nested = "$" + "".join(f'."{part}"' for part in parts)
    return "(CASE WHEN json_type(a.metadata, ?) IS NULL THEN ? ELSE ? END)", [
        literal,
        nested,
        literal,
    ]
