"""Helpers shared by the benchmark scripts: machine facts, timers, peak memory,
synthetic vectors with exact ground truth, recall, and result files.

Every script writes ``<name>.json`` (raw figures, machine, versions,
settings) and ``<name>.md`` (a table) into its output folder; ``report.py``
puts the tables into ``benchmarks/README.md``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
TINY_BEIR = ROOT / "tests" / "data" / "tiny-beir"


# -- machine and versions -------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "memory_bytes": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def library_versions() -> dict[str, str]:
    names = ["semsearch", "faiss-cpu", "numpy", "torch", "sentence-transformers", "ir-measures"]
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


# -- timing and memory ----------------------------------------------------------


def repeat_timer(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call of fn, after warm-up calls that are not counted."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 and mean, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# Linux carries the spawning process's memory into a child's ru_maxrss (fork
# copies it; vfork+exec records the parent's high-water mark), so a child of
# a 2 GB benchmark would report at least 2 GB. A tiny launcher (about 10 MB)
# forks the command and reports the command's own ru_maxrss from wait4.
_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kib": usage.ru_maxrss, "exitcode": os.waitstatus_to_exitcode(status)}, f)
"""


def run_process(
    argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> dict[str, Any]:
    """Run a command; its wall time, its own peak RSS, exit status and output.

    The wall time includes the launcher's start (a bare ``python -S``, ~10 ms).
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rusage.json"
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, str(report), *argv],
            capture_output=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        wall = time.perf_counter() - start
        usage = json.loads(report.read_text())
    return {
        "seconds": wall,
        "peak_rss_bytes": usage["maxrss_kib"] * 1024,
        "returncode": usage["exitcode"],
        "stdout": proc.stdout.decode(errors="replace"),
        "stderr": proc.stderr.decode(errors="replace"),
    }


def python_child(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run Python code in a fresh interpreter (cold imports, own memory)."""
    return run_process([sys.executable, "-c", code, *args], env=env, cwd=ROOT)


def in_scratch(
    name: str, index: Path, run: Callable[[np.ndarray, Path], dict[str, Any]]
) -> dict[str, Any]:
    """``run(base, work)`` in a scratch folder removed afterwards, ``base`` being the
    chunk vectors of ``index`` (``(n, dim)`` float32) that synthetic vectors imitate."""
    from semsearch import Index

    with Index.open(index) as opened:
        base = opened.chunk_vectors()[1]
    work = Path(tempfile.mkdtemp(prefix=f"semsearch-{name}-"))
    try:
        return run(base, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


# -- synthetic vectors and recall -----------------------------------------------


def unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    return x


def synthetic_vectors(
    n: int, base: np.ndarray, noise: float = 0.5, seed: int = 0, batch: int = 100_000
) -> np.ndarray:
    """n unit vectors drawn near real ones: a random base row plus Gaussian noise.

    ``noise`` is the expected norm of the perturbation relative to the unit
    base vector (0.5: cosine about 0.9 to its base, 0.8 between siblings).
    Real embedding sets are clustered and anisotropic; vectors near real ones
    keep that shape, so ANN recall on them means something (uniform random
    vectors are neither realistic nor a fair test).
    """
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        rows = base[rng.integers(0, len(base), stop - start)]
        jitter = rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = unit(rows + jitter * np.float32(noise / np.sqrt(dim)))
    return out


def exact_neighbours(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids (row numbers) of the exact k nearest by inner product."""
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    _, ids = index.search(queries, k)
    return ids


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k that the approximate top-k contains."""
    pairs = zip(found, truth, strict=True)
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in pairs]
    return float(np.mean(hits) / k)


# -- output -----------------------------------------------------------------------


def query_half(query_id: str) -> str:
    """ "A" or "B": a fixed split of a dataset's queries, for tuning on one half only."""
    digest = hashlib.sha256(query_id.encode("utf-8")).digest()
    return "A" if digest[0] % 2 == 0 else "B"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def index_summary(info: Any) -> dict[str, Any]:
    """What a result file records of the index measured: counts, FAISS factory, model
    (``info``: :class:`semsearch.IndexInfo`)."""
    return {
        "articles": info.articles,
        "chunks": info.chunks,
        "faiss_factory": info.faiss_factory,
        "model": info.model,
    }


def write_results(
    out: Path,
    name: str,
    data: dict[str, Any],
    markdown: str,
    argv: Sequence[str] | None = None,
) -> None:
    """Write <name>.json (with machine facts) and <name>.md into out.

    ``argv`` (default: this process's arguments) goes into the footer as the
    command that reproduces the figures.
    """
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **data}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    args = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python -m benchmarks." + name, *args])
    footer = (
        f"\n\n<sub>{payload['machine']['cpu']}, {payload['machine']['cores']} cores; "
        f"`{command}`; {payload['machine']['measured_at']}</sub>\n"
    )
    (out / f"{name}.md").write_text(markdown.rstrip() + footer)


def mib(n_bytes: float) -> float:
    return n_bytes / 2**20


def per_item_seconds(
    fn: Callable[[Any], object], items: Sequence[Any] | np.ndarray, warmup: int = 10
) -> list[float]:
    """Seconds per call of fn(item), one call per item, after warm-up calls.

    The warm-up calls (not counted) take the last items, so every timed call
    after them is on an item of its own, as a stream of distinct queries is.
    """
    warm = list(items[len(items) - min(warmup, len(items)) :])
    stream = iter([*warm, *items])
    return repeat_timer(lambda: fn(next(stream)), repeats=len(items), warmup=len(warm))


def own_peak_rss() -> int:
    """This process's own peak resident memory in bytes (``VmHWM``, Linux).

    ``VmHWM`` belongs to this process's own address space, made new at exec,
    unlike ``ru_maxrss`` (see ``run_process``). Falls back to getrusage where
    /proc is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
