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


BUDGET = {"budget.num_problems": 6, "budget.budgets": "4,8,16", "budget.unconstrained_tokens": 0}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[str]:
    from core.commands import run_command

    tmp = tmp_path_factory.mktemp("browser")
    runs = make_runs(tmp)
    # an RL run whose rollouts change from step to step (1 of 2, 3, 4, 5 samples cut), for the
    # per-step charts of Traces
    from core.store import new_run
    from core.synth.programmatic import synthesize
    from core.tasks.pairsum import PairSumTask
    from tests.test_app import TASK_CFG, _rollouts

    problems = PairSumTask().problems("train", 8)
    traces = list(synthesize(problems, "t1", 0.85, 0.15, seed=0))
    varied = new_run(runs, "rl", {"task": TASK_CFG, "eval": {"split": "heldout"}}, run_id="rl-b")
    for step in range(1, 5):
        varied.append_samples(step, _rollouts(step, problems, traces, k=step + 1))
        varied.log_metrics({"step": step, "reward/mean": 0.1 * step})
    # an RL run by the lab's own code: rollout rows with their per-token log-probs
    run_command("rl", {"rl.init": str(tiny_model_dir), "rl.steps": 2, "rl.prompts_per_step": 2,
                       "rl.num_generations": 4, "rl.micro_batch_size": 8, "rl.sampling.max_new_tokens": 24,
                       "eval.num_problems": 4, "eval.sampling.max_new_tokens": 8},
                runs, say=lambda s: None, progress=False, run_id="rl-real")
    # a budget sweep by the lab's own code: its curve and the per-sample rows behind each point
    run_command("budget", {"model.name": str(tiny_model_dir), **BUDGET}, runs, say=lambda s: None,
                progress=False, run_id="budget-b")
    port = free_port()
    log = open(tmp / "streamlit.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/Home.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],  # the toolbar setting comes from .streamlit/config.toml
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
    assert browser.title == f"T1 Lab · {title}"
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stAppDeployButton"]')  # a minimal toolbar


def _shot(browser, tmp_path: Path, name: str) -> None:
    shot = tmp_path / f"{name}.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")


def test_a_budget_point_opens_the_samples_behind_it(app_url: str, browser, tmp_path: Path) -> None:
    """A click on the leftmost point (the smallest budget) of the accuracy chart sets the point
    (the default is the largest budget) and shows a response cut there, its forced answer marked."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{app_url}/Inference_scaling?run=budget-b")
    wait = WebDriverWait(browser, 60)
    points_css = '[data-testid="stVegaLiteChart"] g.mark-symbol path'
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, points_css)))
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "at 16 tokens"))  # the default point
    chart = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')[0]
    leftmost = min(chart.find_elements(By.CSS_SELECTOR, "g.mark-symbol path"), key=lambda e: e.location["x"])
    ActionChains(browser).move_to_element(leftmost).click().perform()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "at 4 tokens"))
    sample = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".point-sample mark")))
    assert sample.text.strip(), "the forced answer is marked"
    assert "the budget cut the reasoning" in browser.find_element(By.TAG_NAME, "body").text
    time.sleep(1)
    _shot(browser, tmp_path, "budget_point")
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')


def test_traces_per_step_charts_draw_their_data(app_url: str, browser, tmp_path: Path) -> None:
    """Regression: the per-step charts collapsed to flat lines with no y-axis ticks (title,
    bottom legend and a fixed height in a narrow column). Each chart's y axis must span its
    data and be drawn tall, and its lines must rise and fall on screen."""
    import re

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{app_url}/Traces?run=rl-b")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"] g.mark-line path')) >= 2)
    time.sleep(1.5)
    _shot(browser, tmp_path, "traces_charts")
    charts = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')
    assert len(charts) == 2
    for chart in charts:
        axis = chart.find_element(By.CSS_SELECTOR, "g[aria-label^='Y-axis']")
        low, high = map(float, re.search(r"values from (\S+) to (\S+)", axis.get_attribute("aria-label")).groups())
        assert high > low
        assert axis.size["height"] >= 100, axis.size  # the plot area, not a sliver
        assert len(axis.find_elements(By.CSS_SELECTOR, "g.mark-text text")) >= 3  # tick labels
        lines = chart.find_elements(By.CSS_SELECTOR, "g.mark-line path")
        assert max(line.size["height"] for line in lines) >= 20  # the data varies on screen


def test_rollout_tokens_coloured_by_their_logprobs(app_url: str, browser, tmp_path: Path) -> None:
    """A real RL run's rollouts show each token on a background by its log-prob, the value on hover."""
    import re

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{app_url}/Rollouts?run=rl-real&step=1")
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".token-strip span.tok"))
    time.sleep(1)
    _shot(browser, tmp_path, "token_strip")
    tokens = browser.find_elements(By.CSS_SELECTOR, ".token-strip span.tok")
    titles = [t.get_attribute("title") for t in tokens]
    assert all(re.fullmatch(r"log p -?\d+\.\d\d \(p \d\.\d\d\)", t) for t in titles), titles[:5]
    lps = [float(t.split()[2]) for t in titles]
    assert min(lps) < -0.5  # a randomly initialised policy is unsure of many of its tokens
    shaded = [t for t in tokens if t.value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "rgba(255, 120, 0, 0)")]
    assert shaded, "improbable tokens are shaded"
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')


def test_pages_follow_runs_being_written(app_url: str, browser, tmp_path: Path) -> None:
    """Without a reload: a run that starts after the page opened is listed, and the Rollouts
    page of a running run moves to each new step as it is written."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from core.store import new_run
    from core.synth.programmatic import synthesize
    from core.tasks.pairsum import PairSumTask
    from tests.test_app import TASK_CFG, _rollouts

    runs = Path(browser_runs_dir(app_url, browser))
    problems = PairSumTask().problems("train", 4)
    traces = list(synthesize(problems, "t1", 0.85, 0.15, seed=0))
    wait = WebDriverWait(browser, 60)

    browser.get(f"{app_url}/Training")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')))
    time.sleep(2)
    live = new_run(runs, "rl", {"task": TASK_CFG}, run_id="rl-live")  # this process: running
    live.log_metrics({"step": 1, "reward/mean": 0.25})
    live.append_samples(1, _rollouts(1, problems, traces))
    # the newest running run becomes the one shown (its chip in the runs picker)
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, '[data-testid="stSidebar"]'), "rl-live"))

    browser.get(f"{app_url}/Rollouts?run=rl-live")
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Step 1:"))
    live.append_samples(2, _rollouts(2, problems, traces))
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Step 2:"))
    _shot(browser, tmp_path, "live_rollouts")
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')


def browser_runs_dir(app_url: str, browser) -> str:
    """The runs folder the app serves (its sidebar input)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(app_url)
    box = WebDriverWait(browser, 60).until(
        lambda b: b.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] input[type="text"]'))
    return box.get_attribute("value")
