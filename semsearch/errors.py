"""The exceptions semsearch raises.

Every error a caller can act on derives from :class:`SemsearchError`, so
``except SemsearchError`` catches them all; the branches below exist only
where a caller needs to tell them apart::

    SemsearchError
    ├── IndexNotFoundError      no index at the given folder
    ├── IndexExistsError        creating an index where one already is
    ├── IncompatibleIndexError  wrong model, unknown format, damaged files
    ├── ModelError              the embedding model cannot be loaded
    ├── MissingDependencyError  an optional feature's package is not installed
    ├── LockedError             another process is writing to the index
    └── BadInputError           a file, row, option or query at fault (.path, .line)
        └── SettingsConflictError  creation settings an existing index was not made with

Messages say what is wrong and what to do about it, on one line.
:class:`QueryTruncatedWarning` is a warning, not an error: the query still runs.
"""

from __future__ import annotations

import os
from pathlib import Path


class SemsearchError(Exception):
    """Root of every error semsearch raises on purpose."""


class IndexNotFoundError(SemsearchError):
    """No index exists at the folder given."""


class IndexExistsError(SemsearchError):
    """An index already exists where a new one was to be created."""


class IncompatibleIndexError(SemsearchError):
    """The index cannot be used as asked: another model, a newer format, or damaged files."""


def damaged(path: str | os.PathLike[str], reason: str) -> IncompatibleIndexError:
    """The error for a damaged file of an index: which file, why, and what to do.

    Args:
        path: the damaged file, inside its index folder.
        reason: what is wrong with it, e.g. "its checksum does not match the commit".
    """
    folder = Path(path).parent
    return IncompatibleIndexError(
        f"{path} is damaged: {reason}; `semsearch verify --index {folder}` lists every "
        "problem; restore the folder from a backup or build the index again"
    )


class ModelError(SemsearchError):
    """The embedding model cannot be found or loaded."""


class MissingDependencyError(SemsearchError):
    """An optional feature needs a package that is not installed; the message names it."""


class BadInputError(SemsearchError):
    """Input at fault: a file, a row of a file, an option value or a query.

    Attributes:
        path: the file at fault, if any.
        line: the 1-based line (or CSV row line) at fault, if any.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = message
        where = path if path is not None else ""
        if path is not None and line is not None:
            where = f"{path}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class SettingsConflictError(BadInputError):
    """Creation settings given for an index that was made with others.

    Attributes:
        folder: the index folder.
        conflicts: ``(setting, given, has)`` for each, by the keyword names of
            :meth:`semsearch.Index.create`.
    """

    def __init__(self, folder: str, conflicts: list[tuple[str, object, object]]) -> None:
        self.folder = folder
        self.conflicts = conflicts
        listed = ", ".join(
            f"{name} {given!r} (the index has {has!r})" for name, given, has in conflicts
        )
        super().__init__(
            f"{folder} exists, and creation options cannot change it: {listed}; "
            "rebuild into a new folder to change them"
        )


class LockedError(SemsearchError):
    """Another process holds the index's writer lock; the message names it."""


class QueryTruncatedWarning(UserWarning):
    """A query was longer than the model reads; its meaning came from the first part only.

    Its keywords still count in full (keyword and hybrid modes).
    """
