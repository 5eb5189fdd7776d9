"""The RL loop end to end on a tiny model: parameters move; SIGKILL + resume is exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

SMALL_RL = [
    "rl.steps=6", "rl.prompts_per_step=4", "rl.num_generations=4", "rl.sampling.max_new_tokens=16",
    "rl.micro_batch_size=8", "eval.num_problems=8", "eval.sampling.max_new_tokens=16", "rl.eval_every=0", "rl.save_every=3", "rl.lr=1e-2",
]


def lab(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lab", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def step_metrics(run_dir: str) -> dict[int, dict]:
    rows = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    volatile = ("time/", "perf/", "wall_time")
    return {r["step"]: {k: v for k, v in r.items() if not k.startswith(volatile)}
            for r in rows if "reward/mean" in r}


def test_two_steps_change_parameters(tmp_path, tiny_model_dir) -> None:
    from safetensors.torch import load_file

    out = finish(lab("rl", "-q", "--runs-dir", str(tmp_path), f"rl.init={tiny_model_dir}",
                     *SMALL_RL, "rl.steps=2", "rl.save_every=2"))
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(os.path.join(out["checkpoint"], "model.safetensors"))
    assert any(not (before[k] == after[k]).all() for k in before)
    metrics = step_metrics(out["run_dir"])
    assert sorted(metrics) == [1, 2]
    for key in ("reward/mean", "rollout/len_mean", "kl/anchor", "loss/entropy", "optim/grad_norm"):
        assert key in metrics[1]
    rollouts = [json.loads(x) for x in open(os.path.join(out["run_dir"], "samples", "step_000001.jsonl"))]
    assert len(rollouts) == 16 and {"reward", "advantage", "used", "finish_reason"} <= set(rollouts[0])


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir) -> None:
    common = ["-q", f"rl.init={tiny_model_dir}", *SMALL_RL]
    full = finish(lab("rl", "--runs-dir", str(tmp_path / "a"), *common))
    killed = lab("rl", "--runs-dir", str(tmp_path / "b"), "--run-id", "victim", *common)
    marker = tmp_path / "b" / "victim" / "checkpoints" / "step_3" / "COMPLETE"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert marker.exists()
    resumed = finish(lab("rl", "--runs-dir", str(tmp_path / "b"), "--resume", "victim", "-q"))
    a, b = step_metrics(full["run_dir"]), step_metrics(resumed["run_dir"])
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert a[step] == b[step], step


@pytest.mark.slow
def test_lora_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir) -> None:
    """LoRA resumes from the base weights plus the saved adapters, not from the merged checkpoint."""
    common = ["-q", f"rl.init={tiny_model_dir}", *SMALL_RL, "rl.steps=4", "rl.save_every=2", "rl.lora.enabled=true",
              "rl.lora.r=4", "rl.lr=5e-2"]
    full = finish(lab("rl", "--runs-dir", str(tmp_path / "a"), *common))
    assert (tmp_path / "a" / full["run_dir"].split("/")[-1] / "checkpoints/step_4/adapter").is_dir()
    killed = lab("rl", "--runs-dir", str(tmp_path / "b"), "--run-id", "victim", *common)
    marker = tmp_path / "b" / "victim" / "checkpoints" / "step_2" / "COMPLETE"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    resumed = finish(lab("rl", "--runs-dir", str(tmp_path / "b"), "--resume", "victim", "-q"))
    a, b = step_metrics(full["run_dir"]), step_metrics(resumed["run_dir"])
    assert a[3] == b[3] and a[4] == b[4]


def test_bad_rl_config_fails_before_any_work(tmp_path) -> None:
    for arg, msg in [("rl.num_generations=1", "num_generations must be >= 2"),
                     ("rl.anchor=none", "beta > 0 needs an anchor"),
                     ("rl.micro_batch_size=7", "must divide")]:
        proc = subprocess.run([sys.executable, "-m", "lab", "rl", "--runs-dir", str(tmp_path), arg],
                              cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2 and msg in proc.stderr
        assert not any(tmp_path.iterdir())  # nothing was started


def test_rl_heldout_evaluation_follows_the_eval_section(tmp_path, tiny_model_dir) -> None:
    """Regression: `lab rl` evaluated with a hard-coded seed 1234 and temperature 1.0 at the
    rollout limit, ignoring eval.seed, eval.num_problems and eval.sampling.*."""
    from core.commands import run_command

    def start_eval(**over: object) -> dict:
        overrides = {"rl.init": str(tiny_model_dir), "rl.steps": 1, "rl.prompts_per_step": 2,
                     "rl.num_generations": 2, "rl.micro_batch_size": 4, "rl.sampling.max_new_tokens": 8,
                     "rl.save_every": 1, "eval.num_problems": 6, "eval.sampling.max_new_tokens": 12,
                     "eval.sampling.stop": "1", **over}  # a stop string: lengths vary with the draws
        run, _ = run_command("rl", overrides, tmp_path, say=lambda s: None, progress=False)
        return next(m for m in run.metrics() if m.get("step") == 0)

    base = start_eval()
    assert base["eval/n"] == 6 and base["eval/len_max"] <= 12
    assert start_eval()["eval/len_mean"] == base["eval/len_mean"]  # same seed, same evaluation
    assert start_eval(**{"eval.seed": 7})["eval/len_mean"] != base["eval/len_mean"]
    assert start_eval(**{"eval.num_problems": 3})["eval/n"] == 3


def test_rl_keeps_its_heldout_rows_per_evaluation_and_rewind_drops_later_ones(tmp_path, tiny_model_dir) -> None:
    """The paired tests of `lab reproduce` compare runs problem by problem: the rows of the
    start (step 0) and of each evaluation are kept, and a resumed run's history has no rows of
    steps it went back over."""
    from core.commands import run_command

    over = {"rl.init": str(tiny_model_dir), "rl.steps": 2, "rl.prompts_per_step": 2, "rl.num_generations": 2,
            "rl.micro_batch_size": 4, "rl.sampling.max_new_tokens": 8, "rl.eval_every": 1, "rl.save_every": 1,
            "eval.num_problems": 5, "eval.sampling.max_new_tokens": 8}
    run, _ = run_command("rl", over, tmp_path, say=lambda s: None, progress=False)
    assert run.heldout_steps() == [0, 1, 2]
    rows = run.heldout_rows(2)
    assert len(rows) == 5 and {"problem_id", "correct", "num_tokens", "num_reflections", "verified"} <= set(rows[0])
    evals = {m["step"]: m for m in run.metrics() if "eval/acc" in m}
    assert evals[2]["eval/acc"] == sum(r["correct"] for r in rows) / 5
    assert [r["problem_id"] for r in run.heldout_rows(0)] == [r["problem_id"] for r in rows]
    run.rewind(1)
    assert run.heldout_steps() == [0, 1]
