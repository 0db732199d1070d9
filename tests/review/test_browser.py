"""``seedbatch view`` in a real headless browser: Debian's Chromium driven through its
chromium-driver by Selenium (never Selenium Manager: no download, no network), against the
app on a loopback port in a thread of this process. Every wait is for a DOM condition;
the timeouts are hang guards only."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from review_support import Project
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from runner.review.app import ViewServer, serve_in_thread
from runner.review.picks import read_picks
from runner.rundir import RunLock

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
GUARD = 60  # seconds: a hang guard, not a timing assumption


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    for needed in (CHROMIUM, CHROMEDRIVER):
        assert needed.is_file(), (f"{needed} is missing: apt-get install -y chromium "
                                  "chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--window-size=1400,1000",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(GUARD)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server(project: Project) -> Iterator[ViewServer]:
    with serve_in_thread(project.runs) as running:
        yield running


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    # The live pages re-render their tables: an element found a moment ago may be replaced
    # before its text is read; the condition is then simply asked again.
    return WebDriverWait(driver, GUARD, ignored_exceptions=(StaleElementReferenceException,))


def texts(driver: WebDriver, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def open_run(driver: WebDriver, server: ViewServer, run: Path) -> None:
    driver.get("about:blank")  # a fresh page: a URL that differs only in its hash would not load
    driver.get(f"{server.url}/#/run/{run.name}")
    wait(driver).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".card[data-index]")))


def test_the_runs_list_shows_every_run_newest_first(browser: WebDriver, server: ViewServer,
                                                    project: Project) -> None:
    browser.get("about:blank")
    browser.get(server.url + "/")
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#runs tbody tr")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert [r.get_attribute("data-run") for r in rows] == [project.run2.name,
                                                           project.run1.name]
    first = rows[0].find_elements(By.TAG_NAME, "td")
    assert "hero" in first[0].text
    assert "emulated" in first[0].text
    assert [c.text for c in first[2:6]] == ["9", "8", "1", "8"]
    assert first[6].text == "$0.1200"  # the v4 jobs ran again; the pix jobs were reused


def test_the_gallery_shows_every_job_and_filters_them(browser: WebDriver, server: ViewServer,
                                                      project: Project) -> None:
    open_run(browser, server, project.run2)
    cards = browser.find_elements(By.CSS_SELECTOR, "#gallery .card")
    assert sorted(c.get_attribute("data-name") for c in cards) == sorted(
        j["name"] for j in project.report(project.run2)["jobs"])
    # the prompt's markup is shown as text, not obeyed
    assert "<b>product</b>" in cards[0].text
    Select(browser.find_element(By.ID, "f-model")).select_by_value("pixwith/seedream-4.5")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "page-info"), "4 shown"))
    assert all(n.endswith("-pix") for n in
               (c.get_attribute("data-name") for c in
                browser.find_elements(By.CSS_SELECTOR, "#gallery .card")))
    Select(browser.find_element(By.ID, "f-model")).select_by_value("")
    Select(browser.find_element(By.ID, "f-status")).select_by_value("failed")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "page-info"), "1 shown"))
    assert texts(browser, "#gallery .card .name") == ["broken"]
    Select(browser.find_element(By.ID, "f-status")).select_by_value("")
    Select(browser.find_element(By.ID, "f-axis-light")).select_by_value("dusk")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "page-info"), "4 shown"))
    assert all("-dusk-" in n for n in texts(browser, "#gallery .card .name"))


def test_the_grid_is_pivoted_by_the_axes_chosen_in_the_page(
        browser: WebDriver, server: ViewServer, project: Project) -> None:
    open_run(browser, server, project.run2)
    browser.find_element(By.ID, "mode-grid").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#grid th.col")))
    assert texts(browser, "#grid th.col") == ["tent", "boots"]
    assert texts(browser, "#grid th.row") == ["dawn", "dusk"]
    Select(browser.find_element(By.ID, "grid-x")).select_by_value("model")
    wait(browser).until(lambda d: texts(d, "#grid th.col") == ["v4", "pix"])
    Select(browser.find_element(By.ID, "grid-y")).select_by_value("light")
    wait(browser).until(lambda d: texts(d, "#grid th.row") == ["dawn", "dusk"])
    cell = browser.find_element(By.CSS_SELECTOR, '#grid td.cell[data-x="pix"][data-y="dusk"]')
    names = sorted(c.get_attribute("data-name")
                   for c in cell.find_elements(By.CSS_SELECTOR, ".card"))
    assert names == ["boots-dusk-pix", "tent-dusk-pix"]


def viewer_shows(driver: WebDriver, text: str) -> None:
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "viewer-verdict"), text))


def test_keyboard_verdicts_land_in_the_picks_file(browser: WebDriver, server: ViewServer,
                                                  project: Project) -> None:
    open_run(browser, server, project.run2)
    Select(browser.find_element(By.ID, "f-model")).select_by_value("pixwith/seedream-4.5")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "page-info"), "4 shown"))
    cards = browser.find_elements(By.CSS_SELECTOR, "#gallery .card")
    order = [(c.get_attribute("data-key"), c.get_attribute("data-name")) for c in cards]
    cards[0].click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "viewer-img")))
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("p")
    viewer_shows(browser, "✔ pick")
    body.send_keys("4")
    viewer_shows(browser, "★★★★")
    body.send_keys(Keys.ARROW_RIGHT)
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "viewer-title"), order[1][1]))
    body.send_keys("x")
    viewer_shows(browser, "✘ reject")
    body.send_keys(Keys.ARROW_RIGHT)
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "viewer-title"), order[2][1]))
    body.send_keys("p")
    viewer_shows(browser, "✔ pick")
    body.send_keys("u")
    viewer_shows(browser, "not judged")
    body.send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT)
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "viewer-title"), order[0][1]))
    note: WebElement = browser.find_element(By.ID, "note")
    note.send_keys("the one to ship")
    note.send_keys(Keys.TAB)  # leaving the field saves it
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "viewer-verdict"), "✎"))
    wait(browser).until(lambda _: read_picks(project.picks)["jobs"][order[0][0]]["images"]
                        ["0"].get("note") == "the one to ship")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "status"), "saved"))
    picks = read_picks(project.picks)
    assert picks["jobs"][order[0][0]] == {"name": order[0][1], "images": {"0": {
        "verdict": "pick", "stars": 4, "note": "the one to ship"}}}
    assert picks["jobs"][order[1][0]] == {"name": order[1][1],
                                          "images": {"0": {"verdict": "reject"}}}
    assert order[2][0] not in picks["jobs"]  # picked, then cleared
    # the gallery shows them too, and filters by them
    body.send_keys(Keys.ESCAPE)
    Select(browser.find_element(By.ID, "f-verdict")).select_by_value("pick")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "page-info"), "1 shown"))
    assert texts(browser, "#gallery .card .name") == [order[0][1]]


def test_compare_two_runs_side_by_side(browser: WebDriver, server: ViewServer,
                                       project: Project) -> None:
    browser.get("about:blank")
    browser.get(server.url + "/")
    wait(browser).until(ec.presence_of_element_located((By.ID, "compare-go")))
    Select(browser.find_element(By.ID, "compare-a")).select_by_value(project.run1.name)
    Select(browser.find_element(By.ID, "compare-b")).select_by_value(project.run2.name)
    browser.find_element(By.ID, "compare-go").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#compare-table tr.row")))
    assert browser.find_element(By.ID, "compare-summary").text.startswith(
        "9 jobs · 5 with a changed spec")
    row = browser.find_element(By.CSS_SELECTOR, '#compare-table tr.row[data-label="tent-dawn-v4"]')
    assert "spec changed" in row.text
    diff = row.find_element(By.CSS_SELECTOR, '.diff li[data-field="params.size"]')
    assert "1024x1024" in diff.text
    assert "2048x2048" in diff.text
    same = browser.find_element(By.CSS_SELECTOR,
                                '#compare-table tr.row[data-label="tent-dawn-pix"]')
    assert "spec changed" not in same.text
    assert "same spec" in same.text


def test_compare_two_values_of_an_axis(browser: WebDriver, server: ViewServer,
                                       project: Project) -> None:
    open_run(browser, server, project.run2)
    Select(browser.find_element(By.ID, "cv-axis")).select_by_value("light")
    Select(browser.find_element(By.ID, "cv-a")).select_by_value("dawn")
    Select(browser.find_element(By.ID, "cv-b")).select_by_value("dusk")
    browser.find_element(By.ID, "cv-go").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#compare-table tr.row")))
    assert browser.find_element(By.ID, "compare-summary").text == "4 pairs"
    row = browser.find_element(By.CSS_SELECTOR,
                               '#compare-table tr.row[data-label="model=v4 · product=tent"]')
    assert "tent-dawn-v4" in row.text
    assert "tent-dusk-v4" in row.text
    assert "prompt" in row.find_element(By.CSS_SELECTOR, ".diff").text


def test_the_runs_list_follows_a_run_that_is_still_going(
        browser: WebDriver, project: Project, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(project.run1, runs / project.run1.name)
    with serve_in_thread(runs) as server:
        browser.get(server.url + "/")
        wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#runs tbody tr")))
        # a new run appears, held by its (here: this) process: shown running, live
        live = runs / project.run2.name
        shutil.copytree(project.run2, live)
        (live / "report.json").unlink()  # not finished: the page reads its journal
        lock = RunLock(live).acquire()
        try:
            row = f'#runs tbody tr[data-run="{live.name}"]'
            wait(browser).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, row),
                                                                 "running"))
            wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, row).find_elements(
                By.TAG_NAME, "td")[3].text == "8")
        finally:
            lock.release()
        wait(browser).until(lambda d: "running" not in d.find_element(By.CSS_SELECTOR, row).text)
