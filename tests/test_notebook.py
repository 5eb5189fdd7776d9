"""The notebooks' setup: sizes and runs folder from the environment, runs reused before trained."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.config import ConfigError
from core.notebook import RUNS_ENV, SIZES, SMOKE_ENV, SMOKE_PRESET, NotebookLab, setup
from core.store import new_run
from tests.conftest import ROOT


def test_setup_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(SMOKE_ENV, raising=False)
    monkeypatch.delenv(RUNS_ENV, raising=False)
    lab = setup()
    assert not lab.smoke and lab.progress and lab.sizes == SIZES and lab.runs.name == "runs"
    assert lab.runs.is_absolute()  # the repository's runs/, whatever the working directory
    monkeypatch.setenv(SMOKE_ENV, "1")
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "ci"))
    lab = setup()
    assert lab.smoke and not lab.progress and lab.sizes == SMOKE_PRESET and lab.runs == tmp_path / "ci"
    monkeypatch.setenv(SMOKE_ENV, "0")
    assert not setup().smoke
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RUNS_ENV, "mine")
    assert setup().runs == tmp_path / "mine"  # absolute: stored paths resolve from any folder


def test_setup_and_finding_runs_need_no_torch() -> None:
    """Notebook 05 reads runs without torch; only making a run imports the stages."""
    code = "import sys; from core.notebook import setup; setup('runs').find('rl'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)


def _run(runs, stage: str, run_id: str, style: str = "t1", complete: bool = True, checkpoint: bool = True,
         **sections):
    cfg = {"task": {"name": "pairsum"}, "synth": {"style": style}, "sft": {"lora": {"enabled": False}},
           "rl": {"lora": {"enabled": False}}, **sections}
    run = new_run(runs, stage, cfg, run_id=run_id)
    if checkpoint:
        path = run.checkpoint_dir(3)
        path.mkdir(parents=True)
        run.mark_checkpoint_complete(path)
    if complete:
        run.write_summary({})
    return run


def test_find_takes_the_newest_complete_matching_run_with_a_model(tmp_path) -> None:
    lab = setup(tmp_path / "runs", smoke=True)
    assert lab.find("sft") is None  # no folder at all
    _run(lab.runs, "sft", "a-old")
    newest_t1 = _run(lab.runs, "sft", "b-t1")
    _run(lab.runs, "sft", "c-plain", style="plain")
    _run(lab.runs, "sft", "d-crashed", complete=False)
    _run(lab.runs, "rl", "e-rl-no-checkpoint", checkpoint=False)
    assert lab.find("sft").id == newest_t1.id  # T1 traces by default: the plain one is not reused
    assert lab.find("sft", {"synth.style": "plain"}).id == "c-plain"
    assert lab.find("rl") is None  # a budget sweep needs a checkpoint to start from
    with_ckpt = _run(lab.runs, "rl", "f-rl")
    assert lab.find("rl").id == with_ckpt.id
    assert lab.rl_run().id == with_ckpt.id  # reused, nothing trained
    assert lab.made == []


@pytest.fixture()
def no_training(monkeypatch):
    """NotebookLab.run records what it was asked to make instead of training."""
    asked = []
    monkeypatch.setattr(NotebookLab, "run", lambda self, command, overrides=None: asked.append((command, overrides))
                        or (None, {}))
    return asked


def test_budget_run_reuses_a_sweep_of_that_rl_run_with_the_asked_settings(tmp_path, no_training) -> None:
    lab = setup(tmp_path / "runs", smoke=True)
    rl, other = _run(lab.runs, "rl", "a-rl"), _run(lab.runs, "rl", "b-rl")
    # as `make demo` stores it: relative to the folder the command ran in, not to this one
    sweep = _run(lab.runs, "budget", "c-budget", checkpoint=False, model={"name": "runs/a-rl"},
                 budget={"num_samples": 1})
    _run(lab.runs, "budget", "d-budget-crashed", checkpoint=False, complete=False, model={"name": "runs/a-rl"},
         budget={"num_samples": 4})
    assert lab.budget_run(rl).id == sweep.id
    assert no_training == []
    lab.budget_run(other)
    lab.budget_run(rl, {"budget.num_samples": 4})
    assert no_training == [("budget", {"model.name": str(other.path)}),
                           ("budget", {"budget.num_samples": 4, "model.name": str(rl.path)})]


def test_started_from_finds_the_sft_run_from_the_paths_rl_stored(tmp_path, monkeypatch) -> None:
    lab = setup(tmp_path / "runs", smoke=True)
    sft = _run(lab.runs, "sft", "a-sft")
    (sft.checkpoint_dir("final")).mkdir()
    (sft.checkpoint_dir("final") / "config.json").write_text("{}")  # a saved model's own config.json
    rl = _run(lab.runs, "rl", "b-rl", rl={"init": "runs/a-sft"})
    rl.log_metrics({"step": 0, "init": "runs/a-sft/checkpoints/final"})  # what the RL run loaded
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert lab.started_from(rl).id == sft.id
    assert lab.started_from(_run(lab.runs, "rl", "c-rl", rl={"init": "runs/a-sft"})).id == sft.id
    assert lab.started_from(_run(lab.runs, "rl", "d-rl", rl={"init": "Qwen/Qwen2.5-0.5B"})) is None


TOY_SFT = {"synth.num_problems": 40, "model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2,
           "model.intermediate_size": 64, "model.threads": 1, "sft.max_steps": 2, "sft.warmup_steps": 1,
           "sft.batch_size": 8, "sft.micro_batch_size": 8, "sft.log_every": 1, "eval.num_problems": 4,
           "eval.sampling.max_new_tokens": 8}


def test_run_writes_a_complete_run_like_the_command_line(tmp_path, capsys) -> None:
    lab = setup(tmp_path / "runs", smoke=True)
    run, out = lab.run("sft", TOY_SFT)
    assert out["synth/num_traces"] == 40 and out["eval/n"] == 4
    assert run.summary()["eval/n"] == 4 and run.status() == "complete"
    assert run.setting("sft.max_steps") == 2
    assert (run.checkpoint_dir("final") / "config.json").is_file()
    assert lab.find("sft").id == run.id and lab.made == [run]
    assert "run folder" in capsys.readouterr().out


def test_run_refuses_unknown_commands_and_keys(tmp_path) -> None:
    lab = setup(tmp_path, smoke=True)
    with pytest.raises(ValueError, match="unknown command"):
        lab.run("train")
    with pytest.raises(ConfigError, match="max_steps"):
        lab.run("sft", {"sft.max_step": 3})
    assert not any(tmp_path.iterdir())  # a bad config leaves no run folder behind
