"""The ``semsearch`` command: parse, call one library function, format.

Exit status: 0 success; 1 error (or ``verify`` found a problem); 2 usage
error; 3 done, but some inputs were skipped (or some ids to remove were not
found); 75 another process is writing to the index (try again later).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from .config import DEFAULT_K, DEFAULT_MODEL, DEFAULT_OVERLAP_TOKENS, ENV_INDEX, environment
from .errors import (
    BadInputError,
    LockedError,
    QueryTruncatedWarning,
    SemsearchError,
    SettingsConflictError,
)
from .keywords import CLOSE, OPEN

F = TypeVar("F", bound=Callable[..., Any])
EXIT_PARTIAL = 3
EXIT_LOCKED = 75  # EX_TEMPFAIL in sysexits.h: a pipeline may retry
_SNIPPET_CHARS = 240


class CliError(click.ClickException):
    """A one-line error on stderr and exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class _LockedError(CliError):
    """Another writer holds the index: exit status 75, so that a pipeline can retry."""

    exit_code = EXIT_LOCKED


class _Group(click.Group):
    """The error boundary: library errors become one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except LockedError as e:
            raise _LockedError(str(e)) from e
        except SemsearchError as e:
            raise CliError(str(e)) from e
        except KeyboardInterrupt:
            raise click.Abort() from None
        except BrokenPipeError:
            # The reader went away (`semsearch query ... | head`): not an error. Point
            # stdout at /dev/null so the interpreter's final flush cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as e:
            if environment().debug:
                raise
            raise CliError(
                f"unexpected {type(e).__name__}: {e} (set SEMSEARCH_DEBUG=1 for the traceback)"
            ) from e


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
        help="New index only: auto (exact, HNSW above 100k chunks), flat, hnsw, "
        "or a FAISS factory string such as 'IVF1024,Flat'.",
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semsearch")
def cli() -> None:
    """Semantic search for articles.

    \b
    Index a folder of articles, then search it by meaning:
      semsearch index examples/articles
      semsearch query "NATO Indo-Pacific"
    """


_CREATION_OPTIONS = {
    "model": "--model",
    "index_type": "--index-type",
    "overlap_tokens": "--overlap",
    "chunk_tokens": "--chunk-tokens",
    "query_prompt": "--query-prompt",
    "document_prompt": "--document-prompt",
    "build_backend": "--backend",
}


@cli.command("index")
@click.argument("paths", nargs=-1, required=True)
@index_option
@model_option
@index_type_option
@click.option(
    "--overlap",
    "overlap_tokens",
    type=click.IntRange(min=0),
    default=DEFAULT_OVERLAP_TOKENS,
    show_default=True,
    help="New index only: tokens of whole sentences shared by consecutive chunks.",
)
@click.option(
    "--chunk-tokens",
    type=click.IntRange(min=16),
    default=None,
    help="New index only: cap on a chunk's tokens. [default: the model's maximum]",
)
@field_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Chunks embedded per model call.",
)
@click.option(
    "--query-prompt",
    metavar="TEXT",
    help="New index only: text put before each query, for models that expect it "
    "(e5: 'query: '). [default: the model's own configuration]",
)
@click.option(
    "--document-prompt",
    metavar="TEXT",
    help="New index only: text put before each passage (e5: 'passage: '). "
    "[default: the model's own configuration]",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "onnx", "onnx-int8"]),
    default=None,
    help="New index only: what embeds the articles. onnx: the model exported to ONNX "
    "Runtime, the same vectors as torch at about 1.8x the speed; torch: "
    "sentence-transformers (the reference); onnx-int8: quantised for this CPU, about 3x "
    "faster than torch (see benchmarks/README.md for its quality); auto: onnx where the "
    "model exports, else torch with a warning. [default: auto]",
)
@date_order_option
@click.option(
    "--strict",
    is_flag=True,
    help="Fail with exit 1, writing nothing, if any input is skipped (a bad file or row, "
    "an id given twice, an unreadable date).",
)
@click.option(
    "--prune",
    is_flag=True,
    help="Also remove indexed articles read from under PATHS before that are gone now "
    "(deleted files, dropped rows), in the same write. A file with a skipped input "
    "keeps its articles.",
)
@clean_option
@wait_option
@quiet_option
@json_option
def index_command(
    paths: tuple[str, ...],
    index_dir: Path | None,
    model: str | None,
    index_type: str,
    overlap_tokens: int,
    chunk_tokens: int | None,
    field_pairs: tuple[str, ...],
    batch_size: int,
    query_prompt: str | None,
    document_prompt: str | None,
    backend: str | None,
    date_order: str | None,
    strict: bool,
    prune: bool,
    clean: bool,
    wait_seconds: float,
    quiet: bool,
    as_json: bool,
) -> None:
    """Add the articles in PATHS (files, folders, or - for JSONL on stdin) to the index.

    Creates the index if there is none. Reads .txt, .md (with YAML front
    matter), .html, .jsonl, .csv and .tsv, recursively. Articles already indexed and
    unchanged are left alone; changed ones are replaced. Skipped inputs are
    reported and make the exit status 3. The write is all or nothing: if it
    fails or is killed, the index stays as it was.

    \b
    In a pipeline:
      semsearch index feeds/ --prune --json --wait 600 > summary.json
    """
    from .index import Index
    from .load import FieldMap, first_of_each_id, load_paths
    from .records import Skipped

    folder = index_dir or environment().index_dir
    started = time.perf_counter()
    fields = FieldMap.from_pairs(field_pairs)
    items = list(first_of_each_id(load_paths(paths, fields, date_order=date_order, clean=clean)))
    load_seconds = time.perf_counter() - started
    skipped = [i for i in items if isinstance(i, Skipped)]
    for item in skipped:
        click.echo(f"warning: skipped {item}", err=True)
    if strict and skipped:
        message = f"{len(skipped)} input(s) skipped and --strict given; nothing was written"
        if as_json:  # a pipeline reads why from stdout, as it reads a summary
            failure = {"index": str(folder), "error": message}
            click.echo(json.dumps({**failure, "skipped": [s.to_dict() for s in skipped]}))
        raise CliError(message)
    # With --prune, nothing left under PATHS is news: every article read from there goes.
    if len(skipped) == len(items) and not (prune and Index.exists(folder)):
        raise CliError(f"no articles to index in {', '.join(paths)}")
    progress = not quiet and not as_json and sys.stderr.isatty()
    settings = {
        "model": model,
        "index_type": index_type,
        "overlap_tokens": overlap_tokens,
        "chunk_tokens": chunk_tokens,
        "query_prompt": query_prompt,
        "document_prompt": document_prompt,
        "build_backend": backend or "auto",
    }
    try:
        # A new index is created and filled in one hold of the writer lock; if that
        # fails, the library removes what this command made (and nothing else).
        with Index.open_or_create(folder, lock_timeout=wait_seconds, **settings) as index:
            result = index.add(
                items,
                batch_size=batch_size,
                progress=progress,
                prune=paths if prune else None,
                strict=strict,
            )
    except SettingsConflictError as e:
        differ = [f"{_CREATION_OPTIONS[n]} {g!r} (the index has {h!r})" for n, g, h in e.conflicts]
        raise BadInputError(
            f"{folder} exists, and creation options cannot change it: "
            f"{', '.join(differ)}; rebuild into a new folder to change them"
        ) from None
    # What the write itself skipped (an id given twice, no text to index).
    for item in [s for s in result.skipped if s not in skipped]:
        click.echo(f"warning: skipped {item}", err=True)
    # Files were read before the index was opened: count that time too.
    result = replace(
        result,
        seconds=result.seconds + load_seconds,
        timings={**result.timings, "load": load_seconds},
    )
    if as_json:
        click.echo(json.dumps({"index": str(folder), **result.to_dict()}, ensure_ascii=False))
    elif not quiet:
        changed = result.added + result.updated + result.removed
        click.echo(
            f"Indexed {result.added} new, {result.updated} updated, {result.unchanged} unchanged "
            f"article(s) ({result.chunks_added} chunks)"
            + (f", removed {result.removed} gone" if prune else "")
            + f" into {folder} in {result.seconds:.1f}s"
            + (f"; {len(result.skipped)} skipped" if result.skipped else "")
            + (f"; {result.lines_removed} page line(s) removed" if result.lines_removed else "")
            + ("" if changed else "; nothing changed")
        )
    if result.skipped:
        sys.exit(EXIT_PARTIAL)


@cli.command("load")
@click.argument("paths", nargs=-1, required=True)
@field_option
@date_order_option
@clean_option
@json_option
def load_command(
    paths: tuple[str, ...],
    field_pairs: tuple[str, ...],
    date_order: str | None,
    clean: bool,
    as_json: bool,
) -> None:
    """Show how the files in PATHS would be read, without indexing them.

    For each article: its id, title, date, source, body length and the lines
    removed as page furniture. --json prints every field, the text included.
    Exit status 3 if some input would be skipped.
    """
    from .load import FieldMap, first_of_each_id, load_paths
    from .records import Skipped

    fields = FieldMap.from_pairs(field_pairs)
    items = list(first_of_each_id(load_paths(paths, fields, date_order=date_order, clean=clean)))
    articles = [i for i in items if not isinstance(i, Skipped)]
    skipped = [i for i in items if isinstance(i, Skipped)]
    if as_json:
        payload = {
            "articles": [a.to_dict() for a in articles],
            "skipped": [s.to_dict() for s in skipped],
        }
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        for article in articles:
            click.echo(f"{article.id}: {article.title or '(no title)'}")
            where = " · ".join(v for v in (article.source, article.date) if v)
            click.echo(f"    {where + ' · ' if where else ''}{len(article.text)} characters")
            if article.removed_lines:
                click.echo(f"    removed {len(article.removed_lines)} line(s):")
                for line in article.removed_lines:
                    click.echo(f"      - {line}")
        for item in skipped:
            click.echo(f"warning: skipped {item}", err=True)
    if skipped:
        sys.exit(EXIT_PARTIAL)


def mode_option(f: F) -> F:
    return click.option(
        "--mode",
        type=click.Choice(["hybrid", "semantic", "keyword"]),
        default="hybrid",
        show_default=True,
        help="hybrid: meaning and keywords fused; semantic: meaning only (cosine); "
        "keyword: words only (BM25).",
    )(f)


@cli.command("query")
@click.argument("text")
@index_option
@click.option(
    "-k", type=click.IntRange(min=1), default=DEFAULT_K, show_default=True, help="How many results."
)
@mode_option
@click.option(
    "--where",
    multiple=True,
    metavar="FIELD<op>VALUE",
    help="Only articles whose field matches: source=Reuters, views>=100, lang!=de "
    "(ops = != > >= < <=; repeat a field with = for any of several values). "
    "Fields: id, title, url, date, source, author, path, or any metadata key; dots "
    "reach into nested metadata (meta.region=north). Numbers and true/false compare as "
    'such; quote a value to compare it as text (year="2023").',
)
@click.option("--since", metavar="DATE", help="Only articles dated on or after DATE (YYYY-MM-DD).")
@click.option("--until", metavar="DATE", help="Only articles dated on or before DATE (inclusive).")
@click.option("--tag", "tags", multiple=True, help="Only articles with this tag (repeat: any of).")
@click.option(
    "--filter",
    "json_filter",
    metavar="JSON",
    help='Filter as JSON, as the API takes it: \'{"date": {"gte": "2023-06-01"}}\'.',
)
@click.option(
    "--fts5",
    is_flag=True,
    help="Read TEXT's keywords as an FTS5 expression (phrases, NEAR, prefix*) "
    "instead of plain words.",
)
@click.option("--chunks", is_flag=True, help="Rank chunks, not articles (an article may repeat).")
@click.option(
    "--backend",
    type=click.Choice(["auto", "onnx", "torch"]),
    default=None,
    help="How to embed the query: onnx (ONNX Runtime, no torch: fast to start), "
    "torch (sentence-transformers), auto (onnx if the index has an export). "
    "[env: SEMSEARCH_BACKEND; default: auto]",
)
@json_option
def query_command(
    text: str,
    index_dir: Path | None,
    k: int,
    mode: str,
    where: tuple[str, ...],
    since: str | None,
    until: str | None,
    tags: tuple[str, ...],
    json_filter: str | None,
    fts5: bool,
    chunks: bool,
    backend: str | None,
    as_json: bool,
) -> None:
    """Search the index for TEXT (or - to read the query from stdin).

    Prints the k best articles with their score, source, date and the
    best-matching passage, query words highlighted. The score is the cosine
    similarity in semantic mode, BM25 in keyword mode, and in hybrid mode
    0.7 x cosine + 0.3 x BM25 relative to the query's best keyword match.

    \b
    Examples:
      semsearch query "NATO Indo-Pacific"
      semsearch query "rate decision" --since 2023-06-01 --tag economy
      semsearch query "Reuters" --mode keyword --where source=Reuters -k 20
      semsearch query -- "-40C cold snap"     (a query that starts with -)
    """
    from .filters import parse_cli_filter
    from .index import Index

    if text == "-":
        text = sys.stdin.read()
    spec = parse_cli_filter(where, since, until, tags, json_filter)
    with (
        Index.open(index_dir, query_backend=backend) as index,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", QueryTruncatedWarning)
        hits = index.search(
            text,
            k=k,
            mode=mode,
            filter=spec,
            group=not chunks,
            keyword_syntax="fts5" if fts5 else "text",
        )
    for warning in caught:
        click.echo(f"note: {warning.message}", err=True)
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2))
        return
    if not hits:
        click.echo(
            "No results." if spec or mode == "keyword" else "No results: the index is empty."
        )
    for hit in hits:
        parts = ""
        if hit.mode == "hybrid":
            parts = click.style(
                f"  (semantic {hit.semantic_score:.3f}, keyword {hit.keyword_score:.2f})", dim=True
            )
        click.echo(
            f"{hit.rank:2d}. {click.style(f'{hit.score:.3f}', fg='cyan')}  "
            f"{click.style(hit.title or hit.article_id, bold=True)}{parts}"
        )
        details = [d for d in (hit.source, hit.date, hit.url) if d]
        if details:
            click.echo("    " + " · ".join(details))
        for line in _snippet(hit.text, hit.highlights):
            click.echo("    " + line)
        click.echo(click.style(f"    id: {hit.article_id}", dim=True))


@cli.command("info")
@index_option
@json_option
def info_command(index_dir: Path | None, as_json: bool) -> None:
    """Show what the index holds and how it was built."""
    from .index import Index

    with Index.open(index_dir) as index:
        info = index.info()
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
        return
    rows = [
        ("index", info.path),
        ("articles", f"{info.articles:,}"),
        ("chunks", f"{info.chunks:,}"),
        ("model", f"{info.model} ({info.dim} dimensions, {info.max_tokens} tokens)"),
        ("prompts", f"query {info.query_prompt!r}, document {info.document_prompt!r}"),
        (
            "embedding",
            f"built with {info.build_backend}; queries "
            + ("on ONNX Runtime (no torch)" if info.onnx_export else "on sentence-transformers"),
        ),
        ("chunking", f"up to {info.chunk_tokens} tokens, {info.overlap_tokens} overlap"),
        ("vector index", f"{info.index_type} (FAISS {info.faiss_factory})"),
        ("size on disk", f"{info.size_bytes / 1e6:.1f} MB"),
        ("created", info.created_at),
        ("updated", info.updated_at),
        ("format", f"{info.format_version} (semsearch {info.semsearch_version})"),
    ]
    for name, value in rows:
        click.echo(f"{name:>13}  {value}")


@cli.command("remove")
@click.argument("ids", nargs=-1, required=True)
@index_option
@wait_option
@quiet_option
@json_option
def remove_command(
    ids: tuple[str, ...], index_dir: Path | None, wait_seconds: float, quiet: bool, as_json: bool
) -> None:
    """Remove the articles with these IDS, and all their chunks, from the index.

    Exit status 3 if some ids were not in the index, 1 if none were.
    """
    from .index import Index

    started = time.perf_counter()
    with Index.open(index_dir) as index:
        index.lock_timeout = wait_seconds
        removed, missing = index.remove(ids)
    if as_json:
        seconds = round(time.perf_counter() - started, 3)
        click.echo(json.dumps({"removed": removed, "missing": missing, "seconds": seconds}))
    elif not quiet and removed:
        click.echo(f"Removed {len(removed)} article(s).")
    if missing and not removed:
        raise CliError(f"no article with id {', '.join(map(repr, missing))} in the index")
    if missing:
        click.echo(f"warning: not in the index: {', '.join(missing)}", err=True)
        sys.exit(EXIT_PARTIAL)


@cli.command("verify")
@index_option
@json_option
def verify_command(index_dir: Path | None, as_json: bool) -> None:
    """Check that the index's manifest, SQLite store, keyword index and FAISS file agree.

    Prints every problem found and exits 1 if there is one, 0 if all agree.
    Reads only; safe while another process writes.
    """
    from .verify import verify

    report = verify(index_dir or environment().index_dir)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for problem in report.problems:
            click.echo(f"problem: {problem}", err=True)
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
        if report.ok:
            c = report.checked
            click.echo(
                f"ok: {report.path}: generation {c.get('generation')}, {c.get('articles')} "
                f"articles, {c.get('chunks')} chunks; SQLite, keyword index and FAISS agree"
            )
    if not report.ok:
        sys.exit(1)


@cli.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--index",
    "index_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Index of the dataset's corpus: built if missing, brought up to date if not. "
    "[default: indexes/eval-DATASETNAME]",
)
@click.option("--split", default="test", show_default=True, help="Which qrels/SPLIT.tsv to score.")
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Articles retrieved per query.",
)
@model_option
@index_type_option
@click.option(
    "--run",
    "run_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the ranking as a TREC run file.",
)
@mode_option
@quiet_option
@json_option
def eval_command(
    dataset: Path,
    index_dir: Path | None,
    split: str,
    depth: int,
    mode: str,
    model: str | None,
    index_type: str,
    run_file: Path | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Score retrieval on a BEIR-format DATASET folder.

    DATASET holds corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv. The corpus
    is indexed (only new or changed documents are embedded), every judged
    query is searched, and nDCG@10, recall@10, recall@100 and MRR@10 are
    printed (computed by ir-measures).
    """
    from .evaluate import evaluate, load_beir
    from .index import Index

    data = load_beir(dataset, split)
    folder = index_dir or Path("indexes") / f"eval-{data.name}"
    progress = not quiet and not as_json and sys.stderr.isatty()
    with Index.open_or_create(folder, model=model, index_type=index_type) as index:
        added = index.add(data.corpus(), progress=progress)
        if not quiet and not as_json:
            click.echo(
                f"{folder}: {added.added + added.updated} article(s) embedded, "
                f"{added.unchanged} unchanged, {len(added.skipped)} skipped",
                err=True,
            )
        result = evaluate(index, data, depth=depth, mode=mode)
    if run_file is not None:
        result.write_trec_run(run_file)
    if as_json:
        payload = result.to_dict()
        del payload["per_query"], payload["run"]
        click.echo(json.dumps({"index": str(folder), **payload}, indent=2))
        return
    click.echo(f"{data.name} ({split}, {result.queries} queries, depth {depth}, {mode}):")
    for name, value in result.metrics.items():
        click.echo(f"  {name:>8}  {value:.4f}")


def _snippet(text: str, highlights: tuple[tuple[int, int], ...] = ()) -> list[str]:
    """About 240 characters around the first highlight, wrapped, matched words styled."""
    start = 0
    if highlights and highlights[0][0] > _SNIPPET_CHARS // 3:
        # Begin a little before the first match, at a word boundary.
        start = text.rfind(" ", 0, highlights[0][0] - _SNIPPET_CHARS // 4) + 1
    end = len(text)
    if end - start > _SNIPPET_CHARS:
        cut = text.rfind(" ", start, start + _SNIPPET_CHARS)
        end = cut if cut > start else start + _SNIPPET_CHARS
    marked, position = [], start
    for s, e in highlights:
        if s >= position and e <= end:
            marked += [text[position:s], OPEN, text[s:e], CLOSE]
            position = e
    marked.append(text[position:end])
    snippet = ("… " if start > 0 else "") + "".join(marked) + (" …" if end < len(text) else "")
    lines = textwrap.wrap(" ".join(snippet.split()), width=84)
    bold = click.style("", bold=True, fg="yellow", reset=False)
    return [line.replace(OPEN, bold).replace(CLOSE, click.style("", reset=True)) for line in lines]


def main() -> None:
    """Entry point of the ``semsearch`` command."""
    cli(prog_name="semsearch")
