"""Web pages saved as text: the by-line read, the page furniture removed (and recorded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch import Index, load_paths
from semsearch.clean import clean_page, parse_byline
from semsearch.cli import cli
from semsearch.records import Article
from tests.conftest import ROOT, SAMPLE_ARTICLES

PAGES = ROOT / "tests" / "data" / "pages"
COASTAL_BODY_START = "On August 8, the disaster agencies"
COASTAL_BODY_END = "in villages without mobile coverage."


def load_one(path: Path, clean: bool = True) -> Article:
    (article,) = load_paths([path], clean=clean)
    assert isinstance(article, Article), article
    return article


def test_coastal_page_gets_headline_date_source_and_only_the_article():
    article = load_one(PAGES / "coastal.txt")
    assert article.title == "Coastal states agree joint plan for monsoon flood warnings"
    assert (article.date, article.source) == ("2024-08-09", "Tin Tức Khu Vực")
    assert article.text.startswith(COASTAL_BODY_START)
    assert article.text.endswith(COASTAL_BODY_END)
    assert "(Photo: Staff)" in article.text  # a caption inside the article stays
    for furniture in ("Comment (0)", "Same tag", "Grilled River Fish", "Political System"):
        assert furniture not in article.text
        assert any(furniture in line for line in article.removed_lines)
    assert "Harborline.example - Cổng thông tin du lịch Việt Nam" in article.removed_lines


def test_english_page_by_line_gives_author_source_and_date():
    article = load_one(PAGES / "ledger.txt")
    assert article.title == "City council approves new tram line to the harbour"
    assert (article.author, article.source, article.date) == (
        "Jane Doe",
        "The Daily Ledger",
        "2024-03-03",
    )
    assert article.text.startswith("The city council voted on Tuesday")
    assert article.text.endswith("He declined to comment.")  # a short last sentence stays
    for furniture in ("Share this article", "Related articles", "cookie", "Subscribe", "Twitter"):
        assert furniture not in article.text


def test_page_without_a_site_line_takes_its_headline_from_the_first_line():
    article = load_one(PAGES / "no-site.txt")
    assert (article.title, article.date, article.source) == (
        "Storm closes mountain pass for third day",
        "2024-01-12",
        None,
    )
    assert article.text.endswith("by Sunday at the earliest.")
    assert article.removed_lines[:2] == ("Published: 12 January 2024", "Read more")


def test_furniture_tail_without_a_by_line_is_cut_and_the_headline_read_as_usual():
    article = load_one(PAGES / "tail-only.txt")
    assert article.title == "Library extends opening hours during exam season"
    assert article.date is None
    assert article.text.endswith("if enough people use them.")
    assert "Related stories" in article.removed_lines
    assert "Vintage car rally" not in article.text


def test_vietnamese_page_furniture_words_and_weekday_by_line():
    article = load_one(PAGES / "vietnamese.txt")
    assert article.title == "Hà Nội mở rộng mạng lưới xe buýt điện ra ngoại thành"
    assert (article.date, article.source) == ("2024-08-10", "Báo Mẫu Điện Tử")
    assert article.text.endswith("trong giờ cao điểm.")
    for furniture in ("Tin liên quan", "bún chả", "Bình luận", "Chia sẻ"):
        assert furniture not in article.text


def test_german_page_by_line_with_time_gives_author_source_and_date():
    article = load_one(PAGES / "german.txt")
    assert article.title == "Neue Fährverbindung nach Usedom startet im Mai"
    assert (article.author, article.source, article.date) == (
        "Hans Müller",
        "Nordkurier",
        "2024-04-03",
    )
    assert article.text.startswith("Ab dem ersten Mai")
    assert article.text.endswith("einem guten Tag für die Region.")
    for furniture in ("Kommentare (3)", "Teilen", "interessieren", "Radweg", "Cookies", "Politik"):
        assert furniture not in article.text


def test_french_page_published_label_with_time_and_tail():
    article = load_one(PAGES / "french.txt")
    assert article.title == "Le port de Brest inaugure un terminal pour les ferries"
    assert (article.date, article.source) == ("2023-09-05", "Le Courrier du Littoral")
    assert article.text.endswith("pour le mois prochain.")
    assert article.removed_lines == (
        "Le Courrier du Littoral",
        "Publié le 5 septembre 2023 à 08h15",
        "Partager",
        "Facebook",
        "À lire aussi",
        "Les vendanges commencent plus tôt cette année",
        "Un festival de jazz sur la plage",
        "Commentaires (0)",
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Publicado el 5 de septiembre de 2023, 14:30", ("2023-09-05", None, None)),
        (
            "Por Ana Ruiz | El Diario | 5 de septiembre de 2023",
            ("2023-09-05", "El Diario", "Ana Ruiz"),
        ),
        ("Pubblicato il 5 settembre 2023 alle 14:30", ("2023-09-05", None, None)),
        (
            "Di Marco Rossi | La Gazzetta | 05/09/2023 ore 8:15",
            ("2023-09-05", "La Gazzetta", "Marco Rossi"),
        ),
        ("Atualizado em 1 de março de 2024 às 10h30", ("2024-03-01", None, None)),
        (
            "Door Jan de Vries | Het Dagblad | 12 maart 2024 om 10:05",
            ("2024-03-12", "Het Dagblad", "Jan de Vries"),
        ),
        ("Av Eva Berg | Dagbladet | 12.03.2024", ("2024-03-12", "Dagbladet", "Eva Berg")),
        (
            "Przez Jan Kowalski | Gazeta | 12.03.2024 godz. 10:05",
            ("2024-03-12", "Gazeta", "Jan Kowalski"),
        ),
        ("Mittwoch, 3. April 2024", ("2024-04-03", None, None)),
        ("Veröffentlicht am 3. April 2024 um 14.30 Uhr", ("2024-04-03", None, None)),
        ("Mis à jour le 1er septembre 2023", ("2023-09-01", None, None)),
        (
            "By Jane Doe | The Daily Ledger | March 3, 2024, 2:30 pm",
            ("2024-03-03", "The Daily Ledger", "Jane Doe"),
        ),
        ("The Daily Ledger | 03/03/2024 3pm", ("2024-03-03", "The Daily Ledger", None)),
        # "Door", "Von", "Par" also start names: an author only beside a source.
        ("Door County Pulse | 09/08/2024", ("2024-08-09", "Door County Pulse", None)),
        ("Da Nang Today | 09/08/2024", ("2024-08-09", "Da Nang Today", None)),
    ],
)
def test_by_lines_in_other_languages_and_with_times(line, expected):
    byline = parse_byline(line)
    assert byline is not None
    assert (byline.date, byline.source, byline.author) == expected


@pytest.mark.parametrize(
    "marker",
    [
        "Kommentare (3)",
        "Das könnte Sie auch interessieren",
        "Teilen",
        "Newsletter abonnieren",
        "Commentaires (12)",
        "À lire aussi",
        "Partager",
        "Vous aimerez aussi",
        "Comentarios (2)",
        "Te puede interesar",
        "Compartir",
        "Noticias relacionadas",
        "Commenti (4)",
        "Leggi anche",
        "Condividi",
        "Potrebbe interessarti",
        "Comentários (1)",
        "Leia também",
        "Compartilhe",
        "Você também pode gostar",
        "Reacties (5)",
        "Lees ook",
        "Delen",
        "Dit vind je misschien ook leuk",
        "Nieuwsbrief",
        "Nous utilisons des cookies pour améliorer votre expérience. Accepter",
    ],
)
def test_tail_markers_in_other_languages(marker):
    text = f"Harbour reopens\n\nThe harbour reopened today after repairs.\n\n{marker}\nMenu\n"
    page = clean_page(text)
    assert page is not None
    assert page.text.endswith("after repairs.") and page.removed == (marker, "Menu")


def test_date_order_reaches_the_by_line():
    (dmy,) = load_paths([PAGES / "us-dates.txt"])
    (mdy,) = load_paths([PAGES / "us-dates.txt"], date_order="MDY")
    (given_dmy,) = load_paths([PAGES / "us-dates.txt"], date_order="DMY")
    assert isinstance(dmy, Article) and isinstance(mdy, Article) and isinstance(given_dmy, Article)
    assert (dmy.date, mdy.date, given_dmy.date) == ("2024-08-09", "2024-09-08", "2024-08-09")
    assert (
        parse_byline("By Jane Doe | 03/15/2024", "DMY").date == "2024-03-15"
    )  # impossible: swapped
    assert parse_byline("By Jane Doe | 15/03/2024", "MDY").date == "2024-03-15"


def test_cli_load_takes_date_order():
    page = str(PAGES / "us-dates.txt")
    result = CliRunner().invoke(cli, ["load", page, "--date-order", "MDY", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["articles"][0]["date"] == "2024-09-08"
    result = CliRunner().invoke(cli, ["load", page, "--json"])
    assert json.loads(result.stdout)["articles"][0]["date"] == "2024-08-09"


def test_a_report_with_a_by_line_keeps_its_closing_list():
    article = load_one(PAGES / "report.txt")
    assert (article.title, article.date, article.source) == (
        "Quarterly report",
        "2024-03-31",
        "Sales Team",
    )
    assert article.text.endswith("Next steps\nHire two engineers\nOpen Lisbon office")
    assert article.removed_lines == ("Sales Team | 2024-03-31",)


@pytest.mark.parametrize(
    "ending",
    [
        "Next steps\nHire two engineers\nOpen Lisbon office",  # a list's last items
        "and the tide went out\nand the gulls were quiet",  # a poem's last lines
        "Sources\nCity budget office\nHarbour authority",  # a label that is not a marker
        "Source\nHarbour authority",  # "Source" goes only right before a marker
    ],
)
def test_short_lines_at_the_end_stay_unless_a_marker_follows(ending):
    head = "Harbour reopens\n\nBy Ana Ruiz | 2024-05-01\n\nThe harbour reopened today.\n\n"
    page = clean_page(head + ending + "\n")
    assert page is not None and page.text.endswith(ending)
    assert clean_page("Harbour reopens\n\nThe harbour reopened today.\n\n" + ending) is None
    page = clean_page(head + ending + "\n\nShare\nRelated stories\nFerry fares rise\n")
    assert page is not None and page.text.endswith(ending)
    assert page.removed[1:] == ("Share", "Related stories", "Ferry fares rise")


def test_clean_false_reads_the_page_as_it_is():
    article = load_one(PAGES / "coastal.txt", clean=False)
    assert article.title == "Harborline.example - Cổng thông tin du lịch Việt Nam"
    assert "Grilled River Fish" in article.text
    assert article.removed_lines == ()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("By Jane Doe | The Daily Ledger | March 3, 2024", ("2024-03-03", "The Daily Ledger")),
        ("Tin Tức Khu VựcTin Tức Khu Vực09/08/2024", ("2024-08-09", "Tin Tức Khu Vực")),
        ("The Daily Ledger - Mar 3rd, 2024", ("2024-03-03", "The Daily Ledger")),
        ("VnExpress Thứ bảy, 10/8/2024, 08:00 (GMT+7)", ("2024-08-10", "VnExpress")),
        ("Staff writer · 2024-03-03", ("2024-03-03", "Staff writer")),
        ("By Jane Doe | 03/15/2024", ("2024-03-15", None)),  # 15 cannot be a month
        ("Monday, 3 March 2024", ("2024-03-03", None)),
    ],
)
def test_by_lines(line, expected):
    byline = parse_byline(line)
    assert byline is not None
    assert (byline.date, byline.source) == expected


@pytest.mark.parametrize(
    "line",
    [
        "The council voted on 3 March 2024",  # a date inside words: a sentence
        "On 3 March 2024, the council voted.",
        "Sales rose 5% in 2024",
        "By Jane Doe",  # no date
        "Flights resume 31/02/2024",  # no such day
    ],
)
def test_lines_that_are_not_by_lines(line):
    assert parse_byline(line) is None


@pytest.mark.parametrize(
    "text",
    [
        "Council votes on budget\n\nOn 3 March 2024 the council voted on the budget.\n",
        "Council votes\n\nThe council voted on 3 March 2024\n\nIt was close.\n",
        "Harbour reopens\n\nThe harbour reopened today after repairs.\n\nReporting by Jane Doe\n",
        "Harbour reopens\n\nThe harbour reopened today.\n\nMore Stories Soon, said the mayor\n",
        "One line only, no headline and no furniture at all",
        "By Jane Doe | March 3, 2024\n\nA by-line needs a headline above it.\n",
    ],
)
def test_plain_text_without_furniture_is_not_a_page(text):
    assert clean_page(text) is None


def test_a_real_paragraph_after_furniture_markers_mid_page_is_kept():
    text = (
        "Dam removal\n\nBy Ana Ruiz | 2024-05-01\n\nThe dam came down in May.\n\nRead more\n\n"
        "Salmon were seen upstream within weeks, biologists said on Friday.\n\nShare\nFacebook\n"
    )
    page = clean_page(text)
    assert page is not None
    assert page.text.endswith("biologists said on Friday.")
    assert "Read more" in page.text  # inside the article: kept, not guessed at
    assert page.removed == ("By Ana Ruiz | 2024-05-01", "Share", "Facebook")


def _sample_files() -> list[Path]:
    data = [p for p in (ROOT / "tests" / "data").rglob("*") if PAGES not in p.parents]
    return sorted(p for p in [*SAMPLE_ARTICLES.rglob("*"), *data] if p.is_file())


@pytest.mark.parametrize("path", _sample_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_sample_file_loads_as_before(path):
    cleaned = list(load_paths([path]))
    plain = list(load_paths([path], clean=False))
    if path.suffix == ".html":
        # Cleaning only drops section labels above the repeated headline.
        for a, b in zip(cleaned, plain, strict=True):
            assert isinstance(a, Article) and isinstance(b, Article)
            assert b.text.endswith(a.text) and a.title == b.title and a.date == b.date
        return
    assert cleaned == plain
    assert all(not getattr(a, "removed_lines", ()) for a in cleaned)


def test_every_sample_article_saved_as_text_loads_as_before(tmp_path):
    rows = [
        a
        for a in load_paths([SAMPLE_ARTICLES, ROOT / "tests" / "data" / "tiny-beir"])
        if isinstance(a, Article)
    ]
    assert len(rows) > 80
    for i, article in enumerate(rows):
        (tmp_path / f"{i}-titled.txt").write_text(f"{article.title}\n\n{article.text}\n")
        (tmp_path / f"{i}-bare.txt").write_text(article.text)
    cleaned = list(load_paths([tmp_path]))
    assert cleaned == list(load_paths([tmp_path], clean=False))
    assert all(isinstance(a, Article) and not a.removed_lines for a in cleaned)


def test_html_section_label_above_the_headline_is_removed():
    web = SAMPLE_ARTICLES / "web"
    article = load_one(web / "password-manager-breach.html")
    assert article.removed_lines == ("Cyber security",)
    assert article.text.startswith("A company that sells a popular password manager")
    rugby = load_one(web / "rugby-cup-final-report.html")
    assert rugby.removed_lines == ("Rugby union · Cup final",)
    assert rugby.text.startswith("Harbourside 27-24 Redmoor Rovers")
    assert load_one(web / "password-manager-breach.html", clean=False).text.startswith(
        "Cyber security\n"
    )


def test_removed_lines_are_not_part_of_the_article_hash(fake_index):
    first = fake_index.add(load_paths([PAGES]))
    assert first.lines_removed == sum(len(a.removed_lines) for a in load_paths([PAGES]))
    assert first.lines_removed > 40
    again = fake_index.add(load_paths([PAGES]))
    files = len(list(PAGES.glob("*.txt")))
    assert (again.unchanged, again.added, again.updated) == (files, 0, 0)
    stored = fake_index.get("coastal.txt")
    assert stored is not None and stored.text.endswith(COASTAL_BODY_END)


def test_furniture_headlines_are_not_found_and_the_article_is(sample_index):
    sample_index.add_paths([PAGES])
    hits = sample_index.search("grilled lemongrass", mode="keyword")  # "river" is in it
    assert "coastal.txt" not in [h.article_id for h in hits]
    hits = sample_index.search("grilled river fish lemongrass", k=3)
    assert "coastal.txt" not in [h.article_id for h in hits]
    hits = sample_index.search("monsoon flood warnings across borders", k=1)
    assert hits[0].article_id == "coastal.txt"


def test_without_cleaning_the_furniture_makes_the_page_a_hit(tmp_path, real_encoder):
    with Index.create(tmp_path / "ix", encoder=real_encoder) as index:
        index.add_paths([PAGES / "coastal.txt"], clean=False)
        hits = index.search("grilled lemongrass", mode="keyword")
    assert [h.article_id for h in hits] == ["coastal.txt"]


def test_cli_load_shows_what_would_be_removed():
    result = CliRunner().invoke(cli, ["load", str(PAGES / "coastal.txt")])
    assert result.exit_code == 0, result.output
    assert "Coastal states agree joint plan" in result.stdout
    assert "Tin Tức Khu Vực · 2024-08-09" in result.stdout
    assert "      - Same tag" in result.stdout
    result = CliRunner().invoke(cli, ["load", str(PAGES), "--json"])
    payload = json.loads(result.stdout)
    coastal = next(a for a in payload["articles"] if a["id"] == "coastal.txt")
    assert "Comment (0)" in coastal["removed_lines"] and payload["skipped"] == []


def test_cli_index_reports_lines_removed_and_no_clean_keeps_them(tmp_path):
    page = str(PAGES / "coastal.txt")
    result = CliRunner().invoke(cli, ["index", page, "--index", str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lines_removed"] == 21
    result = CliRunner().invoke(
        cli, ["index", page, "--index", str(tmp_path / "b"), "--json", "--no-clean"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lines_removed"] == 0
