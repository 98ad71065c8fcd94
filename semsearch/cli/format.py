"""Text output of the commands: hits with snippets, summaries, reports.

``--json`` needs nothing from here: it prints the records' own ``to_dict()``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from ..keywords import CLOSE, OPEN
from ..records import snippet

if TYPE_CHECKING:
    from ..evaluate import EvalResult
    from ..records import AddResult, Article, Hit, IndexInfo, Skipped
    from ..verify import VerifyReport


def echo_skipped(skipped: Sequence[Skipped]) -> None:
    """One warning on stderr for each skipped input, naming it and why."""
    for item in skipped:
        click.echo(f"warning: skipped {item}", err=True)


def index_summary(result: AddResult, folder: object, prune: bool) -> str:
    """The line ``semsearch index`` prints after a write."""
    changed = result.added + result.updated + result.removed
    return (
        f"Indexed {result.added} new, {result.updated} updated, {result.unchanged} unchanged "
        f"article(s) ({result.chunks_added} chunks)"
        + (f", removed {result.removed} gone" if prune else "")
        + f" into {folder} in {result.seconds:.1f}s"
        + (f"; {len(result.skipped)} skipped" if result.skipped else "")
        + (f"; {result.lines_removed} page line(s) removed" if result.lines_removed else "")
        + ("" if changed else "; nothing changed")
    )


def echo_articles(articles: Sequence[Article]) -> None:
    """``semsearch load``: each article's id, title, date, source, length, removed lines."""
    for article in articles:
        click.echo(f"{article.id}: {article.title or '(no title)'}")
        where = " · ".join(v for v in (article.source, article.date) if v)
        click.echo(f"    {where + ' · ' if where else ''}{len(article.text)} characters")
        if article.removed_lines:
            click.echo(f"    removed {len(article.removed_lines)} line(s):")
            for line in article.removed_lines:
                click.echo(f"      - {line}")


def echo_hits(hits: Sequence[Hit]) -> None:
    """``semsearch query``: rank, score, title, details and a highlighted snippet per hit."""
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


_SEGMENTS_SHOWN = 12
"""Segments ``semsearch info`` lists one per line; ``--json`` has them all."""


def _segment_line(segment: dict[str, Any]) -> str:
    vectors, removed = segment["vectors"], segment["tombstones"]
    return f"#{segment['id']}: {segment['factory']}, {vectors:,} vectors, {removed:,} removed"


def _size(n_bytes: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= size:
            return f"{n_bytes / size:.2f} {unit}"
    return f"{n_bytes} bytes"


def _tuning_line(t: dict[str, Any]) -> str:
    reached = "reached" if t["recall_at_10"] >= t["recall_target"] else "NOT reached"
    return (
        f"nprobe {t['nprobe']}, efSearch {t['ef_search']}, re-rank {t['k_factor']} x k "
        f"exact: recall@10 {t['recall_at_10']:.3f} against exact search on "
        f"{t['queries']} {'held-out vectors' if t.get('held_out', True) else 'queries'} "
        f"(aimed at {t.get('aimed_at', t['recall_target'])}), target {t['recall_target']} "
        f"{reached}; "
        f"{t['query_ms']:.2f} ms a query"
    )


def echo_info(info: IndexInfo) -> None:
    """``semsearch info``: one aligned row per property of the index."""
    rows = [
        ("index", info.path),
        ("articles", f"{info.articles:,}"),
        ("chunks", f"{info.chunks:,}"),
        ("model", f"{info.model} ({info.dim} dimensions, {info.max_tokens} tokens)"),
        ("prompts", f"query {info.query_prompt!r}, document {info.document_prompt!r}"),
        (
            "embedding",
            f"built with {info.build_backend}; queries "
            + (
                "on sentence-transformers"
                if not info.onnx_export
                else "on the int8 model, ONNX Runtime (no torch)"
                if info.build_backend == "onnx-int8"
                else "on ONNX Runtime (no torch) unless --backend torch"
            ),
        ),
        ("chunking", f"up to {info.chunk_tokens} tokens, {info.overlap_tokens} overlap"),
        ("vector index", f"{info.index_type} (FAISS {info.faiss_factory})"),
        (
            "memory budget",
            _size(info.memory_budget)
            + (
                " (auto chooses the vector index by it)"
                if info.index_type == "auto"
                else " (not used: the index type is fixed)"
            ),
        ),
        *([("tuning", _tuning_line(info.tuning))] if info.tuning else []),
        (
            "segments",
            f"{info.segments}, {info.tombstones} removed chunk(s) awaiting a merge "
            f"(generation {info.generation})",
        ),
        *[("", _segment_line(d)) for d in info.segment_list[:_SEGMENTS_SHOWN]],
        *(
            [("", f"... and {len(info.segment_list) - _SEGMENTS_SHOWN} more (see --json)")]
            if len(info.segment_list) > _SEGMENTS_SHOWN
            else []
        ),
        ("size on disk", f"{info.size_bytes / 1e6:.1f} MB"),
        ("created", info.created_at),
        ("updated", info.updated_at),
        ("format", f"{info.format_version} (semsearch {info.semsearch_version})"),
    ]
    for name, value in rows:
        click.echo(f"{name:>13}  {value}")


def echo_verify(report: VerifyReport) -> None:
    """``semsearch verify``: problems and notes on stderr, one ok line if all agree."""
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if report.ok:
        c = report.checked
        click.echo(
            f"ok: {report.path}: generation {c.get('generation')}, {c.get('articles')} "
            f"articles, {c.get('chunks')} chunks in {c.get('segments', 1)} segment(s); "
            "SQLite, keyword index and segments agree"
        )


def echo_metrics(result: EvalResult, name: str, split: str, depth: int, mode: str) -> None:
    """``semsearch eval``: the dataset, then one line per metric."""
    click.echo(f"{name} ({split}, {result.queries} queries, depth {depth}, {mode}):")
    for metric, value in result.metrics.items():
        click.echo(f"  {metric:>8}  {value:.4f}")


def _snippet(text: str, highlights: tuple[tuple[int, int], ...] = ()) -> list[str]:
    """About 240 characters around the first highlight, wrapped, matched words styled."""
    pieces = snippet(text, highlights)
    marked = "".join(f"{OPEN}{piece}{CLOSE}" if hit else piece for piece, hit in pieces)
    lines = textwrap.wrap(" ".join(marked.split()), width=84)
    bold = click.style("", bold=True, fg="yellow", reset=False)
    return [line.replace(OPEN, bold).replace(CLOSE, click.style("", reset=True)) for line in lines]
