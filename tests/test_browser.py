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
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from semsearch import Article, Index
from semsearch.embed import Encoder

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.model

QUERY = "NATO Indo-Pacific"
NATO_TITLE = "Asia-Pacific partners open talks on tailored NATO cooperation plans"


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(
            "no Chromium and chromedriver on PATH: apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1200,1000"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(folder: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``semsearch serve`` on a free loopback port, once /readyz answers 200."""
    port = _free_port()
    command = [sys.executable, "-m", "semsearch", "serve", "--index", str(folder),
               "--port", str(port), "--no-access-log"]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5):
                return server, base
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"semsearch serve did not become ready:\n{log.read_text()}")
            time.sleep(0.3)


@pytest.fixture
def served(sample_index_dir: Path, tmp_path: Path) -> Iterator[str]:
    server, base = _serve(sample_index_dir, tmp_path / "serve.log")
    try:
        yield base
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def _artifacts() -> Path:
    folder = Path(os.environ.get("SEMSEARCH_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _search(driver: Any, base: str, query: str) -> list[Any]:
    """Type the query on the page, submit, and return the result items."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base + "/")
    box = driver.find_element(By.NAME, "q")
    box.send_keys(query)
    box.send_keys(Keys.ENTER)
    wait = WebDriverWait(driver, 30)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "li.hit, p.summary")))
    return list(driver.find_elements(By.CSS_SELECTOR, "li.hit"))


def test_typing_a_query_finds_the_ap4_article_first(browser: Any, served: str) -> None:
    from selenium.webdriver.common.by import By

    hits = _search(browser, served, QUERY)
    assert hits, "no results on the page"
    first = hits[0]
    assert first.find_element(By.CSS_SELECTOR, "h2.title").text == NATO_TITLE
    marks = [m.text.lower() for m in first.find_elements(By.CSS_SELECTOR, "p.snippet mark")]
    assert marks and set(marks) <= {"nato", "indo", "pacific"}, marks
    shot = _artifacts() / "browser-search.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
    print(f"screenshot: {shot}")
    first.find_element(By.LINK_TEXT, "full text").click()
    heading = browser.find_element(By.TAG_NAME, "h1").text
    body = browser.find_element(By.TAG_NAME, "article").text
    assert heading == NATO_TITLE and "Individually Tailored Partnership" in body


HOSTILE = '<script>window.pwned=1</script>"><img src=x onerror=window.pwned=1>'


def test_a_hostile_article_runs_no_script(
    browser: Any, sample_index_dir: Path, real_encoder: Encoder, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    with Index.open(sample_index_dir, encoder=real_encoder) as index:
        index.add([Article(id="evil", title=HOSTILE, url="javascript:window.pwned=1",
                           text=f"Quokka census on Rottnest island. {HOSTILE}")])  # fmt: skip
    server, base = _serve(sample_index_dir, tmp_path / "serve.log")
    try:
        hits = _search(browser, base, "quokka census")
        assert hits[0].find_element(By.CSS_SELECTOR, "h2.title").text == HOSTILE
        assert not hits[0].find_elements(By.CSS_SELECTOR, "h2.title a")
        assert browser.execute_script("return window.pwned === undefined")
        hits[0].find_element(By.LINK_TEXT, "full text").click()
        assert HOSTILE in browser.find_element(By.TAG_NAME, "article").text
        assert browser.execute_script("return window.pwned === undefined")
    finally:
        server.terminate()
        server.wait(10)
