"""Commands that read inputs or change the index: ``index``, ``load``, ``remove``, ``optimize``."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click

from ..config import DEFAULT_OVERLAP_TOKENS, environment
from .app import EXIT_PARTIAL, CliError, cli
from .format import echo_articles, echo_skipped, index_summary
from .options import (
    budget_options,
    clean_option,
    date_order_option,
    field_option,
    index_option,
    index_type_option,
    json_option,
    model_option,
    open_or_create,
    quiet_option,
    wait_option,
)

if TYPE_CHECKING:
    from ..records import AddResult, Article, Skipped


@cli.command("index")
@click.argument("paths", nargs=-1, required=True)
@index_option
@model_option
@index_type_option
@budget_options
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
    type=click.Choice(["auto", "torch", "onnx", "onnx-int8", "gpu"]),
    default=None,
    help="New index only: what embeds the articles. onnx: the model exported to ONNX "
    "Runtime, the same vectors as torch, faster (1.1-1.8x, by CPU); torch: "
    "sentence-transformers (the reference); onnx-int8: quantised for this CPU, 2-3x "
    "faster than torch (see benchmarks/README.md for its quality); gpu: the torch model "
    "on a CUDA GPU, fed for throughput, fp16 checked against fp32; auto: gpu where "
    "torch sees one, else onnx where the model exports, else torch with a warning. "
    "[default: auto]",
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
@click.option(
    "--ray",
    "ray_address",
    metavar="[ADDRESS]",
    is_flag=False,
    flag_value="auto",
    default=None,
    help="Load, chunk and embed on a Ray cluster (pip install 'semsearch[ray]'); this "
    "process commits. ADDRESS: auto (the default: $RAY_ADDRESS, else a cluster running "
    "here, else a new local one), local, or a cluster's address (ray://head:10001). "
    "Files only, not stdin.",
)
@click.option(
    "--embed-workers",
    type=click.IntRange(min=1),
    default=None,
    help="With --ray: embedding actors, each holding the model once. "
    "[default: one per GPU with --gpus-per-worker, else the cluster's CPUs less one]",
)
@click.option(
    "--cpus-per-worker",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="With --ray: CPUs each embedding actor takes, and its ONNX threads (rounded up); "
    "the actors must leave half a CPU for loading and chunking (on a 2-CPU machine: one "
    "worker of 1.5).",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=0.0,
    help="With --ray: GPUs each embedding actor takes; > 0 embeds with the GPU fast "
    "path (fp16, checked against fp32). [default: 0, CPUs]",
)
@wait_option
@quiet_option
@json_option
def index_command(
    paths: tuple[str, ...],
    index_dir: Path | None,
    model: str | None,
    index_type: str,
    memory_budget: str | None,
    recall_target: float | None,
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
    ray_address: str | None,
    embed_workers: int | None,
    cpus_per_worker: float,
    gpus_per_worker: float,
    wait_seconds: float,
    quiet: bool,
    as_json: bool,
) -> None:
    """Add the articles in PATHS (files, folders, or - for JSONL on stdin) to the index.

    Creates the index if there is none. Reads .txt, .md (with YAML front
    matter), .html, .jsonl, .csv, .tsv and .parquet, recursively. Articles already indexed and
    unchanged are left alone; changed ones are replaced. Skipped inputs are
    reported and make the exit status 3. The write is all or nothing: if it
    fails or is killed, the index stays as it was.

    \b
    In a pipeline:
      semsearch index feeds/ --prune --json --wait 600 > summary.json
    On a Ray cluster (workers load, chunk and embed; the same index):
      semsearch index dumps/ --ray ray://head:10001 --gpus-per-worker 1
    """
    from ..index import Index

    folder = index_dir or environment().index_dir
    settings = {
        "model": model,
        "index_type": index_type,
        "overlap_tokens": overlap_tokens,
        "chunk_tokens": chunk_tokens,
        "query_prompt": query_prompt,
        "document_prompt": document_prompt,
        "build_backend": backend or "auto",
        "memory_budget": memory_budget,
        "recall_target": recall_target,
    }
    progress = not quiet and not as_json and sys.stderr.isatty()
    if ray_address is not None:
        result = _index_on_ray(
            paths, folder, settings, field_pairs, date_order, clean, batch_size, progress,
            prune, strict, wait_seconds, ray_address,
            (embed_workers, cpus_per_worker, gpus_per_worker),
        )  # fmt: skip
        _report(result, folder, prune, as_json, quiet, already=[])
        return
    if embed_workers is not None or gpus_per_worker or cpus_per_worker != 1.0:
        raise click.UsageError(
            "--embed-workers, --cpus-per-worker and --gpus-per-worker go with --ray"
        )
    # Inputs are read before the index is opened, so that a bad one is reported (or,
    # with --strict, refused) before anything is created or locked.
    started = time.perf_counter()
    articles, skipped = _read(paths, field_pairs, date_order, clean)
    load_seconds = time.perf_counter() - started
    echo_skipped(skipped)
    if strict and skipped:
        _refuse_skipped(folder, skipped, as_json)
    # With --prune, nothing left under PATHS is news: every article read from there goes.
    if not articles and not (prune and Index.exists(folder)):
        raise CliError(f"no articles to index in {', '.join(paths)}")
    # A new index is created and filled in one hold of the writer lock; if that
    # fails, the library removes what this command made (and nothing else).
    with open_or_create(folder, wait_seconds, settings) as index:
        result = index.add(
            [*articles, *skipped],
            batch_size=batch_size,
            progress=progress,
            prune=paths if prune else None,
            strict=strict,
        )
    # The files were read before the index was opened: count that time too.
    timings = {**result.timings, "load": load_seconds}
    result = replace(result, seconds=result.seconds + load_seconds, timings=timings)
    _report(result, folder, prune, as_json, quiet, already=skipped)


def _index_on_ray(
    paths: tuple[str, ...],
    folder: Path,
    settings: dict[str, Any],
    field_pairs: tuple[str, ...],
    date_order: str | None,
    clean: bool,
    batch_size: int,
    progress: bool,
    prune: bool,
    strict: bool,
    wait_seconds: float,
    address: str,
    workers: tuple[int | None, float, float],
) -> AddResult:
    """``index --ray``: the workers read the inputs, so nothing is read here first.

    ``workers``: embedding actors, CPUs and GPUs per actor.
    """
    from ..distributed import RayOptions
    from ..distributed.ray_build import check_address, import_ray
    from ..load import FieldMap

    if Path(address).exists() and address not in ("auto", "local"):
        raise click.UsageError(
            f"--ray took {address!r} as the cluster's address: write --ray after the paths, "
            "or give it an address (--ray auto)"
        )
    import_ray()  # before an index is created
    check_address(address)
    embed_workers, cpus_per_worker, gpus_per_worker = workers
    options = RayOptions(
        address=address,
        embed_workers=embed_workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
    )
    with open_or_create(folder, wait_seconds, settings) as index:
        result = index.add_paths(
            list(paths),
            fields=FieldMap.from_pairs(field_pairs),
            batch_size=batch_size,
            progress=progress,
            prune=prune,
            strict=strict,
            date_order=date_order,
            clean=clean,
            engine="ray",
            ray=options,
        )
        if not (result.added or result.updated or result.unchanged or result.removed):
            # Nothing readable: a new index made for it is removed again.
            echo_skipped(list(result.skipped))
            raise CliError(f"no articles to index in {', '.join(paths)}")
    return result


def _report(
    result: AddResult,
    folder: Path,
    prune: bool,
    as_json: bool,
    quiet: bool,
    already: list[Skipped],
) -> None:
    """Print an add's result; exit 3 if something was skipped (``already``: printed)."""
    echo_skipped([s for s in result.skipped if s not in already])  # an id twice, no text
    if as_json:
        click.echo(json.dumps({"index": str(folder), **result.to_dict()}, ensure_ascii=False))
    elif not quiet:
        click.echo(index_summary(result, folder, prune))
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
    articles, skipped = _read(paths, field_pairs, date_order, clean)
    if as_json:
        payload = {
            "articles": [a.to_dict() for a in articles],
            "skipped": [s.to_dict() for s in skipped],
        }
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        echo_articles(articles)
        echo_skipped(skipped)
    if skipped:
        sys.exit(EXIT_PARTIAL)


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
    from ..index import Index

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


@cli.command("optimize")
@index_option
@wait_option
@quiet_option
@json_option
def optimize_command(
    index_dir: Path | None, wait_seconds: float, quiet: bool, as_json: bool
) -> None:
    """Merge the index's segments into one, dropping removed chunks' vectors for good.

    A compressed index's quantizer is trained again here when the vectors
    written since it was trained have drifted from it, or the index has
    outgrown its lists; the merged segment is tuned to the recall target.

    Writes merge segments by themselves, a bounded amount each; run this in a
    quiet hour for the fastest searches and the smallest index. It is one
    atomic switch, like any write: interrupted, the index is the one before.
    """
    from ..index import Index

    with Index.open(index_dir) as index:
        index.lock_timeout = wait_seconds
        result = index.optimize()
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    elif quiet:
        pass
    elif result.segments_before <= 1 and not result.tombstones_dropped and not result.retrained:
        click.echo(
            f"Nothing to merge: {result.segments_before} segment(s), no removed chunks to drop."
        )
    else:
        click.echo(
            f"Merged {result.segments_before} segment(s) into {result.segments_after}, "
            f"dropping {result.tombstones_dropped} removed chunk(s), in {result.seconds:.1f} s."
        )
        if result.retrained:
            click.echo(f"Trained the vector quantizer again: {result.retrained}.")


@cli.command("tune")
@index_option
@click.option(
    "--queries",
    "queries_file",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="Tune on these queries, one per line ('-' for stdin), instead of held-out "
    "vectors of the index's own.",
)
@click.option(
    "--recall-target",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=None,
    help="Recall@10 against exact search to reach; recorded as the index's from now on. "
    "[default: the index's, 0.95 unless created otherwise]",
)
@wait_option
@json_option
def tune_command(
    index_dir: Path | None,
    queries_file: TextIO | None,
    recall_target: float | None,
    wait_seconds: float,
    as_json: bool,
) -> None:
    """Tune a compressed index's search again to a recall target.

    Each compressed segment gets the fastest settings (nprobe, the coarse
    quantizer's efSearch, the shortlist re-ranked with exact vectors) whose
    recall@10 against exact search reaches the target. Segments are tuned
    when written; run this to tune on the queries your users ask, or to a
    new target. Flat and HNSW indexes need no tuning.
    """
    from ..index import Index

    queries = None
    if queries_file is not None:
        queries = [line.strip() for line in queries_file if line.strip()]
        if not queries:
            raise CliError(f"no queries in {queries_file.name}")
    with Index.open(index_dir) as index:
        index.lock_timeout = wait_seconds
        tuned = index.tune(queries, recall_target)
    if as_json:
        click.echo(json.dumps(tuned))
    elif not tuned:
        click.echo("Nothing to tune: no compressed segment (flat and HNSW need none).")
    for t in tuned if not as_json else []:
        reached = "reached" if t["recall_at_10"] >= t["recall_target"] else "NOT reached"
        click.echo(
            f"segment {t['id']}: nprobe {t['nprobe']}, efSearch {t['ef_search']}, re-rank "
            f"{t['k_factor']} x k: recall@10 {t['recall_at_10']:.3f} on {t['queries']} "
            f"{'held-out vectors' if t['held_out'] else 'queries'} (aimed at {t['aimed_at']}), "
            f"target {t['recall_target']} {reached}"
        )


def _refuse_skipped(folder: Path, skipped: list[Skipped], as_json: bool) -> NoReturn:
    """--strict and something was skipped: say so (on stdout too with --json) and exit 1."""
    message = f"{len(skipped)} input(s) skipped and --strict given; nothing was written"
    if as_json:  # a pipeline reads why from stdout, as it reads a summary
        failure = {"index": str(folder), "error": message}
        click.echo(json.dumps({**failure, "skipped": [s.to_dict() for s in skipped]}))
    raise CliError(message)


def _read(
    paths: tuple[str, ...], field_pairs: tuple[str, ...], date_order: str | None, clean: bool
) -> tuple[list[Article], list[Skipped]]:
    """Load PATHS as ``index`` and ``load`` do: the articles, and the inputs skipped."""
    from ..load import FieldMap, first_of_each_id, load_paths
    from ..records import Skipped

    fields = FieldMap.from_pairs(field_pairs)
    articles: list[Article] = []
    skipped: list[Skipped] = []
    for item in first_of_each_id(load_paths(paths, fields, date_order=date_order, clean=clean)):
        if isinstance(item, Skipped):
            skipped.append(item)
        else:
            articles.append(item)
    return articles, skipped
