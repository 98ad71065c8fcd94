"""Does the GPU wait on the host? TorchEncoder against SentenceTransformer.encode, side by side.

Embeds a BEIR corpus (each document ``title + " " + text`` cut after the
tokens the model keeps, 256 with its special tokens: the chunks of the issue,
whose vectors are those of the reference dense run in
``benchmarks/quality.py``) in one process, on one device, with:
``SentenceTransformer.encode`` in fp32 and in fp16 (the model ``.half()``),
``semsearch.torch_backend.TorchEncoder`` in fp32 and in fp16 (checked), and,
as the ceiling, the forward pass alone on batches tokenised, sorted and
moved to the device beforehand; plus the raw Rust tokenizer alone. Reports
docs/s (median over repeats, after a warm-up), the speed-up over
``encode`` fp32, each system's vectors against ``encode`` fp32 (cosine,
min and median), and retrieval quality with each system's vectors (nDCG@10,
exact inner-product search over the corpus, queries embedded by the same
system). The target (issue 14): TorchEncoder fp16 >= 10x ``encode`` fp32,
cosine >= 0.999, nDCG@10 within 0.002.

    python -m benchmarks.gpu --dataset ../shared/data/scifact [--limit N] [--copies K]

It runs on a CPU too (small ``--limit``), and on a bare GPU machine: it needs
torch, sentence-transformers and numpy only (ir-measures, if installed,
scores nDCG; else the same formula in numpy). ``benchmarks/gpu_device.sh``
is the command for that machine.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import math
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, ROOT, SCIFACT, md_table, median, write_results

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
WARMUP_TEXTS = 256


def torch_backend() -> Any:
    """``semsearch.torch_backend``, also where semsearch's own dependencies are missing.

    On a bare GPU machine (torch and sentence-transformers, no FAISS, SQLite
    helpers or HTML parsers), ``import semsearch`` fails in its ``__init__``;
    the torch backend needs none of it, so its package is then set up
    without running ``__init__``.
    """
    try:
        return importlib.import_module("semsearch.torch_backend")
    except ImportError as e:
        print(f"semsearch's package cannot be imported ({e}); importing its torch backend alone")
    for name in [n for n in sys.modules if n == "semsearch" or n.startswith("semsearch.")]:
        del sys.modules[name]
    package = types.ModuleType("semsearch")
    package.__path__ = [str(ROOT / "semsearch")]
    sys.modules["semsearch"] = package
    return importlib.import_module("semsearch.torch_backend")


# -- data -------------------------------------------------------------------------------


def load_dataset(folder: Path, limit: int) -> dict[str, Any]:
    """A BEIR folder's documents, judged queries and judgements (read here, with
    json alone, so that a bare machine needs no semsearch dependencies).

    With ``limit``, the first ``limit`` documents, and the queries with a
    relevant document among them.
    """
    docs: list[tuple[str, str]] = []
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                title, text = str(row.get("title") or ""), str(row.get("text") or "")
                docs.append((str(row["_id"]), f"{title} {text}" if title else text))
                if limit and len(docs) >= limit:
                    break
    ids = {d for d, _ in docs}
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0] == "query-id":
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    qrels = {q: r for q, r in qrels.items() if any(d in ids and g > 0 for d, g in r.items())}
    queries: dict[str, str] = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if str(row["_id"]) in qrels:
                    queries[str(row["_id"])] = str(row["text"])
    return {
        "name": folder.resolve().name,
        "doc_ids": [d for d, _ in docs],
        "texts": [t for _, t in docs],
        "queries": queries,
        "qrels": {q: qrels[q] for q in queries},
    }


# -- quality ----------------------------------------------------------------------------


def ndcg10(
    docs: np.ndarray, queries: np.ndarray, data: dict[str, Any], depth: int = 100
) -> dict[str, Any]:
    """nDCG@10 of exact inner-product search (ir-measures if installed, else numpy)."""
    scores = queries @ docs.T
    depth = min(depth, docs.shape[0])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    doc_ids = data["doc_ids"]
    run = {
        qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]}
        for i, qid in enumerate(data["queries"])
    }
    own = ndcg10_numpy(run, data["qrels"])
    try:
        import ir_measures
    except ImportError:
        return {"nDCG@10": own, "scorer": "numpy"}
    measure = ir_measures.parse_measure("nDCG@10")
    value = float(ir_measures.calc_aggregate([measure], data["qrels"], run)[measure])
    return {"nDCG@10": value, "scorer": "ir-measures", "numpy_nDCG@10": own}


def ndcg10_numpy(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> float:
    """trec_eval's nDCG@10 (linear gains, positive judgements), mean over judged queries."""
    values = []
    for qid, judged in qrels.items():
        ranked = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        dcg = sum(max(judged.get(d, 0), 0) / math.log2(r + 2) for r, (d, _) in enumerate(ranked))
        gains = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
        ideal = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
        values.append(dcg / ideal if ideal else 0.0)
    return float(np.mean(values)) if values else 0.0


def first_tokens(texts: list[str], model: Any) -> list[str]:
    """Each text cut after the tokens the model keeps (its maximum less the special
    tokens): the 256-token chunks of the issue, the same vectors as the whole text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    keep = int(model.max_seq_length) - model.tokenizer.num_special_tokens_to_add(pair=False)
    encoded = tokenizer.encode_batch(texts, add_special_tokens=False)
    pairs = zip(texts, encoded, strict=True)
    return [t if len(e) <= keep else t[: e.offsets[keep - 1][1]] for t, e in pairs]


def cosine_stats(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a, b = vectors.astype(np.float64), reference.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": float(cos.min()), "median": float(np.median(cos))}


# -- timing -----------------------------------------------------------------------------


def timed(
    fn: Callable[[list[str]], np.ndarray], texts: list[str], repeats: int, sync: Callable[[], Any]
) -> tuple[list[float], np.ndarray]:
    """Seconds per call of ``fn(texts)`` after a warm-up on a few texts; the last vectors."""
    fn(texts[:WARMUP_TEXTS])
    sync()
    seconds, vectors = [], np.zeros(0)
    for _ in range(repeats):
        started = time.perf_counter()
        vectors = fn(texts)
        sync()
        seconds.append(time.perf_counter() - started)
    return seconds, vectors


def forward_alone(
    encoder: Any, tokenized: list[Any], plan: Callable[..., Any]
) -> Callable[[], int]:
    """The forward pass over pre-tokenised, length-sorted batches already on the device."""
    import torch

    model, device = encoder._model, encoder.device
    lengths = np.array([len(e.ids) for e in tokenized])
    batches = []
    for rows in plan(lengths, encoder.token_budget):
        width = int(lengths[rows].max())
        ids = np.zeros((len(rows), width), dtype=np.int64)
        for k, j in enumerate(rows):
            ids[k, : lengths[j]] = tokenized[j].ids
        mask = (np.arange(width) < lengths[rows][:, None]).astype(np.int64)
        features = {"input_ids": ids, "attention_mask": mask}
        if encoder._with_types:
            features["token_type_ids"] = np.zeros_like(ids)
        batches.append({k: torch.from_numpy(v).to(device) for k, v in features.items()})

    def run() -> int:
        with torch.inference_mode():
            for features in batches:
                model(dict(features))["sentence_embedding"]
        return len(tokenized)

    return run


def machine_gpu(device: str) -> dict[str, Any]:
    import sentence_transformers
    import tokenizers
    import torch

    facts: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "sentence_transformers": sentence_transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        facts.update(
            gpu=torch.cuda.get_device_name(torch.device(device)),
            gpu_memory_bytes=int(props.total_memory),
            capability=f"{props.major}.{props.minor}",
        )
    return facts


# -- the run ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--limit", type=int, default=0, help="only the first N documents")
    parser.add_argument(
        "--copies", type=int, default=1, help="time over K copies of the corpus (longer runs)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="name or model folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--st-batch-size", type=int, default=32, help="encode's batch_size")
    parser.add_argument("--token-budget", type=int, default=0, help="TorchEncoder's (0: default)")
    parser.add_argument("--no-fp16", action="store_true", help="skip the fp16 rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    tb = torch_backend()
    import torch
    from sentence_transformers import SentenceTransformer

    device = tb.resolve_device(args.device)
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    location = tb.resolve_model(args.model)
    reference = SentenceTransformer(location, device=device)
    reference.eval()

    data = load_dataset(args.dataset, args.limit)
    texts, queries = first_tokens(data["texts"], reference), list(data["queries"].values())
    stream = texts * max(args.copies, 1)
    n = len(texts)
    print(f"{data['name']}: {n} documents x {args.copies}, {len(queries)} queries, on {device}")

    def st_encode(model: Any) -> Callable[[list[str]], np.ndarray]:
        def encode(batch: list[str]) -> np.ndarray:
            vectors = model.encode(
                batch,
                batch_size=args.st_batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            return np.asarray(vectors, dtype=np.float32)

        return encode

    budget = args.token_budget or None
    systems: list[dict[str, Any]] = []
    forward_rows: list[dict[str, Any]] = []
    precisions = ["fp32"] if args.no_fp16 else ["fp32", "fp16"]
    for precision in precisions:
        model = reference if precision == "fp32" else copy.deepcopy(reference).half()
        systems.append(
            {
                "system": "SentenceTransformer.encode",
                "precision": precision,
                "encode": st_encode(model),
                "encode_queries": st_encode(model),
                "settings": f"batch_size={args.st_batch_size}",
            }
        )
    for precision in precisions:
        try:
            fast = tb.TorchEncoder(
                location, device=device, precision=precision, token_budget=budget
            )
            decided = fast.precision
        except Exception as e:  # e.g. fp16 unsupported on this device
            print(f"TorchEncoder {precision}: skipped ({type(e).__name__}: {e})")
            continue
        systems.append(
            {
                "system": "TorchEncoder",
                "precision": decided,
                "asked": precision,
                "fp16_min_cosine": fast.fp16_min_cosine,
                "encode": fast.encode_documents,
                "encode_queries": fast.encode_queries,
                "settings": f"token_budget={fast.token_budget}",
                "encoder": fast,
            }
        )

    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    for s in systems:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds, embedded = timed(s["encode"], stream, args.repeats, sync)
        vectors.append(embedded[:n])
        row = {k: v for k, v in s.items() if k not in ("encode", "encode_queries", "encoder")}
        row.update(
            seconds=seconds,
            docs_per_second=len(stream) / median(seconds),
            quality=ndcg10(embedded[:n], s["encode_queries"](queries), data),
        )
        if cuda:
            row["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
        rows.append(row)
        print(f"{row['system']} {row['precision']}: {row['docs_per_second']:,.0f} docs/s")

    # The ceiling: the forward pass alone, and the tokenizer alone.
    fast_systems = [s for s in systems if s["system"] == "TorchEncoder"]
    if fast_systems:
        first = fast_systems[0]["encoder"]
        started = time.perf_counter()
        tokenized = list(first._encode_batch(stream))
        tokenize_seconds = time.perf_counter() - started
        lengths = np.array([len(e.ids) for e in tokenized[:n]])
        for s in fast_systems:
            run = forward_alone(s["encoder"], tokenized, tb.plan_batches)
            seconds, _ = timed(lambda _texts, run=run: run(), stream, args.repeats, sync)
            forward_rows.append(
                {
                    "precision": s["precision"],
                    "seconds": seconds,
                    "docs_per_second": len(stream) / median(seconds),
                }
            )
            print(f"forward alone {s['precision']}: {forward_rows[-1]['docs_per_second']:,.0f}")
    else:
        tokenize_seconds, lengths = float("nan"), np.zeros(1)

    base = rows[0]
    for row, embedded in zip(rows, vectors, strict=True):
        row["speedup"] = row["docs_per_second"] / base["docs_per_second"]
        row["cosine_to_st_fp32"] = cosine_stats(embedded, vectors[0])
        row["ndcg10_delta"] = row["quality"]["nDCG@10"] - base["quality"]["nDCG@10"]
    for row in forward_rows:
        row["speedup"] = row["docs_per_second"] / base["docs_per_second"]
    result = {
        "dataset": data["name"],
        "documents": n,
        "copies": args.copies,
        "docs_timed": len(stream),
        "queries": len(queries),
        "subset": bool(args.limit),
        "tokens_per_doc": {"mean": float(lengths.mean()), "max": int(lengths.max())},
        "repeats": args.repeats,
        "model": args.model,
        "accelerator": machine_gpu(device),
        "rows": rows,
        "forward_alone": forward_rows,
        "tokenize_alone_docs_per_second": len(stream) / tokenize_seconds,
        "fp16_min_cosine_target": tb.FP16_MIN_COSINE,
    }
    write_results(args.out, "gpu", result, markdown(result), argv)
    print((args.out / "gpu.md").read_text())
    return result


def precision_cell(row: dict[str, Any]) -> str:
    asked = row.get("asked", row["precision"])
    return row["precision"] if asked == row["precision"] else f"{row['precision']} (asked {asked})"


def markdown(d: dict[str, Any]) -> str:
    acc = d["accelerator"]
    where = acc.get("gpu") or f"CPU ({acc['device']})"
    table = md_table(
        [
            "system",
            "precision",
            "docs/s",
            "x encode fp32",
            "cosine to encode fp32, min / median",
            "nDCG@10",
            "Δ nDCG@10",
        ],
        [
            [
                f"`{r['system']}` ({r['settings']})",
                precision_cell(r),
                r["docs_per_second"],
                f"{r['speedup']:.2f}x",
                f"{r['cosine_to_st_fp32']['min']:.5f} / {r['cosine_to_st_fp32']['median']:.6f}",
                r["quality"]["nDCG@10"],
                f"{r['ndcg10_delta']:+.4f}",
            ]
            for r in d["rows"]
        ]
        + [
            [
                "forward pass alone (pre-tokenised, sorted, on the device)",
                r["precision"],
                r["docs_per_second"],
                f"{r['speedup']:.2f}x",
                "",
                "",
                "",
            ]
            for r in d["forward_alone"]
        ]
        + [
            [
                "Rust tokenizer alone (`encode_batch`, all cores)",
                "",
                d["tokenize_alone_docs_per_second"],
                "",
                "",
                "",
                "",
            ]
        ],
    )
    checks = [r for r in d["rows"] if r["system"] == "TorchEncoder" and r["asked"] == "fp16"]
    verdict = ""
    if checks:
        r = checks[0]
        verdict = (
            f"\n\nTarget (TorchEncoder fp16 ≥ 10x encode fp32, cosine ≥ 0.999, nDCG@10 within "
            f"0.002): {r['speedup']:.1f}x, cosine min {r['cosine_to_st_fp32']['min']:.5f}, "
            f"Δ nDCG@10 {r['ndcg10_delta']:+.4f}; fp16 check on load: least cosine "
            f"{r['fp16_min_cosine']:.5f}."
        )
    caveat = (
        f"\n\n**Quick mode: the first {d['documents']:,} documents only; nDCG@10 over "
        f"{d['queries']} queries with a relevant document among them, not comparable with "
        "the full corpus.**"
        if d["subset"]
        else ""
    )
    return (
        f"{d['dataset']}, {d['documents']:,} documents (title + text, cut after the model's "
        f"{d['tokens_per_doc']['max']} tokens, {d['tokens_per_doc']['mean']:.0f} on average) "
        f"x {d['copies']} copies, embedded on {where} (torch {acc['torch']}, CUDA "
        f"{acc['cuda']}, sentence-transformers {acc['sentence_transformers']}); docs/s the "
        f"median of {d['repeats']} runs after a warm-up; queries embedded by the same system, "
        "exact inner-product search.\n\n" + table + verdict + caveat
    )


if __name__ == "__main__":
    main()
