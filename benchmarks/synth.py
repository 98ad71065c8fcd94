"""Synthetic chunk vectors and texts that scale to 10M, and a check against real vectors.

**Vectors.** :class:`VectorModel` draws unit vectors of the real chunk vectors'
dimension, deterministically from a seed, batch by batch: batch ``i`` of
stream ``s`` is drawn from its own generator (``default_rng([seed, s, i])``),
so any batch is reproducible alone and 10M vectors never have to be in RAM.

The default kind, ``blend``, is a kernel density estimate with local,
low-rank kernels fitted to the real vectors: pick a real vector ``a`` at
random, move it along the directions to its ``k`` real nearest neighbours
``r_j`` by Gaussian amounts, add a little isotropic noise, normalise::

    x = unit(a + spread / sqrt(k) * sum_j g_j (r_j - a) + noise / sqrt(dim) * e)

So a synthetic point lies in the low-dimensional patch the real data spans
around ``a``. That is what real embeddings look like locally (a local intrinsic
dimension near 10, not 384), and it is why the neighbours of a synthetic point
at 10M spread out in distance as real neighbours do instead of tying. The
defaults (``k`` 10, ``spread`` 0.6, ``noise`` 0.05) were chosen on the
SciFact chunk vectors so that the 1st and 10th nearest-neighbour cosines and
their gap match the real ones at equal size (see ``synth.md``). The isotropic
noise is kept small on purpose: it puts a floor of about ``noise * sqrt(2)``
under the distance between two draws near the same anchor, and at 10M, with
about 1,000 draws per SciFact vector, a larger floor would make the nearest
neighbours tie again (0.2 gave a 1st-10th gap of 0.057 at 200k against 0.070
for 0.05, with the same fit at equal size).

The old harsh set (``harsh``: a real vector plus Gaussian noise of relative
norm 0.5, as ``benchmarks.common.synthetic_vectors`` draws it) is the same
formula with ``k`` 0 and ``noise`` 0.5. Its noise fills all 384 dimensions,
so the siblings of one real vector are all at nearly the same distance from
each other: at 1M, about 100 near-equal neighbours around every point, and
recall@10 becomes a coin toss between ties.

**Texts.** :class:`TextModel` draws one-chunk article texts from the unigram
distribution (Zipfian) of a real corpus's words, so that keyword posting
lists grow with N as a real collection's would; real queries of that corpus
then make realistic keyword queries.

**The check** (``python -m benchmarks.synth``): nearest-neighbour cosine
distributions (1st, 10th and their gap) and the local intrinsic dimension of
the real chunk vectors against synthetic sets of equal size, a synthetic set
fitted on half of the real vectors and drawn at full size (does it
extrapolate density?), the harsh set, and the same statistics as the sets
grow. Run from the repository root:

    python -m benchmarks.synth --index indexes/bench-scifact
    python -m benchmarks.synth --index indexes/bench-scifact --sizes 10000,100000,1000000

The index is only read: it is copied to a scratch folder and opened there.
Writes ``synth.json``, ``synth.md`` and ``synth.png`` into ``--out`` (default
``benchmarks/results``). It takes about a minute with ``--sizes 200000`` on 2
cores (exact neighbours of 2,000 sampled points in each set).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, SCIFACT, md_table, unit, write_results

# Rows per batch: row r of a stream is row r % BATCH of batch r // BATCH.
BATCH = 16_384
BASE_STREAM = 0
QUERY_STREAM = 1
NEIGHBOURS = 10
SPREAD = 0.6
NOISE = 0.05
HARSH_NOISE = 0.5
STATS_SAMPLE = 2_000
STATS_K = 10
LID_K = 20
# Cheap ANN settings whose recall@10 tells how hard a set is for approximate search.
ANN_SETTINGS = (
    ("HNSW16", "efSearch", (10, 20, 40)),
    ("IVF64,Flat", "nprobe", (1, 4)),
    ("IVF64,PQ32x4fs", "nprobe", (4, 16)),
)
ANN_QUERIES = 300
SEED = 0
_WORD = re.compile(r"[^\W\d_]{2,}")


@dataclass(frozen=True)
class VectorModel:
    """A seeded source of synthetic unit vectors shaped like a real set.

    Attributes:
        kind: ``blend`` (local low-rank kernels) or ``harsh`` (isotropic noise).
        anchors: ``(n, dim)`` float32 real unit vectors the draws start from.
        neighbours: ``(n, k)`` int32 row numbers of each anchor's k nearest anchors
            (``k`` 0 for ``harsh``).
        spread: scale of the moves towards the neighbours (relative, see module doc).
        noise: expected norm of the isotropic noise, relative to a unit vector.
        seed: the seed every batch derives from.
    """

    kind: str
    anchors: np.ndarray
    neighbours: np.ndarray
    spread: float
    noise: float
    seed: int = SEED

    @property
    def dim(self) -> int:
        """The vectors' dimension."""
        return int(self.anchors.shape[1])

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        kind: str = "blend",
        *,
        k: int = NEIGHBOURS,
        spread: float = SPREAD,
        noise: float = NOISE,
        seed: int = SEED,
    ) -> VectorModel:
        """Fit to real unit vectors: keep them as anchors and find each one's k neighbours.

        Args:
            vectors: ``(n, dim)`` real unit vectors (e.g. an index's chunk vectors), n > k.
            kind: ``blend`` or ``harsh`` (``harsh`` ignores k and spread; noise 0.5).

        Raises:
            ValueError: for an unknown kind or too few vectors.
        """
        anchors = unit(vectors)
        if kind == "harsh":
            empty = np.empty((len(anchors), 0), dtype=np.int32)
            return cls("harsh", anchors, empty, 0.0, HARSH_NOISE, seed)
        if kind != "blend":
            raise ValueError(f"unknown synthetic vector kind {kind!r}; use blend or harsh")
        if len(anchors) <= k:
            raise ValueError(f"need more than {k} real vectors to fit, got {len(anchors)}")
        import faiss

        index = faiss.IndexFlatIP(anchors.shape[1])
        index.add(anchors)
        _, ids = index.search(anchors, k + 1)
        # Drop each anchor itself (usually the first column; a duplicate may come first).
        rows = np.arange(len(anchors))[:, None]
        keep = ids != rows
        neighbours = np.array([row[mask][:k] for row, mask in zip(ids, keep, strict=True)])
        return cls("blend", anchors, neighbours.astype(np.int32), spread, noise, seed)

    def batch(self, i: int, stream: int = BASE_STREAM, size: int = BATCH) -> np.ndarray:
        """Batch ``i`` of a stream: ``(size, dim)`` float32 unit vectors, the same every call."""
        rng = np.random.default_rng([self.seed, stream, i])
        dim, k = self.dim, self.neighbours.shape[1]
        picked = rng.integers(0, len(self.anchors), size)
        x = self.anchors[picked].copy()
        if k:
            g = rng.standard_normal((size, k), dtype=np.float32) * np.float32(
                self.spread / np.sqrt(k)
            )
            x *= 1 - g.sum(axis=1, keepdims=True)
            for j in range(k):
                x += g[:, j : j + 1] * self.anchors[self.neighbours[picked, j]]
        noise = rng.standard_normal((size, dim), dtype=np.float32)
        x += noise * np.float32(self.noise / np.sqrt(dim))
        return unit(x)

    def batches(
        self, n: int, stream: int = BASE_STREAM, start: int = 0
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Rows ``start`` to ``n`` of a stream, as ``(first row, vectors)`` pieces of one batch."""
        row = start
        while row < n:
            i, offset = divmod(row, BATCH)
            stop = min(n, (i + 1) * BATCH)
            yield row, self.batch(i, stream)[offset : offset + stop - row]
            row = stop

    def vectors(self, n: int, stream: int = BASE_STREAM) -> np.ndarray:
        """The first n rows of a stream in one array (for sizes that fit in RAM)."""
        out = np.empty((n, self.dim), dtype=np.float32)
        for row, piece in self.batches(n, stream):
            out[row : row + len(piece)] = piece
        return out

    def save(self, path: Path) -> None:
        """Write the model as ``.npz`` (no pickle)."""
        np.savez(
            path,
            kind=np.array(self.kind),
            anchors=self.anchors,
            neighbours=self.neighbours,
            params=np.array([self.spread, self.noise], dtype=np.float64),
            seed=np.array(self.seed, dtype=np.int64),
        )

    @classmethod
    def load(cls, path: Path) -> VectorModel:
        """Read a model written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            spread, noise = (float(v) for v in data["params"])
            return cls(
                str(data["kind"]),
                data["anchors"],
                data["neighbours"],
                spread,
                noise,
                int(data["seed"]),
            )


class RowCache:
    """Rows of a :class:`VectorModel` stream by row number, keeping the last few batches.

    An encoder asked for rows in order (as ``Index.add`` asks) generates each
    batch once; memory is ``keep`` batches (``BATCH`` x dim x 4 bytes each).
    """

    def __init__(self, model: VectorModel, stream: int = BASE_STREAM, keep: int = 2) -> None:
        self.model = model
        self.stream = stream
        self.keep = keep
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """``(len(rows), dim)`` float32 vectors of these row numbers."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.model.dim), dtype=np.float32)
        which, offsets = np.divmod(rows, BATCH)
        for i in np.unique(which):
            mask = which == i
            out[mask] = self._batch(int(i))[offsets[mask]]
        return out

    def _batch(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        vectors = self.model.batch(i, self.stream)
        self._cache[i] = vectors
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return vectors


# -- texts ------------------------------------------------------------------------


@dataclass(frozen=True)
class TextModel:
    """One-chunk article texts drawn from a real corpus's word frequencies.

    Attributes:
        words: the vocabulary, most frequent first.
        cumulative: ``(len(words),)`` float64 cumulative probabilities.
        min_words, max_words: an article's length in words, drawn uniformly.
        seed: the seed every batch derives from.
    """

    words: np.ndarray
    cumulative: np.ndarray
    min_words: int = 30
    max_words: int = 70
    seed: int = SEED

    @classmethod
    def fit(
        cls, texts: Iterable[str], min_words: int = 30, max_words: int = 70, seed: int = SEED
    ) -> TextModel:
        """Count the words (letters only, two or more, lower-cased) of real texts.

        Raises:
            ValueError: if the texts hold no words, or the lengths are out of order.
        """
        if not 1 <= min_words <= max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
        counts = Counter(w.lower() for text in texts for w in _WORD.findall(text))
        if not counts:
            raise ValueError("no words to fit a text model to")
        ranked = counts.most_common()
        words = np.array([w for w, _ in ranked])
        freq = np.array([c for _, c in ranked], dtype=np.float64)
        return cls(words, np.cumsum(freq) / freq.sum(), min_words, max_words, seed)

    def batch(self, i: int, stream: int = BASE_STREAM, size: int = BATCH) -> list[str]:
        """Batch ``i`` of a stream: ``size`` texts, the same every call."""
        rng = np.random.default_rng([self.seed, stream, i, 1])
        lengths = rng.integers(self.min_words, self.max_words + 1, size)
        draws = np.searchsorted(self.cumulative, rng.random(int(lengths.sum())), side="right")
        tokens = self.words[np.minimum(draws, len(self.words) - 1)]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return [" ".join(tokens[a:b]) for a, b in itertools.pairwise(bounds)]

    def texts(self, n: int, stream: int = BASE_STREAM, start: int = 0) -> Iterator[str]:
        """Texts of rows ``start`` to ``n`` of a stream, in order."""
        row = start
        while row < n:
            i, offset = divmod(row, BATCH)
            stop = min(n, (i + 1) * BATCH)
            yield from self.batch(i, stream)[offset : offset + stop - row]
            row = stop

    def save(self, path: Path) -> None:
        """Write the model as ``.npz`` (no pickle: the words are a unicode array)."""
        sizes = np.array([self.min_words, self.max_words, self.seed], dtype=np.int64)
        np.savez(path, words=self.words, cumulative=self.cumulative, sizes=sizes)

    @classmethod
    def load(cls, path: Path) -> TextModel:
        """Read a model written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            low, high, seed = (int(v) for v in data["sizes"])
            return cls(data["words"], data["cumulative"], low, high, seed)


def corpus_texts(dataset: Path) -> Iterator[str]:
    """The title and text of each row of a BEIR ``corpus.jsonl``."""
    with open(dataset / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                yield f"{row.get('title', '')} {row.get('text', '')}"


def keyword_load(docs: Sequence[str], queries: Sequence[str]) -> dict[str, float]:
    """How much of a collection a keyword query touches, its words ORed (as FTS5 is asked).

    Returns:
        ``matched``: mean fraction of documents holding any of a query's words;
        ``postings``: mean postings read per query, per document (the sum of the
        query words' document frequencies over N); ``vocabulary``: distinct words.
    """
    sets = [{w.lower() for w in _WORD.findall(d)} for d in docs]
    df: Counter[str] = Counter(w for words in sets for w in words)
    matched, postings = [], []
    for query in queries:
        words = {w.lower() for w in _WORD.findall(query)}
        matched.append(sum(1 for s in sets if not words.isdisjoint(s)) / len(sets))
        postings.append(sum(df[w] for w in words) / len(sets))
    return {
        "matched": float(np.mean(matched)),
        "postings": float(np.mean(postings)),
        "vocabulary": float(len(df)),
    }


def compare_texts(dataset: Path, n_queries: int = 100) -> list[dict[str, Any]]:
    """Keyword load of the generated texts beside the real corpus cut to the same lengths."""
    from semsearch.evaluate import load_beir

    real = list(corpus_texts(dataset))
    model = TextModel.fit(real)
    queries = list(load_beir(dataset).judged_queries().values())[:n_queries]
    rng = np.random.default_rng([SEED, 13])
    lengths = rng.integers(model.min_words, model.max_words + 1, len(real))
    cut = [" ".join(t.split()[:length]) for t, length in zip(real, lengths, strict=True)]
    rows = [
        ("real corpus, cut to the same lengths", cut),
        ("generated (word frequencies)", list(model.texts(len(real)))),
    ]
    return [{"texts": name, "n": len(docs), **keyword_load(docs, queries)} for name, docs in rows]


# -- reading real vectors -----------------------------------------------------------


def read_index(
    index_dir: Path, dataset: Path | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """An index's chunk vectors and, with a BEIR dataset, its judged queries embedded.

    The index is copied to a scratch folder and opened there, so the original
    is never written to (opening an older format migrates its store).

    Returns:
        ``(chunk vectors (n, dim) float32, query vectors (q, dim) float32 or None)``.
    """
    from semsearch import Index
    from semsearch.evaluate import load_beir

    with tempfile.TemporaryDirectory(prefix="semsearch-synth-") as tmp:
        copy = Path(tmp) / "index"
        shutil.copytree(index_dir, copy, ignore=shutil.ignore_patterns("write.lock"))
        with Index.open(copy) as index:
            _, chunks = index.chunk_vectors()
            queries = None
            if dataset is not None:
                texts = list(load_beir(dataset).judged_queries().values())
                queries = index.encoder.encode_queries(texts)
    return chunks, queries


# -- neighbourhood statistics -------------------------------------------------------


def neighbour_stats(
    vectors: np.ndarray, sample: int = STATS_SAMPLE, seed: int = SEED
) -> dict[str, Any]:
    """Exact nearest-neighbour cosines of a seeded sample of points within their own set.

    For each sampled point (itself excluded): the cosine to its 1st and 10th
    nearest neighbour, their gap, and the local intrinsic dimension (the
    Levina-Bickel maximum-likelihood estimate from the 20 nearest Euclidean
    distances). Small gaps and a high dimension are what make recall@10 a toss-up.

    Returns:
        ``{"n", "nn1", "nn10", "gap", "lid"}``: each statistic as its sorted
        per-point values (``values``) and ``p10``/``median``/``p90``.
    """
    import faiss

    n = len(vectors)
    rng = np.random.default_rng([seed, 7])
    picked = np.sort(rng.choice(n, min(sample, n), replace=False))
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, ids = index.search(vectors[picked], LID_K + 1)
    # Each point finds itself first; drop that column (or the point's own id where a
    # duplicate tied with it), keeping LID_K neighbours.
    own = ids == picked[:, None]
    own[~own.any(axis=1), -1] = True
    cos = scores[~own].reshape(len(picked), LID_K)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * cos, 1e-12))
    lid = -1.0 / np.mean(np.log(dist[:, :-1] / dist[:, -1:]), axis=1)
    figures = {
        "nn1": cos[:, 0],
        "nn10": cos[:, STATS_K - 1],
        "gap": cos[:, 0] - cos[:, STATS_K - 1],
        "lid": lid,
    }
    return {"n": n, **{name: _summary(values) for name, values in figures.items()}}


def _summary(values: np.ndarray) -> dict[str, Any]:
    v = np.sort(values.astype(np.float64))
    return {
        "p10": float(np.percentile(v, 10)),
        "median": float(np.median(v)),
        "p90": float(np.percentile(v, 90)),
        "values": [round(float(x), 4) for x in v],
    }


def ann_recall(vectors: np.ndarray, seed: int = SEED) -> dict[str, float]:
    """Recall@10 of a few cheap FAISS settings, with 300 of the set's own points as queries.

    The queries are held out of the base (seeded). The figures tell how hard
    the set is for approximate search: a synthetic set should score as the
    real one does at equal size.

    Returns:
        ``{"<factory> <param>=<value>": recall@10}``; empty for fewer than 2,796 vectors.
    """
    import faiss

    from benchmarks.common import recall_at_k

    if len(vectors) < ANN_QUERIES + 39 * 64:  # IVF64 wants 39 training points per list
        return {}
    order = np.random.default_rng([seed, 11]).permutation(len(vectors))
    queries = vectors[order[:ANN_QUERIES]]
    base = np.ascontiguousarray(vectors[np.sort(order[ANN_QUERIES:])])
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    _, truth = flat.search(queries, STATS_K)
    found: dict[str, float] = {}
    space = faiss.ParameterSpace()
    for factory, param, values in ANN_SETTINGS:
        index = faiss.index_factory(base.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        index.train(base)
        index.add(base)
        for value in values:
            space.set_index_parameter(index, param, value)
            _, ids = index.search(queries, STATS_K)
            found[f"{factory} {param}={value}"] = recall_at_k(ids, truth, STATS_K)
    return found


# -- the check --------------------------------------------------------------------


def compare(real: np.ndarray, sizes: Sequence[int]) -> dict[str, Any]:
    """Neighbour statistics of the real set beside synthetic sets, at equal size and growing."""
    n = len(real)
    half = real[np.sort(np.random.default_rng([SEED, 3]).permutation(n)[: n // 2])]
    blend, harsh = VectorModel.fit(real, "blend"), VectorModel.fit(real, "harsh")
    equal = [
        ("real chunk vectors", "real", real),
        ("synthetic (blend)", "blend", blend.vectors(n)),
        ("synthetic (blend) fitted on half", "blend", VectorModel.fit(half).vectors(n)),
        ("harsh (real + noise)", "harsh", harsh.vectors(n)),
        ("harsh fitted on half", "harsh", VectorModel.fit(half, "harsh").vectors(n)),
    ]
    rows = []
    for name, kind, vectors in equal:
        rows.append({"set": name, "kind": kind, **neighbour_stats(vectors)})
        if "half" not in name:
            rows[-1]["ann_recall"] = ann_recall(vectors)
        _log(f"{name}: nn1 {rows[-1]['nn1']['median']:.3f}, gap {rows[-1]['gap']['median']:.3f}")
    growth = []
    for size in sizes:
        for kind, model in (("blend", blend), ("harsh", harsh)):
            stats = neighbour_stats(model.vectors(size))
            growth.append({"kind": kind, **_without_values(stats)})
            nn1, gap = stats["nn1"]["median"], stats["gap"]["median"]
            _log(f"{kind} {size:,}: nn1 {nn1:.3f}, gap {gap:.3f}")
    return {"equal_size": rows, "growth": growth}


def _without_values(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ({key: x for key, x in v.items() if key != "values"} if isinstance(v, dict) else v)
        for k, v in stats.items()
    }


def markdown(data: dict[str, Any], source: str) -> str:
    def cell(stats: dict[str, Any], digits: int = 3) -> str:
        return f"{stats['median']:.{digits}f} ({stats['p10']:.{digits}f}-{stats['p90']:.{digits}f})"

    headers = ["set", "vectors", "1st nn cosine", "10th nn cosine", "gap 1st-10th", "local dim"]

    def columns(r: dict[str, Any]) -> list[object]:
        stats = (cell(r["nn1"]), cell(r["nn10"]), cell(r["gap"]), cell(r["lid"], 1))
        return [f"{r['n']:,}", *stats]

    rows = [[r["set"], *columns(r)] for r in data["equal_size"]]
    growth = [[r["kind"], *columns(r)] for r in data["growth"]]
    parts = [
        "## Synthetic vectors against the real chunk vectors",
        "",
        f"Exact neighbours of {STATS_SAMPLE:,} sampled points within each set (itself "
        f"excluded), cosine similarity: median (10th-90th percentile). Real: the chunk "
        f"vectors of {source}. *blend*: a real vector moved along the directions to its "
        f"{NEIGHBOURS} real neighbours (spread {SPREAD}) plus isotropic noise of norm "
        f"{NOISE}, normalised; *harsh*: a real vector plus isotropic noise of norm "
        f"{HARSH_NOISE} (the older ANN and scaling set). Local dim: the Levina-Bickel "
        f"estimate from the {LID_K} nearest distances. *Fitted on half* draws the full "
        "size from half of the real vectors: how the generator extrapolates density.",
        "",
        md_table(headers, rows),
    ]
    judged = [r for r in data["equal_size"] if r.get("ann_recall")]
    if judged:
        settings = list(judged[0]["ann_recall"])
        parts += [
            "",
            f"How hard each set is for approximate search at equal size: recall@{STATS_K} "
            f"of a few cheap FAISS settings, with {ANN_QUERIES} of the set's own points "
            "held out as queries (no re-ranking):",
            "",
            md_table(
                ["set", *settings],
                [[r["set"], *(round(r["ann_recall"][k], 3) for k in settings)] for r in judged],
            ),
        ]
    if data.get("texts"):
        parts += [
            "",
            "Texts for keyword search: how much of the collection the real queries touch "
            "(their words ORed), generated texts against the real corpus cut to the same "
            "lengths:",
            "",
            md_table(
                ["texts", "documents", "matched by a query", "postings per document", "words"],
                [
                    [t["texts"], f"{t['n']:,}", t["matched"], t["postings"], round(t["vocabulary"])]
                    for t in data["texts"]
                ],
            ),
        ]
    if growth:
        parts += [
            "",
            "As the synthetic sets grow (no real set to compare at these sizes), both "
            "gaps shrink, as they would in a denser real collection; the harsh set's "
            "collapses to near-ties with little spread between points (its noisy copies "
            "of one real vector are all equally far apart), while the blend's stays "
            "wider and spread out. The blend's local dimension falls as it grows: its "
            "neighbours are more and more draws near the same real vector, in a patch "
            "of at most 10 dimensions.",
            "",
            md_table(["kind", "vectors", *headers[2:]], growth),
        ]
    return "\n".join(parts)


def plot(data: dict[str, Any], path: Path) -> None:
    """Distributions of the 1st and 10th neighbour cosine and their gap, one line per set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for r in data["equal_size"]:
        style = "-" if "half" not in r["set"] else ":"
        width = 2.4 if r["kind"] == "real" else 1.3
        for ax, stat in zip(axes[:3], ("nn1", "nn10", "gap"), strict=True):
            values = np.asarray(r[stat]["values"])
            cdf = np.arange(1, len(values) + 1) / len(values)
            ax.plot(values, cdf, style, linewidth=width, label=r["set"])
    titles = ("1st neighbour cosine", "10th neighbour cosine", "gap (1st - 10th)")
    for ax, title in zip(axes[:3], titles, strict=True):
        ax.set_title(f"{title}, CDF at equal size", fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    for kind in ("blend", "harsh"):
        grown = [r for r in data["growth"] if r["kind"] == kind]
        if grown:
            xs = [r["n"] for r in grown]
            axes[3].plot(xs, [r["gap"]["median"] for r in grown], marker="o", label=kind)
    for r in data["equal_size"]:
        if r["kind"] == "real":
            axes[3].plot([r["n"]], [r["gap"]["median"]], "*", markersize=12, label="real")
    axes[3].set_xscale("log")
    axes[3].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    axes[3].xaxis.set_minor_formatter(NullFormatter())
    axes[3].set_title("median gap as the set grows", fontsize=10)
    axes[3].set_xlabel("vectors")
    axes[3].grid(True, which="both", alpha=0.3)
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _log(message: str) -> None:
    print(f"[synth] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=Path, required=True, help="index whose vectors to imitate")
    parser.add_argument(
        "--sizes", default="100000", help="synthetic sizes for the growth table (comma-separated)"
    )
    parser.add_argument(
        "--dataset", type=Path, default=SCIFACT, help="BEIR folder: texts and queries to compare"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sizes = [int(s) for s in args.sizes.replace("_", "").split(",") if s.strip()]
    real, _ = read_index(args.index)
    texts = compare_texts(args.dataset) if args.dataset and args.dataset.is_dir() else []
    data: dict[str, Any] = {
        "settings": {
            "index": str(args.index),
            "dataset": str(args.dataset) if texts else None,
            "neighbours": NEIGHBOURS,
            "spread": SPREAD,
            "noise": NOISE,
            "harsh_noise": HARSH_NOISE,
            "sample": STATS_SAMPLE,
            "lid_k": LID_K,
            "sizes": sizes,
            "seed": SEED,
        },
        **compare(real, sizes),
        "texts": texts,
    }
    data["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    plot(data, args.out / "synth.png")
    # The per-point values are for the plot; the JSON keeps the percentiles.
    data["equal_size"] = [_without_values(r) for r in data["equal_size"]]
    write_results(args.out, "synth", data, markdown(data, args.index.resolve().name), argv=argv)
    return data


if __name__ == "__main__":
    main()
