"""`python -m lab demo`: one preset split over the stages; the pipeline end to end at toy size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import ConfigError
from core.experiments.demo import RL_OVERRIDES, stage_presets


def test_preset_keys_go_to_the_stages_that_have_them() -> None:
    out = stage_presets({"sft.max_steps": 5, "rl.steps": 3, "eval.num_problems": 7, "task.max_value": 20,
                         "budget.num_problems": 9})
    assert out["sft"] == {"sft.max_steps": 5, "eval.num_problems": 7, "task.max_value": 20}
    assert out["rl"] == {**RL_OVERRIDES, "rl.steps": 3, "eval.num_problems": 7, "task.max_value": 20}
    assert out["budget"] == {"task.max_value": 20, "budget.num_problems": 9}


def test_a_key_no_stage_has_is_an_error() -> None:
    with pytest.raises(ConfigError, match="belongs to no stage of the demo"):
        stage_presets({"reproduce.seeds": "0"})


def test_bad_demo_preset_leaves_nothing(tmp_path: Path) -> None:
    from tests.test_cli import lab

    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  num_attempts: 3\n")
    proc = lab("demo", "--preset", str(bad), "--no-serve", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "belongs to no stage of the demo" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path: Path) -> None:
    from tests.test_cli import lab, last_json

    runs = tmp_path / "runs"
    proc = lab("demo", "--preset", "demo_smoke", "--no-serve", "-q", "--runs-dir", str(runs), timeout=1200)
    assert proc.returncode == 0, proc.stderr
    out = last_json(proc)
    demo = Path(out["run_dir"])
    page = (demo / "report.html").read_text()
    assert "T1 Lab demo" in page and "vega" in page and "cdn.jsdelivr" not in page  # works offline
    assert set(out["runs"]) == {"sft", "rl", "budget"}
    curves = list((Path(out["runs"]["budget"]) / "curves").glob("*.json"))
    assert len(curves) == 3  # the SFT model and both RL checkpoints (steps 2 and 4)
    assert all(json.loads(c.read_text())["complete"] for c in curves)
    # a rerun of the finished demo reuses every stage
    again = lab("demo", "--resume", str(demo), "--no-serve", "-q", "--runs-dir", str(runs))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("reusing") == 3 and last_json(again)["runs"] == out["runs"]


@pytest.mark.slow
def test_demo_time_bench_smoke(tmp_path: Path) -> None:
    """`python -m lab.bench.demo_time` at toy size: seconds per stage and the figures, as JSON."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_cli import last_json

    quick = ["sft.max_steps=5", "sft.warmup_steps=1", "synth.num_problems=200", "rl.steps=2", "rl.eval_every=1", "rl.save_every=1",
             "eval.num_problems=10", "budget.num_problems=10", "model.hidden_size=32", "model.num_layers=2",
             "model.num_heads=2", "model.intermediate_size=64"]
    proc = subprocess.run([sys.executable, "-m", "lab.bench.demo_time", "--runs-dir", str(tmp_path), *quick],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = last_json(proc)
    assert set(out["stages_s"]) == {"synth", "sft", "rl", "budget", "report"}
    assert out["total_s"] >= sum(out["stages_s"].values()) - 1e-6 and 0 <= out["sft_acc"] <= 1
    assert "total:" in proc.stdout and "(target <= 240 s)" in proc.stdout
