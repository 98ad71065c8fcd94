"""Keyword search in every script: words of no-space scripts, Latin letters without a
decomposition, highlights back in the original text, and the migration that adds it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from semsearch import Article, Index
from semsearch.cli import cli
from semsearch.embed import Encoder
from semsearch.keywords import _FOLD, _derive, keyword_text, match_expression
from semsearch.manifest import STORE_FILE
from semsearch.verify import verify
from tests.conftest import make_article

ZH = "研究人员发表了关于海洋塑料污染的新论文。"
JA = "研究者は海洋プラスチック汚染に関する新しい論文を発表した。"
TH = "นักวิจัยเผยแพร่บทความใหม่เกี่ยวกับมลพิษพลาสติกในทะเล"
VI = "Việt Nam và Nhật Bản nâng cấp quan hệ lên đối tác chiến lược toàn diện."
MIXED = "Tokyo 东京2024年的报告: ไฟป่า wildfires near Chiang Mai, Łódź and Tromsø."
EN = "Walruses haul out on the sea ice of the Arctic every summer."
ROWS = {"zh": ZH, "ja": JA, "th": TH, "vi": VI, "mixed": MIXED, "en": EN}


@pytest.fixture(scope="module")
def _multilingual_master(tmp_path_factory: pytest.TempPathFactory, real_encoder: Encoder) -> Path:
    folder = tmp_path_factory.mktemp("scripts") / "index"
    with Index.create(folder, encoder=real_encoder) as index:
        index.add([make_article(i, text) for i, text in ROWS.items()])
    return folder


@pytest.fixture
def multilingual(_multilingual_master: Path, real_encoder: Encoder) -> Iterator[Index]:
    with Index.open(_multilingual_master, encoder=real_encoder) as index:
        yield index


def _found(index: Index, query: str, mode: str = "keyword") -> list[str]:
    return [h.article_id for h in index.search(query, k=10, mode=mode)]


def _highlighted(index: Index, query: str, article_id: str) -> list[str]:
    hit = next(h for h in index.search(query, k=10, mode="keyword") if h.article_id == article_id)
    return [hit.text[s:e] for s, e in hit.highlights]


def test_a_chinese_word_inside_a_sentence_is_found(multilingual):
    assert _found(multilingual, "塑料") == ["zh"]
    assert _found(multilingual, "海洋塑料污染")[0] == "zh"


def test_hybrid_search_counts_the_chinese_word(multilingual):
    # all-MiniLM-L6-v2 is English-trained: its cosine alone ranks a Thai row above
    # the Chinese one for 塑料 (see the README), but the keyword part still counts.
    (zh,) = [h for h in multilingual.search("塑料", k=10) if h.article_id == "zh"]
    assert zh.keyword_score is not None and zh.keyword_score > 0
    assert _found(multilingual, "海洋塑料污染", "hybrid")[0] == "zh"


def test_the_chinese_example_from_the_command_line(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": "zh", "text": ZH}, ensure_ascii=False) + "\n")
    runner = CliRunner()
    folder = str(tmp_path / "ix")
    assert runner.invoke(cli, ["index", str(rows), "--index", folder]).exit_code == 0
    for mode in ("keyword", "hybrid"):
        args = ["query", "塑料", "--mode", mode, "--index", folder, "--json"]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        (hit,) = json.loads(result.stdout)
        assert hit["article_id"] == "zh"
        assert [hit["text"][s:e] for s, e in hit["highlights"]] == ["塑料"]


@pytest.mark.parametrize(
    ("query", "article_id", "words"),
    [
        ("プラスチック", "ja", ["プラスチック"]),
        ("汚染", "ja", ["汚染"]),
        ("研究", "ja", ["研究者"]),  # the start of a longer word
        ("พลาสติก", "th", ["พลาสติก"]),
        ("ทะเล", "th", ["ทะเล"]),
        ("论文", "zh", ["论文"]),
    ],
)
def test_japanese_thai_and_chinese_words_are_found_and_highlighted(
    multilingual, query, article_id, words
):
    assert article_id in _found(multilingual, query)
    assert _highlighted(multilingual, query, article_id) == words


@pytest.mark.parametrize("query", ["đối tác", "doi tac", "ĐỐI TÁC", "Doi Tac chien luoc"])
def test_vietnamese_with_or_without_diacritics(multilingual, query):
    assert _found(multilingual, query) == ["vi"]
    assert _highlighted(multilingual, query, "vi")[:2] == ["đối", "tác"]


@pytest.mark.parametrize(
    ("query", "words"),
    [("报告", ["报告"]), ("ไฟป่า", ["ไฟ", "ป่า"]), ("wildfire", ["wildfires"]), ("lodz", ["Łódź"])],
)
def test_every_script_of_a_mixed_row_is_found(multilingual, query, words):
    assert _found(multilingual, query)[0] == "mixed"
    assert _highlighted(multilingual, query, "mixed") == words


def test_tromso_is_found_with_or_without_its_letter(multilingual):
    assert _found(multilingual, "tromso") == _found(multilingual, "Tromsø") == ["mixed"]


def test_highlights_index_the_original_text_after_astral_characters(fake_index):
    text = "🌊𠀀 潮水带来了海洋塑料污染。"
    fake_index.add([make_article("a", text, title="海洋")])
    (hit,) = fake_index.search("塑料", mode="keyword")
    assert [hit.text[s:e] for s, e in hit.highlights] == ["塑料"]


def test_a_chinese_title_is_searchable(fake_index):
    fake_index.add([make_article("a", "Body in English.", title="塑料污染报告")])
    assert [h.article_id for h in fake_index.search("污染", mode="keyword")] == ["a"]


def test_english_text_and_queries_are_left_alone():
    assert keyword_text(EN) is None
    assert keyword_text("Ménage à trois, café") is None
    assert match_expression("NATO, nato and the Indo-Pacific!") == '"nato" OR "indo" OR "pacific"'


def test_every_folded_letter_matches_its_ascii_spelling():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='unicode61 remove_diacritics 2')")
    for n, (letter, ascii_) in enumerate(_FOLD.items()):
        db.execute("INSERT INTO t (rowid, x) VALUES (?, ?)", (n, keyword_text(f"x{letter}x")))
        found = db.execute("SELECT rowid FROM t WHERE t MATCH ?", (f'"x{ascii_}x"',)).fetchall()
        assert (n,) in found, letter


@given(st.text())
def test_keyword_text_only_adds_spaces_and_spells_letters(text):
    derived = _derive(text)
    if derived is None:
        return
    kept, starts, ends = derived
    assert len(kept) == len(starts) == len(ends)
    for char, start, end in zip(kept, starts, ends, strict=True):
        original = text[start:end]
        assert (char == " " and start == end) or char in _FOLD.get(original, original)


def _revert_to_schema_3(folder: Path) -> None:
    """Make an index look as migration 3 left it: no keyword text, the old FTS table."""
    db = sqlite3.connect(folder / STORE_FILE)
    db.executescript(
        """
        DROP VIEW chunk_text;
        CREATE VIEW chunk_text AS
            SELECT c.id AS id, a.title AS title,
                   substr(a.text, c.start + 1, c."end" - c.start) AS text
            FROM chunks c JOIN articles a ON a.pk = c.article_pk;
        ALTER TABLE chunks DROP COLUMN keyword_text;
        ALTER TABLE articles DROP COLUMN keyword_title;
        DROP TABLE chunks_fts;
        CREATE VIRTUAL TABLE chunks_fts USING fts5(
            title, text, content='chunk_text', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild');
        DELETE FROM schema_migrations WHERE version = 4;
        """
    )
    db.close()


def _raw_keyword_search(folder: Path, query: str) -> list[tuple[int, float, str]]:
    db = sqlite3.connect(folder / STORE_FILE)
    sql = (
        "SELECT rowid, rank, highlight(chunks_fts, 1, '[', ']') FROM chunks_fts"
        " WHERE chunks_fts MATCH ? ORDER BY rank, rowid"
    )
    rows = db.execute(sql, (match_expression(query),)).fetchall()
    db.close()
    return rows


def _fts_segments(folder: Path) -> list[tuple[int, bytes]]:
    db = sqlite3.connect(folder / STORE_FILE)
    rows = db.execute("SELECT id, block FROM chunks_fts_data ORDER BY id").fetchall()
    db.close()
    return rows


def test_an_index_from_before_keyword_text_is_migrated_and_finds_chinese(tmp_path, fake_encoder):
    folder = tmp_path / "old"
    with Index.create(folder, encoder=fake_encoder) as index:
        index.add([make_article("zh", ZH), make_article("en", EN)])
    _revert_to_schema_3(folder)
    assert _raw_keyword_search(folder, "塑料") == []  # what the old index did
    with Index.open(folder, encoder=fake_encoder) as index:
        assert [h.article_id for h in index.search("塑料", mode="keyword")] == ["zh"]
    assert verify(folder).ok


def test_english_keyword_results_and_index_are_unchanged_by_the_migration(sample_index_dir):
    queries = ["NATO Indo-Pacific", "coffee prices", "rate decision", "the ocean's warming"]
    _revert_to_schema_3(sample_index_dir)
    before = [_raw_keyword_search(sample_index_dir, q) for q in queries]
    segments = _fts_segments(sample_index_dir)
    Index.open(sample_index_dir).close()  # migrates
    assert [_raw_keyword_search(sample_index_dir, q) for q in queries] == before
    assert all(before)
    assert _fts_segments(sample_index_dir) == segments  # byte for byte


def test_verify_notices_keyword_text_that_differs_from_the_stored_text(fake_index):
    fake_index.add([make_article("zh", ZH)])
    assert verify(fake_index.path).ok
    db = sqlite3.connect(fake_index.path / STORE_FILE)
    # Change the keyword text and keep FTS5 in step, as a stale derivation would.
    db.executescript(
        """
        INSERT INTO chunks_fts (chunks_fts, rowid, title, text)
            SELECT 'delete', id, title, text FROM chunk_text;
        UPDATE chunks SET keyword_text = '研究人员 发表了关于 海洋塑料污染';
        INSERT INTO chunks_fts (rowid, title, text) SELECT id, title, text FROM chunk_text;
        """
    )
    db.close()
    report = verify(fake_index.path)
    assert not report.ok
    assert "keyword text of 1 chunks and 0 titles differs" in report.problems[0]


def test_verify_notices_a_keyword_index_out_of_step(fake_index):
    fake_index.add([make_article("zh", ZH)])
    db = sqlite3.connect(fake_index.path / STORE_FILE)
    db.execute("UPDATE chunks SET keyword_text = 'something else'")  # FTS5 not told
    db.commit()
    db.close()
    problems = verify(fake_index.path).problems
    assert any("keyword index disagrees" in p for p in problems)


def test_a_single_kanji_finds_the_word_it_begins(fake_encoder, tmp_path):
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.add([Article("ja", "桜の開花が始まりました。", title="桜の開花")])
        (hit,) = index.search("桜", mode="keyword")
        assert hit.article_id == "ja" and hit.text[slice(*hit.highlights[0])].startswith("桜")
