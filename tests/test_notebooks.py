"""Notebooks run top to bottom (outputs are stripped in git).

The execution test (slow) runs them in order at smoke sizes (T1LAB_NOTEBOOK_SMOKE=1) over one
temporary runs folder (T1LAB_NOTEBOOK_RUNS), so 03-05 reuse the runs the notebooks before them
made; run alone, a notebook trains what it misses. Each has a wall-clock cap (CAPS_S).

Strip outputs before committing a notebook you ran: python -m tests.test_notebooks notebooks/*.ipynb
"""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import pytest

from core.notebook import RUNS_ENV, SMOKE_ENV
from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Seconds per notebook at smoke sizes. Measured on a busy 2-core machine (load ~10), in order
# over a shared runs folder: 01 15 s, 02 44 s, 03 38 s, 04 40 s, 05 10 s (2 min 46 s in all);
# alone, training what they miss: 04 68 s, 05 110 s. The caps leave room for the latter.
CAPS_S = {"01_data_synthesis": 60, "02_sft": 150, "03_rl": 120, "04_inference_scaling": 150,
          "05_reading_runs": 180}
MAX_HELPER_LINES = 10  # a longer function belongs in core, with a test


def _code_cells(path: Path) -> list:
    import nbformat

    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_outputs_are_stripped(path) -> None:
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in _code_cells(path)), (
        f"strip {path.name}: python -m tests.test_notebooks {path.relative_to(ROOT)}")


def test_every_notebook_has_a_time_cap() -> None:
    assert {p.stem for p in NOTEBOOKS} == set(CAPS_S)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_define_no_long_helpers(path) -> None:
    """Notebooks call core; any function longer than a few lines moves there."""
    for cell in _code_cells(path):
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                lines = node.end_lineno - node.lineno  # type: ignore[operator]
                assert lines <= MAX_HELPER_LINES, f"{path.name}: {node.name} is {lines} lines: move it to core"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem >= "02"], ids=lambda p: p.stem)
def test_notebooks_start_with_a_parameters_cell_with_smoke_sizes(path) -> None:
    first = _code_cells(path)[0]
    assert "parameters" in first.metadata.get("tags", []) and "SMOKE" in first.source and "RUNS" in first.source


@pytest.fixture(scope="module")
def notebook_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebook_runs")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, notebook_runs, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv(SMOKE_ENV, "1")  # the kernel inherits the environment
    monkeypatch.setenv(RUNS_ENV, str(notebook_runs))
    cap = CAPS_S[path.stem]
    nb = nbformat.read(path, as_version=4)
    t0 = time.monotonic()
    NotebookClient(nb, timeout=cap, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.monotonic() - t0
    print(f"{path.name}: {elapsed:.0f} s")
    assert elapsed <= cap, f"{path.name} took {elapsed:.0f} s, over its {cap} s cap"


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
