"""The layers contract (pyproject.toml, `make lint`): imports in core point one way."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120)


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "repo"
    shutil.copytree(ROOT / "core", tree / "core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")
def test_the_layers_hold_and_an_upward_import_breaks_them(tmp_path) -> None:
    tree = _copy(tmp_path)
    kept = _lint(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    store = tree / "core" / "store.py"  # the floor reaching up into the RL domain, inside a function
    store.write_text(store.read_text() + "\n\ndef _up() -> None:\n    from core.rl import loop  # noqa: F401\n")
    broken = _lint(tree)
    assert broken.returncode != 0 and "core.store -> core.rl.loop" in broken.stdout
