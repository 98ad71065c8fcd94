"""How many queries a second does `semsearch serve` answer, and does it stay whole under writes?

- **In process**, the reference: ``Index.search(claim, k=10, mode=...)``
  in a loop over SciFact's test claims, on one thread and on two threads
  sharing the index, queries per second; run before the HTTP rows and again
  after them (on the original index, as served before the writes), and the
  two averaged, so that a shared machine's drift falls on both sides.
- **Workers**: with several ``--workers`` counts (default 1 and 2), each is
  served for a short probe at the most clients, both modes, and the one
  serving the most (summed over the modes, as shares of in-process) is used
  for the rest; the probe's figures are kept.
- **Alone**: ``semsearch serve --workers W`` on loopback (access log off),
  driven by 1, 8 and 32 concurrent clients (aiohttp, one keep-alive
  connection each, in this process, apart from the server's; each parses the
  JSON it gets) for ``--seconds`` each after a warm-up, semantic and hybrid:
  queries per second (responses completed inside the window), p50/p95/p99
  latency seen by the client, failed requests (a non-200 status, a body
  that is not the search's JSON, or a broken connection; counted over the
  whole cell, warm-up included).
- **While writing**: the same, while a writer process re-indexes a changed
  tenth of the corpus (a fixed random tenth, in batches of about a hundred
  articles, one ``Index.add`` and so one generation each, round after round)
  into the served index. Each round R changes its batch's titles to end in
  ``[rev R]`` and its texts; the writer logs the generation each add started
  from. A response read at generation G must show, for every hit of the
  tenth, the rev its batch had at G (the last add that started before G, as
  one writer's commit is the generation after the one it started from; a
  merge's generation changes no text): any other is counted as a
  whole-generation violation.

The server is run on a copy of the index (never the index given), from a
scratch folder removed after.

    python -m benchmarks.serve [--index indexes/bench-scifact] [--dataset ../shared/data/scifact]
    python -m benchmarks.serve --quick      # 3-s cells, 1 and 8 clients: a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    ROOT,
    SCIFACT,
    index_summary,
    machine,
    md_table,
    percentiles,
    write_results,
)
from benchmarks.large import cpu_flags
from semsearch import Article, Index
from semsearch.evaluate import load_beir

MODES = ("semantic", "hybrid")
CLIENTS = (1, 8, 32)
BATCHES = 5
BASELINE_SECONDS = 30.0
"""In-process runs last ``--seconds`` up to this: the rate settles well before."""
_REV = re.compile(r" \[rev (\d+)\]$")


# -- in process -------------------------------------------------------------------------


def in_process(
    folder: Path, queries: list[str], mode: str, seconds: float, threads: int = 1
) -> dict[str, Any]:
    """Queries per second of ``Index.search`` in a loop on ``threads`` threads sharing one
    open index (a reader may be shared by threads), after warm-up."""
    with Index.open(folder) as index:
        for q in queries[:20]:
            index.search(q, k=10, mode=mode)
        per_thread: list[list[float]] = [[] for _ in range(threads)]
        started = time.perf_counter()
        stop_at = started + seconds

        def loop(n: int) -> None:
            i = n * len(queries) // threads
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                index.search(queries[i % len(queries)], k=10, mode=mode)
                per_thread[n].append(time.perf_counter() - t)
                i += 1

        workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - started
    latencies = [s for times in per_thread for s in times]
    return {
        "threads": threads,
        "qps": len(latencies) / elapsed,
        "queries": len(latencies),
        **_ms(latencies),
    }


def baseline(
    folder: Path, queries: list[str], seconds: float, when: str
) -> dict[str, dict[str, Any]]:
    """:func:`in_process` for 1 and 2 threads and each mode, keyed ``[threads][mode]``."""
    runs: dict[str, dict[str, Any]] = {}
    for threads in (1, 2):
        for mode in MODES:
            ran = in_process(folder, queries, mode, seconds, threads)
            runs.setdefault(str(threads), {})[mode] = ran
            print(
                f"in process ({when}), {threads} thread(s), {mode}: {ran['qps']:.1f} q/s",
                file=sys.stderr,
            )
    return runs


def bracket(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per mode, the mean of the runs before and after the HTTP rows (a shared machine
    drifts; the server's rows are compared with the reference around them), both kept."""
    out = {}
    for mode in MODES:
        b, a = before[mode], after[mode]
        out[mode] = {
            "threads": b["threads"],
            "qps": (b["qps"] + a["qps"]) / 2,
            "p50_ms": (b["p50_ms"] + a["p50_ms"]) / 2,
            "runs": {"before": b, "after": a},
        }
    return out


# -- the server and its clients ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(folder: Path, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``semsearch serve`` on loopback, once every worker answers /readyz."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "semsearch", "serve", "--index", str(folder)),
        *("--port", str(port), "--workers", str(workers)),
        *("--no-access-log", "--log-level", "warning"),
    ]
    with log.open("ab") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    ready = 0
    # /readyz speaks for the worker that accepted the connection, and one still
    # loading answers 503. The workers share the socket, so: rounds of several
    # connections at once (idle workers each take some), three good rounds in a row.
    with ThreadPoolExecutor(4 * workers) as pool:
        while ready < 3:
            answers = list(pool.map(lambda _: _ready(base), range(4 * workers)))
            if all(answers):
                ready += 1
                continue
            ready = 0
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                server.wait()
                raise SystemExit(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.5)
    return server, base


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop_server(server: subprocess.Popen[bytes]) -> int | None:
    """Ctrl-C, as a person stops it; its exit status (None if it had to be killed)."""
    server.send_signal(signal.SIGINT)
    try:
        return server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        return None


async def _client(
    session: Any,
    base: str,
    queries: list[str],
    mode: str,
    start: int,
    measure_from: float,
    stop_at: float,
    out: dict[str, Any],
    watched: set[str],
) -> None:
    i = start
    while True:
        t = time.perf_counter()
        if t >= stop_at:
            return
        query = queries[i % len(queries)]
        i += 1
        try:
            params = {"q": query, "k": "10", "mode": mode}
            async with session.get(f"{base}/search", params=params) as response:
                body = await response.read()
                ok = response.status == 200
                status = str(response.status)
        except Exception as e:  # a broken connection (or a timeout) is a failed request
            ok, body, status = False, repr(e).encode(), type(e).__name__
        done = time.perf_counter()
        if ok:
            try:
                data = json.loads(body)
                generation, hits = int(data["generation"]), data["hits"]
            except (ValueError, KeyError, TypeError) as e:
                ok, status = False, f"200 but {type(e).__name__}"
        # Every response is checked and every failure counted, warm-up included:
        # a failed request is one whenever it happens. Only the rate and the
        # latencies are of the window (the steady state).
        if not ok:
            out["errors"] += 1
            if len(out["error_samples"]) < 5:
                out["error_samples"].append(f"{status}: {body[:200].decode('utf-8', 'replace')}")
            continue
        out["responses"] += 1
        seen = [(h["article_id"], h["title"]) for h in hits if h["article_id"] in watched]
        if seen:
            out["watched"].append((generation, seen))
        if measure_from <= done < stop_at:
            out["latencies"].append(done - t)
            out["generations"].add(generation)


async def _load(
    base: str,
    queries: list[str],
    mode: str,
    clients: int,
    seconds: float,
    warmup: float,
    watched: set[str],
) -> dict[str, Any]:
    import aiohttp

    out: dict[str, Any] = {
        "latencies": [],
        "responses": 0,
        "errors": 0,
        "error_samples": [],
        "generations": set(),
        "watched": [],
    }
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        now = time.perf_counter()
        measure_from, stop_at = now + warmup, now + warmup + seconds
        await asyncio.gather(
            *(
                _client(
                    session,
                    base,
                    queries,
                    mode,
                    c * len(queries) // clients,  # each client starts elsewhere in the list
                    measure_from,
                    stop_at,
                    out,
                    watched,
                )
                for c in range(clients)
            )
        )
    return out


def load(
    base: str,
    queries: list[str],
    mode: str,
    clients: int,
    seconds: float,
    warmup: float,
    watched: set[str],
) -> dict[str, Any]:
    """One cell: ``clients`` concurrent clients for ``seconds`` after ``warmup``."""
    raw = asyncio.run(_load(base, queries, mode, clients, seconds, warmup, watched))
    n = len(raw["latencies"])
    return {
        "mode": mode,
        "clients": clients,
        "seconds": seconds,
        # All the cell's requests, warm-up included (failures are counted over them all).
        "requests": raw["responses"] + raw["errors"],
        "qps": n / seconds,
        "errors": raw["errors"],
        "error_samples": raw["error_samples"],
        "generations": sorted(raw["generations"]),
        "watched": raw["watched"],
        **_ms(raw["latencies"]),
    }


def _ms(latencies: Sequence[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    p = percentiles(latencies)
    return {name: p[name] for name in ("p50_ms", "p95_ms", "p99_ms")}


def probe_workers(
    folder: Path,
    counts: list[int],
    queries: list[str],
    clients: int,
    seconds: float,
    warmup: float,
    log: Path,
) -> list[dict[str, Any]]:
    """Each worker count served in turn: q/s per mode at ``clients`` clients."""
    rows = []
    for workers in counts:
        server, base = start_server(folder, workers, log)
        try:
            qps = {m: load(base, queries, m, clients, seconds, warmup, set())["qps"] for m in MODES}
        finally:
            stop_server(server)
        rows.append({"workers": workers, "clients": clients, "seconds": seconds, "qps": qps})
        print(f"probe: {workers} workers: {qps}", file=sys.stderr)
    return rows


# -- the writer -------------------------------------------------------------------------


def changed_tenth(dataset: Path, seed: int = 0) -> list[list[Article]]:
    """A fixed random tenth of the corpus (at least one article), in up to ``BATCHES``
    batches, none empty."""
    articles = [a for a in load_beir(dataset).corpus() if isinstance(a, Article)]
    chosen = random.Random(seed).sample(articles, max(1, len(articles) // 10))
    batches = min(BATCHES, len(chosen))
    return [chosen[b::batches] for b in range(batches)]


def writer(folder: Path, dataset: Path, log: Path, stop: Path) -> None:
    """Re-index the changed tenth, batch after batch, until ``stop`` exists.

    One line of ``log`` per commit (JSON: the generation the add started
    from, the generation after it, its batch and rev), appended after it.
    """
    batches = changed_tenth(dataset)
    with Index.open(folder) as index:
        index.lock_timeout = 60.0
        rev = 0
        while not stop.exists():
            rev += 1
            batch = (rev - 1) % len(batches)
            revised = [
                dataclasses.replace(
                    a, title=f"{a.title or a.id} [rev {rev}]", text=f"{a.text} (Revision {rev}.)"
                )
                for a in batches[batch]
            ]
            # This is the only writer: its commit is the generation after the latest.
            index.refresh()
            before = index.generation
            started = time.perf_counter()
            result = index.add(revised)
            entry = {
                "from": before,
                "to": index.generation,
                "batch": batch,
                "rev": rev,
                "seconds": time.perf_counter() - started,
                "chunks_embedded": result.chunks_embedded,
            }
            with log.open("a") as f:
                f.write(json.dumps(entry) + "\n")


def check_generations(
    cells: list[dict[str, Any]], log: list[dict[str, Any]], batch_of: dict[str, int]
) -> None:
    """Count, per cell, the watched hits whose rev is not their batch's at the response's
    generation (violations of whole generations), and how many were due a rev above 0
    (``hits_revised``: the check saw rewritten articles, not only originals)."""
    for cell in cells:
        checked = revised = violations = 0
        for generation, seen in cell.pop("watched"):
            for article_id, title in seen:
                batch = batch_of[article_id]
                expected = 0
                for entry in log:  # in commit order
                    if entry["batch"] == batch and entry["from"] + 1 <= generation:
                        expected = entry["rev"]
                match = _REV.search(title or "")
                found = int(match.group(1)) if match else 0
                checked += 1
                revised += expected > 0
                violations += found != expected
        cell["hits_checked"] = checked
        cell["hits_revised"] = revised
        cell["violations"] = violations


# -- the run ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "bench-scifact")
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument(
        "--seconds", type=float, default=None, help="per cell, after warm-up [60; quick: 3]"
    )
    parser.add_argument("--warmup", type=float, default=None, help="seconds [3; quick: 1]")
    parser.add_argument(
        "--workers", default="1,2", help="server processes; several: probe, keep the best"
    )
    parser.add_argument("--probe-seconds", type=float, default=None, help="[15; quick: 2]")
    parser.add_argument("--clients", default=None, help="[1,8,32; quick: 1,8]")
    parser.add_argument("--quick", action="store_true", help="3-s cells, 1 and 8 clients")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--writer", nargs=4, metavar=("INDEX", "DATASET", "LOG", "STOP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.writer:
        writer(*(Path(p) for p in args.writer))
        return {}
    quick = args.quick
    seconds = args.seconds if args.seconds is not None else (3.0 if quick else 60.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if quick else 3.0)
    probe_seconds = args.probe_seconds or (2.0 if quick else 15.0)
    clients = [int(c) for c in (args.clients or ("1,8" if quick else "1,8,32")).split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    if not (args.index / "manifest.json").exists():
        raise SystemExit(
            f"no index at {args.index}: build it with "
            f"python -m benchmarks.build {args.dataset} {args.index}"
        )
    dataset = load_beir(args.dataset)
    queries = list(dataset.judged_queries().values())
    batches = changed_tenth(args.dataset)
    batch_of = {a.id: b for b, batch in enumerate(batches) for a in batch}
    watched = set(batch_of)

    scratch = Path(tempfile.mkdtemp(prefix="semsearch-serve-bench-"))
    server_log = scratch / "serve.log"
    try:
        folder = scratch / "index"
        shutil.copytree(args.index, folder)
        with Index.open(folder) as index:
            info = index.info()  # as served, before the writer changes it
        before = baseline(folder, queries, min(seconds, BASELINE_SECONDS), "before")
        probe: list[dict[str, Any]] = []
        workers = worker_counts[0]
        if len(worker_counts) > 1:
            probe = probe_workers(
                folder, worker_counts, queries, max(clients), probe_seconds, warmup, server_log
            )
            ref = before["1"]
            workers = max(probe, key=lambda r: sum(r["qps"][m] / ref[m]["qps"] for m in MODES))[
                "workers"
            ]
        server, base = start_server(folder, workers, server_log)
        writing_process = None
        try:
            alone = []
            for mode in MODES:
                for c in clients:
                    cell = load(base, queries, mode, c, seconds, warmup, watched)
                    cell.pop("watched")
                    alone.append(cell)
                    print(f"alone {mode} {c}: {cell['qps']:.1f} q/s", file=sys.stderr)
            log, stop = scratch / "writer.jsonl", scratch / "stop"
            command = [sys.executable, "-m", "benchmarks.serve", "--writer"]
            command += [str(folder), str(args.dataset), str(log), str(stop)]
            writing_process = subprocess.Popen(command, cwd=ROOT)
            while not log.exists() and writing_process.poll() is None:
                time.sleep(0.5)  # the first commit: the writer is running from here on
            if writing_process.poll() is not None:
                raise SystemExit(f"the writer failed (exit status {writing_process.returncode})")
            writing = []
            for mode in MODES:
                for c in clients:
                    cell = load(base, queries, mode, c, seconds, warmup, watched)
                    writing.append(cell)
                    print(f"writing {mode} {c}: {cell['qps']:.1f} q/s", file=sys.stderr)
            still_writing = writing_process.poll() is None
            stop.touch()
            if writing_process.wait(600) != 0:
                raise SystemExit(f"the writer failed (exit status {writing_process.returncode})")
            commits = [json.loads(line) for line in log.read_text().splitlines()]
        finally:
            if writing_process is not None and writing_process.poll() is None:
                writing_process.kill()
                writing_process.wait()
            stopped = stop_server(server)
        # Again at the end, on the index as it was served before the writes (the
        # original, opened only to read): the reference brackets the HTTP rows in time.
        after = baseline(args.index, queries, min(seconds, BASELINE_SECONDS), "after")
        check_generations(writing, commits, batch_of)
        server_messages = server_log.read_text(errors="replace").splitlines()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    data = {
        "index": index_summary(info),
        "dataset": dataset.name,
        "workers": workers,
        "workers_probe": probe,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "cpu": cpu_flags(),
        "in_process": bracket(before["1"], after["1"]),
        "in_process_2_threads": bracket(before["2"], after["2"]),
        "alone": alone,
        "writing": writing,
        "writer": {
            "commits": len(commits),
            "articles_per_commit": round(sum(len(b) for b in batches) / len(batches)),
            "changed_articles": len(batch_of),
            "generations": [commits[0]["from"] + 1, commits[-1]["to"]] if commits else None,
            "median_commit_seconds": sorted(e["seconds"] for e in commits)[len(commits) // 2]
            if commits
            else None,
            "wrote_throughout": still_writing,
        },
        "server": {
            "exit_status": stopped,
            # Warnings and errors only (--log-level warning); the last few.
            "log_tail": server_messages[-20:],
        },
    }
    write_results(args.out, "serve", data, markdown(data), argv)
    plot(data, args.out / "serve.png")
    return data


def markdown(d: dict[str, Any]) -> str:
    rows = []
    one, two = d["in_process"], d["in_process_2_threads"]
    for phase, cells in (("alone", d["alone"]), ("while writing", d["writing"])):
        for c in cells:
            rows.append(
                [
                    phase,
                    c["mode"],
                    c["clients"],
                    f"{c['qps']:.1f}",
                    f"{c['p50_ms']:.1f}",
                    f"{c['p95_ms']:.1f}",
                    f"{c['p99_ms']:.1f}",
                    c["errors"],
                    len(c["generations"]),
                    c.get("hits_checked", "–"),
                    c.get("violations", "–"),
                    f"{100 * c['qps'] / one[c['mode']]['qps']:.0f}%",
                    f"{100 * c['qps'] / two[c['mode']]['qps']:.0f}%",
                ]
            )
    table = md_table(
        [
            *("phase", "mode", "clients", "q/s", "p50 ms", "p95 ms", "p99 ms", "failed"),
            *("generations seen", "hits checked", "whole-generation violations"),
            *("q/s / in-process, 1 thread", "q/s / in-process, 2 threads"),
        ],
        rows,
    )
    best = {m: max(c["qps"] for c in d["alone"] if c["mode"] == m) for m in MODES}
    share = {m: 100 * best[m] / one[m]["qps"] for m in MODES}
    share2 = {m: 100 * best[m] / two[m]["qps"] for m in MODES}
    failed = sum(c["errors"] for c in d["alone"] + d["writing"])
    violations = sum(c.get("violations", 0) for c in d["writing"])
    checked = sum(c.get("hits_checked", 0) for c in d["writing"])
    revised = sum(c.get("hits_revised", 0) for c in d["writing"])
    w = d["writer"]
    i = d["index"]
    if d["workers_probe"]:
        probed = "; ".join(
            f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}: semantic "
            f"{r['qps']['semantic']:.1f}, hybrid {r['qps']['hybrid']:.1f} q/s"
            for r in d["workers_probe"]
        )
        r0 = d["workers_probe"][0]
        workers = (
            f"`--workers {d['workers']}`, the count that served the most in a probe "
            f"({r0['clients']} clients, {r0['seconds']:g} s a mode: {probed})"
        )
    else:
        workers = f"`--workers {d['workers']}`"
    return (
        f"{d['dataset']} index ({i['articles']:,} articles, {i['chunks']:,} chunks, "
        f"{i['faiss_factory']}), `semsearch serve --no-access-log` on loopback with {workers}; "
        f"k=10, {d['seconds']:g} s per row after {d['warmup_seconds']:g} s of warm-up; "
        f"clients: aiohttp in one process on the same machine. CPU flags: "
        f"{' '.join(d['cpu']['simd_flags']) or 'unknown'}.\n\n"
        f"In process, one thread: semantic {one['semantic']['qps']:.1f} q/s "
        f"(p50 {one['semantic']['p50_ms']:.1f} ms), hybrid {one['hybrid']['qps']:.1f} q/s "
        f"(p50 {one['hybrid']['p50_ms']:.1f} ms); two threads sharing the index: semantic "
        f"{two['semantic']['qps']:.1f}, hybrid {two['hybrid']['qps']:.1f} q/s; each the mean "
        f"of a run before the server's rows and one after them ({_runs(one)}; "
        f"{_runs(two)}).\n\n{table}\n\n"
        f"Best over HTTP / in process: semantic **{share['semantic']:.0f}%**, "
        f"hybrid **{share['hybrid']:.0f}%** of one thread's rate "
        f"({share2['semantic']:.0f}% and {share2['hybrid']:.0f}% of two threads'). "
        f"Failed requests: **{failed}**. Whole-generation violations: **{violations}** "
        f"in {checked:,} hits of changed articles checked ({revised:,} of them due a "
        f"revised title). The writer committed "
        f"{w['commits']} generations of about {w['articles_per_commit']} changed articles "
        f"each (median {w['median_commit_seconds'] or 0:.1f} s a commit under load).\n\n"
        "![q/s by clients](results/serve.png)"
    )


def _runs(reference: dict[str, Any]) -> str:
    """ "1 thread: semantic 102.8 → 99.1, hybrid ..." (q/s before → after)."""
    first = reference[MODES[0]]["threads"]
    runs = ", ".join(
        f"{m} {reference[m]['runs']['before']['qps']:.1f} → "
        f"{reference[m]['runs']['after']['qps']:.1f}"
        for m in MODES
    )
    return f"{first} thread{'s' if first > 1 else ''}: {runs} q/s"


def plot(d: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8.4, 4))
    colours = {"semantic": "tab:blue", "hybrid": "tab:orange"}
    for mode in MODES:
        for phase, style in (("alone", "-o"), ("writing", "--s")):
            cells = [c for c in d[phase] if c["mode"] == mode]
            ax.plot(
                [c["clients"] for c in cells],
                [c["qps"] for c in cells],
                style,
                color=colours[mode],
                label=f"{mode}, {phase}",
            )
        ax.axhline(
            d["in_process"][mode]["qps"],
            color=colours[mode],
            linestyle=":",
            label=f"{mode}, in process, 1 thread",
        )
        ax.axhline(
            d["in_process_2_threads"][mode]["qps"],
            color=colours[mode],
            linestyle="-.",
            linewidth=0.8,
            label=f"{mode}, in process, 2 threads",
        )
    ax.set_xscale("log", base=2)
    ticks = sorted({c["clients"] for c in d["alone"]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("queries per second")
    ax.set_ylim(bottom=0)
    cpu = d.get("machine", machine())["cpu"]
    ax.set_title(f"semsearch serve, {d['workers']} workers, {d['dataset']}\n{cpu}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # off the lines
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
