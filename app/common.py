"""What every dashboard page shares: the runs-folder input, run pickers and cached loads.

Loads of the JSONL files (metrics, rollouts, traces, eval rows) go through core.store and are
cached with st.cache_data keyed on the file's (path, inode, mtime_ns, size), so a page rerun
costs nothing until a run appends to the file (the size grows) or rewrites it (a new inode).
Folder listings and the small curve files are read afresh on every rerun: a folder's mtime
ticks too coarsely to key a cache on (two changes within a few ms look the same), and a live
sweep must never show a stale curve. Nothing here imports torch.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/Home.py` puts only app/ on the path
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from core.report.views import logged_trace_stats, trace_step_stats, usable_curve, usable_rollout  # noqa: E402
from core.store import Run, StoreError, list_runs  # noqa: E402

FileKey = tuple[str, int, int, int]
RUNS_ENV = "T1LAB_RUNS"
REMOTE_ENV = "T1LAB_SERVE_REMOTE"  # "1": viewers on other machines see the runs too


def file_key(path: Path) -> FileKey:
    """(path, inode, mtime_ns, size) of a file; (path, 0, 0, -1) when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return str(path), 0, 0, -1
    return str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size


# ------------------------------------------------------------------ cached loads (one per file)


@st.cache_data(max_entries=64, show_spinner=False)
def _metrics(run_path: str, key: FileKey) -> list[dict]:
    return Run(Path(run_path)).metrics()


@st.cache_data(max_entries=512, show_spinner=False)
def _samples(run_path: str, step: int, key: FileKey) -> list[dict]:
    return Run(Path(run_path)).samples(step)


@st.cache_data(max_entries=8, show_spinner=False)
def _traces(run_path: str, key: FileKey) -> list[dict]:
    return Run(Path(run_path)).traces()


@st.cache_data(max_entries=16, show_spinner=False)
def _eval_rows(run_path: str, name: str, key: FileKey) -> list[dict]:
    return Run(Path(run_path)).eval_rows(name)


@st.cache_data(max_entries=32, show_spinner=False)
def _trace_stats(run_path: str, steps: tuple[int, ...], task: str | None,
                 keys: tuple[FileKey, ...]) -> pd.DataFrame:
    run = Run(Path(run_path))
    return trace_step_stats({s: run.samples(s) for s in steps}, task)


def load_metrics(run: Run) -> list[dict]:
    """All metrics lines of a run (a torn last line is skipped by the store)."""
    return _metrics(str(run.path), file_key(run.metrics_path))


def load_samples(run: Run, step: int, skipped: list[str] | None = None) -> list[dict]:
    """Rollout rows of one RL step ([] if the file is missing); rows the pages cannot read
    (wrong types, missing ids) are left out, counted in `skipped`."""
    rows = _samples(str(run.path), step, file_key(run.samples_path(step)))
    good = [r for r in rows if usable_rollout(r)]
    if skipped is not None and len(good) < len(rows):
        skipped.append(f"{len(rows) - len(good)} malformed rows of {run.samples_path(step)}")
    return good


def load_sample_steps(run: Run) -> list[int]:
    """Steps with a rollouts file, sorted."""
    return run.sample_steps()


def load_traces(run: Run) -> list[dict]:
    """Synthesized SFT traces of a synth/sft run."""
    return _traces(str(run.path), file_key(run.traces_path))


def load_eval_rows(run: Run, name: str) -> list[dict]:
    """Per-sample evaluation rows of eval/<name>.jsonl."""
    return _eval_rows(str(run.path), name, file_key(run.eval_path(name)))


def load_curves(run: Run, skipped: list[str] | None = None) -> dict[str, dict]:
    """name -> inference-budget curve of a run whose points can be drawn; a malformed file or
    curve hides only itself, its reason appended to `skipped`."""
    curves = run.curves(skipped)
    good = {name: c for name, c in curves.items() if usable_curve(c)}
    if skipped is not None:
        skipped += [f"{run.curve_path(name)}: not a budget curve (points of budget_tokens and accuracy)"
                    for name in curves if name not in good]
    return good


def run_summary(run: Run, skipped: list[str]) -> dict | None:
    """summary.json of a run, None while it runs or when the file is malformed (said in `skipped`)."""
    try:
        summary = run.summary()
    except StoreError as e:
        skipped.append(str(e))
        return None
    if summary is not None and not isinstance(summary, dict):
        skipped.append(f"{run.summary_path}: expected a JSON object")
        return None
    return summary


def load_trace_stats(run: Run, steps: list[int], task: str | None) -> pd.DataFrame:
    """Per-step structure stats of the rollouts of `steps`: the "trace/..." metrics the RL loop
    logged, else (runs from before) parsed from the rollouts (core.report.views.trace_step_stats)."""
    logged = logged_trace_stats(load_metrics(run), steps)
    if logged is not None:
        return logged
    keys = tuple(file_key(run.samples_path(s)) for s in steps)
    return _trace_stats(str(run.path), tuple(steps), task, keys)


def clear_caches() -> None:
    """Forget every cached load (the benchmark measures cold loads)."""
    for fn in (_metrics, _samples, _traces, _eval_rows, _trace_stats):
        fn.clear()


# ------------------------------------------------------------------------------ page helpers


def local_viewer() -> bool:
    """Whether this session may see the runs: a viewer on this machine (Streamlit gives no
    address for those), or any viewer when serving others was asked for (`lab app --host`).
    `streamlit run app/Home.py` started from elsewhere listens on every interface."""
    if os.environ.get(REMOTE_ENV) == "1":
        return True
    address = getattr(st.context, "ip_address", None)
    if not isinstance(address, str):  # None: a viewer on this machine (or a test without a network)
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


PAGE_ICONS = {"Runs": "🧪", "Training": "📈", "Rollouts": "🎲", "Traces": "🔍", "Inference scaling": "📊"}


def page_header(title: str) -> list[Run]:
    """Page config (title and icon in the browser tab), title and the sidebar runs-folder input;
    returns the runs found there. The folder typed on one page is kept in session state so the
    other pages open on it.
    """
    st.set_page_config(page_title=f"T1 Lab · {title}", page_icon=PAGE_ICONS.get(title, "🧪"), layout="wide")
    st.title(title)
    if not local_viewer():
        st.error("This dashboard shows run folders to this machine only. To serve others on purpose: "
                 "`python -m lab app --host ADDRESS` (or set T1LAB_SERVE_REMOTE=1).")
        st.stop()
    default = (st.session_state.get("runs_dir") or st.query_params.get("runs")
               or os.environ.get(RUNS_ENV, "runs"))
    runs_dir = st.sidebar.text_input("Runs folder", value=default, help=f"default: ${RUNS_ENV} or runs")
    st.session_state["runs_dir"] = runs_dir
    runs = list_runs(runs_dir)
    if not runs:
        st.info(f"No runs in `{runs_dir}` yet: `python -m lab sft` makes one.")
    return runs


def run_config(run: Run) -> dict[str, Any]:
    """config.json of a run, {} when it cannot be read (a run being created)."""
    try:
        return run.config()
    except StoreError:
        return {}


def task_name(run: Run) -> str | None:
    """The task a run used ("pairsum", "math500", ...)."""
    try:
        return run.setting("task.name")
    except StoreError:  # a run being created
        return None


FOLLOW_S = 3  # how often a page looks for new runs and steps


def follow(signature: Callable[[], Any], every: float = FOLLOW_S) -> None:
    """Rerun the whole page when `signature()` (say, the run ids and a run's steps) changes,
    checked every `every` seconds: the run pickers and step sliders, outside any fragment, then
    offer what was written since the page was drawn."""
    first = signature()

    @st.fragment(run_every=every)
    def watch() -> None:
        if signature() != first:
            st.rerun()

    watch()


def run_ids(runs_dir: str | Path) -> tuple[str, ...]:
    """The ids of the runs in a folder (what `follow` watches for a run that starts)."""
    return tuple(r.id for r in list_runs(runs_dir))


def default_run(runs: list[Run]) -> int:
    """Index of the run a page opens on: the newest running one, else the newest."""
    return next((i for i, r in enumerate(runs) if r.status() == "running"), 0)


def pick_run(label: str, runs: list[Run], param: str = "run", key: str | None = None) -> Run:
    """A run selectbox in the sidebar; its default comes from the ?run= query parameter, else
    the newest running run, else the newest."""
    ids = [r.id for r in runs]
    wanted = st.query_params.get(param)
    index = ids.index(wanted) if wanted in ids else default_run(runs)
    chosen = st.sidebar.selectbox(label, ids, index=index, key=key)
    return runs[ids.index(chosen)]
