"""`semsearch serve`: the JSON API, its errors and limits, the write token, the page.

Every test serves a private copy of the sample index with the real model,
through Starlette's ASGI test client (the lifespan runs: the index opens and
the model loads as in a real server). The real-browser test is test_browser.py.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from semsearch import Index
from semsearch.cli import cli
from semsearch.lock import WriterLock
from semsearch.serve import ServeSettings, create_app

pytestmark = pytest.mark.model

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AUTH_WRONG = {"Authorization": f"Bearer {TOKEN[:-1]}X"}
JSONL = {"Content-Type": "application/x-ndjson"}
NATO = "world/nato-ap4-itpp.md"


@contextmanager
def serving(folder: Path, **options: Any) -> Iterator[TestClient]:
    """A test client of a started server (index open, model loaded)."""
    app = create_app(ServeSettings(index=folder, **options))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert app.state.semsearch.wait(120), "the index did not open in 120 s"
        yield client


@pytest.fixture
def client(sample_index_dir: Path) -> Iterator[TestClient]:
    with serving(sample_index_dir) as c:
        yield c


@pytest.fixture
def writable(sample_index_dir: Path) -> Iterator[TestClient]:
    with serving(sample_index_dir, token=TOKEN) as c:
        yield c


def error_of(response: Any, status: int) -> str:
    """The error code of a JSON error response, checking its status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail"} and isinstance(body["detail"], str), body
    assert "Traceback" not in response.text
    return str(body["error"])


# -- health and info ----------------------------------------------------------------


def test_health_ready_and_info(client: TestClient, sample_index_dir: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["generation"] >= 1
    info = client.get("/info").json()
    with Index.open(sample_index_dir) as index:
        assert info["articles"] == len(index) and info["generation"] == index.generation
    assert info["server"]["read_only"] is True and info["server"]["max_k"] == 100


def test_an_index_that_cannot_be_opened_is_said_once_and_not_retried(tmp_path: Path) -> None:
    with serving(tmp_path / "missing") as c:
        response = c.get("/readyz")
        assert error_of(response, 503) == "open_failed" and "missing" in response.json()["detail"]
        assert "Retry-After" not in response.headers  # waiting will not help
        assert error_of(c.get("/search", params={"q": "x"}), 503) == "open_failed"
        assert c.get("/healthz").status_code == 200


def test_still_loading_is_503_with_retry_after(sample_index_dir: Path) -> None:
    app = create_app(ServeSettings(index=sample_index_dir))
    # No lifespan: the index is never opened, as in the first moments of a real server.
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/readyz")
    assert error_of(response, 503) == "not_ready" and response.headers["Retry-After"] == "1"


def test_an_empty_index_is_ready_only_with_its_model_loaded(
    tmp_path: Path, real_encoder: Any
) -> None:
    with Index.create(tmp_path / "empty", encoder=real_encoder):
        pass
    with serving(tmp_path / "empty") as c:
        assert c.get("/readyz").status_code == 200
        assert c.app.state.semsearch.reader._encoder is not None  # type: ignore[attr-defined]
        assert c.get("/search", params={"q": "anything"}).json()["hits"] == []


def test_head_answers_for_pages_and_probes(client: TestClient) -> None:
    for path in ("/", "/healthz", "/readyz", "/style.css", "/article?id=world/nato-ap4-itpp.md"):
        response = client.head(path)
        assert response.status_code == 200 and response.content == b"", path


# -- search ----------------------------------------------------------------------------


def test_get_search_returns_exactly_the_hits_of_the_library(
    client: TestClient, sample_index_dir: Path
) -> None:
    body = client.get("/search", params={"q": "NATO Indo-Pacific", "k": 5}).json()
    with Index.open(sample_index_dir) as index:
        expected = [hit.to_dict() for hit in index.search("NATO Indo-Pacific", k=5)]
        generation = index.generation
    assert body["hits"] == expected and body["hits"][0]["article_id"] == NATO
    assert body["generation"] == generation and body["took_ms"] > 0
    assert (body["query"], body["mode"], body["k"], body["offset"]) == (
        "NATO Indo-Pacific",
        "hybrid",
        5,
        0,
    )


def test_get_search_filters_modes_and_offset(client: TestClient) -> None:
    def ids(**params: Any) -> list[str]:
        response = client.get("/search", params={"q": "NATO Indo-Pacific", **params})
        assert response.status_code == 200, response.text
        return [h["article_id"] for h in response.json()["hits"]]

    assert ids(source="Meridian Wire", k=20)[0] == NATO
    assert NATO not in ids(source="The Daily Ledger", k=20)
    assert NATO in ids(tag=["nato", "nothing"]) and NATO not in ids(tag="sport", k=20)
    assert NATO not in ids(since="2024-01-01", k=50) and ids(until="2023-06-23")[0] == NATO
    assert ids(where="region=Asia-Pacific") == [NATO]
    assert ids(filter=json.dumps({"tags": {"in": ["nato"]}}))[0] == NATO
    assert ids(mode="keyword")[0] == NATO and ids(mode="semantic")[0] == NATO
    assert ids(k=3, offset=1) == ids(k=4)[1:]
    chunks = client.get("/search", params={"q": "NATO", "group": "false", "k": 20}).json()
    assert len({h["article_id"] for h in chunks["hits"]}) < len(chunks["hits"])


@pytest.mark.parametrize(
    "params",
    [
        {"q": "x", "k": 0},
        {"q": "x", "k": "ten"},
        {"q": "x", "k": 101},
        {"q": "x", "k": 60, "offset": 50},
        {"q": "x", "offset": -1},
        {"q": "x", "mode": "fuzzy"},
        {"q": "   "},
        {"q": "x" * 1001},
        {},
        {"q": "x", "where": "no operator"},
        {"q": "x", "filter": "{not json"},
        {"q": "x", "filter": json.dumps({"date": {"gte": "not a date"}})},
        {"q": "x", "since": "yesterday-ish"},
        {"q": "x", "group": "perhaps"},
    ],
)
def test_bad_search_parameters_are_400(client: TestClient, params: dict[str, Any]) -> None:
    assert error_of(client.get("/search", params=params), 400) == "bad_request"


def test_a_bad_date_names_its_parameter(client: TestClient) -> None:
    response = client.get("/search", params={"q": "x", "since": "yesterday"})
    assert error_of(response, 400) == "bad_request"
    assert response.json()["detail"].startswith("since: 'yesterday' is not an ISO 8601 date")


def test_post_search_single_and_batch(client: TestClient, sample_index_dir: Path) -> None:
    spec = {"source": "Meridian Wire", "date": {"gte": "2023-01-01"}}
    one = client.post("/search", json={"q": "NATO Indo-Pacific", "k": 3, "filter": spec}).json()
    assert one["hits"][0]["article_id"] == NATO and len(one["hits"]) <= 3
    batch = client.post(
        "/search", json={"q": ["coffee prices", "NATO"], "k": 2, "mode": "semantic"}
    )
    body = batch.json()
    with Index.open(sample_index_dir) as index:
        expected = index.search_batch(["coffee prices", "NATO"], k=2, mode="semantic")
    assert [r["query"] for r in body["results"]] == ["coffee prices", "NATO"]
    assert [r["hits"] for r in body["results"]] == [[h.to_dict() for h in hs] for hs in expected]
    assert body["generation"] == one["generation"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"q": "x", "k": "many"}, 422),
        ({"q": 3}, 422),
        ({"q": "x", "colour": "red"}, 422),
        ({"k": 3}, 422),
        ({"q": "x", "mode": "fuzzy"}, 400),  # a bad value, as in GET: not a malformed body
        ({"q": "x", "keyword_syntax": "regex"}, 400),
        ({"q": "x", "k": 0}, 400),
        ({"q": ["x"] * 33}, 400),
        ({"q": []}, 400),
        ({"q": "x", "filter": {"date": {"around": "2024"}}}, 400),
        ({"q": "x", "hybrid_weight": 2}, 400),
    ],
)
def test_bad_post_search_bodies(client: TestClient, body: dict[str, Any], status: int) -> None:
    error_of(client.post("/search", json=body), status)


def test_malformed_json_body_is_422(client: TestClient) -> None:
    as_json = {"Content-Type": "application/json"}
    response = client.post("/search", content=b'{"q": ', headers=as_json)
    assert error_of(response, 422) == "malformed"
    assert response.json()["detail"].startswith("the body is not JSON: ")
    assert "at character 6" in response.json()["detail"]
    not_utf8 = client.post("/search", content=b'{"q": "\xff\xfe"}', headers=as_json)
    assert error_of(not_utf8, 422) == "malformed"
    listed = client.post("/search", json=["NATO"])
    assert error_of(listed, 422) == "malformed" and "JSON object" in listed.json()["detail"]
    wrong_type = client.post("/search", json={"q": 5})
    assert wrong_type.json()["detail"] == "q: must be a query (a string) or a list of queries"
    text = client.post("/search", content=b"NATO", headers={"Content-Type": "text/plain"})
    assert error_of(text, 415) == "unsupported_media_type" and "text/plain" in text.text


def test_a_new_generation_is_served_without_a_restart(
    client: TestClient, sample_index_dir: Path
) -> None:
    before = client.get("/search", params={"q": "zeppelin mooring mast"}).json()
    with Index.open(sample_index_dir) as index:
        index.add([_article("zep", "A zeppelin mooring mast rises over the harbour.")])
        generation = index.generation
    assert client.get("/readyz").json()["generation"] == generation  # before any search
    after = client.get("/search", params={"q": "zeppelin mooring mast"}).json()
    assert after["generation"] == generation > before["generation"]
    assert after["hits"][0]["article_id"] == "zep"


# -- articles and writes --------------------------------------------------------------


def test_get_article_by_an_id_with_slashes(client: TestClient) -> None:
    article = client.get(f"/articles/{NATO}").json()
    assert article["id"] == NATO and article["source"] == "Meridian Wire"
    assert error_of(client.get("/articles/world/nothing.md"), 404) == "not_found"


def test_writes_need_a_token(client: TestClient, writable: TestClient) -> None:
    body = _jsonl({"id": "w1", "text": "words"})
    assert error_of(client.post("/articles", content=body, headers=JSONL), 403) == "read_only"
    assert error_of(client.delete(f"/articles/{NATO}"), 403) == "read_only"
    for auth in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Basic {TOKEN}"}):
        response = writable.post("/articles", content=body, headers={**JSONL, **auth})
        assert error_of(response, 401) == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer TOKEN" in response.json()["detail"]
    wrong = writable.post("/articles", content=body, headers={**JSONL, **AUTH_WRONG})
    assert error_of(wrong, 401) == "unauthorized" and "wrong token" in wrong.json()["detail"]
    assert wrong.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert error_of(writable.delete(f"/articles/{NATO}"), 401) == "unauthorized"
    assert writable.get(f"/articles/{NATO}").status_code == 200


def test_post_articles_jsonl_adds_and_skips_bad_rows(writable: TestClient) -> None:
    rows = (
        _jsonl(
            {
                "id": "new-1",
                "title": "Glacier retreat",
                "text": "The glacier retreated 40 metres.",
                "tags": ["ice"],
                "date": "2024-05-01",
                "desk": "science",
            },
            {"id": "new-2"},
        )
        + b"not json\n"
    )
    generation = writable.get("/readyz").json()["generation"]
    response = writable.post("/articles", content=rows, headers={**JSONL, **AUTH})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["added"] == 1 and result["generation"] > generation
    assert [(s["line"], s["path"]) for s in result["skipped"]] == [(2, "body"), (3, "body")]
    stored = writable.get("/articles/new-1").json()
    assert stored["metadata"] == {"desk": "science"} and stored["tags"] == ["ice"]
    hits = writable.get("/search", params={"q": "glacier retreat"}).json()
    assert hits["hits"][0]["article_id"] == "new-1" and hits["generation"] == result["generation"]


def test_post_articles_json_array_replaces_and_keeps_unchanged(writable: TestClient) -> None:
    original = writable.get(f"/articles/{NATO}").json()
    changed = {**original, "title": "Changed title"}
    rows = [changed, {"id": "solo", "text": "A single new article."}]
    result = writable.post("/articles", json=rows, headers=AUTH).json()
    assert (result["added"], result["updated"]) == (1, 1)
    again = writable.post("/articles", json=rows, headers=AUTH).json()
    assert again["unchanged"] == 2 and again["chunks_embedded"] == 0
    assert writable.get(f"/articles/{NATO}").json()["title"] == "Changed title"


def test_post_articles_errors(writable: TestClient) -> None:
    bad_row = _jsonl({"id": "s1", "text": "fine"}, {"id": "s2"})
    strict = writable.post("/articles?strict=true", content=bad_row, headers={**JSONL, **AUTH})
    assert error_of(strict, 422) == "malformed" and strict.json()["skipped"][0]["line"] == 2
    assert writable.get("/articles/s1").status_code == 404  # nothing written
    nothing = writable.post("/articles", json=[{"id": "x"}], headers=AUTH)
    assert error_of(nothing, 422) == "malformed" and "no text" in nothing.json()["detail"]
    broken = writable.post(
        "/articles", content=b"[{", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert error_of(broken, 422) == "malformed"
    form = writable.post("/articles", content=b"a=b", headers={**AUTH, "Content-Type": "text/csv"})
    assert error_of(form, 415) == "unsupported_media_type"
    order = writable.post("/articles?date_order=YMD", content=bad_row, headers={**JSONL, **AUTH})
    assert error_of(order, 400) == "bad_request"


def test_delete_article(writable: TestClient) -> None:
    response = writable.delete(f"/articles/{NATO}", headers=AUTH)
    assert response.status_code == 200 and response.json()["removed"] == [NATO]
    assert error_of(writable.get(f"/articles/{NATO}"), 404) == "not_found"
    assert error_of(writable.delete(f"/articles/{NATO}", headers=AUTH), 404) == "not_found"
    hits = writable.get("/search", params={"q": "NATO Indo-Pacific"}).json()["hits"]
    assert NATO not in [h["article_id"] for h in hits]


def test_a_write_while_another_process_writes_is_503_retry_after(
    writable: TestClient, sample_index_dir: Path
) -> None:
    with WriterLock(sample_index_dir):
        response = writable.post("/articles", json={"id": "l1", "text": "x y"}, headers=AUTH)
        assert error_of(response, 503) == "locked" and response.headers["Retry-After"] == "5"
        # Who holds the lock is for the server's log; nor does the CLI's advice apply.
        assert str(os.getpid()) not in response.text and "--wait" not in response.text
        assert error_of(writable.delete(f"/articles/{NATO}", headers=AUTH), 503) == "locked"
    assert (
        writable.post("/articles", json={"id": "l1", "text": "x y"}, headers=AUTH).json()["added"]
        == 1
    )


def test_bodies_over_the_limit_are_413(sample_index_dir: Path) -> None:
    with serving(sample_index_dir, token=TOKEN, max_body_bytes=1000) as c:
        big = _jsonl({"id": "big", "text": "word " * 400})
        declared = c.post("/articles", content=big, headers={**JSONL, **AUTH})
        assert error_of(declared, 413) == "too_large"
        chunked = c.post(
            "/articles", content=iter([big[:600], big[600:]]), headers={**JSONL, **AUTH}
        )
        assert error_of(chunked, 413) == "too_large"
        assert error_of(c.post("/search", json={"q": "word " * 300}), 413) == "too_large"
        assert c.get("/articles/big").status_code == 404


def test_internal_errors_say_nothing_of_the_server(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = client.app.state.semsearch.reader  # type: ignore[attr-defined]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret /srv/path/store.sqlite")

    monkeypatch.setattr(reader, "search_generation", broken)
    response = client.get("/search", params={"q": "NATO"})
    assert error_of(response, 500) == "internal" and "secret" not in response.text


def test_unknown_paths_and_methods(client: TestClient) -> None:
    assert error_of(client.get("/nothing/here"), 404) == "not_found"
    put = client.put("/search")
    assert error_of(put, 405) == "method_not_allowed"
    assert put.headers["Allow"] == "GET, POST"  # both routes of the path, not the first
    assert error_of(client.post("/info"), 405) == "method_not_allowed"
    assert error_of(client.get("/../../etc/passwd"), 404) == "not_found"


# -- hardening ------------------------------------------------------------------------


def test_security_headers_and_no_cors_by_default(client: TestClient) -> None:
    response = client.get(
        "/search", params={"q": "NATO"}, headers={"Origin": "https://evil.example"}
    )
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/search",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_only_for_the_origins_given(sample_index_dir: Path) -> None:
    with serving(sample_index_dir, cors=("https://news.example.com",)) as c:
        ok = c.get("/search", params={"q": "NATO"}, headers={"Origin": "https://news.example.com"})
        assert ok.headers["access-control-allow-origin"] == "https://news.example.com"
        other = c.get("/search", params={"q": "NATO"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_openapi_schema_and_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {
        "/search",
        "/articles",
        "/articles/{article_id}",
        "/info",
        "/healthz",
        "/readyz",
    } <= set(paths)
    assert {"get", "post"} <= set(paths["/search"]) and "delete" in paths["/articles/{article_id}"]
    assert "/" not in paths  # the page is not part of the API
    assert "swagger" in client.get("/docs").text.lower()


def test_settings_travel_to_workers_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ServeSettings(index=tmp_path, token=TOKEN, cors=("https://a.example",), max_k=7)
    for name, value in settings.to_environment().items():
        monkeypatch.setenv(name, value)
    assert ServeSettings.from_environment() == settings
    assert TOKEN not in repr(settings)


# -- the page --------------------------------------------------------------------------


def test_page_form_results_highlights_and_article(client: TestClient) -> None:
    empty = client.get("/")
    assert empty.status_code == 200 and 'name="q"' in empty.text
    assert "script-src" not in empty.headers["Content-Security-Policy"]  # default-src 'none'
    form = {"q": "NATO Indo-Pacific", "mode": "semantic", "since": "2020-01-01"}
    page = client.get("/", params=form).text
    first = page.split('<li class="hit">')[1]
    assert "Asia-Pacific partners open talks on tailored NATO cooperation plans" in first
    assert re.search(r"<mark>(NATO|Indo|Pacific)</mark>", first)
    link = re.search(r'href="(/article\?id=[^"]+)"', first)
    assert link is not None
    article = client.get(link.group(1).replace("&amp;", "&"))
    assert article.status_code == 200 and "Individually Tailored Partnership" in article.text
    # Its back link returns to the same search, filters and page included.
    back = re.search(r'<a href="(/\?[^"]+)">← Results</a>', article.text)
    assert back is not None
    assert back.group(1).replace("&amp;", "&") == (
        "/?q=NATO+Indo-Pacific&mode=semantic&since=2020-01-01&page=1"
    )
    assert client.get("/article", params={"id": "nothing"}).status_code == 404


def test_page_pagination_and_errors(client: TestClient) -> None:
    first = client.get("/", params={"q": "the", "mode": "keyword"}).text
    assert 'rel="next"' in first and 'rel="prev"' not in first
    second = client.get("/", params={"q": "the", "mode": "keyword", "page": 2}).text
    assert 'rel="prev"' in second and '<ol class="hits" start="11">' in second
    ranks = [client.get("/search", params={"q": "the", "mode": "keyword", "k": 20}).json()]
    titles = [h["title"] for h in ranks[0]["hits"][10:11]]
    assert titles and titles[0] in second
    for page in ("0", "x", "11"):
        response = client.get("/", params={"q": "the", "page": page})
        assert response.status_code == 400 and 'class="error"' in response.text


HOSTILE_TITLE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
HOSTILE_TEXT = "Zanzibar hostile </p><script>alert(3)</script><a href='x' onclick=alert(4)>"


def test_hostile_titles_texts_and_urls_are_escaped(writable: TestClient) -> None:
    article = {
        "id": "evil\"'><b>",
        "title": HOSTILE_TITLE,
        "text": HOSTILE_TEXT,
        "url": "javascript:alert(5)",
        "source": "<i>Evil</i>",
        "tags": ["<b>tag</b>"],
    }
    assert writable.post("/articles", json=article, headers=AUTH).status_code == 200
    page = writable.get("/", params={"q": "Zanzibar hostile"})
    article_page = writable.get("/article", params={"id": article["id"], "q": '"><script>'})
    for response in (page, article_page):
        html = response.text
        assert "<script>" not in html and "<img" not in html and "<b>" not in html
        assert "onclick=alert" not in html.replace("onclick=alert(4)&gt;", "")
        assert "javascript:" not in html.split("<main>")[1].replace("javascript:alert(5)</p>", "")
        assert 'href="javascript' not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<mark>Zanzibar</mark>" in page.text


# -- the command ----------------------------------------------------------------------


def test_serve_help_explains_every_option() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in (
        "--index",
        "--host",
        "--port",
        "--workers",
        "--token",
        "--cors",
        "--max-k",
        "--max-query-chars",
        "--max-batch",
        "--max-body",
        "--access-log",
        "--log-level",
    ):
        assert option in result.output
    assert "127.0.0.1" in result.output and "SEMSEARCH_TOKEN" in result.output


def test_serve_refuses_a_missing_index_and_a_short_token(
    tmp_path: Path, sample_index_dir: Path
) -> None:
    missing = CliRunner().invoke(cli, ["serve", "--index", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no index at" in missing.output
    short = CliRunner().invoke(cli, ["serve", "--index", str(sample_index_dir), "--token", "abc"])
    assert short.exit_code == 1 and "at least 16 characters" in short.output
    size = CliRunner().invoke(
        cli, ["serve", "--index", str(sample_index_dir), "--max-body", "lots"]
    )
    assert size.exit_code == 2 and "--max-body" in size.output


def test_serve_says_so_in_one_line_when_the_port_is_taken(sample_index_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", "--index", str(sample_index_dir), "--port", str(port)]
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")
    )


def _article(article_id: str, text: str) -> Any:
    from semsearch import Article

    return Article(id=article_id, text=text)


def _jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def test_settings_are_checked() -> None:
    with pytest.raises(Exception, match="max_k"):
        ServeSettings(index=Path("x"), max_k=0)
    assert replace(ServeSettings(index=Path("x")), max_k=5).max_k == 5
