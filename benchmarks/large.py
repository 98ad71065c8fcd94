"""Ten million chunks on one machine: recall, latency, memory and build cost at scale.

An index of N one-chunk articles is built through the public API
(``Index.create`` + one ``Index.add`` of a generator of articles) in a child
process of its own, whose peak RSS (``VmHWM``) is recorded. The vectors come
from :class:`benchmarks.synth.VectorModel`, batch by batch, as the writer asks
for them: an encoder reads the row number from the article's text
(``"v<row> words..."``) and generates that row's batch, so the N vectors are
never in RAM together (embedding is excluded, as in ``benchmarks.scaling``).
The rest of each text is drawn by :class:`benchmarks.synth.TextModel` from the
word frequencies of a real corpus, for keyword and hybrid search.

Then, in another fresh process (FAISS on 2 threads): the open time; 1,000
held-out queries (synthetic vectors of a stream the index does not hold), each
searched alone through ``Index.search(vector, k=10)``, timed (p50/p95/p99) and
scored as recall@10 against the exact top 10 (intersection), which the
parent computes in bounded memory by streaming the base vectors batch by batch
through FAISS (``faiss.contrib.exhaustive_search.knn_ground_truth``);
keyword and hybrid search of real queries' text (the hybrid's vector half is a
held-out vector mapped to each text); and the process's anonymous and
file-backed resident memory (``RssAnon``, ``RssFile`` in /proc/self/status),
reported separately, per vector.

Rows (``--sets``): ``blend`` (the realistic synthetic vectors, the default),
``harsh`` (the older real-vector-plus-noise set, much harder), and ``real``
(the chunk vectors of ``--index`` with ``--dataset``'s judged queries embedded).

Run from the repository root:

    python -m benchmarks.large --index indexes/bench-scifact --dataset ../shared/data/scifact
    python -m benchmarks.large --quick ...            # 1M instead of 10M
    python -m benchmarks.large --size 50000 --sets blend,harsh,real --scratch /tmp/bench13 ...

Writes ``large_<size>.json`` and ``.md`` (``large_10m``, ``large_1m``...) into
``--out`` (default ``benchmarks/results``). The index is built under
``--scratch`` (default: the system's temporary folder) and deleted afterwards.
The source index is only read (copied, then opened). Cost, measured at 200k
on a shared 2-core machine before the compressed index and the streaming add:
about 1,200 articles a second to build (most of it per-article loading,
chunking and SQLite/FTS5 work, not FAISS) and about 2,500 bytes of disk an
article, so plan on hours and about 25 GB of scratch disk per synthetic set
at 10M (each set's index is deleted before the next is built); the exact
ground truth regenerates and scans the base vectors once (minutes at 10M).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS,
    ROOT,
    SCIFACT,
    folder_bytes,
    machine,
    md_table,
    mib,
    own_peak_rss,
    percentiles,
    recall_at_k,
    run_process,
    write_results,
)
from benchmarks.scaling import PrecomputedEncoder
from benchmarks.synth import (
    BASE_STREAM,
    QUERY_STREAM,
    RowCache,
    TextModel,
    VectorModel,
    corpus_texts,
    read_index,
)
from semsearch import Article, Index

SIZE = 10_000_000
QUICK_SIZE = 1_000_000
QUERIES = 1_000
TEXT_QUERIES = 200
K = 10
WARMUP = 20
THREADS = 2
SETS = ("blend", "real")
SEED = 0
_ROW = re.compile(r"v(\d+)")
_SIMD = re.compile(r"^(sse4_2|avx|avx2|fma|f16c|avx512\w*|amx\w*|asimd\w*|sve\w*|neon)$")
# The targets at 10M (and 1M): what the tables check.
TARGETS = {
    "recall_at_10": 0.95,
    "p50_ms": 10.0,
    "rss_anon_bytes_per_vector": 100.0,
    "build_peak_rss_bytes": 4 * 2**30,
    "open_seconds": 2.0,
    "keyword_p50_ms": 50.0,
    "hybrid_p50_ms": 50.0,
}


class GeneratedEncoder(PrecomputedEncoder):
    """An encoder that draws each article's vector instead of computing it.

    A text ``"v<row> ..."`` gets row ``row`` of ``rows`` (a function from row
    numbers to vectors, e.g. :meth:`benchmarks.synth.RowCache.rows`). A query
    text found in ``queries`` gets its vector from there (how hybrid search
    gets a held-out vector for a real query's text). The name and fingerprint
    are :class:`~benchmarks.scaling.PrecomputedEncoder`'s, so an index built
    with one opens with the other.
    """

    def __init__(
        self,
        dim: int,
        rows: Callable[[np.ndarray], np.ndarray] | None = None,
        queries: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__(dim)
        self._rows = rows
        self._queries = dict(queries or {})

    _source = "generated"

    def _row_of(self, text: str) -> int | None:
        """The row a text ``"v<row> words..."`` names, or None."""
        match = _ROW.match(text)
        return int(match.group(1)) if match is not None and self._rows is not None else None

    def _vectors_of(self, rows: np.ndarray) -> np.ndarray:
        assert self._rows is not None
        return self._rows(rows)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if all(t in self._queries for t in texts):
            return np.stack([self._queries[t] for t in texts]).astype(np.float32)
        return self.encode_documents(texts)


def articles(n: int, texts: TextModel) -> Iterator[Article]:
    """One-chunk articles ``v0``, ``v1``...: the row number, then generated words."""
    for row, words in enumerate(texts.texts(n)):
        yield Article(id=f"v{row}", text=f"v{row} {words}")


def hit_rows(hits: Sequence[Any]) -> list[int]:
    """Row numbers of hits on articles named ``v<row>``."""
    return [int(h.article_id[1:]) for h in hits]


def memory() -> dict[str, int]:
    """This process's resident memory by kind, in bytes (/proc/self/status; Linux)."""
    wanted = {"VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"}
    found = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in wanted:
                found[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return found


def cpu_flags() -> dict[str, Any]:
    """The CPU's SIMD flags and what FAISS was compiled for: the context of every figure."""
    import faiss

    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = sorted(f for f in line.split(":", 1)[1].split() if _SIMD.match(f))
                break
    except OSError:
        pass
    return {"simd_flags": flags, "faiss_compile_options": faiss.get_compile_options().strip()}


def exact_top_k(
    queries: np.ndarray, blocks: Iterator[np.ndarray], k: int = K
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k by inner product over base vectors given block by block (bounded memory).

    Returns:
        ``(scores, ids)``, each ``(len(queries), k)``; ids are row numbers over the blocks.
    """
    import faiss
    from faiss.contrib.exhaustive_search import knn_ground_truth

    scores, ids = knn_ground_truth(queries, blocks, k, metric_type=faiss.METRIC_INNER_PRODUCT)
    return scores, ids


def create_options(memory_budget: str | None, recall_target: float | None) -> dict[str, Any]:
    """The keyword arguments of ``Index.create`` asked for that this semsearch accepts."""
    accepted = inspect.signature(Index.create).parameters
    options: dict[str, Any] = {}
    for name, value in (("memory_budget", memory_budget), ("recall_target", recall_target)):
        if value is None:
            continue
        if name not in accepted:
            print(f"[large] Index.create has no {name}; ignored", file=sys.stderr, flush=True)
            continue
        options[name] = value
    return options


def _info(index: Index) -> dict[str, Any]:
    """``index.info()`` as a dict, without the per-segment list (read defensively)."""
    info = index.info()
    data = info.to_dict() if hasattr(info, "to_dict") else dict(vars(info))
    data.pop("segment_list", None)
    return data


# -- the source of one row, as files in the work folder ---------------------------


def write_source(work: Path, vectors: VectorModel | np.ndarray, texts: TextModel) -> None:
    """Save what a child needs to regenerate the base vectors and texts."""
    if isinstance(vectors, VectorModel):
        vectors.save(work / "model.npz")
    else:
        np.save(work / "base.npy", vectors, allow_pickle=False)
    texts.save(work / "text.npz")


def read_source(work: Path) -> tuple[int, Callable[[np.ndarray], np.ndarray], TextModel]:
    """``(dim, rows function, text model)`` of the source saved in ``work``."""
    texts = TextModel.load(work / "text.npz")
    if (work / "model.npz").exists():
        cache = RowCache(VectorModel.load(work / "model.npz"), BASE_STREAM)
        return cache.model.dim, cache.rows, texts
    base = np.load(work / "base.npy", mmap_mode="r", allow_pickle=False)
    return int(base.shape[1]), lambda rows: np.asarray(base[rows]), texts


def base_blocks(work: Path, n: int) -> Iterator[np.ndarray]:
    """The base vectors, block by block, as the build child drew them."""
    if (work / "model.npz").exists():
        model = VectorModel.load(work / "model.npz")
        for _, block in model.batches(n, BASE_STREAM):
            yield block
        return
    base = np.load(work / "base.npy", mmap_mode="r", allow_pickle=False)
    for start in range(0, n, 65_536):
        yield np.ascontiguousarray(base[start : min(n, start + 65_536)])


# -- the child processes ----------------------------------------------------------


def child_build(work: Path, folder: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Build the index of ``options['size']`` articles through the public API."""
    n = int(options["size"])
    dim, rows, texts = read_source(work)
    encoder = GeneratedEncoder(dim, rows)
    extra = create_options(options.get("memory_budget"), options.get("recall_target"))
    started = time.perf_counter()
    with Index.create(folder, encoder=encoder, index_type=options["index_type"], **extra) as index:
        created = time.perf_counter() - started
        result = index.add(articles(n, texts))
        info = _info(index)
    seconds = time.perf_counter() - started
    if info.get("chunks") != n:
        raise RuntimeError(f"built {info.get('chunks')} chunks, expected {n}")
    return {
        "seconds": seconds,
        "create_seconds": created,
        "add_seconds": result.seconds,
        "timings": result.timings,
        "create_options": extra,
        "info": info,
        "peak_rss_bytes": own_peak_rss(),
        "memory": memory(),
    }


def child_query(work: Path, folder: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Open the index; time semantic, keyword and hybrid searches; measure memory."""
    import faiss

    faiss.omp_set_num_threads(THREADS)
    queries = np.load(work / "queries.npy", allow_pickle=False)
    texts: list[str] = json.loads((work / "query_texts.json").read_text())
    encoder = GeneratedEncoder(queries.shape[1], queries=dict(zip(texts, queries, strict=False)))
    before = memory()
    started = time.perf_counter()
    index = Index.open(folder, encoder=encoder)
    opened = time.perf_counter() - started
    after_open = memory()
    with index:
        start = time.perf_counter()
        index.search(queries[-1], k=K)
        first = time.perf_counter() - start
        found = np.full((len(queries), K), -1, dtype=np.int64)
        for q in queries[-WARMUP:]:
            index.search(q, k=K)
        seconds = []
        for i, q in enumerate(queries):
            start = time.perf_counter()
            hits = index.search(q, k=K)
            seconds.append(time.perf_counter() - start)
            rows = hit_rows(hits)
            found[i, : len(rows)] = rows
        after_semantic = memory()
        text_latency = {}
        for mode in ("keyword", "hybrid"):
            for t in texts[:WARMUP]:
                index.search(t, k=K, mode=mode)
            timed = []
            for t in texts:
                start = time.perf_counter()
                index.search(t, k=K, mode=mode)
                timed.append(time.perf_counter() - start)
            text_latency[mode] = percentiles(timed)
        info = _info(index)
        after = memory()
    np.save(work / "found.npy", found, allow_pickle=False)
    return {
        "open_seconds": opened,
        "first_query_seconds": first,
        "semantic": percentiles(seconds),
        **text_latency,
        "memory_before_open": before,
        "memory_after_open": after_open,
        "memory_after_semantic": after_semantic,
        "memory": after,
        "peak_rss_bytes": own_peak_rss(),
        "faiss_threads": int(faiss.omp_get_max_threads()),
        "info": info,
    }


def _child(kind: str, work: Path, folder: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Run one step in a fresh interpreter (FAISS and BLAS on 2 threads)."""
    argv = [sys.executable, "-m", "benchmarks.large", "--child", kind, "--work", str(work)]
    argv += ["--folder", str(folder), "--options", json.dumps(options)]
    threads = {name: str(THREADS) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    proc = run_process(argv, env=threads, cwd=ROOT)
    if proc["returncode"] != 0:
        raise RuntimeError(f"{kind} child failed ({proc['returncode']}):\n{proc['stderr'][-3000:]}")
    figures: dict[str, Any] = json.loads(proc["stdout"].strip().splitlines()[-1])
    figures["wall_seconds"] = proc["seconds"]
    return figures


# -- the parent -------------------------------------------------------------------


def measure_set(
    name: str,
    vectors: VectorModel | np.ndarray,
    queries: np.ndarray,
    query_texts: list[str],
    texts: TextModel,
    options: dict[str, Any],
    scratch: Path,
) -> dict[str, Any]:
    """Build one index, compute exact ground truth, query it: one row of the tables."""
    n = int(options["size"])
    keep = bool(options.get("keep"))
    if keep:  # a known place, so that a later run can --reuse what this one built
        work = scratch / f"large-{name}-{n}"
        built = work / "build.json"
        if built.exists():
            _log(f"{name}: reusing the index built in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
    else:
        work = Path(tempfile.mkdtemp(prefix=f"large-{name}-", dir=scratch))
        built = work / "build.json"
    folder = work / "index"
    try:
        if not built.exists():
            write_source(work, vectors, texts)
            np.save(work / "queries.npy", queries, allow_pickle=False)
            (work / "query_texts.json").write_text(json.dumps(query_texts))
            _log(f"{name}: building {n:,} articles")
            build = _child("build", work, folder, options)
            built.write_text(json.dumps(build))
        build = json.loads(built.read_text())
        disk = folder_bytes(folder)
        _log(f"{name}: built in {build['seconds']:.1f} s ({build['info'].get('faiss_factory')})")
        started = time.perf_counter()
        _, truth = exact_top_k(queries, base_blocks(work, n))
        truth_seconds = time.perf_counter() - started
        query = _child("query", work, folder, options)
        found = np.load(work / "found.npy", allow_pickle=False)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    recall = recall_at_k(found, truth, K)
    _log(f"{name}: recall@10 {recall:.3f}, p50 {query['semantic']['p50_ms']:.2f} ms")
    return {
        "set": name,
        "size": n,
        "queries": len(queries),
        "text_queries": len(query_texts),
        "recall_at_10": recall,
        "exact_seconds": truth_seconds,
        "disk_bytes": disk,
        "build": build,
        "query": query,
    }


def _measure_named(
    name: str,
    chunks: np.ndarray,
    real_queries: np.ndarray | None,
    query_texts: list[str],
    texts: TextModel,
    options: dict[str, Any],
    size: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One row: the real chunk vectors with the real queries, or a synthetic set."""
    if name == "real":
        if real_queries is None:
            raise ValueError("the real row needs --dataset's judged queries")
        real_options = {**options, "size": len(chunks)}
        return measure_set(
            "real", chunks, real_queries, query_texts, texts, real_options, args.scratch
        )
    model = VectorModel.fit(chunks, name)
    queries = model.vectors(args.queries, QUERY_STREAM)
    synthetic_options = {**options, "size": size}
    return measure_set(name, model, queries, query_texts, texts, synthetic_options, args.scratch)


def text_queries(dataset: Path | None, texts: TextModel, n: int = TEXT_QUERIES) -> list[str]:
    """Real queries' text (a BEIR dataset's judged queries), else short generated texts."""
    if dataset is not None:
        from semsearch.evaluate import load_beir

        # In file order, as read_index embeds them: text i and real query vector i match.
        found = list(load_beir(dataset).judged_queries().values())[:n]
        if found:
            return found
    short = TextModel(texts.words, texts.cumulative, 4, 12, texts.seed)
    return list(dict.fromkeys(short.texts(n, QUERY_STREAM)))


def size_label(n: int) -> str:
    """``10m``, ``1m``, ``50k``, ``1234``: the results file's suffix."""
    for unit, suffix in ((10**6, "m"), (10**3, "k")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def _factory(row: dict[str, Any]) -> str:
    return str(row["build"]["info"].get("faiss_factory", "?"))


def _tuning(row: dict[str, Any]) -> str:
    """What the index says it chose and measured (fields read defensively)."""
    info = row["build"]["info"]
    keys = [k for k in info if re.search(r"recall|search_param|tun|budget|nprobe|ef_search", k)]
    parts = [f"{k}={_short(info[k])}" for k in keys if info[k] not in (None, "", {}, [])]
    return "; ".join(parts) or "-"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def _stage_seconds(row: dict[str, Any], pattern: str) -> float | None:
    """Seconds of build stages whose name matches (``AddResult.timings``, or info)."""
    found = [v for k, v in row["build"]["timings"].items() if re.search(pattern, k)]
    found += [
        v
        for k, v in row["build"]["info"].items()
        if re.search(pattern, k) and "second" in k and isinstance(v, int | float)
    ]
    return float(sum(found)) if found else None


def per_vector(n_bytes: int | None, n: int) -> float | None:
    """Bytes per vector, or None where the figure is missing (no /proc)."""
    return None if n_bytes is None else n_bytes / n


def markdown(rows: list[dict[str, Any]], data: dict[str, Any]) -> str:
    """The section: query figures, build figures, failures, and the targets met or not."""
    sizes = {r["size"] for r in rows}  # the real set's is its own, not --size
    size = sizes.pop() if len(sizes) == 1 else data["settings"]["size"]
    cpu = data["cpu"]
    headers = ["set", "vectors", "index", "recall@10", "p50 ms", "p95 ms", "p99 ms", "open s"]
    headers += ["1st query ms", "RssAnon B/vec", "RssFile B/vec", "before open MiB anon/file"]
    headers += ["keyword p50 ms", "hybrid p50 ms"]
    main = []
    for r in rows:
        q, n = r["query"], r["size"]
        mem, bare, semantic = q["memory"], q["memory_before_open"], q["memory_after_semantic"]
        before = f"{_num(mib(bare.get('RssAnon', 0)))}/{_num(mib(bare.get('RssFile', 0)))}"
        main.append(
            [
                r["set"],
                f"{n:,}",
                _factory(r),
                round(r["recall_at_10"], 3),
                q["semantic"]["p50_ms"],
                q["semantic"]["p95_ms"],
                q["semantic"]["p99_ms"],
                q["open_seconds"],
                q["first_query_seconds"] * 1000,
                f"{_num(per_vector(semantic.get('RssAnon'), n))} / "
                f"{_num(per_vector(mem.get('RssAnon'), n))}",
                f"{_num(per_vector(semantic.get('RssFile'), n))} / "
                f"{_num(per_vector(mem.get('RssFile'), n))}",
                before,
                q["keyword"]["p50_ms"],
                q["hybrid"]["p50_ms"],
            ]
        )
    build_headers = ["set", "build s", "train s", "tune s", "build peak RSS MiB", "disk MiB"]
    build_headers += ["disk B/vec", "exact truth s", "chosen and measured by the index"]
    builds = [
        [
            r["set"],
            r["build"]["seconds"],
            _num(_stage_seconds(r, "train")),
            _num(_stage_seconds(r, "tun")),
            round(mib(r["build"]["peak_rss_bytes"])),
            round(mib(r["disk_bytes"])),
            round(r["disk_bytes"] / r["size"]),
            r["exact_seconds"],
            _tuning(r),
        ]
        for r in rows
    ]
    settings = data["settings"]
    applied = rows[0]["build"]["create_options"] if rows else {}
    asked = [f"`index_type={settings['index_type']}`"]
    for key in ("memory_budget", "recall_target"):
        if settings[key] is None:
            continue
        ignored = "" if key in applied else " (ignored: this semsearch's Index.create lacks it)"
        asked.append(f"`{key}={settings[key]}`{ignored}")
    options = ", ".join(asked)
    parts = [
        f"## {size:,} one-chunk articles",
        "",
        f"Built through the public API ({options}; embedding excluded: vectors drawn "
        "batch by batch by `benchmarks.synth`, texts of 30-70 words drawn from "
        "the word frequencies of SciFact). Queries: "
        f"{data['settings']['queries']:,} held-out vectors for semantic search (recall@10 "
        "against the exact top 10, computed by streaming the base vectors); real query "
        f"texts for keyword and hybrid ({rows[0]['text_queries'] if rows else 0} each). "
        f"One query per call after {WARMUP} warm-up calls, FAISS on "
        f"{THREADS} threads, in a fresh process that opened the index. RssAnon and RssFile: "
        "the query process's anonymous and file-backed resident memory after the "
        "semantic queries / after the keyword and hybrid ones too, divided by the "
        "vectors (Python, numpy and FAISS included; what the process held before "
        "opening the index is shown beside them). 1st query: the "
        "first search after opening, before any warm-up.",
        "",
        f"CPU: {data['machine']['cpu']}, {data['machine']['cores']} cores; SIMD flags: "
        f"{' '.join(cpu['simd_flags']) or 'unknown'}; FAISS compiled with "
        f"`{cpu['faiss_compile_options']}`.",
        "",
        md_table(headers, main),
        "",
        "Build (its own process) and what the index chose:",
        "",
        md_table(build_headers, builds),
    ]
    for failure in data.get("failed", []):
        last = failure["error"].strip().splitlines()[-1] if failure["error"].strip() else "?"
        parts += ["", f"- {failure['set']} failed: {last}"]
    first = next((r for r in rows if r["set"] != "real"), None)
    if first is not None:
        parts += ["", f"Targets of issue 13 on the {first['set']} set:", ""]
        parts.append(md_table(["target", "goal", "measured", "met"], _target_rows(first)))
    return "\n".join(parts)


def _target_rows(r: dict[str, Any]) -> list[list[object]]:
    q, n = r["query"], r["size"]
    measured = {
        "recall_at_10": r["recall_at_10"],
        "p50_ms": q["semantic"]["p50_ms"],
        "rss_anon_bytes_per_vector": per_vector(q["memory_after_semantic"].get("RssAnon"), n),
        "build_peak_rss_bytes": r["build"]["peak_rss_bytes"],
        "open_seconds": q["open_seconds"],
        "keyword_p50_ms": q["keyword"]["p50_ms"],
        "hybrid_p50_ms": q["hybrid"]["p50_ms"],
    }
    names = {
        "recall_at_10": ("recall@10", ">= 0.95"),
        "p50_ms": ("semantic p50", "<= 10 ms"),
        "rss_anon_bytes_per_vector": ("RssAnon per vector (semantic)", "<= 100 B"),
        "build_peak_rss_bytes": ("build peak RSS", "<= 4 GiB"),
        "open_seconds": ("open", "<= 2 s"),
        "keyword_p50_ms": ("keyword p50", "<= 50 ms"),
        "hybrid_p50_ms": ("hybrid p50", "<= 50 ms"),
    }
    rows: list[list[object]] = []
    for key, goal in TARGETS.items():
        value = measured[key]
        label, text = names[key]
        if value is None:
            rows.append([label, text, "-", "?"])
            continue
        met = value >= goal if key == "recall_at_10" else value <= goal
        shown = f"{mib(value):,.0f} MiB" if key == "build_peak_rss_bytes" else _num(value)
        rows.append([label, text, shown, "yes" if met else "no"])
    return rows


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _log(message: str) -> None:
    print(f"[large] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, help=f"articles (default {SIZE:,}; quick {QUICK_SIZE:,})"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE:,} articles")
    parser.add_argument("--sets", default=",".join(SETS), help="blend, harsh, real")
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "bench-scifact")
    parser.add_argument("--dataset", type=Path, default=SCIFACT, help="BEIR folder (queries)")
    parser.add_argument("--index-type", default="auto", help="Index.create's index_type")
    parser.add_argument("--memory-budget", help="Index.create's memory_budget, e.g. 2GB")
    parser.add_argument("--recall-target", type=float, help="Index.create's recall_target")
    parser.add_argument("--queries", type=int, default=QUERIES)
    parser.add_argument("--scratch", type=Path, help="where to build (default: system temp)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", help="results file name (default: large_<size>, e.g. large_1m)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each set's built index in SCRATCH/large-<set>-<size>, and reuse one "
        "found there instead of building it again (to measure the queries again)",
    )
    parser.add_argument("--child", choices=["build", "query"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        step = child_build if args.child == "build" else child_query
        figures = step(args.work, args.folder, json.loads(args.options))
        print(json.dumps(figures))
        return figures

    started = time.perf_counter()
    size = args.size or (QUICK_SIZE if args.quick else SIZE)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = set(sets) - {"blend", "harsh", "real"}
    if unknown:
        parser.error(f"unknown set(s) {', '.join(sorted(unknown))}; use blend, harsh, real")
    dataset = args.dataset if args.dataset and args.dataset.is_dir() else None
    chunks, real_queries = read_index(args.index, dataset)
    corpus = dataset if dataset is not None else None
    if corpus is None:
        parser.error(f"--dataset {args.dataset} is not a BEIR folder (its corpus gives the words)")
    texts = TextModel.fit(corpus_texts(corpus))
    query_texts = text_queries(dataset, texts)
    options = {
        "index_type": args.index_type,
        "memory_budget": args.memory_budget,
        "recall_target": args.recall_target,
        "keep": args.keep,
    }
    args.scratch = args.scratch or Path(tempfile.gettempdir())
    args.scratch.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for name in sets:
        # One set failing (hours into a 10M run) must not lose the others' figures.
        try:
            rows.append(
                _measure_named(name, chunks, real_queries, query_texts, texts, options, size, args)
            )
        except Exception as e:  # recorded in the results and logged, then exit 1
            failed.append({"set": name, "error": str(e)[-2000:]})
            _log(f"{name} failed: {str(e).splitlines()[0]}")
    data: dict[str, Any] = {
        "settings": {
            "size": size,
            "sets": sets,
            "index": str(args.index),
            "dataset": str(dataset) if dataset else None,
            **options,
            "queries": args.queries,
            "text_queries": len(query_texts),
            "k": K,
            "warmup": WARMUP,
            "faiss_threads": THREADS,
            "seed": SEED,
            "embedding": "excluded (generated vectors)",
        },
        "cpu": cpu_flags(),
        "targets": TARGETS,
        "sets": rows,
        "failed": failed,
    }
    data["seconds"] = time.perf_counter() - started
    name = args.name or f"large_{size_label(size)}"
    write_results(args.out, name, data, markdown(rows, {**data, "machine": machine()}), argv=argv)
    # write_results names the command after the file; the module is benchmarks.large.
    md = args.out / f"{name}.md"
    md.write_text(md.read_text().replace(f"benchmarks.{name} ", "benchmarks.large "))
    _log(f"done in {data['seconds']:.0f} s; results in {args.out / name}.md")
    if failed:
        raise SystemExit(f"{len(failed)} set(s) failed: {', '.join(f['set'] for f in failed)}")
    return data


if __name__ == "__main__":
    main()
