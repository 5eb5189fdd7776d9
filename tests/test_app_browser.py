"""The dashboard in a real browser: `streamlit run` on a free localhost port, headless Chromium
(Debian packages chromium + chromium-driver, driven by Selenium) visits every page.

Each page must render its title with no Streamlit exception box; the Inference-scaling page
must draw its budget chart (a vega-lite canvas or svg). A screenshot of every page is saved
under the test's tmp folder (the path is printed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_app import free_port, make_runs, wait_healthy

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
# url path -> (title, CSS that must appear once the page has drawn)
PAGES = {
    "": ("Runs", '[data-testid="stDataFrame"]'),
    "Training?run=rl-a": ("Training", '[data-testid="stVegaLiteChart"]'),
    "Rollouts?run=rl-a&step=2": ("Rollouts", '[data-testid="stCode"]'),
    "Traces?run=rl-a": ("Traces", '[data-testid="stVegaLiteChart"]'),
    "Inference_scaling": ("Inference scaling",
                          '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg'),
}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("browser")
    runs = make_runs(tmp)
    port = free_port()
    log = open(tmp / "streamlit.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/Home.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env={**os.environ, "T1LAB_RUNS": str(runs)}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM or not DRIVER:
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/install_browser.sh)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.parametrize("path", list(PAGES))
def test_page_in_browser(path: str, app_url: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    title, drawn = PAGES[path]
    browser.get(f"{app_url}/{path}")
    wait = WebDriverWait(browser, 60)
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "h1"), title))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, drawn)))
    time.sleep(1.5)  # let the charts finish drawing before the screenshot
    shot = tmp_path / f"{path.split('?')[0] or 'Home'}.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    errors = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not errors, [e.text for e in errors]
    assert browser.find_elements(By.CSS_SELECTOR, drawn)
