"""BEIR loading, scoring with ir-measures, and `semsearch eval` (real model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch import BadInputError
from semsearch.cli import cli
from semsearch.evaluate import evaluate, load_beir

TINY = Path(__file__).parent / "data" / "tiny-beir"


def test_load_beir_reads_queries_and_judgements():
    data = load_beir(TINY)
    assert len(data.queries) == 11
    assert len(data.judged_queries()) == 10
    assert data.qrels["q0"] == {"world/nato-ap4-itpp.md": 1}
    assert sum(1 for _ in data.corpus()) == 40


def test_missing_files_and_bad_rows_are_named(tmp_path):
    with pytest.raises(BadInputError, match=r"corpus\.jsonl: not found"):
        load_beir(tmp_path)
    shutil.copytree(TINY, tmp_path / "d")
    (tmp_path / "d" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tdoc\n")
    with pytest.raises(BadInputError, match=r"test\.tsv:2: expected query-id"):
        load_beir(tmp_path / "d")


def test_evaluate_scores_the_sample_index(sample_index):
    result = evaluate(sample_index, load_beir(TINY))
    assert result.queries == 10
    assert set(result.metrics) == {"nDCG@10", "R@10", "R@100", "RR@10"}
    assert result.metrics["nDCG@10"] > 0.9
    assert next(iter(result.run["q0"])) == "world/nato-ap4-itpp.md"
    assert set(result.per_query) == {f"q{i}" for i in range(10)}


def test_wrong_judgements_score_low(sample_index, tmp_path):
    shutil.copytree(TINY, tmp_path / "d")
    rows = (TINY / "qrels" / "test.tsv").read_text().splitlines()
    shifted = [rows[0]] + [
        f"{row.split(chr(9))[0]}\t{rows[1 + (i + 1) % 10].split(chr(9))[1]}\t1"
        for i, row in enumerate(rows[1:])
    ]
    (tmp_path / "d" / "qrels" / "test.tsv").write_text("\n".join(shifted) + "\n")
    result = evaluate(sample_index, load_beir(tmp_path / "d"))
    assert result.metrics["nDCG@10"] < 0.5


def test_eval_command_builds_scores_and_reuses_the_index(tmp_path):
    args = ["eval", str(TINY), "--index", str(tmp_path / "ix"), "--run", str(tmp_path / "run")]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["metrics"]["R@100"] == 1.0
    assert scores["queries"] == 10
    first = (tmp_path / "run").read_text().splitlines()[0].split()
    assert first[:4] == ["q0", "Q0", "world/nato-ap4-itpp.md", "1"]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "0 article(s) embedded, 40 unchanged" in again.stderr
    assert "nDCG@10" in again.stdout


def test_eval_of_a_folder_that_is_not_a_dataset_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["eval", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"error: {tmp_path / 'corpus.jsonl'}: not found; a BEIR dataset folder needs it\n"
    )
