"""How fast are keyword and hybrid search beside semantic, as the index grows?

An index of ``--size`` one-chunk articles is built through the public API,
each article two to four real SciFact sentences drawn at random (so the
vocabulary, its Zipfian frequencies and the query words are real), then
opened again and queried with SciFact's real claims, single query after
single query, the modes interleaved query by query so that they share the
machine's state: ``semantic``, ``keyword`` (BM25 from the segments'
postings), ``hybrid``, and the keyword query as an FTS5 expression
(``keyword_syntax="fts5"``: FTS5 scores every match, as keyword search did
before postings). Embedding is left out, as in ``benchmarks.scaling``: a
:class:`HashedEncoder` hands out synthetic unit vectors picked by a hash of
the text, so what is timed is the search itself. Writes ``keyword.json`` and
``keyword.md`` into ``--out`` (the CPU model in both).

    python -m benchmarks.keyword --size 100000               # quick: about 2 minutes on 2 cores
    python -m benchmarks.keyword --size 1000000 --batch 100000
    python -m benchmarks.keyword --size 10000000 --no-fts5   # FTS5's every-match path is slow there
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS,
    SCIFACT,
    folder_bytes,
    md_table,
    mib,
    own_peak_rss,
    percentiles,
    unit,
    write_results,
)
from semsearch import Article, Index
from semsearch.keywords import match_expression

K = 10
SEED = 0
POOL = 65_536
"""Distinct synthetic vectors the encoder hands out (picked by a hash of the text)."""
_WORD = re.compile(r"\S+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class HashedEncoder:
    """An :class:`~semsearch.embed.Encoder` whose vector for a text is a pool row its hash picks.

    The pool is unit vectors drawn near a few hundred random centres (clustered,
    as embeddings are); the same text always gets the same vector, so the index
    reopens with it and a query has a vector without a model.
    """

    name = "benchmark/hashed"
    dim = 384
    max_tokens = 256
    special_tokens = 2
    backend = "hashed"
    query_prompt = ""
    document_prompt = ""

    def __init__(self) -> None:
        rng = np.random.default_rng(SEED)
        centres = unit(rng.standard_normal((256, self.dim), dtype=np.float32))
        rows = centres[rng.integers(0, len(centres), POOL)]
        noise = rng.standard_normal((POOL, self.dim), dtype=np.float32) / np.sqrt(self.dim)
        self._pool = unit(rows + noise)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def encode_documents(
        self, texts: Sequence[str], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        rows = [
            int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") % POOL
            for t in texts
        ]
        return self._pool[rows].reshape(len(texts), self.dim)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_documents(texts)


def sentences(dataset: Path) -> list[str]:
    """Every sentence of the dataset's corpus (title and text), of at least five words."""
    found = []
    with open(dataset / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            for text in (doc.get("title", ""), doc.get("text", "")):
                found += [s for s in _SENTENCE.split(text) if len(s.split()) >= 5]
    return found


def articles(pool: list[str], n: int, start: int = 0) -> Iterator[Article]:
    """n one-chunk articles of two to four random sentences (seeded by their number)."""
    for i in range(start, start + n):
        rng = np.random.default_rng([SEED, i])
        picked = rng.integers(0, len(pool), rng.integers(2, 5))
        text = " ".join(pool[j] for j in picked)
        # Long sentences could make two chunks; one chunk per article keeps N = chunks.
        words = text.split()
        yield Article(id=f"s{i}", text=" ".join(words[:200]))


def queries(dataset: Path, n: int) -> list[str]:
    with open(dataset / "queries.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f][:n]


def build(folder: Path, pool: list[str], size: int, batch: int) -> dict[str, Any]:
    """Build the index in adds of ``batch`` articles; its time and what it holds."""
    started = time.perf_counter()
    with Index.create(folder, encoder=HashedEncoder()) as index:
        for start in range(0, size, batch):
            index.add(articles(pool, min(batch, size - start), start))
        info = index.info()
    return {
        "seconds": time.perf_counter() - started,
        "articles": info.articles,
        "chunks": info.chunks,
        "segments": info.segments,
        "faiss_factory": info.faiss_factory,
        "disk_bytes": folder_bytes(folder),
        "keyword_files_bytes": sum(p.stat().st_size for p in folder.glob("segment.*.kw-*")),
    }


def measure(folder: Path, texts: list[str], fts5: bool, warmup: int = 10) -> dict[str, Any]:
    """Warm single-query p50/p95/p99 of each mode, interleaved query by query."""
    encoder = HashedEncoder()
    started = time.perf_counter()
    index = Index.open(folder, encoder=encoder)
    opened = time.perf_counter() - started
    runs: dict[str, dict[str, Any]] = {
        "semantic": {"mode": "semantic"},
        "keyword": {"mode": "keyword"},
        "hybrid": {"mode": "hybrid"},
    }
    if fts5:
        runs["keyword, FTS5 every match"] = {"mode": "keyword", "keyword_syntax": "fts5"}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    with index:
        warm = texts[:warmup]
        for n, text in enumerate([*warm, *texts]):
            for name, options in runs.items():
                query = match_expression(text) if "keyword_syntax" in options else text
                if query is None:
                    continue
                t = time.perf_counter()
                index.search(query, k=K, **options)
                if n >= len(warm):
                    seconds[name].append(time.perf_counter() - t)
    return {
        "open_seconds": opened,
        "latency": {name: percentiles(s) for name, s in seconds.items()},
        "peak_rss_bytes": own_peak_rss(),
    }


def markdown(result: dict[str, Any]) -> str:
    built, latency = result["build"], result["query"]["latency"]
    semantic = latency["semantic"]["p50_ms"]
    rows = [
        [name, s["p50_ms"], s["p95_ms"], s["p99_ms"], s["p50_ms"] / semantic]
        for name, s in latency.items()
    ]
    return "\n\n".join(
        [
            f"{built['chunks']:,} one-chunk articles of resampled SciFact sentences, "
            f"{built['segments']} segment(s), FAISS {built['faiss_factory']}; "
            f"{result['queries']} SciFact claims, k={K}, embedding left out.",
            md_table(["warm, public API", "p50 ms", "p95 ms", "p99 ms", "p50 / semantic"], rows),
            f"Build {built['seconds']:.0f} s; index {mib(built['disk_bytes']):,.0f} MiB, of which "
            f"keyword postings {mib(built['keyword_files_bytes']):,.0f} MiB; "
            f"open {result['query']['open_seconds']:.2f} s; "
            f"query process peak RSS {mib(result['query']['peak_rss_bytes']):,.0f} MiB.",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="articles (one chunk each)")
    parser.add_argument("--batch", type=int, default=100_000, help="articles per add")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--no-fts5", dest="fts5", action="store_false",
                        help="leave out the FTS5 every-match keyword row")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="semsearch-keyword-", dir=args.work))
    try:
        folder = work / "index"
        built = build(folder, sentences(args.dataset), args.size, args.batch)
        texts = queries(args.dataset, args.queries)
        query = measure(folder, texts, args.fts5)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"size": args.size, "queries": len(texts), "build": built, "query": query}
    write_results(args.out, "keyword", result, markdown(result), argv)
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
