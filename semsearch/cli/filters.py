"""The query command's filter options to one filter spec.

``--where``, ``--since``, ``--until``, ``--tag`` and ``--filter`` are parsed
here; the spec language itself (operators, fields, SQL) is
:mod:`semsearch.filters`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import BadInputError
from ..filters import STANDARD_FIELDS, compile_filter, condition_operators

WHERE_FORMS = "key=value, key!=value, key>=value, key<=value, key>value or key<value"

# Alternatives longest first, so at the first operator position the longest one wins.
_WHERE_OP = re.compile(r"!=|>=|<=|=|>|<")
_WHERE_OPS = {"=": "eq", "!=": "ne", ">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}


def parse_cli_filter(
    where: Sequence[str] = (),
    since: str | None = None,
    until: str | None = None,
    tags: Sequence[str] = (),
    json_filter: str | None = None,
    prefix: str = "--",
) -> dict[str, Any] | None:
    """Build a filter spec from the CLI options ``--where/--since/--until/--tag/--filter``.

    ``--where key=value`` repeated for one key means any of the values (``in``;
    ``!=`` repeated means none of them). Values of metadata keys are JSON
    numbers or booleans when they parse as such, else strings; ``key="2023"``
    forces a string. ``--since``/``--until`` are inclusive whole days. Conditions
    on one key from several options are ANDed.

    Args:
        where: expressions such as ``source=Reuters`` or ``views>=100``.
        since: earliest date (``date gte``).
        until: latest date, inclusive (``date lte``).
        tags: tags of which an article must have at least one.
        json_filter: a JSON object in the spec language.
        prefix: what goes before an option's name in messages (``""`` for the
            server's query parameters).

    Returns:
        The normalised spec, or None when nothing was given.

    Raises:
        BadInputError: for a malformed expression or JSON, one operator given twice
            with different values, or anything :func:`~semsearch.filters.compile_filter`
            rejects.
    """
    spec: dict[str, dict[str, Any]] = {}
    repeated: dict[tuple[str, str], list[Any]] = {}
    for expr in where:
        key, op, value = _parse_where(expr, prefix)
        if op in ("eq", "ne"):
            repeated.setdefault((key, op), []).append(value)
        else:
            _merge(spec, key, {op: value})
    for (key, op), values in repeated.items():
        many = "in" if op == "eq" else "nin"
        _merge(spec, key, {op: values[0]} if len(values) == 1 else {many: values})
    for name, value, op in (("since", since, "gte"), ("until", until, "lte")):
        if value is not None:
            _check_date(f"{prefix}{name}", op, value)
            _merge(spec, "date", {op: value})
    if tags:
        _merge(spec, "tags", {"in": list(tags)})
    if json_filter is not None:
        try:
            given = json.loads(json_filter)
        except json.JSONDecodeError as e:
            raise BadInputError(
                f"{prefix}filter is not valid JSON: {e.msg} (column {e.colno})"
            ) from None
        if not isinstance(given, dict):
            raise BadInputError(
                f"{prefix}filter must be a JSON object of field: condition, "
                'e.g. {"source": "Reuters"}'
            )
        for key, condition in given.items():
            _merge(spec, key, condition_operators(key, condition))
    compiled = compile_filter(spec)
    return compiled.spec if compiled is not None else None


def _check_date(option: str, op: str, value: str) -> None:
    """Raise BadInputError naming the option (``--since``, or ``since`` over HTTP),
    not the filter it becomes, when ``value`` is not a date."""
    try:
        compile_filter({"date": {op: value}})
    except BadInputError as e:
        why = str(e).removeprefix("filter on 'date': ")
        raise BadInputError(f"{option}: {why}") from None


def _parse_where(expr: str, prefix: str = "--") -> tuple[str, str, Any]:
    match = _WHERE_OP.search(expr)
    key = expr[: match.start()].strip() if match else ""
    if match is None or not key:
        raise BadInputError(f"{prefix}where {expr!r} is not a condition; use {WHERE_FORMS}")
    raw = expr[match.end() :].strip()
    try:
        value = json.loads(raw, parse_constant=str)  # NaN and Infinity stay text
    except ValueError:
        value = raw
    # A quoted value is a string; numbers and booleans count only for metadata keys.
    typed = isinstance(value, str) or (
        key not in STANDARD_FIELDS and isinstance(value, (bool, int, float))
    )
    return key, _WHERE_OPS[match.group()], value if typed else raw


def _merge(spec: dict[str, dict[str, Any]], key: str, ops: Mapping[str, Any]) -> None:
    current = spec.setdefault(key, {})
    for op, value in ops.items():
        if op in current and current[op] != value:
            raise BadInputError(
                f"filter on {key!r} gives {op!r} twice with different values: "
                f"{current[op]!r} and {value!r}; use one, or 'in' for several"
            )
        current[op] = value
