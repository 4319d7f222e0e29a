"""The labelling app in a real browser (Debian's chromium, headless, through Selenium and chromedriver):
create a project, upload real Fashion-MNIST PNG files, label with keyboard shortcuts, get a suggestion,
export; screenshots are saved in the test's output folder. Skips, saying why, only where no browser can
be installed (scripts/ensure-chromium.sh installs it when apt-get is usable)."""

from __future__ import annotations

import csv
import io
import subprocess
import time
from pathlib import Path

import pytest
from app_helpers import kill, start_server

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ENSURE = Path(__file__).resolve().parents[2] / "scripts" / "ensure-chromium.sh"


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        subprocess.run(["sh", str(ENSURE)], check=False, timeout=600)
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("no chromium/chromedriver on this machine and scripts/ensure-chromium.sh could not install them")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def open_page(driver, url: str, ready: str, timeout: float = 60) -> None:
    """Go to ``url`` and wait until its document is complete and holds ``ready`` (a CSS selector): on a busy
    machine ``driver.get`` may return while the previous page or the deferred script is still in place."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_until(lambda: driver.execute_script("return document.readyState") == "complete"
               and driver.find_elements(By.CSS_SELECTOR, ready), timeout, f"{ready} on {url}")


def wait_until(condition, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_label_with_the_keyboard_suggest_and_export_in_chromium(browser, tmp_path, fashion_pngs):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    paths, truth, classes = fashion_pngs
    shots = tmp_path / "screenshots"
    shots.mkdir()
    server, api = start_server(tmp_path / "project")
    try:
        driver = browser
        driver.get(api.login_url)
        wait_until(lambda: driver.current_url.endswith("/setup"), what="the setup page")
        driver.find_element(By.NAME, "name").send_keys("clothes <b>")
        driver.find_element(By.NAME, "classes").send_keys("\n".join(classes))
        for name, value in (("size", "28"), ("test_size", "5"), ("batch_size", "5")):
            field = driver.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, "select[name=colour] option[value=grayscale]").click()
        driver.find_element(By.TAG_NAME, "summary").click()
        for name, value in (("train_steps", "10"), ("epochs", "1")):
            field = driver.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        driver.save_screenshot(str(shots / "1-setup.png"))
        driver.find_element(By.CSS_SELECTOR, "form.setup button[type=submit]").click()
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "input[type=file]"), what="the project page")
        assert driver.find_element(By.TAG_NAME, "h1").text == "clothes <b>"  # shown as text, not markup

        driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys("\n".join(str(path) for path in paths[:30]))
        driver.find_element(By.XPATH, "//button[text()='Upload']").click()
        wait_until(lambda: "added 30 image(s)" in driver.find_element(By.ID, "message").text, what="the upload")
        driver.find_element(By.XPATH, "//button[text()='Draw']").click()
        wait_until(lambda: "drew 5 test image(s)" in driver.find_element(By.ID, "message").text, what="the test draw")
        driver.save_screenshot(str(shots / "2-project.png"))

        def label_page_with_keys(skip_last: bool) -> list[int]:
            open_page(driver, str(api.base_url.join("/label")), "#grid figure.current")
            cards = driver.find_elements(By.CSS_SELECTOR, "#grid figure")
            ids = [int(card.get_attribute("data-id")) for card in cards]
            body = driver.find_element(By.TAG_NAME, "body")
            for position, item in enumerate(ids):
                # the page's script has moved to this card (keys sent earlier would be lost under load)
                wait_until(lambda: "current" in cards[position].get_attribute("class"), 30, f"card {position} selected")
                if skip_last and position == len(ids) - 1:
                    body.send_keys("s")
                elif truth[item] < 9:
                    body.send_keys(str(int(truth[item]) + 1))
                else:  # the tenth class has no key: click its button
                    driver.find_element(By.CSS_SELECTOR, f"#classes button[data-index='{int(truth[item])}']").click()
                done = "skipped" if skip_last and position == len(ids) - 1 else "label: "
                wait_until(lambda: done in cards[position].text, 30, f"card {position}")
            return ids

        test_ids = label_page_with_keys(skip_last=False)
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("u")  # undo the last label
        wait_until(lambda: "not labelled" in driver.find_elements(By.CSS_SELECTOR, "#grid figure")[-1].text, 30, "undo")
        wait_until(lambda: api.get("/api/status").json()["test"]["labelled"] == 4, 30, "the undone test label")
        body.send_keys(Keys.ARROW_LEFT, Keys.ARROW_RIGHT)  # move away and back to the undone image
        last = test_ids[-1]
        if truth[last] < 9:
            body.send_keys(str(int(truth[last]) + 1))
        else:
            driver.find_element(By.CSS_SELECTOR, f"#classes button[data-index='{int(truth[last])}']").click()
        wait_until(lambda: api.get("/api/status").json()["test"]["labelled"] == 5, 30, "the relabelled test image")
        driver.save_screenshot(str(shots / "3-test-labelled.png"))

        def suggest() -> dict:
            """Click Suggest and wait for the page's progress display to say the new batch is ready."""
            before = (api.get("/api/job").json()["job"] or {}).get("id")
            open_page(driver, str(api.base_url), "form[hx-post='/suggest'] button")
            driver.find_element(By.XPATH, "//button[text()='Suggest']").click()
            wait_until(lambda: job_ready(before), 300, "the suggestion")
            return api.get("/api/job").json()["job"]

        def job_ready(before: str | None) -> bool:
            job = api.get("/api/job").json()["job"] or {}
            if job.get("id") == before or job.get("state") != "done":
                return False
            try:  # the page polls /job every second and swaps the fragment in
                return "are ready" in driver.find_element(By.ID, "job").text
            except StaleElementReferenceException:
                return False

        for round_expected in (-1, 0):
            assert suggest()["round"] == round_expected
            batch = label_page_with_keys(skip_last=True)
            driver.save_screenshot(str(shots / f"4-batch-round{round_expected}.png"))
            assert len(batch) == 5
        assert suggest()["round"] == 1
        open_page(driver, str(api.base_url), "table.rounds tbody tr")
        rounds = driver.find_elements(By.CSS_SELECTOR, "table.rounds tbody tr")
        assert len(rounds) == 2
        assert rounds[-1].find_elements(By.TAG_NAME, "td")[2].text != "-"
        driver.save_screenshot(str(shots / "5-rounds.png"))
        open_page(driver, str(api.base_url.join("/label")), "#grid figure.current")
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#grid .guess"), 30,
                   f"the suggested batch on the page (queue: {api.get('/api/status').json()['queue']})")
        guesses = driver.find_elements(By.CSS_SELECTOR, "#grid .guess")
        assert all(guess.text.startswith("guess: ") for guess in guesses)
        driver.save_screenshot(str(shots / "6-suggestion-with-guesses.png"))

        rows = list(csv.DictReader(io.StringIO(api.get("/export/labels.csv").text)))
        assert len(rows) == 5 + 4 + 4 and sum(row["split"] == "test" for row in rows) == 5
        assert api.get("/export/model.pt").status_code == 200
        print(f"screenshots: {shots}")
    finally:
        kill(server)
