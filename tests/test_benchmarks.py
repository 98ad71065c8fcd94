"""The benchmark scripts run end to end in quick mode on a tiny dataset, so they cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import build, report, run
from semsearch.evaluate import load_beir
from tests.conftest import make_article

TINY = Path(__file__).parent / "data" / "tiny-beir"


def test_quick_run_writes_every_result_and_the_report(tmp_path):
    out = tmp_path / "results"
    run.main(
        [
            "--quick",
            "--dataset",
            str(TINY),
            "--index",
            str(tmp_path / "ix"),
            "--out",
            str(out),
            "--cold-runs",
            "1",
            "--synthetic",
            "2000",
            "--sizes",
            "300,1000",
        ]
    )
    names = ("build", "quality", "fusion", "chunking", "backends", "filters", "latency", "ann")
    for name in (*names, "scaling"):
        assert (out / f"{name}.json").exists(), name
        assert (
            (out / f"{name}.md")
            .read_text()
            .startswith(("|", "Index", "tiny", "Recall", "#", "40 articles"))
        )
    assert (out / "ann.png").stat().st_size > 0 and (out / "scaling.png").stat().st_size > 0
    built = json.loads((out / "build.json").read_text())
    assert built["articles"] == 40 and built["chunks"] >= 40
    assert set(built["timings"]) >= {"model_load", "load", "chunk", "embed", "sqlite", "faiss"}
    assert built["peak_rss_bytes"] > 100 * 2**20
    quality = json.loads((out / "quality.json").read_text())
    # Every tiny query shares words with its article: each mode finds every judged one.
    assert {m: r["R@100"] for m, r in quality["semsearch"].items()} == {
        "semantic": 1.0,
        "keyword": 1.0,
        "hybrid": 1.0,
    }
    fusion = json.loads((out / "fusion.json").read_text())
    assert fusion["halves"] == {"A": 5, "B": 5}
    assert (
        fusion["baselines"]["keyword"]["all"]["R@100"] == quality["semsearch"]["keyword"]["R@100"]
    )
    on_a = {float(w): v["A"]["nDCG@10"] for w, v in fusion["sweep"].items()}
    assert set(on_a) == {0.5, 0.7} and on_a[fusion["best_on_A"]] == max(on_a.values())
    assert fusion["best_on_A"] == 0.5  # both score 1.0 here: a tie goes to the first weight
    assert set(fusion["pools"]) == {"100", "50", "30", "20"}  # k=10 hybrid by pool
    assert all(0.0 <= v <= 1.0 for v in fusion["pools"].values())
    filtered = json.loads((out / "filters.json").read_text())
    assert all(r["exact"] in (None, r["queries"]) for r in filtered["rows"])
    latency = json.loads((out / "latency.json").read_text())
    assert latency["warm"]["total_hybrid"]["n"] == 10
    assert {b: r["runs"] for b, r in latency["cold"].items()} == {"onnx": 1, "torch": 1}


def test_report_fills_every_section_from_results(tmp_path):
    (tmp_path / "quality.md").write_text("| quality table |")
    text = report.render("A {{quality}} B {{latency}}", tmp_path)
    assert text.startswith("A | quality table | B _Not measured yet")


def test_quick_subset_keeps_judged_documents(tmp_path):
    dataset = load_beir(TINY)
    articles = build.subset(dataset, 12)
    assert len(articles) == 12
    judged = {doc for q in list(dataset.judged_queries())[:3] for doc in dataset.qrels[q]}
    assert judged <= {a.id for a in articles}


def test_churn_runs_nights_of_adds_changes_and_removes(tmp_path, fake_index):
    from benchmarks import churn

    fake_index.add([make_article(f"a{i}", f"word{i} text{i % 7} more words") for i in range(30)])
    out = tmp_path / "results"
    data = churn.main(
        ["--index", str(fake_index.path), "--size", "2000", "--nights", "2", "--out", str(out)]
    )
    night = data["rows"][1]["write"]
    assert (night["added"], night["updated"], night["removed"]) == (20, 4, 4)
    assert night["bytes_written"] > 0 and data["rows"][2]["chunks"] == 2000 + 2 * (20 - 4)
    assert (out / "churn.png").stat().st_size > 0
    assert (out / "churn.md").read_text().startswith("## Nightly churn: 2,000")
    plans = [churn.night_plan(2000, n) for n in (1, 2)]
    touched = [i for p in plans for i in p["change_ids"] + p["remove"]]
    assert len(touched) == len(set(touched)) == 16  # no id changed or removed twice


def test_segments_measures_every_target_end_to_end(tmp_path, fake_index):
    from benchmarks import churn, segments

    fake_index.add([make_article(f"a{i}", f"word{i} text{i % 7} more words") for i in range(30)])
    out = tmp_path / "results"
    data = segments.main(
        ["--index", str(fake_index.path), "--size", "2000", "--nights", "3", "--out", str(out)]
    )
    assert set(data) >= {"build", "open", "writes", "exact", "rows"}
    assert (data["writes"]["add"]["added"], data["writes"]["remove"]["removed"]) == (20, 20)
    exact = data["exact"]
    assert exact["results"]["identical"] == exact["results"]["queries"] == segments.QUERIES
    assert (exact["segmented"]["segments"], exact["merged"]["segments"]) == (20, 1)
    assert exact["storage"]["chunks"] == 2000 and exact["p50_ratio"] > 0
    assert [r["night"] for r in data["rows"]] == [1, 2, 3]
    assert all(r["write"]["bytes_written"] > 0 for r in data["rows"])
    assert (out / "segments.png").stat().st_size > 0
    assert (out / "segments.md").read_text().startswith("## Segments: 2,000")
    nightly = {i for n in (1, 2, 3) for i in churn.night_plan(2000, n)["remove"]}
    nightly |= {i for n in (1, 2, 3) for i in churn.night_plan(2000, n)["change_ids"]}
    assert not nightly & set(segments.remove_plan(2000, 3)["remove"])  # none removed twice


def test_serve_checks_each_hit_against_its_generation():
    from benchmarks.serve import check_generations

    # Batch 0 was re-indexed from generation 1 (so rev 1 from generation 2) and from 3.
    log = [{"from": 1, "batch": 0, "rev": 1}, {"from": 3, "batch": 0, "rev": 2}]
    batch_of = {"a": 0, "b": 0}
    responses = [
        (1, [("a", "A"), ("b", "B")]),  # before any commit: original titles
        (2, [("a", "A [rev 1]"), ("b", "B [rev 1]")]),
        (3, [("a", "A [rev 1]")]),  # a merge's generation: still rev 1
        (4, [("a", "A [rev 2]"), ("b", "B [rev 1]")]),  # torn: b from an older commit
    ]
    cells = [{"watched": responses}]
    check_generations(cells, log, batch_of)
    assert cells[0]["hits_checked"] == 7 and cells[0]["violations"] == 1
    assert cells[0]["hits_revised"] == 5  # all but the two of generation 1


def test_serve_quick_run(tmp_path, sample_index_dir):
    from benchmarks import serve

    # The sample index holds the tiny dataset's 40 articles, under the same ids.
    out = tmp_path / "out"
    argv = ["--quick", "--index", str(sample_index_dir), "--dataset", str(TINY),
            "--workers", "1", "--seconds", "1", "--warmup", "0.5", "--out", str(out)]  # fmt: skip
    data = serve.main(argv)
    cells = data["alone"] + data["writing"]
    assert len(cells) == 8 and all(c["qps"] > 0 and c["errors"] == 0 for c in cells)
    assert all(
        data[k][m]["qps"] > 0 for k in ("in_process", "in_process_2_threads") for m in serve.MODES
    )
    assert data["writer"]["commits"] > 0 and data["writer"]["wrote_throughout"]
    assert sum(c["hits_checked"] for c in data["writing"]) > 0
    assert sum(c["violations"] for c in data["writing"]) == 0
    assert (out / "serve.md").read_text().startswith("tiny-beir index")
    assert (out / "serve.png").stat().st_size > 0
