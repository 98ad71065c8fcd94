"""Inputs as people have them: untyped fields, bad rows, odd text, paths typed any way."""

from __future__ import annotations

import json
import os
import sqlite3
import unicodedata

import pytest
from click.testing import CliRunner

from semsearch import Article, Index, Skipped, load_paths
from semsearch.cli import cli
from semsearch.errors import BadInputError
from semsearch.manifest import STORE_FILE
from semsearch.values import normalize_date, normalize_text, typed_value


def run(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def loaded(*paths, **options):
    return list(load_paths([str(p) for p in paths], **options))


# --- 2. Fields that arrive untyped ----------------------------------------------


def test_csv_numbers_filter_as_numbers_like_jsonl(tmp_path):
    (tmp_path / "b.csv").write_text("id,text,views\nv1,The stone bridge reopened.,1500\n")
    index = str(tmp_path / "ix")
    assert run("index", str(tmp_path / "b.csv"), "--index", index).exit_code == 0
    for where in ("views>100", "views=1500", "views>=1500"):
        result = run("query", "bridge", "--index", index, "--where", where, "--json")
        assert result.exit_code == 0, result.output
        assert [h["article_id"] for h in json.loads(result.stdout)] == ["v1"], where
    result = run("query", "bridge", "--index", index, "--where", "views>1500", "--json")
    assert json.loads(result.stdout) == []


def test_csv_and_jsonl_rows_load_to_the_same_metadata(tmp_path):
    (tmp_path / "a.csv").write_text(
        'id,text,views,score,code,count,flag,odd\nx,Body.,1500,-2.5,01234,"1,500",true,NaN\n'
    )
    row = {"id": "x", "text": "Body.", "views": "1500", "score": -2.5, "code": "01234"}
    row |= {"count": "1,500", "flag": "true", "odd": "NaN"}
    (from_csv,) = loaded(tmp_path / "a.csv")
    (from_jsonl,) = loaded(write_jsonl(tmp_path / "a.jsonl", [row]))
    expected = {"views": 1500, "score": -2.5, "code": "01234", "count": "1,500"}
    expected |= {"flag": True, "odd": "NaN"}
    assert from_csv.metadata == from_jsonl.metadata == expected


@pytest.mark.parametrize(
    ("value", "typed"),
    [("0", 0), ("-7", -7), ("1e3", 1000.0), ("0.5", 0.5), ("+5", "+5"), ("007", "007"),
     ("1.", "1."), (" 12 ", 12), ("Infinity", "Infinity"), ("false", False), ("TRUE", True),
     ("yes", "yes")],
)  # fmt: skip
def test_typed_value_rule(value, typed):
    assert typed_value(value) == typed and type(typed_value(value)) is type(typed)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("semi.csv", 'id;text;views\nv1;"Stone bridge, reopened; at last.";1500\n'),
        ("tabs.tsv", "id\ttext\tviews\nv1\tStone bridge, reopened; at last.\t1500\n"),
        ("tabs.csv", "id\ttext\tviews\nv1\tStone bridge, reopened; at last.\t1500\n"),
        ("bars.csv", "id|text|views\nv1|Stone bridge, reopened; at last.|1500\n"),
        ("spaced.csv", 'id, text, views\nv1,"Stone bridge, reopened; at last.",1500\n'),
    ],
)
def test_csv_dialects_are_read_not_refused(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    (article,) = loaded(tmp_path / name)
    assert isinstance(article, Article), article
    assert (article.id, article.metadata) == ("v1", {"views": 1500})
    assert article.text == "Stone bridge, reopened; at last."


def test_csv_without_the_text_column_says_how_it_was_read(tmp_path):
    (tmp_path / "t.csv").write_text("id;body\nv1;x\n")
    (skipped,) = loaded(tmp_path / "t.csv")
    assert isinstance(skipped, Skipped) and skipped.line == 1
    assert "columns: id, body; read as separated by semicolons" in skipped.reason
    assert "--field text=COLUMN" in skipped.reason


def test_a_bad_csv_row_does_not_stop_the_rows_after_it(tmp_path):
    (tmp_path / "r.csv").write_text(
        "id,text,date\na,First.,2024-01-01\nb,Second.,Monday\nc,Third.,\n"
    )
    results = loaded(tmp_path / "r.csv")
    assert [type(r).__name__ for r in results] == ["Article", "Skipped", "Article"]
    assert results[1].line == 3 and "'Monday' names no year" in results[1].reason


@pytest.mark.parametrize(
    "given",
    ["yesterday", "2 days ago", "Monday", "12:30", "2023/02/30", "not a date", "31/31/2024"],
)
def test_unreadable_dates_skip_the_article_naming_the_value(tmp_path, given):
    (result,) = loaded(write_jsonl(tmp_path / "d.jsonl", [{"text": "Body.", "date": given}]))
    assert isinstance(result, Skipped) and result.line == 1
    assert "field 'date'" in result.reason and repr(given) in result.reason


def test_ambiguous_numeric_dates_need_an_order(tmp_path):
    rows = [
        {"id": "a", "text": "A.", "date": "09/08/2024"},
        {"id": "b", "text": "B.", "date": "9.8.24"},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    first, second = loaded(path)
    assert isinstance(second, Skipped)
    assert isinstance(first, Skipped) and "DMY or MDY (--date-order" in first.reason
    assert [a.date for a in loaded(path, date_order="DMY")] == ["2024-08-09"] * 2
    assert [a.date for a in loaded(path, date_order="MDY")] == ["2024-09-08"] * 2
    assert normalize_date("13/08/2024") == normalize_date("08/13/2024") == "2024-08-13"
    with pytest.raises(BadInputError, match="not one of DMY, MDY"):
        loaded(path, date_order="YMD")


def test_cli_date_order(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "Bridge.", "date": "09/08/2024"}])
    index = str(tmp_path / "ix")
    result = run("index", str(tmp_path / "d.jsonl"), "--index", index, "--date-order", "DMY")
    assert result.exit_code == 0, result.output
    result = run("query", "bridge", "--index", index, "--since", "2024-08-09", "--json")
    assert [h["date"] for h in json.loads(result.stdout)] == ["2024-08-09"]


def test_front_matter_and_rows_with_structured_common_fields(tmp_path):
    (tmp_path / "a.md").write_text(
        "---\ntitle: Bridge\nauthor: {name: Jane Doe, email: j@example.com}\n"
        "source: {name: The Gazette, url: https://example.com}\ndate: 9 August 2024\n---\nBody.\n"
    )
    (tmp_path / "b.md").write_text("---\ntitle: {en: Bridge, fr: Pont}\n---\nBody.\n")
    (tmp_path / "c.md").write_text("---\ntags: [a, {b: c}]\n---\nBody.\n")
    (tmp_path / "d.md").write_text("---\nauthor: [{name: A}, B]\ntags: x, y\n---\nBody.\n")
    a, b, c, d = loaded(tmp_path)
    assert (a.author, a.source, a.date) == ("Jane Doe", "The Gazette", "2024-08-09")
    assert isinstance(b, Skipped) and "field 'title' holds a mapping; expected text" in b.reason
    assert isinstance(c, Skipped) and "field 'tags' holds nested values" in c.reason
    assert (d.author, d.tags) == ("A, B", ("x", "y"))


def test_nested_metadata_filters_by_dotted_key(fake_index):
    fake_index.add(
        [
            Article("n", "River news.", metadata={"meta": {"region": "north", "rank": 3}}),
            Article("s", "River news.", metadata={"meta": {"region": "south", "rank": 9}}),
            Article("d", "River news.", metadata={"meta.region": "north", "meta": {"region": "x"}}),
        ]
    )

    def ids(spec):
        return sorted(h.article_id for h in fake_index.search("river", filter=spec))

    assert ids({"meta.region": "north"}) == ["d", "n"]  # a key spelled with the dot wins
    assert ids({"meta.rank": {"gt": 5}}) == ["s"]
    assert ids({"meta.region": {"ne": "north"}}) == ["s"]
    with pytest.raises(BadInputError, match="empty level"):
        fake_index.search("river", filter={"meta..region": "north"})


def test_cli_where_on_nested_metadata(tmp_path):
    rows = [{"id": "n", "text": "Flood warning issued.", "meta": {"region": "north"}}]
    rows.append({"id": "s", "text": "Flood warning issued.", "meta": {"region": "south"}})
    index = str(tmp_path / "ix")
    assert (
        run("index", str(write_jsonl(tmp_path / "r.jsonl", rows)), "--index", index).exit_code == 0
    )
    result = run("query", "flood", "--index", index, "--where", "meta.region=north", "--json")
    assert [h["article_id"] for h in json.loads(result.stdout)] == ["n"]


# --- 3. One bad row never stops or hides the others ------------------------------


def test_duplicate_id_in_one_file_is_named_by_file_and_line(tmp_path):
    rows = [{"id": "a", "text": "First."}, {"id": "b", "text": "B."}, {"id": "a", "text": "Again."}]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    index = str(tmp_path / "ix")
    result = run("index", str(path), "--index", index, "--json")
    assert result.exit_code == 3, result.output
    assert f"{path}:3: duplicate id 'a', first at {path}:1" in result.stderr
    (skipped,) = json.loads(result.stdout)["skipped"]
    assert (skipped["path"], skipped["line"]) == (str(path), 3)
    with Index.open(index) as ix:
        assert ix.get("a").text == "First."


def test_strict_refuses_before_writing(tmp_path, fake_encoder):
    index = tmp_path / "ix"
    with Index.create(index, encoder=fake_encoder) as ix:
        ix.add([Article("old", "Old text.")])
    rows = [{"id": "a", "text": "First."}, {"id": "a", "text": "Again."}]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    with Index.open(index, encoder=fake_encoder) as ix:
        with pytest.raises(BadInputError, match=r"1 input\(s\) skipped .*dup.jsonl:2: duplicate"):
            ix.add_paths([path], strict=True)
        assert [ix.get("old") is not None, ix.get("a")] == [True, None]
        assert len(ix) == 1


def test_cli_strict_exits_1_and_creates_nothing(tmp_path):
    rows = [{"id": "a", "text": "First."}, {"id": "a", "text": "Again."}]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    result = run("index", str(path), "--index", str(tmp_path / "ix"), "--strict")
    assert result.exit_code == 1, result.output
    assert "dup.jsonl:2: duplicate id 'a'" in result.stderr
    assert not (tmp_path / "ix").exists()


def test_lone_surrogate_is_repaired_and_the_run_goes_on(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"id":"good","text":"A good row about tides."}\n'
        '{"id":"bad","text":"broken \\ud83d emoji about tides","title":"x\\udc00"}\n'
    )
    index = str(tmp_path / "ix")
    result = run("index", str(path), "--index", index)
    assert result.exit_code == 0, result.output
    result = run("query", "tides", "--index", index, "--json", "--mode", "keyword")
    hits = {h["article_id"]: h for h in json.loads(result.stdout)}
    assert set(hits) == {"good", "bad"}
    assert hits["bad"]["text"] == "broken \ufffd emoji about tides"
    assert hits["bad"]["title"] == "x\ufffd"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("cafe\u0301", "café"),  # NFD → NFC
        ("a\r\nb\rc", "a\nb\nc"),
        ("a\x00b\x1fc\x7fd", "abcd"),
        ("line\u2028sep\x85nel\x0cff", "line\nsep\nnel\nff"),
        ("\ufeffbom in\ufeff text\uffff", "bom in text"),
        (
            "tab\tkept; emoji 👍🏽 and ZWJ 👩\u200d💻 kept",
            "tab\tkept; emoji 👍🏽 and ZWJ 👩\u200d💻 kept",
        ),
        ("\ud83d alone \udc4d", "\ufffd alone \ufffd"),
    ],
)
def test_text_normalisation_rule(raw, clean):
    assert normalize_text(raw) == clean
    assert normalize_text(clean) == clean  # idempotent


def test_one_text_in_every_layer(tmp_path, fake_encoder):
    """What is stored, keyword-indexed and shown is the normalised string."""
    rows = [
        {"id": "x", "title": "Cafe\u0301\x00 news", "text": "Cre\u0300me\r\nbrule\u0301e \ud83d."}
    ]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as ix:
        ix.add_paths([path])
        article = ix.get("x")
        assert (article.title, article.text) == ("Café news", "Crème\nbrulée \ufffd.")
        (hit,) = ix.search("crème", mode="keyword")
        assert hit.text[slice(*hit.highlights[0])] == "Crème"
    db = sqlite3.connect(tmp_path / "ix" / STORE_FILE)
    (text,) = db.execute("SELECT text FROM articles").fetchone()
    assert text == article.text and unicodedata.is_normalized("NFC", text)


def test_the_same_article_typed_two_ways_is_unchanged(tmp_path, fake_encoder):
    nfc, nfd = "Crème brûlée.", unicodedata.normalize("NFD", "Crème brûlée.")
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as ix:
        ix.add_paths([write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "text": nfc}])])
        result = ix.add_paths([write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "text": nfd}])])
    assert (result.unchanged, result.updated) == (1, 0)


def test_stdin_that_is_not_utf8_is_a_warning(tmp_path):
    rows = b'{"text": "caf\xe9"}\n{"id": "ok", "text": "Fine."}\n'
    result = run("index", "-", "--index", str(tmp_path / "ix"), input=rows)
    assert result.exit_code == 3, result.output
    assert "<stdin>:1: not valid UTF-8 (byte 0xE9 after" in result.stderr


@pytest.mark.parametrize(
    ("name", "data"),
    [
        (
            "r.jsonl",
            b'{"id":"a","text":"A."}\n{"id":"b","text":"caf\xe9"}\n{"id":"c","text":"C."}\n',
        ),
        ("r.csv", b"id,text\na,A.\nb,caf\xe9\nc,C.\n"),
    ],
)
def test_a_row_that_is_not_utf8_skips_that_row_only(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    a, bad, c = loaded(tmp_path / name)
    assert (a.id, c.id) == ("a", "c")
    assert isinstance(bad, Skipped) and "not valid UTF-8 (byte 0xE9" in bad.reason
    assert bad.line == (2 if name.endswith(".jsonl") else 3)


# --- 4. --prune sees every spelling of a path -----------------------------------


def make_docs(folder):
    folder.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (folder / f"{name}.txt").write_text(f"Article {name} about rivers.\n")
    return folder


@pytest.mark.parametrize(
    ("first", "then"),
    [("./docs", "./docs"), ("docs", "./docs/"), ("./docs", "docs"), ("docs", "ABS"),
     ("ABS", "docs//"), ("link", "docs"), ("docs", "sub/../docs")],
)  # fmt: skip
def test_prune_compares_paths_however_they_are_typed(
    tmp_path, fake_encoder, monkeypatch, first, then
):
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path / "docs")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "docs")

    def spelled(path):
        return str(tmp_path / "docs") if path == "ABS" else path

    with Index.create(tmp_path / "ix", encoder=fake_encoder) as ix:
        assert ix.add_paths([spelled(first)]).added == 3
        (tmp_path / "docs" / "a.txt").unlink()
        result = ix.add_paths([spelled(then)], prune=True)
        assert (result.removed, result.unchanged, len(ix)) == (1, 2, 2)


def test_prune_from_another_directory(tmp_path, fake_encoder, monkeypatch):
    make_docs(tmp_path / "work" / "docs")
    monkeypatch.chdir(tmp_path / "work")
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as ix:
        ix.add_paths(["docs"])
        (tmp_path / "work" / "docs" / "b.txt").unlink()
        monkeypatch.chdir(tmp_path)
        assert ix.add_paths(["work/docs"], prune=True).removed == 1
        assert ix.add_paths(["work/docs"], prune=True).removed == 0


def test_prune_of_a_folder_emptied_empties_the_index(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    docs = make_docs(tmp_path / "docs")
    assert run("index", "./docs", "--index", "ix").exit_code == 0
    (docs / "a.txt").unlink()
    result = run("index", "./docs", "--index", "ix", "--prune", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["removed"] == 1
    for file in docs.iterdir():
        file.unlink()
    result = run("index", "docs/", "--index", "ix", "--prune", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["removed"] == 2
    assert json.loads(run("info", "--index", "ix", "--json").stdout)["articles"] == 0
    result = run("index", "docs", "--index", "ix")  # without --prune: nothing to do
    assert result.exit_code == 1 and "no articles to index" in result.stderr


def test_prune_understands_paths_stored_relative_by_older_versions(
    tmp_path, fake_encoder, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path / "docs")
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as ix:
        ix.add_paths(["docs"])
    db = sqlite3.connect(tmp_path / "ix" / STORE_FILE)
    with db:  # as semsearch before absolute paths stored them: as typed
        db.execute("UPDATE articles SET path = 'docs/' || substr(id, 1)")
    db.close()
    (tmp_path / "docs" / "c.txt").unlink()
    with Index.open(tmp_path / "ix", encoder=fake_encoder) as ix:
        assert ix.add_paths([str(tmp_path / "docs")], prune=True).removed == 1


def test_article_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path / "docs")
    write_jsonl(tmp_path / "docs" / "r.jsonl", [{"id": "r", "text": "Row."}])
    paths = {a.id: a.path for a in loaded("./docs//")}
    assert paths["a.txt"] == os.path.join(tmp_path, "docs", "a.txt")
    assert paths["r"] == os.path.join(tmp_path, "docs", "r.jsonl") + ":1"


def test_a_quote_left_open_skips_its_row_and_the_rows_after_it_are_read_again(tmp_path):
    (tmp_path / "q.csv").write_text(
        'id,text,views\nr1,First.,1\nr2,"Unclosed, quote.,2\nr3,Swans.,3\nr4,"Quoted, fine.",4\n'
        'r5,"Two\nlines, closed.",5\n'
    )
    results = loaded(tmp_path / "q.csv")
    assert [getattr(r, "id", None) for r in results] == ["r1", None, "r3", "r4", "r5"]
    assert (
        results[1].line == 3
        and "a quote opened on this line runs on to line 5" in results[1].reason
    )
    assert results[4].text == "Two\nlines, closed."


def test_a_raw_control_character_in_a_jsonl_string_keeps_the_row(tmp_path):
    (tmp_path / "r.jsonl").write_bytes(b'{"id": "c", "text": "bell\x07 and\ttab"}\n')
    (article,) = loaded(tmp_path / "r.jsonl")
    assert article.text == "bell and\ttab"


def test_a_text_file_that_is_not_utf8_names_the_byte(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("Café crème".encode("latin-1"))
    (skipped,) = loaded(tmp_path / "latin1.txt")
    assert "not valid UTF-8 (byte 0xE9 at offset 3)" in skipped.reason


def test_strict_counts_duplicates_before_writing_and_reports_json(tmp_path):
    rows = [{"id": "a", "text": "First."}, {"id": "a", "text": "Again."}, {"text": ""}]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    result = run("index", str(path), "--index", str(tmp_path / "ix"), "--strict", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["error"].startswith("2 input(s) skipped")
    assert sorted(s["line"] for s in report["skipped"]) == [2, 3]
    assert not (tmp_path / "ix").exists()


def test_creation_options_may_repeat_what_the_index_was_made_with(tmp_path):
    (tmp_path / "a.txt").write_text("Flood warnings for the coast.\n")
    index = str(tmp_path / "ix")
    options = ["--backend", "onnx-int8", "--chunk-tokens", "128", "--overlap", "16"]
    assert run("index", str(tmp_path / "a.txt"), "--index", index, *options).exit_code == 0
    result = run("index", str(tmp_path / "a.txt"), "--index", index, *options)
    assert result.exit_code == 0, result.output
    result = run("index", str(tmp_path / "a.txt"), "--index", index, "--backend", "torch")
    assert result.exit_code == 1
    assert "--backend 'torch' (the index has 'onnx-int8')" in result.stderr


def test_prune_of_a_folder_leaves_a_sibling_with_the_same_prefix(tmp_path, fake_encoder):
    make_docs(tmp_path / "arts")
    (tmp_path / "arts2").mkdir()
    (tmp_path / "arts2" / "x.txt").write_text("Article x about rivers.\n")
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as ix:
        ix.add_paths([tmp_path / "arts2", tmp_path / "arts"])
        (tmp_path / "arts" / "a.txt").unlink()
        result = ix.add_paths([tmp_path / "arts"], prune=True)
        assert result.removed == 1  # a.txt, and not arts2/x.txt, whose path shares the prefix
        assert ix.get("x.txt") is not None and ix.get("a.txt") is None


def test_the_same_folder_through_another_path_embeds_nothing(tmp_path, fake_encoder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path / "docs")
    (tmp_path / "sub").mkdir()
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as ix:
        ix.add_paths(["docs"])
        result = ix.add_paths(["./sub/../docs/"])
    assert (result.unchanged, result.updated, result.chunks_embedded) == (3, 0, 0)


def test_load_command_names_a_repeated_id(tmp_path):
    rows = [{"id": "a", "text": "First."}, {"id": "a", "text": "Again."}]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    result = run("load", str(path), "--json")
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert [a["text"] for a in report["articles"]] == ["First."]
    assert (
        report["skipped"][0]["line"] == 2 and "duplicate id 'a'" in report["skipped"][0]["reason"]
    )
