"""The search page in a real headless browser (Debian's chromium through Selenium):
type a query and see highlighted results with per-stage timings, compare two pipelines,
add a document through the API and find it, ask with a streamed answer and click a
citation. Skipped only when chromium or selenium is missing outside CI
(``RETRIEVO_REQUIRE_SHARED=1``, set by CI, makes that a failure)."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from retrievo.server import load_service


def _browser_parts():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed (pip install 'retrievo[test]')"
    if not chromium or not driver:
        return None, None, "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    return chromium, driver, None


@pytest.fixture
def browser():
    chromium, driver_path, missing = _browser_parts()
    if missing:
        if os.environ.get("RETRIEVO_REQUIRE_SHARED") == "1":
            pytest.fail(missing + "; RETRIEVO_REQUIRE_SHARED=1 makes this an error")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a browser online
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, timeout=60):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the page re-renders lists as results arrive: an element read mid-render is retried
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def test_search_compare_live_add_and_ask_in_the_page(index_path, serve, browser, scripted_reader):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    service = load_service(index_path, pipelines={"bm25": "bm25", "tuned": "bm25(k1=0.3, b=0.1) % 4",
                                                  "qa": "bm25 % 3 >> scripted_reader"})
    write_key = service.keys.create("write")
    srv = serve(service)
    d = browser
    d.get(srv.url + "/")
    _wait(d, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")

    def run_query(text):
        box = d.find_element(By.ID, "query")
        box.clear()
        box.send_keys(text)
        d.find_element(By.ID, "search-btn").click()

    # 1. a query: highlighted results and per-stage timings
    run_query("running otter")
    _wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results-a .hit")) == 10)
    hits = d.find_elements(By.CSS_SELECTOR, "#results-a .hit")
    assert hits[0].get_attribute("data-doc-id") in {"a3", "a11", "a19", "a27", "a35"}
    marks = {m.text.lower() for m in d.find_elements(By.CSS_SELECTOR, "#results-a .hit:first-child mark")}
    assert marks == {"running", "otter"}
    stages = [r.find_elements(By.TAG_NAME, "td")[0].text for r in d.find_elements(By.CSS_SELECTOR,
                                                                                "#timings-a .stage-row")]
    assert stages == ["bm25"]
    ms = float(d.find_elements(By.CSS_SELECTOR, "#timings-a .stage-row td")[1].text)
    assert ms >= 0

    # 2. compare two pipelines side by side
    d.find_element(By.ID, "compare").click()
    Select(d.find_element(By.ID, "pipeline-b")).select_by_value("tuned")
    d.find_element(By.ID, "search-btn").click()
    _wait(d, lambda d: d.find_element(By.ID, "column-b").is_displayed()
          and len(d.find_elements(By.CSS_SELECTOR, "#results-b .hit")) == 4)
    assert d.find_element(By.ID, "title-a").text == "bm25"
    assert d.find_element(By.ID, "title-b").text == "bm25(k1=0.3, b=0.1) % 4"
    assert [r.find_elements(By.TAG_NAME, "td")[0].text
            for r in d.find_elements(By.CSS_SELECTOR, "#timings-b .stage-row")] == ["bm25"]
    api = httpx.post(srv.url + "/v1/search", json={"query": "running otter", "pipeline": "tuned", "k": 10}).json()
    assert [h.get_attribute("data-doc-id") for h in d.find_elements(By.CSS_SELECTOR, "#results-b .hit")] == \
        [h["doc_id"] for h in api["results"]]
    d.find_element(By.ID, "compare").click()

    # 3. a document added through the API is found from the page
    r = httpx.post(srv.url + "/v1/documents", headers={"Authorization": f"Bearer {write_key}"}, timeout=60,
                   json={"documents": [{"doc_id": "new-1", "title": "Quokka", "text": "A quokka smiling at dawn."}]})
    assert r.status_code == 200, r.text
    run_query("quokka")
    _wait(d, lambda d: [h.get_attribute("data-doc-id") for h in d.find_elements(By.CSS_SELECTOR,
                                                                                "#results-a .hit")] == ["new-1"])
    assert d.find_element(By.CSS_SELECTOR, "#results-a .hit mark").text == "quokka"

    # 4. ask: the streamed answer with clickable citations
    box = d.find_element(By.ID, "query")
    box.clear()
    box.send_keys("sleeping zebra")
    d.find_element(By.ID, "ask-btn").click()
    _wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#citations .citation")) == 2)
    answer = d.find_element(By.ID, "answer").text
    context = [h.get_attribute("data-doc-id") for h in d.find_elements(By.CSS_SELECTOR, "#results-a .hit")]
    assert answer == f"3 passages; first: {context[0]}"
    citation = d.find_elements(By.CSS_SELECTOR, "#citations .citation")[0]
    assert citation.get_attribute("data-doc-id") == context[0]
    citation.click()
    _wait(d, lambda d: d.find_element(By.ID, "document").is_displayed())
    assert d.find_element(By.ID, "doc-id").text == context[0]
    assert "zebra" in d.find_element(By.ID, "doc-text").text.lower()
    errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors
