"""Which chunk size? Each mode's quality at several sizes, judged on half A of the queries.

For each size an index of the dataset is built (or reused: adding an
unchanged corpus embeds nothing) in ``indexes/bench-<dataset>-c<size>``, and
every judged query is searched in each mode through the public API. The
figures are given on half A (where choices are made), half B (held out) and
all queries; hybrid uses the library's default weight.

    python -m benchmarks.chunking --dataset DATASET [--sizes 128,192,256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT, md_table, write_results
from benchmarks.fusion import by_half
from semsearch import Index
from semsearch.evaluate import evaluate, load_beir

MODES = ("semantic", "keyword", "hybrid")
HALVES = ("A", "B", "all")


def index_for(dataset: Any, size: int, root: Path) -> tuple[Path, float]:
    """An index of the dataset with this chunk size, and the seconds spent building it."""
    folder = root / f"bench-{dataset.name}-c{size}"
    started = time.perf_counter()
    if Index.exists(folder):
        index = Index.open(folder)
    else:
        index = Index.create(folder, chunk_tokens=size, index_type="flat")
    with index:
        index.add(dataset.corpus(), batch_size=64)
    return folder, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--sizes", default="128,192,256")
    parser.add_argument("--root", type=Path, default=ROOT / "indexes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    dataset = load_beir(args.dataset)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        folder, seconds = index_for(dataset, size, args.root)
        with Index.open(folder) as index:
            info = index.info()
            figures = {
                mode: by_half(evaluate(index, dataset, mode=mode).per_query) for mode in MODES
            }
        rows.append(
            {
                "chunk_tokens": size,
                "chunks": info.chunks,
                "build_seconds": seconds,
                "overlap_tokens": info.overlap_tokens,
                **figures,
            }
        )
    data = {"dataset": dataset.name, "rows": rows}
    write_results(args.out, "chunking", data, markdown(data), argv)
    return data


def markdown(d: dict[str, Any]) -> str:
    headers = ["chunk tokens", "chunks"] + [
        f"{mode} nDCG@10 {half}" for mode in MODES for half in HALVES
    ]
    rows = [
        [r["chunk_tokens"], r["chunks"]]
        + [r[mode][half]["nDCG@10"] for mode in MODES for half in HALVES]
        for r in d["rows"]
    ]
    recall = md_table(
        ["chunk tokens", *(f"{mode} recall@100 {half}" for mode in MODES for half in ("A", "all"))],
        [
            [r["chunk_tokens"]]
            + [r[mode][half]["R@100"] for mode in MODES for half in ("A", "all")]
            for r in d["rows"]
        ],
    )
    return (
        "## Chunk size\n\n"
        f"{d['dataset']}: each mode's nDCG@10 by the cap on a chunk's tokens (title "
        "included, overlap as set), on half A (where choices are made), half B (held "
        "out) and all queries.\n\n" + md_table(headers, rows) + "\n\n" + recall
    )


if __name__ == "__main__":
    main()
