"""Loading files and folders into articles: formats, ids, folders, bad input, stdin."""

from __future__ import annotations

import io
import json
import os
import sys

import pytest

from semsearch import Article, BadInputError, FieldMap, Skipped, load_paths
from tests.conftest import SAMPLE_ARTICLES

ARTICLE_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Harbour bridge wins engineering award | The Coast Gazette</title>
  <meta name="author" content="Ines Adeyemi">
  <meta property="og:title" content="Harbour bridge wins engineering award">
  <meta property="og:site_name" content="The Coast Gazette">
  <meta property="article:published_time" content="2024-03-05T09:30:00+01:00">
  <link rel="canonical" href="https://example.com/gazette/2024/03/bridge-award">
</head>
<body>
  <nav class="main-nav"><ul>
    <li><a href="/">Home</a></li><li><a href="/sport/">Sport</a></li>
    <li><a href="/subscribe/">Subscribe to our weekly newsletter</a></li>
  </ul></nav>
  <main><article>
    <h1>Harbour bridge wins engineering award</h1>
    <p>The new harbour bridge has won the national engineering prize for its
    cable-stayed design, the institute of civil engineers announced on Tuesday.</p>
    <p>Judges praised the slender deck, which was lifted into place in sections
    by floating cranes over a single summer without closing the shipping channel.</p>
    <p>The city council said the bridge carries twelve thousand cyclists and
    pedestrians a day, three times the number forecast when it was approved.</p>
  </article>
  <section class="related-articles"><h2>Related articles</h2><ul>
    <li><a href="/a">Ferry timetable changes announced for spring season</a></li>
    <li><a href="/b">Lighthouse keeper museum opens to visitors</a></li>
  </ul></section>
  <section id="comments" class="comments"><h2>Comments</h2>
    <div class="comment"><p>Quentin77: Marvellous structure, I cross it every morning.</p></div>
    <div class="comment"><p>Rosalind: Shame about the toll booths though.</p></div>
  </section></main>
  <footer><p>Copyright The Coast Gazette. All rights reserved.</p></footer>
</body>
</html>
"""


def load(*paths, fields=None):
    return list(load_paths([str(p) for p in paths], fields))


def load_one(path, fields=None):
    (result,) = load(path, fields=fields)
    assert isinstance(result, Article), result
    return result


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


# Formats


def test_txt_headline_and_blank_line_becomes_title(tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("Ferry strike ends\n\nCrews returned to work on Monday.\nTimetables resume.\n")
    article = load_one(path)
    assert article.title == "Ferry strike ends"
    assert article.text == "Crews returned to work on Monday.\nTimetables resume."
    assert article.id == "note.txt"
    assert article.path == str(path)


def test_txt_without_headline_keeps_text_and_uses_file_stem(tmp_path):
    path = tmp_path / "ferry-strike.txt"
    path.write_text("Crews returned to work on Monday.\nTimetables resume on Tuesday.\n")
    article = load_one(path)
    assert article.title == "ferry-strike"
    assert "Crews returned to work on Monday." in article.text
    assert "Timetables resume on Tuesday." in article.text


def test_markdown_front_matter_fills_the_fields(tmp_path):
    path = tmp_path / "rates.md"
    path.write_text(
        "---\ntitle: Central bank holds rates\ndate: 2024-05-02\n"
        "url: https://example.com/rates\nsource: Meridian Wire\nauthor: Hana Okafor\n"
        "tags: [economy, rates]\nregion: Europe\n---\n\nThe bank held rates at 4%.\n"
    )
    article = load_one(path)
    assert article.title == "Central bank holds rates"
    assert article.date == "2024-05-02"
    assert (article.url, article.source) == ("https://example.com/rates", "Meridian Wire")
    assert article.author == "Hana Okafor"
    assert article.tags == ("economy", "rates")
    assert article.metadata == {"region": "Europe"}
    assert article.text == "The bank held rates at 4%."


def test_markdown_without_front_matter_takes_title_from_first_heading(tmp_path):
    path = tmp_path / "walk.md"
    path.write_text("Intro line before.\n\n# Daily walks cut risk ##\n\nA study found...\n")
    article = load_one(path)
    assert article.title == "Daily walks cut risk"
    assert article.date is None and article.tags == ()
    assert "A study found..." in article.text


def test_markdown_without_heading_uses_file_stem(tmp_path):
    path = tmp_path / "plain-notes.md"
    path.write_text("Just a paragraph, no heading.\n")
    assert load_one(path).title == "plain-notes"


def test_html_keeps_main_text_and_drops_boilerplate(tmp_path):
    path = tmp_path / "bridge.html"
    path.write_text(ARTICLE_PAGE)
    article = load_one(path)
    assert "cable-stayed design" in article.text
    assert "twelve thousand cyclists" in article.text
    for boilerplate in ("newsletter", "Ferry timetable", "Lighthouse", "Quentin77", "toll booths"):
        assert boilerplate not in article.text
    assert "Copyright" not in article.text


def test_html_extracts_title_author_date_and_url(tmp_path):
    path = tmp_path / "bridge.htm"
    path.write_text(ARTICLE_PAGE)
    article = load_one(path)
    assert article.title == "Harbour bridge wins engineering award"
    assert not article.text.startswith(article.title)  # the headline is not repeated
    assert article.author == "Ines Adeyemi"
    assert article.date == "2024-03-05"
    assert article.url == "https://example.com/gazette/2024/03/bridge-award"
    assert article.source == "The Coast Gazette"


def test_html_without_main_text_is_skipped(tmp_path):
    path = tmp_path / "empty.html"
    path.write_text("<html><head><title>Nothing</title></head><body><nav></nav></body></html>")
    (skipped,) = load(path)
    assert isinstance(skipped, Skipped)
    assert "no main text" in skipped.reason


def test_jsonl_default_fields_and_extra_keys_in_metadata(tmp_path):
    row = {
        "id": "wire-1",
        "title": "Pact signed",
        "text": "Nine states signed.",
        "url": "https://example.com/1",
        "date": "2024-01-02",
        "source": "Wire",
        "author": ["A. One", "B. Two"],
        "tags": ["fishing", "africa"],
        "lang": "en",
        "extra": {"n": 1},
    }
    article = load_one(write_jsonl(tmp_path / "feed.jsonl", [row]))
    assert (article.id, article.title, article.text) == ("wire-1", "Pact signed", row["text"])
    assert (article.url, article.date, article.source) == (row["url"], "2024-01-02", "Wire")
    assert article.author == "A. One, B. Two"
    assert article.tags == ("fishing", "africa")
    assert article.metadata == {"lang": "en", "extra": {"n": 1}}
    assert article.path == f"{tmp_path / 'feed.jsonl'}:1"


def test_jsonl_custom_field_map(tmp_path):
    path = write_jsonl(tmp_path / "feed.jsonl", [{"doc_id": "d7", "body": "Body text.", "id": "x"}])
    fields = FieldMap.from_pairs(["text=body", "id=doc_id"])
    article = load_one(path, fields=fields)
    assert article.id == "d7"
    assert article.text == "Body text."
    # Unmapped keys, including one named like a default field, go to metadata.
    assert article.metadata == {"id": "x"}


def test_jsonl_rows_without_id_get_a_stable_default_id(tmp_path):
    rows = [{"title": "A", "text": "Alpha."}, {"title": "B", "text": "Beta."}]
    path = write_jsonl(tmp_path / "feed.jsonl", rows)
    first, second = load(path), load(path)
    assert [a.id for a in first] == [a.id for a in second]
    assert first[0].id != first[1].id
    assert all(len(a.id) == 16 for a in first)
    # The hash depends on the content, not on the file or the line.
    moved = write_jsonl(tmp_path / "other.jsonl", [{}, rows[1]])
    assert load(moved)[1].id == first[1].id


def test_jsonl_text_with_unicode_line_separators_stays_one_row(tmp_path):
    text = "First line\u2028second\x85third\x1cfourth."
    rows = [{"id": "a", "text": text}, {"id": "b", "text": "B."}]
    path = write_jsonl(tmp_path / "feed.jsonl", rows)
    results = load(path)
    assert [type(r) for r in results] == [Article, Article]
    # One row, its line boundaries normalised to "\n" (the text rule).
    assert results[0].text == "First line\nsecond\nthird\nfourth."
    assert results[1].path.endswith(":2")


def test_csv_default_columns(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text(
        'id,title,text,date,tags,desk\nn1,Rates,"Rates held,\nfor now.",2024-02-01,"a, b",biz\n'
        "n2,Rain,Rain stopped play.,,,\n"
    )
    first, second = load(path)
    assert (first.id, first.title, first.text) == ("n1", "Rates", "Rates held,\nfor now.")
    assert first.date == "2024-02-01" and first.tags == ("a", "b")
    assert first.metadata == {"desk": "biz"}
    assert (second.id, second.date, second.tags, second.metadata) == ("n2", None, (), {})
    assert second.path.endswith(":4")  # the first row spans lines 2 and 3


def test_csv_custom_columns(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("ref,headline,body\nr1,Quake,A small quake shook the town.\n")
    fields = FieldMap.from_pairs(["id=ref", "title=headline", "text=body"])
    article = load_one(path, fields=fields)
    assert (article.id, article.title) == ("r1", "Quake")
    assert article.text == "A small quake shook the town."
    assert article.metadata == {}


# Ids


def test_ids_are_paths_relative_to_the_folder(tmp_path):
    (tmp_path / "docs" / "world" / "asia").mkdir(parents=True)
    (tmp_path / "docs" / "top.txt").write_text("Top level.")
    (tmp_path / "docs" / "world" / "asia" / "talks.md").write_text("# Talks\n\nBody.")
    ids = [a.id for a in load(tmp_path / "docs")]
    assert ids == ["top.txt", "world/asia/talks.md"]
    assert all("\\" not in i for i in ids)


def test_front_matter_id_overrides_the_path(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("---\nid: custom-42\ntitle: T\n---\nBody.\n")
    (article,) = load(tmp_path)
    assert article.id == "custom-42"
    assert article.path == str(tmp_path / "sub" / "a.md")


def test_a_file_passed_directly_gets_its_name_as_id(tmp_path):
    (tmp_path / "deep" / "er").mkdir(parents=True)
    path = tmp_path / "deep" / "er" / "note.md"
    path.write_text("Body.")
    assert load_one(path).id == "note.md"


def test_symlinked_file_pointing_outside_the_folder_keeps_its_link_path(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "outside" / "real.txt").write_text("Linked body.")
    os.symlink(tmp_path / "outside" / "real.txt", tmp_path / "docs" / "link.txt")
    (article,) = load(tmp_path / "docs")
    assert article.id == "link.txt"
    assert article.text == "Linked body."


# Folders


def test_folders_are_walked_recursively_files_before_subfolders(tmp_path):
    for rel in ["b/z.txt", "b/a/y.md", "a.txt", "c/d/e/f.jsonl"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "a.txt").write_text("A.")
    (tmp_path / "b" / "z.txt").write_text("Z.")
    (tmp_path / "b" / "a" / "y.md").write_text("Y.")
    write_jsonl(tmp_path / "c" / "d" / "e" / "f.jsonl", [{"id": "row", "text": "F."}])
    # Sorted, a folder's own files before its subfolders: the same order every time.
    assert [a.id for a in load(tmp_path)] == ["a.txt", "b/z.txt", "b/a/y.md", "row"]


def test_hidden_files_and_folders_are_ignored(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.md").write_text("Hidden folder.")
    (tmp_path / "sub" / ".cache").mkdir(parents=True)
    (tmp_path / "sub" / ".cache" / "x.txt").write_text("Hidden sub folder.")
    (tmp_path / ".draft.md").write_text("Hidden file.")
    (tmp_path / "sub" / "visible.md").write_text("Visible.")
    assert [a.id for a in load(tmp_path)] == ["sub/visible.md"]


def test_unsupported_extensions_in_folders_are_ignored(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    (tmp_path / "README").write_text("No suffix.")
    (tmp_path / "data.json").write_text("{}")
    (tmp_path / "UPPER.TXT").write_text("Suffixes are case-insensitive.")
    (tmp_path / "page.MD").write_text("Markdown.")
    assert [a.id for a in load(tmp_path)] == ["UPPER.TXT", "page.MD"]


def test_unsupported_file_passed_explicitly_is_skipped(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7")
    (skipped,) = load(path)
    assert isinstance(skipped, Skipped)
    assert skipped.path == str(path)
    assert "unsupported file type '.pdf'" in skipped.reason
    assert ".md" in skipped.reason  # lists what is supported


# Bad input


def test_missing_path_raises_before_anything_is_yielded(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Fine.")
    missing = tmp_path / "nope" / "missing.md"
    results = load_paths([good, missing])
    with pytest.raises(BadInputError) as info:
        next(results)
    assert info.value.path == str(missing)
    assert str(missing) in str(info.value)


def test_empty_file_is_skipped(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.md").write_text("  \n\t\n")
    results = load(tmp_path)
    assert [(type(r), r.reason) for r in results] == [(Skipped, "empty file")] * 2


def test_binary_file_is_skipped(tmp_path):
    path = tmp_path / "blob.txt"
    path.write_bytes(b"text then \x00\x01\x02 binary")
    (skipped,) = load(path)
    assert isinstance(skipped, Skipped)
    assert "binary" in skipped.reason


def test_non_utf8_file_is_skipped_with_a_hint(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("Caf\u00e9 cr\u00e8me".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("Fine.")
    skipped, ok = load(tmp_path)
    assert isinstance(skipped, Skipped) and skipped.path == str(path)
    assert "UTF-8" in skipped.reason
    assert isinstance(ok, Article)


def test_utf8_bom_is_removed(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffid,text\nb1,Body.\n".encode())
    assert load_one(path).id == "b1"


def test_broken_symlink_in_a_folder_is_skipped_not_fatal(tmp_path):
    os.symlink(tmp_path / "gone.txt", tmp_path / "dangling.txt")
    (tmp_path / "real.txt").write_text("Still loaded.")
    skipped, article = load(tmp_path)
    assert isinstance(skipped, Skipped)
    assert "cannot read" in skipped.reason
    assert article.text == "Still loaded."


def test_malformed_jsonl_line_is_skipped_and_the_others_load(tmp_path):
    path = tmp_path / "feed.jsonl"
    lines = ['{"id": "a", "text": "A."}', "", '{"id": "b", "text": ', '{"id": "c", "text": "C."}']
    path.write_text("\n".join(lines) + "\n")
    first, bad, last = load(path)
    assert isinstance(bad, Skipped)
    assert bad.line == 3
    assert "invalid JSON" in bad.reason
    assert (first.id, last.id) == ("a", "c")
    assert last.path.endswith(":4")


def test_jsonl_line_that_is_not_an_object_is_skipped(tmp_path):
    path = tmp_path / "feed.jsonl"
    path.write_text('["a", "list"]\n"text"\n{"text": "ok"}\n')
    listed, string, ok = load(path)
    assert (listed.line, string.line) == (1, 2)
    assert "got list" in listed.reason
    assert "got str" in string.reason
    assert isinstance(ok, Article)


def test_jsonl_row_without_text_is_skipped_with_its_line(tmp_path):
    rows = [{"id": "a", "text": "A."}, {"id": "b", "title": "No text"}, {"id": "c", "text": "  "}]
    results = load(write_jsonl(tmp_path / "feed.jsonl", rows))
    assert isinstance(results[0], Article)
    assert [(type(r), r.line) for r in results[1:]] == [(Skipped, 2), (Skipped, 3)]
    assert "'text'" in results[1].reason


def test_csv_without_the_text_column_is_skipped(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("id,headline,body\n1,H,B\n")
    (skipped,) = load(path)
    assert isinstance(skipped, Skipped)
    assert skipped.line == 1
    assert "no 'text' column" in skipped.reason
    assert "columns: id, headline, body" in skipped.reason


def test_csv_row_with_empty_text_is_skipped_with_its_line(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("id,text\n1,One.\n2,\n3,Three.\n")
    results = load(path)
    assert [type(r) for r in results] == [Article, Skipped, Article]
    assert results[1].line == 3


@pytest.mark.parametrize(
    ("front_matter", "expected_line"),
    [("title: [unclosed\ndate: 2024-01-01", 3), ("- just\n- a list", 2)],
)
def test_invalid_yaml_front_matter_is_skipped(tmp_path, front_matter, expected_line):
    path = tmp_path / "bad.md"
    path.write_text(f"---\n{front_matter}\n---\nBody.\n")
    (skipped,) = load(path)
    assert isinstance(skipped, Skipped)
    assert "front matter" in skipped.reason
    assert skipped.line == expected_line


@pytest.mark.parametrize("pair", ["text", "text=", "=body", "body=text", "titel=headline"])
def test_field_map_rejects_bad_pairs(pair):
    with pytest.raises(BadInputError) as info:
        FieldMap.from_pairs([pair])
    assert repr(pair) in str(info.value)


def test_field_map_from_pairs_strips_spaces_and_keeps_defaults():
    fields = FieldMap.from_pairs([" text = body ", "tags=labels"])
    assert fields == FieldMap(text="body", tags="labels")
    assert fields.id == "id"


# Standard input


def test_dash_reads_jsonl_from_stdin(monkeypatch):
    lines = '{"id": "s1", "text": "From stdin."}\nnot json\n{"text": "No id."}\n'
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    first, bad, last = load_paths(["-"])
    assert (first.id, first.text, first.path) == ("s1", "From stdin.", "<stdin>:1")
    assert isinstance(bad, Skipped)
    assert (bad.path, bad.line) == ("<stdin>", 2)
    assert len(last.id) == 16


def test_stdin_uses_the_field_map(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"body": "B.", "doc_id": "x"}\n'))
    fields = FieldMap.from_pairs(["text=body", "id=doc_id"])
    (article,) = load_paths(["-"], fields)
    assert (article.id, article.text) == ("x", "B.")


# The sample corpus


def test_sample_articles_load_without_skips():
    results = load(SAMPLE_ARTICLES)
    skipped = [r for r in results if isinstance(r, Skipped)]
    assert skipped == []
    assert len(results) == 40
    ids = [a.id for a in results]
    assert len(set(ids)) == len(ids)
    assert all(a.title and a.text.strip() for a in results)


def test_sample_ap4_article_has_its_metadata():
    articles = {a.id: a for a in load(SAMPLE_ARTICLES)}
    ap4 = articles["world/nato-ap4-itpp.md"]
    assert ap4.tags == ("nato", "asia-pacific", "security")
    assert ap4.date == "2023-06-23"
    assert ap4.metadata == {"region": "Asia-Pacific"}
    assert "Individually Tailored Partnership Programme" in ap4.text


# Dates are normalised to ISO 8601 text


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2023-06-01", "2023-06-01"),
        ("2023-06", "2023-06"),
        ("2023-06-01T10:00:00Z", "2023-06-01T10:00:00+00:00"),
        ("2023-06-01 10:00:00+0200", "2023-06-01T10:00:00+02:00"),
        ("Tue, 01 Aug 2023 10:00:00 GMT", "2023-08-01T10:00:00+00:00"),
        ("Tue, 01 Aug 2023 10:00:00 -0500", "2023-08-01T10:00:00-05:00"),
        ("2023/8/1", "2023-08-01"),
        ("1 August 2023", "2023-08-01"),
        ("Aug 1, 2023 5pm EST", "2023-08-01T17:00-05:00"),
        ("August 2023", "2023-08"),
        ("25/08/2024", "2024-08-25"),
        ("08/25/2024", "2024-08-25"),
        ("01/01/2024", "2024-01-01"),
        ("2024年8月9日", "2024-08-09"),
        ("9 tháng 8 năm 2024", "2024-08-09"),
    ],
)
def test_jsonl_dates_are_normalised_to_iso(tmp_path, given, stored):
    row = {"id": "d", "text": "Body.", "date": given}
    assert load_one(write_jsonl(tmp_path / "d.jsonl", [row])).date == stored


def test_front_matter_datetime_becomes_isoformat(tmp_path):
    path = tmp_path / "a.md"
    path.write_text("---\ndate: 2023-06-01 10:30:00\n---\nBody text.\n", "utf-8")
    assert load_one(path).date == "2023-06-01T10:30:00"


def test_csv_rfc2822_date_is_converted(tmp_path):
    path = tmp_path / "feed.csv"
    path.write_text('id,text,date\nr1,Body.,"Wed, 02 Aug 2023 08:15:00 +0000"\n', "utf-8")
    assert load_one(path).date == "2023-08-02T08:15:00+00:00"
