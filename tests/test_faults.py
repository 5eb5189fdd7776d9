"""Faults a user meets: a crafted pickle in a run folder, resuming the wrong thing, a kill before
the first checkpoint, a damaged newest checkpoint, a full disk. Each ends in one `error:` line or
in the same figures as an uninterrupted run."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_rl_loop import SMALL_RL, finish, lab, step_metrics


def lab_error(*args: str, cwd: Path = ROOT) -> str:
    """Run `python -m lab ...` expecting a user error: its one stderr line starting `error:`."""
    proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return errors[0]


class _Payload:
    """A pickle whose loading would run code: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _rl_run(runs: Path, tiny_model_dir: Path, *extra: str, run_id: str = "r") -> dict:
    return finish(lab("rl", "-q", "--runs-dir", str(runs), "--run-id", run_id, f"rl.init={tiny_model_dir}",
                      *SMALL_RL, *extra))


def test_a_crafted_pickle_in_a_run_folder_is_never_executed(tmp_path, tiny_model_dir) -> None:
    """Regression: the resume state was loaded with torch.load(weights_only=False), so a
    trainer_state.pt whose pickle called os.system ran its command on `lab rl --resume`."""
    _rl_run(tmp_path, tiny_model_dir, "rl.steps=2", "rl.save_every=1")
    run = tmp_path / "r"
    (run / "summary.json").unlink()  # as if it had crashed
    marker = tmp_path / "pwned"
    for ckpt in (run / "checkpoints").glob("step_*"):
        for f in ckpt.glob("trainer_state.*"):
            f.unlink()
        (ckpt / "trainer_state.pt").write_bytes(pickle.dumps(_Payload(marker)))
    err = lab_error("rl", "--runs-dir", str(tmp_path), "--resume", "r")
    assert "none of the checkpoints" in err
    assert not marker.exists()
    metrics = (run / "metrics.jsonl").read_text()
    assert metrics and json.loads(metrics.splitlines()[-1])["step"] == 2  # nothing was changed


def test_resume_refuses_what_it_must_not_continue(tmp_path, tiny_model_dir) -> None:
    """Regression: --resume wrote into any folder (a notes folder, a copied checkpoint, an eval
    run), rewrote finished runs' summaries and dropped its overrides silently."""
    out = _rl_run(tmp_path, tiny_model_dir, "rl.steps=1", "rl.save_every=1")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    ckpt = Path(out["checkpoint"])
    summary = (tmp_path / "r" / "summary.json").read_text()
    assert "not a run folder" in lab_error("rl", "--runs-dir", str(tmp_path), "--resume", str(notes))
    assert "not a run folder" in lab_error("rl", "--runs-dir", str(tmp_path), "--resume", str(ckpt))
    assert "is a rl run" in lab_error("synth", "--runs-dir", str(tmp_path), "--resume", "r")
    assert "is complete: nothing to resume" in lab_error("rl", "--runs-dir", str(tmp_path), "--resume", "r")
    assert "unknown config key" in lab_error("rl", "--runs-dir", str(tmp_path), "--resume", "r", "rl.no_such_key=5")
    assert sorted(p.name for p in notes.iterdir()) == ["notes.txt"]
    assert json.loads((ckpt / "config.json").read_text()).get("model_type")  # the model still loads
    assert (tmp_path / "r" / "summary.json").read_text() == summary


@pytest.mark.slow
def test_a_finished_run_is_extended_by_more_steps(tmp_path, tiny_model_dir) -> None:
    full = _rl_run(tmp_path / "a", tiny_model_dir, "rl.steps=4", "rl.save_every=2")
    _rl_run(tmp_path / "b", tiny_model_dir, "rl.steps=2", "rl.save_every=2")
    extended = finish(lab("rl", "-q", "--runs-dir", str(tmp_path / "b"), "--resume", "r", "rl.steps=4"))
    a, b = step_metrics(full["run_dir"]), step_metrics(extended["run_dir"])
    assert sorted(b) == [1, 2, 3, 4] and a[1] == b[1] and a[2] == b[2]  # the schedule's end moved: 3, 4 differ
    cfg = json.loads((tmp_path / "b" / "r" / "config.json").read_text())
    assert cfg["config"]["rl"]["steps"] == 4  # the override is recorded
    summary = json.loads((tmp_path / "b" / "r" / "summary.json").read_text())
    assert summary["eval/acc_start"] is not None and "eval/acc" in summary  # the whole run's summary


def _kill_when(proc: subprocess.Popen, path: Path, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert path.exists()


@pytest.mark.slow
def test_killed_before_its_first_checkpoint_it_starts_over_cleanly(tmp_path, tiny_model_dir) -> None:
    """Regression: resumed before any checkpoint, the run restarted in the same folder on top of
    what it had logged: steps 0,1,0,1,2,... and step 1 with twice its rollouts."""
    full = _rl_run(tmp_path / "a", tiny_model_dir)
    victim = lab("rl", "-q", "--runs-dir", str(tmp_path / "b"), "--run-id", "v", f"rl.init={tiny_model_dir}",
                 *SMALL_RL)
    _kill_when(victim, tmp_path / "b" / "v" / "samples" / "step_000002.jsonl")
    resumed = finish(lab("rl", "-q", "--runs-dir", str(tmp_path / "b"), "--resume", "v"))
    a, b = step_metrics(full["run_dir"]), step_metrics(resumed["run_dir"])
    assert a == b
    steps = [json.loads(x).get("step") for x in open(os.path.join(resumed["run_dir"], "metrics.jsonl"))]
    assert steps == sorted(steps)  # one history, no step twice (evaluations share their step's number)
    rows = open(os.path.join(resumed["run_dir"], "samples", "step_000001.jsonl")).read().splitlines()
    assert len(rows) == 16


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, tiny_model_dir) -> None:
    from safetensors.torch import load_file

    full = _rl_run(tmp_path / "a", tiny_model_dir, "rl.save_every=2")
    victim = lab("rl", "-q", "--runs-dir", str(tmp_path / "b"), "--run-id", "v", f"rl.init={tiny_model_dir}",
                 *SMALL_RL, "rl.save_every=2")
    ckpts = tmp_path / "b" / "v" / "checkpoints"
    _kill_when(victim, ckpts / "step_4" / "COMPLETE")
    weights = ckpts / "step_4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated by a full disk, say
    resumed = finish(lab("rl", "-q", "--runs-dir", str(tmp_path / "b"), "--resume", "v"))
    a, b = step_metrics(full["run_dir"]), step_metrics(resumed["run_dir"])
    assert a == b
    assert any(p.name.startswith("step_4.unused-") for p in ckpts.iterdir())
    final_a, final_b = (load_file(str(Path(r["checkpoint"]) / "model.safetensors")) for r in (full, resumed))
    assert all((final_a[k] == final_b[k]).all() for k in final_a)


def test_resuming_a_running_run_is_refused(tmp_path, tiny_model_dir) -> None:
    """Regression: two processes on one run logged steps twice and wrote the same checkpoints."""
    victim = lab("rl", "-q", "--runs-dir", str(tmp_path), "--run-id", "v", f"rl.init={tiny_model_dir}", *SMALL_RL,
                 "rl.steps=100000")  # still running when the second command looks
    try:
        deadline = time.time() + 120
        while not (tmp_path / "v" / "config.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert "still running" in lab_error("rl", "--runs-dir", str(tmp_path), "--resume", "v")
    finally:
        victim.kill()
        victim.communicate()


def test_a_full_disk_is_one_line(tmp_path, tiny_model_dir, monkeypatch, capsys) -> None:
    """Regression: a disk that filled mid-run ended in a traceback (OSError: [Errno 28])."""
    import core.store
    from lab.cli import main

    real = core.store.append_jsonl

    def full_after_a_while(path, rows):
        if "samples" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, rows)

    monkeypatch.setattr(core.store, "append_jsonl", full_after_a_while)
    code = main(["rl", "-q", "--runs-dir", str(tmp_path), f"rl.init={tiny_model_dir}", *SMALL_RL, "rl.steps=1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "no space left" in err[0] and "samples" in err[0]


def test_bad_files_are_one_line_before_any_run_folder(tmp_path, tiny_model_dir) -> None:
    runs = tmp_path / "runs"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    (model / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{truncated")
    assert "model.safetensors" in lab_error("eval", "--runs-dir", str(runs), f"model.name={model}")
    data = tmp_path / "traces.jsonl"
    data.write_bytes(b'{"question": "q", "response": "\xff"}\n')
    assert "malformed" in lab_error("sft", "--runs-dir", str(runs), f"sft.data={data}")
    data.write_text('{"question": "q"}\n')
    assert "missing response" in lab_error("sft", "--runs-dir", str(runs), f"sft.data={data}")
    task = tmp_path / "task.jsonl"
    task.write_bytes(b'{"problem": "1+1", "answer": "2"}\n\xff\xfe\n')
    assert "not UTF-8" in lab_error("eval", "--runs-dir", str(runs), f"model.name={tiny_model_dir}", f"task.name={task}")
    env_offline = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "lab", "eval", "--runs-dir", str(runs),
                           "model.name=nonexistent/model"], cwd=ROOT, capture_output=True, text=True, env=env_offline)
    assert proc.returncode == 2 and "not in the local cache" in proc.stderr
    for bad in ("rl.micro_batch_size=0", "rl.prompts_per_step=0", "rl.lr=-1", "rl.sampling.max_new_tokens=0",
                "rl.save_every=-1", "rl.eval_every=-1", "model.num_heads=0"):
        assert "must be" in lab_error("rl", "--runs-dir", str(runs), bad), bad
    assert "must be" in lab_error("sft", "--runs-dir", str(runs), "sft.micro_batch_size=0")
    assert not runs.exists()
    shutil.rmtree(model)


def test_a_teacher_that_never_answers_is_an_error_not_an_empty_success(tmp_path) -> None:
    """Regression: an HTTP teacher unreachable for every problem exited 0 with 0 traces."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    err = lab_error("synth", "-q", "--runs-dir", str(tmp_path), f"task.name={ROOT / 'tests/data/math500_20.jsonl'}", "task.decontaminate=false",
                    "synth.num_problems=2", f"teacher.models=http://127.0.0.1:{port}/v1#m", "teacher.retries=0",
                    "teacher.timeout_s=2", "teacher.num_attempts=1")
    assert "every problem failed" in err and "--resume" in err


TOY_SFT = ["synth.num_problems=300", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
           "model.intermediate_size=64", "model.threads=1", "sft.max_steps=30", "sft.warmup_steps=2",
           "sft.batch_size=8", "sft.micro_batch_size=8", "sft.log_every=1", "sft.save_every=10",
           "eval.num_problems=8", "eval.sampling.max_new_tokens=16"]


@pytest.mark.slow
def test_sft_killed_then_resumed_matches_an_uninterrupted_run(tmp_path) -> None:
    """Regression: `lab sft --resume` did not exist and sft.save_every was never used, so a killed
    SFT started over, synthesis included."""
    from safetensors.torch import load_file

    def sft(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "lab", "sft", "-q", *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    full = finish(sft("--runs-dir", str(tmp_path / "a"), *TOY_SFT))
    victim = sft("--runs-dir", str(tmp_path / "b"), "--run-id", "v", *TOY_SFT)
    _kill_when(victim, tmp_path / "b" / "v" / "checkpoints" / "step_20" / "COMPLETE")
    resumed = finish(sft("--runs-dir", str(tmp_path / "b"), "--resume", "v"))
    losses = [{r["step"]: r["loss/sft"] for r in map(json.loads, open(Path(o["run_dir"]) / "metrics.jsonl"))
               if "loss/sft" in r} for o in (full, resumed)]
    assert losses[0] == losses[1] and sorted(losses[1]) == list(range(1, 31))
    a, b = (load_file(str(Path(o["checkpoint"]) / "model.safetensors")) for o in (full, resumed))
    assert all((a[k] == b[k]).all() for k in a)
    assert resumed["eval/acc"] == full["eval/acc"] and resumed["synth/num_traces"] == 300


def test_synth_resume_repairs_a_torn_line_and_counts_the_whole_file(tmp_path) -> None:
    """Regression: after a crash mid-append the torn line survived a resume (and `lab sft` then
    stopped at it), and the summary counted only the traces written after the resume."""
    from core.commands import resume_command, run_command
    from core.store import read_jsonl

    quiet = {"say": lambda s: None, "progress": False}
    whole, out = run_command("synth", {"synth.num_problems": 200}, tmp_path / "a", **quiet)
    run, _ = run_command("synth", {"synth.num_problems": 200}, tmp_path / "b", **quiet)
    lines = run.traces_path.read_bytes().splitlines(keepends=True)
    run.traces_path.write_bytes(b"".join(lines[:120]) + lines[120][:25])  # killed mid-append
    run.summary_path.unlink()
    again = resume_command("synth", run.path, tmp_path / "b", **quiet)[1]
    assert read_jsonl(run.traces_path, strict=True) == read_jsonl(whole.traces_path, strict=True)
    assert again["synth/with_failed_attempt_frac"] == out["synth/with_failed_attempt_frac"]
    assert again["synth/num_traces"] == out["synth/num_traces"] == 200


def test_a_budget_sweep_resumes_keeping_its_finished_curves(tmp_path, tiny_model_dir) -> None:
    """A sweep stopped part-way (2 of 3 curves) goes on with --resume: finished curves stand, the
    unfinished one is redone from the start, and the result equals a sweep that never stopped."""
    from core.commands import resume_command, run_command

    quiet = {"say": lambda s: None, "progress": False}
    rl = _rl_run(tmp_path / "runs", tiny_model_dir, "rl.steps=2", "rl.save_every=1")
    over = {"model.name": rl["run_dir"], "budget.num_problems": 6, "budget.budgets": "4,8",
            "budget.sampling.max_new_tokens": 8}
    whole, _ = run_command("budget", over, tmp_path / "runs", **quiet)
    cut, _ = run_command("budget", over, tmp_path / "runs", **quiet)
    last = sorted(cut.curves())[-1]
    curve = cut.curves()[last]
    cut.write_curve(last, {**curve, "complete": False, "points": curve["points"][:1]})  # stopped mid-curve
    cut.summary_path.unlink()
    resumed = resume_command("budget", cut.path, tmp_path / "runs", **quiet)[0]
    strip = lambda c: {k: v for k, v in c.items() if k != "generation_s"}  # noqa: E731
    assert {n: strip(c) for n, c in resumed.curves().items()} == {n: strip(c) for n, c in whole.curves().items()}
    assert len(resumed.eval_rows(f"budget_{last}")) == len(whole.eval_rows(f"budget_{last}"))
