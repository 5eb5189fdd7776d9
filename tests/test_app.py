"""Dashboard pages under Streamlit's AppTest, on run folders made by the lab's own writers.

The fixture holds a complete synth run, a complete SFT run (metrics, traces, eval rows), an
RL run that is still "running" (this process's pid) with rollouts and two budget curves (one
complete with parallel points, one mid-sweep), and an RL run whose metrics.jsonl and a
rollouts file end in a torn half line. A second, empty folder checks the empty state.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = {
    "Home.py": ("Runs", {"selectbox": 2}),
    "pages/1_Training.py": ("Training", {"multiselect": 2}),
    "pages/2_Rollouts.py": ("Rollouts", {"multiselect": 1, "selectbox": 2, "text_input": 2}),
    "pages/3_Traces.py": ("Traces", {"selectbox": 2, "radio": 1, "text_input": 2}),
    "pages/4_Inference_scaling.py": ("Inference scaling", {"multiselect": 1}),
}
TASK_CFG = {"name": "pairsum", "num_count": 8, "max_value": 30}


def _rollouts(step: int, problems: list, traces: list[dict], k: int = 4) -> list[dict]:
    """Rollout rows shaped like core/rl/loop.rollout_rows, from teacher traces: every fourth
    sample is cut at 40 characters and marked truncated (so wrong, penalised overlong)."""
    from core.rewards import score
    from core.tasks.pairsum import PairSumTask
    from core.types import Completion

    task, rows = PairSumTask(), []
    for g, (p, t) in enumerate(zip(problems, traces)):
        for s in range(k):
            cut = (s + step) % 4 == 0
            text = t["response"][:40] if cut else t["response"]
            comp = Completion(text, tuple(range(len(text.split()))), "length" if cut else "stop", g, s)
            parts = score(comp, task.check_one(p, text))
            rows.append({"problem_id": p.id, "question": p.question, "sample": s, "response": text,
                         "num_tokens": comp.num_tokens, "finish_reason": comp.finish_reason,
                         "correct": parts.correct, "overlong": parts.overlong,
                         "repetitive": parts.repetitive, "garbled": parts.garbled,
                         "reward": parts.reward, "advantage": 0.25 * (s - 1.5), "used": True,
                         "kept": s != 3})
    return rows


def _curve(name: str, checkpoint: str, budgets: list[int], done: int, parallel: bool) -> dict:
    """A budget curve in the sweep's schema with `done` of its budgets finished."""
    from core.evaluate import wilson_interval

    points = []
    for i, b in enumerate(budgets[:done]):
        n, k = 100, 20 + 15 * i
        lo, hi = wilson_interval(k, n)
        points.append({"checkpoint": checkpoint, "budget_tokens": b, "accuracy": k / n, "ci_low": lo,
                       "ci_high": hi, "truncated_frac": max(0.0, 0.8 - 0.2 * i),
                       "mean_tokens_used": b * 0.8, "n": n})
    par = [{"k": k, "total_tokens": 64.0 * k, "maj_acc": 0.3 + 0.1 * i, "pass_at_k": 0.4 + 0.15 * i}
           for i, k in enumerate((1, 2, 4))] if parallel else []
    return {"name": name, "checkpoint": checkpoint, "step": None, "task": "pairsum", "mode": "forced",
            "budgets": budgets, "complete": done == len(budgets), "points": points, "parallel": par}


def make_runs(root: Path) -> Path:
    """Run folders under root/runs written with core.store, core.synth and the embedded task."""
    from core.evaluate import sample_rows, summarize
    from core.store import append_jsonl, new_run
    from core.synth.programmatic import synthesize
    from core.tasks.pairsum import PairSumTask
    from core.types import Completion

    runs = root / "runs"
    task = PairSumTask()
    problems = task.problems("train", 8)
    traces = list(synthesize(problems, "t1", 0.85, 0.15, seed=0))

    synth = new_run(runs, "synth", {"task": TASK_CFG, "synth": {"style": "t1"}}, run_id="synth-a")
    synth.append_traces(traces)
    synth.write_summary({"synth/num_traces": len(traces)})

    sft = new_run(runs, "sft", {"task": TASK_CFG, "sft": {"lr": 3e-3},
                                "eval": {"split": "heldout"}}, run_id="sft-a")
    sft.append_traces(traces)
    for step in (25, 50, 75):
        sft.log_metrics({"step": step, "loss/sft": 3.0 - step / 50, "optim/lr": 1e-3})
    groups = [[Completion(t["response"], (1, 2, 3), "stop")] for t in traces]
    evals = sample_rows(task, problems, groups)
    sft.append_eval("heldout", evals)
    sft.log_metrics({"step": 75, **summarize(evals)})
    sft.write_summary({**summarize(evals), "sft/loss": 1.5, "time_s": 12.0})

    rl = new_run(runs, "rl", {"task": TASK_CFG, "rl": {"num_generations": 4},
                              "eval": {"split": "heldout"}}, run_id="rl-a")
    for step in range(1, 5):
        rows = _rollouts(step, problems, traces)
        rl.append_samples(step, rows)
        rl.log_metrics({"step": step, "reward/mean": 0.1 * step, "rollout/acc": 0.2 * step,
                        "rollout/len_mean": 60.0 - step, "rollout/truncated_frac": 0.25,
                        "loss/entropy": 1.0 / step, "kl/anchor": 0.01 * step, "time/sample_s": 0.5})
    budgets = [16, 32, 64, 128]
    rl.write_curve("final", _curve("final", "final", budgets, 4, parallel=True))
    rl.write_curve("step_2", _curve("step_2", "step 2", budgets, 2, parallel=False))

    torn = new_run(runs, "rl", {"task": TASK_CFG}, run_id="rl-torn")
    torn.log_metrics({"step": 1, "reward/mean": 0.5})
    torn.append_samples(1, _rollouts(1, problems[:2], traces[:2]))
    append_jsonl(torn.samples_path(2), _rollouts(2, problems[:2], traces[:2]))
    for path in (torn.metrics_path, torn.samples_path(1)):
        with open(path, "ab") as f:
            f.write(b'{"step": 2, "reward/me')  # a crash mid-append
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on {url} in {timeout_s} s")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_runs(tmp_path_factory.mktemp("app"))


def _app(page: str, runs: Path, monkeypatch: pytest.MonkeyPatch, **params: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("T1LAB_RUNS", str(runs))
    at = AppTest.from_file(str(ROOT / "app" / page), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


@pytest.mark.parametrize("page", list(PAGES))
def test_page_renders_with_expected_widgets(page: str, runs_dir: Path, monkeypatch) -> None:
    at = _app(page, runs_dir, monkeypatch)
    assert not at.exception, [e.message for e in at.exception]
    title, widgets = PAGES[page]
    assert at.title[0].value == title
    assert at.sidebar.text_input[0].value == str(runs_dir)
    for kind, count in widgets.items():
        assert len(getattr(at, kind)) >= count, (kind, len(getattr(at, kind)))


@pytest.mark.parametrize("page", list(PAGES))
def test_page_with_empty_runs_folder(page: str, tmp_path: Path, monkeypatch) -> None:
    at = _app(page, tmp_path, monkeypatch)
    assert not at.exception, [e.message for e in at.exception]
    assert any("No run" in i.value for i in at.info)


def test_runs_page_table_and_config_diff(runs_dir: Path, monkeypatch) -> None:
    at = _app("Home.py", runs_dir, monkeypatch)
    table = at.dataframe[0].value
    assert set(table["run"]) == {"synth-a", "sft-a", "rl-a", "rl-torn"}
    status = dict(zip(table["run"], table["status"]))
    assert status["sft-a"] == "complete" and status["rl-a"] == "running"
    at.selectbox[0].select("sft-a")
    at.selectbox[1].select("rl-a")
    at.run()
    diff = at.dataframe[1].value
    assert {"stage", "sft.lr", "rl.num_generations"} <= set(diff["key"])


def test_training_overlays_runs_and_metrics(runs_dir: Path, monkeypatch) -> None:
    at = _app("pages/1_Training.py", runs_dir, monkeypatch, run="rl-a")
    runs_widget = next(w for w in at.multiselect if w.label.startswith("Runs"))
    assert runs_widget.value == ["rl-a"]
    runs_widget.select("rl-torn")
    at.run()
    metrics_widget = next(w for w in at.multiselect if w.label == "Metrics")
    assert "reward/mean" in metrics_widget.value and "kl/anchor" in metrics_widget.options
    assert not at.exception


def test_rollouts_filters_and_other_step(runs_dir: Path, monkeypatch) -> None:
    at = _app("pages/2_Rollouts.py", runs_dir, monkeypatch, run="rl-a", step="2")
    assert at.sidebar.select_slider[0].value == 2
    captions = " ".join(c.value for c in at.caption)
    assert "not kept" in captions and "kept" in captions
    link = next(m.value for m in at.markdown if "Open this prompt" in m.value)
    assert "step=4" in link and "prompt=" in link  # the other step defaults to the last one
    assert sum("finish" in c.value for c in at.caption) == 8  # 4 samples here + 4 at step 4
    at.multiselect[0].select("truncated")
    at.run()
    assert not at.exception
    shown = [c for c in at.caption if "finish" in c.value]
    assert shown and all("finish length" in c.value for c in shown[:2])
    at.text_input(key="query").input("no such text at all")
    at.run()
    assert any("No sample" in w.value for w in at.warning)


def test_rollouts_beside_another_step(runs_dir: Path, monkeypatch) -> None:
    at = _app("pages/2_Rollouts.py", runs_dir, monkeypatch, run="rl-a", step="2")
    next(t for t in at.toggle if t.label == "Beside another step").set_value(True)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    heads = [h.value for h in at.subheader]
    assert any(h.startswith("Step 2:") for h in heads) and "Step 4: 4 samples" in heads
    assert sum("finish" in c.value for c in at.caption) == 8  # both steps' cards


def test_rollouts_of_torn_run(runs_dir: Path, monkeypatch) -> None:
    at = _app("pages/2_Rollouts.py", runs_dir, monkeypatch, run="rl-torn", step="1")
    assert not at.exception
    assert at.metric[0].value == "8"  # 2 prompts x 4 samples; the torn half line is skipped


@pytest.mark.parametrize("source", ["RL rollouts", "synthesized SFT traces", "evaluation responses"])
def test_traces_sources(source: str, runs_dir: Path, monkeypatch) -> None:
    run = "sft-a" if source != "RL rollouts" else "rl-a"
    at = _app("pages/3_Traces.py", runs_dir, monkeypatch, run=run)
    at.sidebar.radio[0].set_value(source)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    html = " ".join(m.value for m in at.markdown)
    assert "attempt failed" in html and "answer" in html
    at.selectbox(key="only").select("failed_then_fixed")
    at.run()
    assert not at.exception


def test_inference_scaling_curves(runs_dir: Path, monkeypatch) -> None:
    at = _app("pages/4_Inference_scaling.py", runs_dir, monkeypatch)
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "4/4 budgets · complete" in captions and "2/4 budgets · scoring the budgets" in captions


def test_app_imports_no_torch(runs_dir: Path) -> None:
    """Every page runs in a fresh interpreter where torch cannot be imported."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"for page in {list(PAGES)!r}:\n"
        "    at = AppTest.from_file('app/' + page, default_timeout=60).run()\n"
        "    assert not at.exception, (page, at.exception)\n"
        "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
    )
    env = {**os.environ, "T1LAB_RUNS": str(runs_dir)}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=env, timeout=300)


def test_lab_app_serves_the_dashboard_on_the_given_host(runs_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lab", "app", "--runs-dir", str(runs_dir),
                             "--port", str(port), "--host", "127.0.0.1"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()  # the command became the server, so this stops it
        try:
            out = proc.communicate(timeout=20)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert f"http://127.0.0.1:{port}" in out and str(runs_dir) in out


def test_pages_see_appended_metrics_and_a_rewritten_curve(tmp_path: Path, monkeypatch) -> None:
    """The caches are keyed on the files, so a rerun shows what a live run wrote since."""
    from core.store import new_run

    run = new_run(tmp_path, "rl", {"task": TASK_CFG}, run_id="live")
    run.log_metrics({"step": 1, "reward/mean": 0.1})
    run.write_curve("final", _curve("final", "final", [16, 32, 64], 1, parallel=False))
    training = _app("pages/1_Training.py", tmp_path, monkeypatch)
    scaling = _app("pages/4_Inference_scaling.py", tmp_path, monkeypatch)
    assert "kl/anchor" not in training.multiselect(key="metrics").options
    assert any("1/3 budgets · scoring the budgets" in c.value for c in scaling.caption)

    run.log_metrics({"step": 2, "reward/mean": 0.2, "kl/anchor": 0.01})
    run.write_curve("final", _curve("final", "final", [16, 32, 64], 3, parallel=False))
    training.run()
    scaling.run()
    assert "kl/anchor" in training.multiselect(key="metrics").options
    assert any("3/3 budgets · complete" in c.value for c in scaling.caption)


def make_malformed_runs(root: Path) -> Path:
    """The fixture's good runs plus one of each malformed file a copied or damaged folder holds."""
    import shutil

    from core.store import new_run

    runs = make_runs(root)
    good = new_run(runs, "sft", {"task": TASK_CFG}, run_id="sft-good")
    good.write_summary({"eval/acc": 0.625})
    new_run(runs, "sft", {"task": TASK_CFG}, run_id="sft-badjson").summary_path.write_text("{not json")
    new_run(runs, "sft", {"task": TASK_CFG}, run_id="sft-list").summary_path.write_text("[1, 2]")
    rl = runs / "rl-a"
    (rl / "curves" / "garbage.json").write_text("\x00not json at all")
    (rl / "curves" / "wrong_shape.json").write_text('{"points": [{"budget_tokens": "many"}]}')
    bad = runs / "rl-badrows"
    shutil.copytree(rl, bad)
    with open(bad / "samples" / "step_000004.jsonl", "a") as f:
        f.write('{"problem_id": null, "response": 3, "reward": "high"}\n["a list"]\n')
    return runs


@pytest.fixture(scope="module")
def malformed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_malformed_runs(tmp_path_factory.mktemp("malformed"))


def test_a_malformed_summary_hides_only_its_own_figures(malformed_dir: Path, monkeypatch) -> None:
    """Regression: one summary.json that was invalid JSON or a list crashed the Runs page."""
    at = _app("Home.py", malformed_dir, monkeypatch)
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[0].value
    assert {"sft-good", "sft-badjson", "sft-list", "rl-a"} <= set(table["run"])
    assert table.set_index("run").loc["sft-good", "eval/acc"] == 0.625
    warnings = " ".join(w.value for w in at.warning)
    assert "sft-badjson" in warnings and "sft-list" in warnings


def test_malformed_curve_files_hide_only_themselves(malformed_dir: Path, monkeypatch) -> None:
    """Regression: a curve file that was not JSON hid the run's valid curves ("No budget curves
    yet"), and one of the wrong shape crashed the page."""
    at = _app("pages/4_Inference_scaling.py", malformed_dir, monkeypatch)
    assert not at.exception, [e.message for e in at.exception]
    captions = " ".join(c.value for c in at.caption)
    assert "4/4 budgets · complete" in captions and "2/4 budgets · scoring the budgets" in captions
    warnings = " ".join(w.value for w in at.warning)
    assert "garbage.json" in warnings and "wrong_shape.json" in warnings


def test_malformed_rollout_rows_are_left_out_and_said(malformed_dir: Path, monkeypatch) -> None:
    at = _app("pages/2_Rollouts.py", malformed_dir, monkeypatch, run="rl-badrows", step="4")
    assert not at.exception, [e.message for e in at.exception]
    assert any("1 malformed rows" in w.value for w in at.warning)


@pytest.mark.parametrize("address, remote_env, shown", [
    (None, None, True), ("127.0.0.1", None, True), ("::1", None, True),
    ("10.1.2.3", None, False), ("10.1.2.3", "1", True), ("not an address", None, False)])
def test_viewers_on_other_machines_see_no_runs_unless_serving_them_was_asked(
        address, remote_env, shown, monkeypatch) -> None:
    """Regression: `streamlit run app/Home.py` from outside the repository root (no
    .streamlit/config.toml there) listened on all interfaces and showed every run."""
    import types

    import app.common as common

    monkeypatch.setattr(common, "st", types.SimpleNamespace(context=types.SimpleNamespace(ip_address=address)))
    if remote_env:
        monkeypatch.setenv(common.REMOTE_ENV, remote_env)
    else:
        monkeypatch.delenv(common.REMOTE_ENV, raising=False)
    assert common.local_viewer() is shown
