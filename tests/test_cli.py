"""The command line: exit codes, messages, formats (real model where it searches)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from semsearch import Index
from semsearch.cli import cli
from tests.conftest import ROOT, SAMPLE_ARTICLES

AP4 = "world/nato-ap4-itpp.md"


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_index_then_query_lists_the_ap4_article_first(tmp_path):
    folder = str(tmp_path / "ix")
    result = run("index", str(SAMPLE_ARTICLES), "--index", folder)
    assert result.exit_code == 0, result.output
    assert "Indexed 40 new" in result.stdout
    result = run("query", "NATO Indo-Pacific", "--index", folder, "-k", "3")
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert "Asia-Pacific partners open talks on tailored NATO cooperation" in first
    assert f"id: {AP4}" in result.stdout


def test_reindexing_unchanged_files_embeds_nothing(sample_index_dir):
    result = run("index", str(SAMPLE_ARTICLES), "--index", str(sample_index_dir), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["added"], summary["unchanged"], summary["chunks_added"]) == (0, 40, 0)


def test_query_json_is_machine_readable(sample_index_dir):
    result = run("query", "NATO Indo-Pacific", "--index", str(sample_index_dir), "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 10
    assert hits[0]["article_id"] == AP4
    assert {"score", "title", "url", "date", "text", "start", "end", "metadata"} <= set(hits[0])


def test_query_reads_the_default_index_from_the_environment(sample_index_dir, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_INDEX", str(sample_index_dir))
    result = run("query", "-", "-k", "1", input="NATO Indo-Pacific\n")
    assert result.exit_code == 0, result.output
    assert f"id: {AP4}" in result.stdout


def test_info_reports_counts_and_model(sample_index_dir):
    result = run("info", "--index", str(sample_index_dir), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["articles"] == 40
    assert info["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert info["chunks"] > 40
    text = run("info", "--index", str(sample_index_dir)).stdout
    assert "all-MiniLM-L6-v2" in text and "articles" in text


def test_remove_deletes_and_reports_missing_ids(sample_index_dir):
    result = run("remove", AP4, "--index", str(sample_index_dir))
    assert result.exit_code == 0, result.output
    assert "Removed 1 article" in result.stdout
    result = run("remove", AP4, "wire-0001", "--index", str(sample_index_dir))
    assert result.exit_code == 3
    assert "not in the index: world/nato-ap4-itpp.md" in result.stderr
    result = run("remove", AP4, "--index", str(sample_index_dir))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no article with id")


def test_remove_json_summary(sample_index_dir):
    result = run("remove", AP4, "nope", "--index", str(sample_index_dir), "--json")
    assert result.exit_code == 3
    summary = json.loads(result.stdout)
    assert (summary["removed"], summary["missing"]) == ([AP4], ["nope"])
    assert summary["seconds"] >= 0


def test_query_without_an_index_says_what_to_do(tmp_path):
    result = run("query", "NATO Indo-Pacific", "--index", str(tmp_path / "none"))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: no index at {tmp_path / 'none'} — run `semsearch index PATH` first"
    )


def test_query_with_no_index_at_the_default_location(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEMSEARCH_INDEX")
    result = run("query", "NATO Indo-Pacific")
    assert result.exit_code == 1
    assert "no index at indexes/default — run `semsearch index PATH` first" in result.stderr


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_refused(sample_index_dir, query):
    result = run("query", query, "--index", str(sample_index_dir))
    assert result.exit_code == 1
    assert result.stderr == "error: empty query: give some words to search for\n"


def test_missing_path_is_named_and_nothing_is_created(tmp_path):
    result = run("index", str(tmp_path / "nope"), "--index", str(tmp_path / "ix"))
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'nope'}: no such file or directory\n"
    assert not (tmp_path / "ix").exists()


def write_bad_inputs(folder):
    folder.mkdir()
    (folder / "good.md").write_text("---\ntitle: Good\n---\nA perfectly fine article.\n")
    (folder / "empty.txt").write_text("")
    (folder / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me".encode("latin-1"))
    (folder / "blob.md").write_bytes(b"\x00\x01\x02binary")
    (folder / "rows.jsonl").write_text('{"id": "r1", "text": "Row one."}\n{broken\n')
    (folder / "table.csv").write_text("id,body\n1,hello\n")


def test_bad_files_are_skipped_with_warnings_and_exit_3(tmp_path, real_encoder):
    write_bad_inputs(tmp_path / "in")
    result = run("index", str(tmp_path / "in"), "--index", str(tmp_path / "ix"))
    assert result.exit_code == 3, result.output
    err = result.stderr
    assert "empty.txt: empty file" in err
    assert "latin1.txt: not valid UTF-8" in err
    assert "blob.md: binary file" in err
    assert "rows.jsonl:2: invalid JSON" in err
    assert "table.csv:1: no 'text' column (columns: id, body;" in err
    assert "Traceback" not in result.output
    with Index.open(tmp_path / "ix", encoder=real_encoder) as index:
        assert sorted(a for a in ("good.md", "r1") if index.get(a)) == ["good.md", "r1"]


def test_strict_writes_nothing_when_an_input_is_bad(tmp_path):
    write_bad_inputs(tmp_path / "in")
    result = run("index", str(tmp_path / "in"), "--index", str(tmp_path / "ix"), "--strict")
    assert result.exit_code == 1
    assert "--strict given; nothing was written" in result.stderr
    assert not (tmp_path / "ix").exists()


def test_field_mapping_reads_other_csv_columns(tmp_path, real_encoder):
    (tmp_path / "t.csv").write_text("doc,headline,body\nd1,Tides,The moon pulls the sea.\n")
    args = ["--field", "id=doc", "--field", "title=headline", "--field", "text=body"]
    result = run("index", str(tmp_path / "t.csv"), "--index", str(tmp_path / "ix"), *args)
    assert result.exit_code == 0, result.output
    with Index.open(tmp_path / "ix", encoder=real_encoder) as index:
        assert index.get("d1").title == "Tides"


def test_bad_field_mapping_is_a_clear_error(tmp_path):
    (tmp_path / "t.csv").write_text("a\n1\n")
    result = run("index", str(tmp_path / "t.csv"), "--field", "txt=body")
    assert result.exit_code == 1
    assert "unknown article field 'txt'" in result.stderr


def test_invalid_index_type_is_a_clear_error(tmp_path):
    result = run(
        "index", str(SAMPLE_ARTICLES), "--index", str(tmp_path / "ix"), "--index-type", "Bogus"
    )
    assert result.exit_code == 1
    assert "invalid FAISS index type 'Bogus'" in result.stderr
    assert not (tmp_path / "ix").exists()


def test_creation_options_on_an_existing_index_are_refused(sample_index_dir):
    args = ["--index", str(sample_index_dir), "--index-type", "hnsw"]
    result = run("index", str(SAMPLE_ARTICLES), *args)
    assert result.exit_code == 1
    assert "creation options cannot change it: --index-type 'hnsw' (the index has 'auto')" in (
        result.stderr
    )


def test_failure_halfway_leaves_the_index_as_it_was(sample_index_dir, tmp_path, monkeypatch):
    (tmp_path / "new.md").write_text("A brand new article about glaciers.")
    before = sorted((p.name, p.stat().st_size) for p in sample_index_dir.iterdir())

    def explode(self, *args, **kwargs):
        raise RuntimeError("killed while embedding")

    monkeypatch.setattr("semsearch.embed.SentenceTransformerEncoder.encode_documents", explode)
    monkeypatch.setattr("semsearch.onnx_backend.OnnxEncoder.encode_documents", explode)
    result = run("index", str(tmp_path / "new.md"), "--index", str(sample_index_dir))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unexpected RuntimeError: killed while embedding")
    assert "Traceback" not in result.output
    assert sorted((p.name, p.stat().st_size) for p in sample_index_dir.iterdir()) == before


def test_failed_first_index_leaves_no_index_behind(tmp_path, monkeypatch):
    def explode(self, *args, **kwargs):
        raise RuntimeError("killed while embedding")

    monkeypatch.setattr("semsearch.embed.SentenceTransformerEncoder.encode_documents", explode)
    result = run("index", str(SAMPLE_ARTICLES), "--index", str(tmp_path / "ix"))
    assert result.exit_code == 1
    assert not (tmp_path / "ix").exists()


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_DEBUG", "1")

    def explode(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("semsearch.index.Index.info", explode)
    with Index.create(tmp_path / "ix", encoder=None):
        pass
    result = run("info", "--index", str(tmp_path / "ix"))
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


@pytest.mark.parametrize("command", [[], ["index"], ["query"], ["info"], ["remove"]])
def test_every_command_has_help(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.stdout
    assert "--index" in result.stdout or not command


def test_usage_errors_exit_2():
    assert run("query").exit_code == 2
    assert run("frobnicate").exit_code == 2


def test_importing_semsearch_and_help_do_not_import_torch():
    code = (
        "import sys, semsearch, semsearch.cli;"
        "from click.testing import CliRunner;"
        "CliRunner().invoke(semsearch.cli.cli, ['--help']);"
        "print(sorted(m for m in ('torch', 'faiss', 'sentence_transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "keyword"])
def test_query_modes_from_the_command_line(sample_index_dir, mode):
    args = ["query", "NATO Indo-Pacific", "--index", str(sample_index_dir), "--mode", mode]
    result = run(*args, "--json", "-k", "2")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits[0]["article_id"] == AP4 and hits[0]["mode"] == mode
    assert hits[0]["highlights"] and all(len(span) == 2 for span in hits[0]["highlights"])


def test_hybrid_text_output_shows_both_component_scores(sample_index_dir):
    result = run("query", "NATO Indo-Pacific", "--index", str(sample_index_dir), "-k", "1")
    assert result.exit_code == 0, result.output
    assert "(semantic 0.6" in result.stdout and "keyword" in result.stdout


def test_query_filters_from_the_command_line(sample_index_dir):
    folder = str(sample_index_dir)
    args = ["query", "talks", "--index", folder, "--json", "-k", "40"]
    result = run(*args, "--since", "2023-06-01", "--until", "2023-06-30", "--tag", "NATO")
    assert [h["article_id"] for h in json.loads(result.stdout)] == [AP4]
    result = run(*args, "--where", "source=Meridian Wire", "--where", "region=Asia-Pacific")
    hits = json.loads(result.stdout)
    assert hits and all(h["source"] == "Meridian Wire" for h in hits)
    result = run(*args, "--filter", '{"source": {"in": ["The Daily Ledger"]}}')
    assert {h["source"] for h in json.loads(result.stdout)} == {"The Daily Ledger"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--since", "2023-13-01"], "2023-13-01"),
        (["--where", "nonsense"], "nonsense"),
        (["--filter", "{not json"], "JSON"),
        (["--filter", '{"date": {"after": "2023"}}'], "after"),
        (["--fts5", "--mode", "keyword"], "invalid FTS5 query"),
    ],
)
def test_bad_filters_and_fts5_are_one_line_errors(sample_index_dir, options, message):
    result = run("query", '"unbalanced', "--index", str(sample_index_dir), *options)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('"NATO', "NATO"),
        ("NEAR(a b)", "near"),
        ("-x:y*", ""),
        ("'; DROP TABLE chunks; --", "drop table chunks"),
    ],
)
def test_hostile_query_text_is_searched_as_text(sample_index_dir, text, words):
    # "--" ends the options, as for any command, so a query may start with "-".
    args = ["--index", str(sample_index_dir), "--mode", "keyword", "--json"]
    result = run("query", *args, "--", text)
    assert result.exit_code == 0, result.output
    hits = [(h["article_id"], h["score"], h["highlights"]) for h in json.loads(result.stdout)]
    expected = json.loads(run("query", *args, words).stdout) if words else []
    assert hits == [(h["article_id"], h["score"], h["highlights"]) for h in expected]
    assert bool(hits) == bool(words)
    if words == "NATO":
        assert hits[0][0] == AP4
    with Index.open(sample_index_dir) as index:  # no table was dropped
        assert len(index) == 40 and index.search("NATO", k=1, mode="keyword")


def test_a_long_query_gets_a_note_on_stderr(sample_index_dir):
    result = run("query", "weather " * 400, "--index", str(sample_index_dir), "-k", "1")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("note: the query has 400 tokens")


def test_a_filter_that_matches_nothing_says_no_results(sample_index_dir):
    result = run("query", "NATO", "--index", str(sample_index_dir), "--where", "source=Nobody")
    assert result.exit_code == 0 and "No results." in result.stdout


def test_a_second_run_says_nothing_changed(sample_index_dir):
    result = run("index", str(SAMPLE_ARTICLES), "--index", str(sample_index_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith("nothing changed")


def test_prune_from_the_command_line(tmp_path, real_encoder):
    folder = tmp_path / "articles"
    folder.mkdir()
    for name in ("one", "two"):
        (folder / f"{name}.txt").write_text(f"The {name} article is about ferries.")
    index = str(tmp_path / "ix")
    assert run("index", str(folder), "--index", index).exit_code == 0
    (folder / "two.txt").unlink()
    result = run("index", str(folder), "--index", index, "--prune", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["removed"], summary["unchanged"], summary["chunks_removed"]) == (1, 1, 1)


def test_a_locked_index_exits_75_naming_the_holder(sample_index_dir):
    from semsearch.lock import WriterLock

    with WriterLock(sample_index_dir):
        result = run("remove", AP4, "--index", str(sample_index_dir))
    assert result.exit_code == 75, result.output
    assert "another writer holds" in result.stderr and "pid " in result.stderr


def test_verify_passes_on_a_sound_index_and_fails_on_a_damaged_one(sample_index_dir):
    result = run("verify", "--index", str(sample_index_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")
    vectors = next(sample_index_dir.glob("segment.*.faiss"))
    vectors.write_bytes(vectors.read_bytes()[:-100])
    result = run("verify", "--index", str(sample_index_dir), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert not report["ok"] and vectors.name in report["problems"][0]
