"""The playground in a real headless Chromium against the real server (demo model).

Debian's ``chromium`` and ``chromium-driver`` with Selenium; nothing is downloaded. Every
wait is on a DOM condition (``WebDriverWait``), never a sleep. ``make test`` installs the
packages when it can (``.ci/browser``); when they are still missing the tests are skipped
with the command that installs them in the summary, except under ``S1_REQUIRE_BROWSER=1``
(CI's ``.ci/run``), where that is a failure. Screenshots of each view go to
``.cache/playground/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import CACHE, DEMO_KEY

pytestmark = pytest.mark.engine

SHOTS = CACHE / "playground"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
TIMEOUT = 90


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        missing = ("the browser tests need Debian's chromium and chromium-driver: "
                   "sudo apt-get install chromium chromium-driver (make test installs them "
                   "when run as root)")
        if os.environ.get("S1_REQUIRE_BROWSER") == "1":  # CI: a missing browser fails
            pytest.fail(missing)
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, demo_server):
    """The page freshly loaded, with the API key typed in."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(1280, 1000)
    browser.get_log("browser")  # empties the log: each test sees its own page's entries
    browser.get(demo_server.base_url + "/")
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    key = browser.find_element(By.ID, "api-key")
    assert key.is_displayed()  # the server has keys, so the page asks for one
    key.send_keys(DEMO_KEY)
    return browser


def wait(driver, cond, timeout: float = TIMEOUT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(cond)


def by_id(driver, ident: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, ident)


def fill(driver, ident: str, value: object) -> None:
    field = by_id(driver, ident)
    field.clear()
    field.send_keys(str(value))


def finished(root) -> bool:
    return root.get_attribute("data-state") in ("done", "error")


def budget_of(root) -> dict:
    from selenium.webdriver.common.by import By

    raw = root.find_element(By.CSS_SELECTOR, "pre.budget-json").get_attribute("textContent")
    return json.loads(raw)


def severe_logs(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def api(server, body: dict) -> dict:
    r = httpx.post(server.base_url + "/v1/chat/completions", timeout=120, json=body,
                   headers={"Authorization": f"Bearer {DEMO_KEY}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_page_loads_without_errors_and_without_a_key(page, demo_server):
    assert severe_logs(page) == []
    assert "s1-demo" in by_id(page, "model-line").text
    # the page is open, the API is not
    assert httpx.get(demo_server.base_url + "/playground/static/app.js").status_code == 200
    assert httpx.get(demo_server.base_url + "/playground/config.json").json()["auth"] is True
    assert httpx.get(demo_server.base_url + "/v1/models").status_code == 401
    page.save_screenshot(str(SHOTS / "empty.png"))


def test_forced_continuation_is_highlighted_where_the_server_says(page, demo_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    fill(page, "tmin", 16)
    question = by_id(page, "question")
    question.send_keys(Keys.CONTROL, Keys.ENTER)  # keyboard submit
    out = by_id(page, "single-out")
    wait(page, lambda d: finished(out))
    assert out.get_attribute("data-state") == "done", out.text
    answer = out.find_element(By.CSS_SELECTOR, "pre.answer").text
    assert answer.startswith("Answer:")
    budget = budget_of(out)
    marks = out.find_elements(By.CSS_SELECTOR, "mark.forced-continuation")
    assert len(marks) == budget["continuation_count"] >= 1
    thinking = out.find_element(By.CSS_SELECTOR, "pre.thinking").get_attribute("textContent")
    for mark, pos in zip(marks, budget["continuations"], strict=True):
        assert int(mark.get_attribute("data-char")) == pos["char"]
        assert int(mark.get_attribute("data-token")) == pos["token"]
        assert mark.text == "Wait" and thinking[pos["char"]:].startswith("Wait")
    counters = out.find_element(By.CSS_SELECTOR, ".counters").text
    assert f"forced continuations {budget['continuation_count']}" in counters
    assert f"thinking tokens {budget['thinking_tokens']}" in counters
    # the same request without the page: the same positions
    q = by_id(page, "question").get_attribute("value")
    direct = api(demo_server, {"messages": [{"role": "user", "content": q}],
                               "temperature": 0, "thinking_min": 16})
    assert direct["choices"][0]["budget"] == budget
    assert direct["choices"][0]["message"]["reasoning"] == thinking
    page.save_screenshot(str(SHOTS / "single-min.png"))


def test_waits_and_the_empty_continuation(page, demo_server):
    from selenium.webdriver.common.by import By

    fill(page, "twaits", 2)
    by_id(page, "run").click()
    out = by_id(page, "single-out")
    wait(page, lambda d: finished(out))
    assert out.get_attribute("data-state") == "done", out.text
    budget = budget_of(out)
    marks = out.find_elements(By.CSS_SELECTOR, "mark.forced-continuation")
    assert len(marks) == 2 == budget["continuation_count"] and budget["thinking_waits"] == 2
    assert all(m.text == "Wait" for m in marks)
    assert "thinking_waits 2" in out.text
    q = by_id(page, "question").get_attribute("value")
    direct = api(demo_server, {"messages": [{"role": "user", "content": q}],
                               "temperature": 0, "thinking_waits": 2})
    assert direct["choices"][0]["budget"] == budget
    page.save_screenshot(str(SHOTS / "single-waits.png"))
    # no string: the end attempts below the minimum are suppressed, nothing is inserted
    by_id(page, "twaits").clear()
    fill(page, "tmin", 24)
    by_id(page, "cont-none").click()
    by_id(page, "run").click()
    wait(page, lambda d: finished(out) and budget_of(out).get("thinking_min") == 24)
    budget = budget_of(out)
    assert budget["thinking_continuation"] == "" and budget["continuation_count"] == 0
    assert budget["thinking_tokens"] >= 24
    assert not out.find_elements(By.CSS_SELECTOR, "mark.forced-continuation")
    assert "no continuation (suppress only)" in out.text


def test_cut_is_marked(page):
    from selenium.webdriver.common.by import By

    fill(page, "tmax", 6)
    by_id(page, "run").click()
    out = by_id(page, "single-out")
    wait(page, lambda d: finished(out))
    budget = budget_of(out)
    cut = out.find_element(By.CSS_SELECTOR, ".cut-marker")
    assert budget["hit_max"] and int(cut.get_attribute("data-token")) == 6
    assert int(cut.get_attribute("data-char")) == budget["cut"]["char"]
    assert "cut at 6 tokens" in cut.text
    assert out.find_element(By.CSS_SELECTOR, "pre.answer").text.startswith("Final Answer:")
    page.save_screenshot(str(SHOTS / "single-max.png"))


def test_a_settled_cut_is_marked_with_its_reason(page, demo_server):
    """thinking_early_stop from the page: the cut is marked 'settled' where the budget
    object says, the probes are listed, and the budget equals the API's."""
    from selenium.webdriver.common.by import By

    fill(page, "es-every", 4)
    fill(page, "es-agree", 2)
    by_id(page, "run").click()
    out = by_id(page, "single-out")
    wait(page, lambda d: finished(out))
    assert out.get_attribute("data-state") == "done", out.text
    budget = budget_of(out)
    assert budget["end"] == "settled" and budget["early_stop"] == {"every": 4, "agree": 2}
    cut = out.find_element(By.CSS_SELECTOR, ".cut-marker")
    assert int(cut.get_attribute("data-token")) == budget["cut"]["token"]
    assert "settled" in cut.text and "2 probes in a row" in cut.text
    assert "answer probes" in out.text and "early stop every 4 agree 2" in out.text
    q = by_id(page, "question").get_attribute("value")
    direct = api(demo_server, {"messages": [{"role": "user", "content": q}],
                               "temperature": 0,
                               "thinking_early_stop": {"every": 4, "agree": 2}})
    assert direct["choices"][0]["budget"] == budget


def test_compare_view_respects_each_budget(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    by_id(page, "tab-single").send_keys(Keys.ARROW_RIGHT)  # keyboard tab switch
    wait(page, lambda d: by_id(d, "view-compare").is_displayed())
    by_id(page, "add-column").click()  # three columns: max 8, (set) min 24, max 32
    columns = page.find_elements(By.CSS_SELECTOR, "#columns .column")
    assert len(columns) == 3
    columns[1].find_element(By.NAME, "thinking_min").send_keys("24")
    by_id(page, "compare-run").click()
    wait(page, lambda d: all(finished(c.find_element(By.CSS_SELECTOR, ".run"))
                             for c in columns))
    budgets = [budget_of(c.find_element(By.CSS_SELECTOR, ".run")) for c in columns]
    assert budgets[0]["thinking_max"] == 8 and budgets[0]["thinking_tokens"] <= 8
    assert budgets[1]["thinking_min"] == 24 and budgets[1]["thinking_tokens"] >= 24
    assert budgets[2]["thinking_max"] == 32 and budgets[2]["thinking_tokens"] <= 32
    assert len({b["thinking_tokens"] for b in budgets}) > 1
    page.save_screenshot(str(SHOTS / "compare.png"))


def test_bad_budget_shows_the_servers_message(page):
    from selenium.webdriver.common.by import By

    fill(page, "tmin", 9)
    fill(page, "tmax", 3)
    by_id(page, "run").click()
    out = by_id(page, "single-out")
    wait(page, lambda d: finished(out))
    error = out.find_element(By.CSS_SELECTOR, ".error")
    assert error.is_displayed() and "Error 400" in error.text
    assert "thinking_min (9) is larger than thinking_max (3)" in error.text
    assert "field: thinking_min" in error.text
    assert by_id(page, "tmin").get_attribute("aria-invalid") == "true"
    page.set_window_size(420, 1000)  # a narrow window: nothing runs off to the side
    assert page.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.save_screenshot(str(SHOTS / "error-narrow.png"))


def test_evaluation_viewer_renders_s1_eval_results(page, demo_server, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from evals.cli import main

    data = tmp_path / "letters.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in (
        {"id": "q1", "question": "How many s in horseradish?", "answer": "2"},
        {"id": "q2", "question": "How many r in raspberry?", "answer": "3"})))
    out = tmp_path / "run"
    assert main(["--data", str(data), "--base-url", demo_server.base_url, "--api-key", DEMO_KEY,
                 "--thinking-max", "8,32", "--thinking-min", "24", "--max-tokens", "160",
                 "--concurrency", "4", "--out", str(out), "--no-progress"]) == 0
    results = out / "results.json"
    by_id(page, "tab-eval").click()
    by_id(page, "results-file").send_keys(str(results))
    points = wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "circle.point"))
    report = json.loads(results.read_text())
    assert len(points) == len(report["settings"]) == 3
    target = next(p for p in points if p.get_attribute("data-setting") == "thinking_min=24")
    target.send_keys(Keys.ENTER)  # keyboard: focus the point, Enter
    rows = wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "table.questions tr")[1:])
    assert len(rows) == 2
    assert {r.find_elements(By.TAG_NAME, "td")[0].text for r in rows} == {"q1", "q2"}
    assert severe_logs(page) == []
    page.save_screenshot(str(SHOTS / "evaluation.png"))
