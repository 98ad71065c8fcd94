"""Retrieval quality on a BEIR-format dataset, scored with ir-measures.

A dataset folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``),
``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id``,
``corpus-id``, ``score``). :func:`evaluate` runs every judged query through
:meth:`Index.search_batch` (one hit per article) and scores the ranking with
ir-measures (pytrec_eval underneath), the same implementation BEIR uses.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BadInputError, MissingDependencyError
from .load import FieldMap, load_paths
from .records import Article, Skipped

if TYPE_CHECKING:
    from .index import Index

MEASURES = ("nDCG@10", "R@10", "R@100", "RR@10")
"""Reported by default: nDCG@10, recall@10, recall@100 and MRR@10."""
BEIR_FIELDS = FieldMap(id="_id")


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR-format dataset: the corpus stays on disk; queries and judgements are loaded."""

    path: Path
    split: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def corpus(self) -> Iterator[Article | Skipped]:
        """The corpus as articles (``_id`` is the article id)."""
        return load_paths([self.path / "corpus.jsonl"], BEIR_FIELDS)

    def judged_queries(self) -> dict[str, str]:
        """The queries that have judgements in this split, in file order."""
        return {qid: text for qid, text in self.queries.items() if qid in self.qrels}


@dataclass(frozen=True)
class EvalResult:
    """Scores of one run over a dataset."""

    dataset: str
    split: str
    queries: int
    depth: int
    metrics: dict[str, float]
    seconds: float
    per_query: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    run: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)
    """The ranking: query id → {article id: score}, best first."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_trec_run(self, path: str | Path, tag: str = "semsearch") -> None:
        """Write the ranking as a TREC run file (``qid Q0 docid rank score tag``)."""
        with open(path, "w", encoding="utf-8") as f:
            for qid, docs in self.run.items():
                for rank, (doc, score) in enumerate(docs.items(), start=1):
                    f.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Read a BEIR dataset folder's queries and judgements.

    Raises:
        BadInputError: naming the missing file, or the file and line at fault.
    """
    folder = Path(path)
    qrels_file = folder / "qrels" / f"{split}.tsv"
    for needed in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_file):
        if not needed.is_file():
            raise BadInputError("not found; a BEIR dataset folder needs it", path=str(needed))
    queries: dict[str, str] = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                queries[str(row["_id"])] = str(row["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                where = str(folder / "queries.jsonl")
                raise BadInputError(f"bad query row ({e})", path=where, line=lineno) from None
    qrels: dict[str, dict[str, int]] = {}
    with open(qrels_file, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for lineno, row in enumerate(reader, start=1):
            if lineno == 1 and row and row[0] == "query-id":
                continue
            if not row:
                continue
            try:
                qid, doc_id, score = row[0], row[1], int(row[2])
            except (IndexError, ValueError):
                raise BadInputError(
                    "expected query-id<TAB>corpus-id<TAB>score", path=str(qrels_file), line=lineno
                ) from None
            qrels.setdefault(qid, {})[doc_id] = score
    return BeirDataset(folder, split, queries, qrels)


def evaluate(
    index: Index,
    dataset: BeirDataset,
    depth: int = 100,
    measures: Sequence[str] = MEASURES,
    batch_size: int = 64,
    mode: str | None = None,
    hybrid_weight: float | None = None,
) -> EvalResult:
    """Search every judged query and score the article rankings.

    Args:
        index: an index holding the dataset's corpus.
        dataset: from :func:`load_beir`.
        depth: articles retrieved per query (recall@100 needs 100).
        measures: ir-measures names.
        mode: search mode (``hybrid``, ``semantic`` or ``keyword``; default hybrid).
        hybrid_weight: the semantic share of hybrid scores (default: the library's).

    Raises:
        MissingDependencyError: if ir-measures is not installed.
    """
    try:
        import ir_measures
    except ImportError:
        raise MissingDependencyError(
            "evaluation needs ir-measures: pip install 'semsearch[eval]'"
        ) from None
    started = time.perf_counter()
    queries = dataset.judged_queries()
    run: dict[str, dict[str, float]] = {}
    ids = list(queries)
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        results = index.search_batch(
            [queries[q] for q in batch], depth, mode=mode, hybrid_weight=hybrid_weight
        )
        for qid, hits in zip(batch, results, strict=True):
            run[qid] = {hit.article_id: hit.score for hit in hits}
    parsed = [ir_measures.parse_measure(m) for m in measures]
    qrels = {q: docs for q, docs in dataset.qrels.items() if q in queries}
    metrics = {str(m): float(v) for m, v in ir_measures.calc_aggregate(parsed, qrels, run).items()}
    per_query: dict[str, dict[str, float]] = {}
    for metric in ir_measures.iter_calc(parsed, qrels, run):
        per_query.setdefault(metric.query_id, {})[str(metric.measure)] = float(metric.value)
    return EvalResult(
        dataset=dataset.name,
        split=dataset.split,
        queries=len(queries),
        depth=depth,
        metrics={m: metrics[m] for m in map(str, parsed)},
        seconds=time.perf_counter() - started,
        per_query=per_query,
        run=run,
    )
