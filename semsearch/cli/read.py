"""Commands that read the index: ``query``, ``info``, ``verify``, and ``eval`` (which scores it)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from ..config import DEFAULT_K, environment
from ..errors import QueryTruncatedWarning
from .app import cli
from .format import echo_hits, echo_info, echo_metrics, echo_verify
from .options import (
    filter_options,
    index_option,
    index_type_option,
    json_option,
    mode_option,
    model_option,
    open_or_create,
    quiet_option,
)


@cli.command("query")
@click.argument("text")
@index_option
@click.option(
    "-k", type=click.IntRange(min=1), default=DEFAULT_K, show_default=True, help="How many results."
)
@mode_option
@filter_options
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
      semsearch query "rate decision" --since 2023-06-01 --tag inflation
      semsearch query "Reuters" --mode keyword --where source=Reuters -k 20
      semsearch query -- "-40C cold snap"     (a query that starts with -)
    """
    from ..index import Index
    from .filters import parse_cli_filter

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
    elif not hits:
        click.echo(
            "No results." if spec or mode == "keyword" else "No results: the index is empty."
        )
    else:
        echo_hits(hits)


@cli.command("info")
@index_option
@json_option
def info_command(index_dir: Path | None, as_json: bool) -> None:
    """Show what the index holds and how it was built."""
    from ..index import Index

    with Index.open(index_dir) as index:
        info = index.info()
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
    else:
        echo_info(info)


@cli.command("verify")
@index_option
@json_option
def verify_command(index_dir: Path | None, as_json: bool) -> None:
    """Check that the index's manifest, SQLite store, keyword index and FAISS file agree.

    Prints every problem found and exits 1 if there is one, 0 if all agree.
    Reads only; safe while another process writes.
    """
    from ..verify import verify

    report = verify(index_dir or environment().index_dir)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        echo_verify(report)
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
    from ..evaluate import evaluate, load_beir

    data = load_beir(dataset, split)
    folder = index_dir or Path("indexes") / f"eval-{data.name}"
    progress = not quiet and not as_json and sys.stderr.isatty()
    with open_or_create(folder, 0.0, {"model": model, "index_type": index_type}) as index:
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
    else:
        echo_metrics(result, data.name, split, depth, mode)
