"""Options that several commands share, as plain decorators (one help text each)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..config import DEFAULT_MODEL, ENV_INDEX
from ..errors import BadInputError, SettingsConflictError

if TYPE_CHECKING:
    from ..index import Index

F = TypeVar("F", bound=Callable[..., Any])


def index_option(f: F) -> F:
    return click.option(
        "--index",
        "index_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Index folder. [env: {ENV_INDEX}; default: indexes/default]",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def model_option(f: F) -> F:
    return click.option(
        "--model", help=f"Embedding model for a new index. [default: {DEFAULT_MODEL}]"
    )(f)


def index_type_option(f: F) -> F:
    return click.option(
        "--index-type",
        default="auto",
        show_default=True,
        help="New index only: auto (exact up to 100k chunks; HNSW while it fits "
        "--memory-budget; beyond, compressed IVF-PQ fast-scan codes re-ranked with the "
        "exact vectors, tuned to --recall-target), flat, hnsw, or a FAISS factory "
        "string such as 'IVF1024,Flat'.",
    )(f)


def _check_budget(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A bad --memory-budget is a usage error, found before any input is read."""
    from ..config import parse_bytes
    from ..errors import BadInputError

    if value is not None:
        try:
            parse_bytes(value)
        except BadInputError as e:
            raise click.BadParameter(str(e)) from None
    return value


def budget_options(f: F) -> F:
    f = click.option(
        "--recall-target",
        type=click.FloatRange(min=0, max=1, min_open=True),
        default=None,
        help="New index only: recall@10 against exact search that a compressed index is "
        "tuned to, on held-out vectors of its own. [default: 0.95]",
    )(f)
    return click.option(
        "--memory-budget",
        metavar="SIZE",
        default=None,
        callback=_check_budget,
        help="New index only: memory the vectors may take when searched, e.g. 2GB or "
        "512MiB; past it, auto compresses them. [default: a quarter of this machine's memory]",
    )(f)


def wait_option(f: F) -> F:
    return click.option(
        "--wait",
        "wait_seconds",
        type=click.FloatRange(min=0),
        default=0,
        show_default=True,
        metavar="SECONDS",
        help="If another process is writing to the index, wait this long for it "
        "(else exit 75 at once).",
    )(f)


def field_option(f: F) -> F:
    return click.option(
        "--field",
        "field_pairs",
        multiple=True,
        metavar="FIELD=COLUMN",
        help="JSONL/CSV column for an article field, e.g. --field text=body (repeatable).",
    )(f)


def date_order_option(f: F) -> F:
    return click.option(
        "--date-order",
        type=click.Choice(["DMY", "MDY"]),
        default=None,
        help="How to read numeric dates whose day and month could be either way round, "
        "such as 09/08/2024 (DMY: 9 August). Without it such an article is skipped with a "
        "warning (a scraped page's by-line is read day first); unambiguous ones (25/08/2024) "
        "are always read.",
    )(f)


def clean_option(f: F) -> F:
    return click.option(
        "--clean/--no-clean",
        default=True,
        show_default=True,
        help="Remove page furniture (site line, by-line, comment counters, related "
        "headlines, menu words) from .txt files saved from web pages, and section labels "
        "from HTML; the by-line gives the date and source. --no-clean reads every file as "
        "it is. See what is removed with 'semsearch load'.",
    )(f)


def quiet_option(f: F) -> F:
    return click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")(f)


def mode_option(f: F) -> F:
    return click.option(
        "--mode",
        type=click.Choice(["hybrid", "semantic", "keyword"]),
        default="hybrid",
        show_default=True,
        help="hybrid: meaning and keywords fused; semantic: meaning only (cosine); "
        "keyword: words only (BM25).",
    )(f)


def filter_options(f: F) -> F:
    """``--where``, ``--since``, ``--until``, ``--tag`` and ``--filter``, in that order.

    They arrive as ``where``, ``since``, ``until``, ``tags`` and ``json_filter``;
    :func:`semsearch.cli.filters.parse_cli_filter` makes one spec of them.
    """
    options = [
        click.option(
            "--where",
            multiple=True,
            metavar="FIELD<op>VALUE",
            help="Only articles whose field matches: source=Reuters, views>=100, lang!=de "
            "(ops = != > >= < <=; repeat a field with = for any of several values). "
            "Fields: id, title, url, date, source, author, path, or any metadata key; dots "
            "reach into nested metadata (meta.region=north). Numbers and true/false compare "
            'as such; quote a value to compare it as text (year="2023").',
        ),
        click.option(
            "--since", metavar="DATE", help="Only articles dated on or after DATE (YYYY-MM-DD)."
        ),
        click.option(
            "--until", metavar="DATE", help="Only articles dated on or before DATE (inclusive)."
        ),
        click.option(
            "--tag", "tags", multiple=True, help="Only articles with this tag (repeat: any of)."
        ),
        click.option(
            "--filter",
            "json_filter",
            metavar="JSON",
            help='Filter as JSON, as the API takes it: \'{"date": {"gte": "2023-06-01"}}\'.',
        ),
    ]
    for option in reversed(options):  # decorators apply bottom up
        f = option(f)
    return f


# Index.create's keyword → the option that sets it, to name a conflict as the user typed it.
_CREATION_OPTIONS = {
    "model": "--model",
    "index_type": "--index-type",
    "overlap_tokens": "--overlap",
    "chunk_tokens": "--chunk-tokens",
    "query_prompt": "--query-prompt",
    "document_prompt": "--document-prompt",
    "build_backend": "--backend",
    "memory_budget": "--memory-budget",
    "recall_target": "--recall-target",
}


@contextmanager
def open_or_create(folder: Path, wait_seconds: float, settings: dict[str, Any]) -> Iterator[Index]:
    """:meth:`Index.open_or_create`, a settings conflict named by the options that set them."""
    from ..index import Index

    try:
        with Index.open_or_create(folder, lock_timeout=wait_seconds, **settings) as index:
            yield index
    except SettingsConflictError as e:
        differ = [f"{_CREATION_OPTIONS[n]} {g!r} (the index has {h!r})" for n, g, h in e.conflicts]
        raise BadInputError(
            f"{folder} exists, and creation options cannot change it: "
            f"{', '.join(differ)}; rebuild into a new folder to change them"
        ) from None
