"""Notebooks run top to bottom (outputs are stripped in git).

Each starts with the same setup cell (`SETUP_CELL`: core.notebook.setup), imports only names that
exist, and defines no long helper. Two slow tests execute all five at smoke sizes
(T1LAB_NOTEBOOK_SMOKE=1): in order over one temporary runs folder (T1LAB_NOTEBOOK_RUNS), so 03-05
reuse the runs the notebooks before them made; and the way a user runs them, from notebooks/ in a
copy of the source after `python -m lab demo`, reusing the demo's runs. Run alone, a notebook
trains what it misses. Each has a wall-clock cap (CAPS_S).

Strip outputs before committing a notebook you ran: python -m tests.test_notebooks notebooks/*.ipynb
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from core.notebook import RUNS_ENV, SMOKE_ENV
from core.store import list_runs
from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SETUP_CELL = ("import sys, pathlib; sys.path.insert(0, str(pathlib.Path.cwd().parent))  # run from notebooks/\n"
              "from core.notebook import setup\n"
              "lab = setup()")
# Seconds per notebook at smoke sizes. Measured on a busy 2-core machine (load ~10), in order
# over a shared runs folder: 01 15 s, 02 44 s, 03 38 s, 04 40 s, 05 10 s (2 min 46 s in all);
# alone, training what they miss: 04 68 s, 05 110 s. The caps leave room for the latter. At load
# ~3, both slow tests: 2 min 45 s (in order 7/18/14/14/9 s; after the demo, ~45 s, 8/9/5/12/10 s).
CAPS_S = {"01_data_synthesis": 60, "02_sft": 150, "03_rl": 120, "04_inference_scaling": 150,
          "05_reading_runs": 180}
MAX_HELPER_LINES = 10  # a longer function belongs in core, with a test
SOURCE = ("core", "lab", "app", "notebooks", "pyproject.toml")  # what a clone holds that the notebooks use
CORE_NAME = re.compile(r"`(core(?:\.\w+)+)")


def _cells(path: Path, kind: str = "code") -> list:
    import nbformat

    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == kind]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_outputs_are_stripped(path) -> None:
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in _cells(path)), (
        f"strip {path.name}: python -m tests.test_notebooks {path.relative_to(ROOT)}")


def test_every_notebook_has_a_time_cap() -> None:
    assert {p.stem for p in NOTEBOOKS} == set(CAPS_S)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_define_no_long_helpers(path) -> None:
    """Notebooks call core; any function longer than a few lines moves there."""
    for cell in _cells(path):
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                lines = node.end_lineno - node.lineno  # type: ignore[operator]
                assert lines <= MAX_HELPER_LINES, f"{path.name}: {node.name} is {lines} lines: move it to core"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_start_with_the_shared_setup_cell(path) -> None:
    """Runs folder and sizes come from core.notebook.setup, not from a cell copied per notebook."""
    assert _cells(path)[0].source == SETUP_CELL


def _resolves(dotted: str) -> bool:
    """Whether `dotted` names a module or an attribute of one (core.report.views.trace_html)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_imports_and_named_core_objects_exist(path) -> None:
    """Every `from core... import name` of a code cell and every `core.x.y` a markdown cell names
    exists, so a renamed module fails here in seconds, not in the slow execution test."""
    names = []
    for cell in _cells(path):
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core"):
                names += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names += [alias.name for alias in node.names if alias.name.startswith("core")]
    names += [m for cell in _cells(path, "markdown") for m in CORE_NAME.findall(cell.source)]
    assert [n for n in names if not _resolves(n)] == []


def _execute(path: Path) -> list:
    """Run a notebook from its folder (the kernel inherits this process's environment); its
    executed code cells. CellExecutionError names the failing cell."""
    import nbformat
    from nbclient import NotebookClient

    cap = CAPS_S[path.stem]
    nb = nbformat.read(path, as_version=4)
    t0 = time.monotonic()
    NotebookClient(nb, timeout=cap, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.monotonic() - t0
    print(f"{path.name}: {elapsed:.0f} s")
    assert elapsed <= cap, f"{path.name} took {elapsed:.0f} s, over its {cap} s cap"
    return [c for c in nb.cells if c.cell_type == "code"]


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


@pytest.fixture(scope="module")
def notebook_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebook_runs")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, notebook_runs, monkeypatch) -> None:
    monkeypatch.setenv(SMOKE_ENV, "1")  # the kernel inherits the environment
    monkeypatch.setenv(RUNS_ENV, str(notebook_runs))
    _execute(path)


def _stages(runs: Path) -> Counter:
    return Counter(run.stage for run in list_runs(runs))


@pytest.mark.slow
def test_notebooks_reuse_the_demo_runs_in_a_fresh_copy(tmp_path, monkeypatch) -> None:
    """Regression: after `make demo` in a fresh clone, notebook 04 stopped at its first model load
    with "ModelLoadError: model folder not found: runs/sft-.../checkpoints/final" and notebook 05
    with "StoreError: run not found": the demo stores paths relative to the folder it ran in
    (runs/...), and they were resolved against the notebooks' working directory (notebooks/).

    The user's path: the source copied (no .venv, no runs), `python -m lab demo` from its root,
    then every notebook from notebooks/ at smoke sizes with the default runs folder. Every cell
    runs, and the notebooks reuse the demo's SFT and RL runs instead of training new ones."""
    copy = tmp_path / "t1-lab"
    for name in SOURCE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        else:
            shutil.copy2(src, copy / name)
    demo = subprocess.run([sys.executable, "-m", "lab", "demo", "--preset", "demo_smoke", "--no-serve", "-q"],
                          cwd=copy, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stderr[-3000:]
    runs = copy / "runs"
    before = _stages(runs)
    assert before == {"demo": 1, "sft": 1, "rl": 1, "budget": 1}, before

    monkeypatch.setenv(SMOKE_ENV, "1")
    monkeypatch.delenv(RUNS_ENV, raising=False)
    for path in sorted((copy / "notebooks").glob("*.ipynb")):
        cells = _execute(path)
        assert f"runs in {runs}" in _text(cells[0]), _text(cells[0])  # the copy's core, its runs/

    after = _stages(runs)
    # 02-05 reused the demo's SFT and RL runs; 04 swept with 4 samples per problem (the demo's
    # sweep has 1), and 05 read that sweep
    assert after == {**before, "budget": before["budget"] + 1}, after


def strip_outputs(path: Path) -> bool:
    """Remove outputs and execution counts in place; True if the file changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
        changed |= cell.metadata.pop("execution", None) is not None
    if changed:
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {'stripped' if strip_outputs(Path(arg)) else 'already clean'}")
