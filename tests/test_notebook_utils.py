"""The notebooks' helpers: run a job like the command line, find a run to reuse."""

from __future__ import annotations

import pytest

from core.notebook_utils import (
    RUNS_ENV,
    SMOKE_ENV,
    config_matches,
    find_run,
    run_job,
    runs_dir,
    smoke,
)
from core.store import new_run


def test_smoke_and_runs_dir_follow_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(SMOKE_ENV, raising=False)
    monkeypatch.delenv(RUNS_ENV, raising=False)
    assert not smoke() and runs_dir(tmp_path / "runs") == tmp_path / "runs"
    monkeypatch.setenv(SMOKE_ENV, "1")
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "ci"))
    assert smoke() and runs_dir(tmp_path / "runs") == tmp_path / "ci"
    monkeypatch.setenv(SMOKE_ENV, "0")
    assert not smoke()


def test_config_matches_on_dotted_keys() -> None:
    cfg = {"stage": "sft", "config": {"task": {"name": "pairsum"}, "synth": {"style": "t1"}}}
    assert config_matches(cfg, {"task.name": "pairsum", "synth.style": "t1"})
    assert config_matches(cfg, {})
    assert not config_matches(cfg, {"synth.style": "plain"})
    assert not config_matches(cfg, {"sft.lora": False})  # a key the run does not have


def _run(runs, stage: str, run_id: str, style: str = "t1", complete: bool = True, checkpoint: bool = True):
    run = new_run(runs, stage, {"task": {"name": "pairsum"}, "synth": {"style": style}}, run_id=run_id)
    if checkpoint:
        path = run.checkpoint_dir(3)
        path.mkdir(parents=True)
        run.mark_checkpoint_complete(path)
    if complete:
        run.write_summary({})
    return run


def test_find_run_takes_the_newest_complete_matching_run(tmp_path) -> None:
    runs = tmp_path / "runs"
    assert find_run(runs, "sft") is None  # no folder at all
    _run(runs, "sft", "a-old")
    newest_t1 = _run(runs, "sft", "b-t1")
    _run(runs, "sft", "c-plain", style="plain")
    _run(runs, "sft", "d-crashed", complete=False)
    _run(runs, "rl", "e-rl-no-checkpoint", checkpoint=False)
    assert find_run(runs, "sft", {"synth.style": "t1"}).id == newest_t1.id
    assert find_run(runs, "sft").id == "c-plain"
    assert find_run(runs, "rl") is None  # a budget sweep needs a checkpoint to start from
    with_ckpt = _run(runs, "rl", "f-rl")
    assert find_run(runs, "rl").id == with_ckpt.id


TOY_SFT = {"synth.num_problems": 40, "model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2,
           "model.intermediate_size": 64, "model.threads": 1, "sft.max_steps": 2, "sft.warmup_steps": 1,
           "sft.batch_size": 8, "sft.micro_batch_size": 8, "sft.log_every": 1, "eval.num_problems": 4,
           "eval.sampling.max_new_tokens": 8}


def test_run_job_writes_a_complete_run_like_the_command_line(tmp_path) -> None:
    runs = tmp_path / "runs"
    lines: list[str] = []
    run, out = run_job("sft", TOY_SFT, runs, progress=False, log=lines.append)
    assert out["synth/num_traces"] == 40 and out["eval/n"] == 4
    assert run.summary()["eval/n"] == 4 and run.status() == "complete"
    assert run.config()["config"]["sft"]["max_steps"] == 2
    assert (run.checkpoint_dir("final") / "config.json").is_file()
    assert find_run(runs, "sft", {"synth.style": "t1"}).id == run.id
    assert any("run folder" in line for line in lines)


def test_run_job_refuses_unknown_commands_and_keys(tmp_path) -> None:
    from core.config import ConfigError

    with pytest.raises(ValueError, match="unknown command"):
        run_job("train", {}, tmp_path)
    with pytest.raises(ConfigError, match="max_steps"):
        run_job("sft", {"sft.max_step": 3}, tmp_path)
    assert not any(tmp_path.iterdir())  # a bad config leaves no run folder behind
