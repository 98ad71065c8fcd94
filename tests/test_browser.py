"""The search page in a real browser: `semsearch serve` on loopback, headless Chromium.

Debian's ``chromium`` and ``chromium-driver`` packages, driven by Selenium
with explicit paths (Selenium Manager never downloads anything). ``.ci/run``
installs them; the tests skip, saying so, only where no Chromium is found.
A screenshot of the results is saved to ``$SEMSEARCH_TEST_ARTIFACTS`` (default
``test-artifacts/``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from semsearch import Article, Index
from semsearch.embed import Encoder

ROOT = Path(__file__).resolve().parent.parent


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _find("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _find("chromedriver")
_MISSING = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
            if path is None]  # fmt: skip

# Decided before any fixture runs: a machine without Chromium does not load the model first.
# Only a missing browser skips; any other failure (driver start, server, page) fails.
pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        bool(_MISSING),
        reason=f"{' and '.join(_MISSING)} not found on PATH: "
        "apt-get install chromium chromium-driver",
    ),
]

QUERY = "NATO Indo-Pacific"
QUERY_WORDS = {"nato", "indo", "pacific"}
NATO_ID = "world/nato-ap4-itpp.md"
NATO_TITLE = "Asia-Pacific partners open talks on tailored NATO cooperation plans"
READY_SECONDS = 60
WAIT_SECONDS = 30
RESULTS = (By.CSS_SELECTOR, "li.hit, p.summary, p.error")  # a results page, loaded

# Straight to the loopback server: an http_proxy in the environment must not get the request.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    assert CHROMIUM and CHROMEDRIVER  # else skipped (pytestmark)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1200,1000"):  # fmt: skip
        options.add_argument(argument)
    # An explicit driver path: Selenium Manager is never asked to find (download) one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)


def _wait_ready(server: subprocess.Popen[bytes], base: str, log: Path) -> None:
    """Until /readyz answers 200; else fail with why and the server's output."""
    deadline = time.monotonic() + READY_SECONDS
    last = "no answer"
    while server.poll() is None and time.monotonic() < deadline:
        try:
            with _direct.open(f"{base}/readyz", timeout=5):
                return
        except urllib.error.HTTPError as e:  # 503 while loading, or why loading failed
            last = f"{e.code} {e.read().decode(errors='replace')}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.3)
    exited = server.poll()
    why = f"exited with {exited}" if exited is not None else f"not ready in {READY_SECONDS} s"
    pytest.fail(
        f"semsearch serve {why}; last /readyz: {last}\nits output:\n{log.read_text()}",
        pytrace=False,
    )


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """Start ``semsearch serve`` on an index, on a free loopback port; its URL once ready.

    Every server started is stopped at the end of the test, whatever happened.
    """
    servers: list[subprocess.Popen[bytes]] = []

    def start(folder: Path) -> str:
        port = _free_port()
        log = tmp_path / f"serve-{port}.log"
        command = [sys.executable, "-m", "semsearch", "serve", "--port", str(port),
                   "--no-access-log"]  # fmt: skip
        env = {**os.environ, "SEMSEARCH_INDEX": str(folder)}
        with log.open("wb") as out:
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        servers.append(server)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(server, base, log)
        # semsearch's own lines reach the console beside uvicorn's.
        assert f"semsearch: serving {folder}" in log.read_text(), log.read_text()
        # Ready means the ONNX query encoder is loaded, without torch.
        maps = Path(f"/proc/{server.pid}/maps")
        if maps.exists():
            assert "libtorch" not in maps.read_text(), "the server loaded torch"
        return base

    try:
        yield start
    finally:
        for server in servers:
            _stop(server)


def _artifacts() -> Path:
    folder = Path(os.environ.get("SEMSEARCH_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _search(driver: WebDriver, base: str, query: str) -> list[WebElement]:
    """Type the query on the page, press Enter, and return the result items."""
    driver.get(base + "/")
    box = driver.find_element(By.NAME, "q")
    box.send_keys(query)
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, WAIT_SECONDS).until(ec.presence_of_element_located(RESULTS))
    errors = driver.find_elements(By.CSS_SELECTOR, "p.error")
    assert not errors, f"the page says: {errors[0].text}"
    hits = driver.find_elements(By.CSS_SELECTOR, "ol.hits > li.hit")
    assert hits, f"no results for {query!r} on the page"
    return hits


def _open_full_text(driver: WebDriver, hit: WebElement) -> str:
    """Follow the hit's "full text" link; the article page's text."""
    hit.find_element(By.LINK_TEXT, "full text").click()
    WebDriverWait(driver, WAIT_SECONDS).until(ec.url_contains("/article?"))
    return driver.find_element(By.TAG_NAME, "article").text


def test_typing_a_query_finds_the_ap4_article_first(
    browser: WebDriver, serve: Callable[[Path], str], sample_index_dir: Path
) -> None:
    hits = _search(browser, serve(sample_index_dir), QUERY)
    shot = _artifacts() / "browser-search.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
    print(f"screenshot: {shot}")
    first = hits[0]
    assert first.find_element(By.CSS_SELECTOR, "h2.title").text == NATO_TITLE
    marks = [m.text.lower() for m in first.find_elements(By.CSS_SELECTOR, "p.snippet mark")]
    assert QUERY_WORDS & set(marks), f"no query word marked in the snippet: {marks}"
    article = _open_full_text(browser, first)
    assert browser.find_element(By.TAG_NAME, "h1").text == NATO_TITLE
    assert "Individually Tailored Partnership Programme (ITPP)" in article
    assert f"id: {NATO_ID}" in article
    browser.find_element(By.PARTIAL_LINK_TEXT, "Results").click()  # back to the same search
    WebDriverWait(browser, WAIT_SECONDS).until(ec.presence_of_element_located(RESULTS))
    assert browser.find_element(By.NAME, "q").get_attribute("value") == QUERY
    first = browser.find_elements(By.CSS_SELECTOR, "ol.hits > li.hit")[0]
    assert first.find_element(By.CSS_SELECTOR, "h2.title").text == NATO_TITLE


HOSTILE = '<script>window.pwned=1</script>"><img src=x onerror=window.pwned=1>'


def test_a_hostile_article_runs_no_script(
    browser: WebDriver, serve: Callable[[Path], str], sample_index_dir: Path, real_encoder: Encoder
) -> None:
    with Index.open(sample_index_dir, encoder=real_encoder) as index:
        index.add([Article(id="evil", title=HOSTILE, url="javascript:window.pwned=1",
                           text=f"Quokka census on Rottnest island. {HOSTILE}")])  # fmt: skip
    hits = _search(browser, serve(sample_index_dir), "quokka census")
    assert hits[0].find_element(By.CSS_SELECTOR, "h2.title").text == HOSTILE
    assert not hits[0].find_elements(By.CSS_SELECTOR, "h2.title a")  # no javascript: link
    # Escaped, not merely blocked by the CSP: the markup made no element.
    assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img")
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    article = _open_full_text(browser, hits[0])
    assert browser.find_element(By.TAG_NAME, "h1").text == HOSTILE
    assert HOSTILE in article
    assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img, a[href^=javascript]")
    assert browser.execute_script("return typeof window.pwned") == "undefined"
