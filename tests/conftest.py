"""Shared fixtures: a tiny embedded model saved to disk, the embedded task."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised embedded Qwen2 model saved in HF format."""
    from core.models import TinySpec, build_tiny_model, save_policy

    model, tok = build_tiny_model(TinySpec(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64))
    return save_policy(model, tok, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture()
def pairsum_task():
    from core.tasks.pairsum import PairSumTask

    return PairSumTask()


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs a page as `__main__` and leaves it in sys.modules; a process
    spawned afterwards (the math-verify workers) would re-run that page at start and die.
    Each test gets back the `__main__` it started with."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
