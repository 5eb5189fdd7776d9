"""Experiment trackers (log.report_to) with their real clients, offline: what each one holds is
read back with the tracker's own reader and set against the run's metrics.jsonl."""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError
from core.store import open_run
from tests.conftest import ROOT

pytest.importorskip("tensorboard", reason="the trackers extra: pip install -e '.[trackers]'")
pytest.importorskip("wandb")
pytest.importorskip("mlflow")
pytest.importorskip("trackio")

SMALL_RL = {"rl.steps": 3, "rl.prompts_per_step": 2, "rl.num_generations": 2, "rl.micro_batch_size": 4,
            "rl.sampling.max_new_tokens": 8, "rl.save_every": 1, "rl.eval_every": 2, "eval.num_problems": 6,
            "eval.sampling.max_new_tokens": 12}


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "TRACKIO_DIR": str(tmp_path / "trackio")}


def expected_pairs(run_dir: Path) -> set[tuple[str, int]]:
    """(key, step) of every number in metrics.jsonl (a line without a step: the last one's)."""
    pairs, step = set(), 0
    for rec in open_run(run_dir).metrics():
        step = rec["step"] if isinstance(rec.get("step"), int) else step
        for k, v in rec.items():
            if k not in ("step", "wall_time") and isinstance(v, int | float) and not isinstance(v, bool):
                pairs.add((k, step))
    return pairs


def wandb_history(run_dir: Path) -> list[dict]:
    """History rows of the W&B offline run under the run folder: its .wandb file is a LevelDB-style
    log (32 KiB blocks, 7-byte chunk headers) of protobuf records, read with W&B's own schema."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(str(run_dir / "trackers/wandb/wandb/offline-run-*/run-*.wandb"))
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, rows = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            if rec.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return rows


def test_rl_run_mirrored_to_all_four_trackers(tmp_path, tiny_model_dir) -> None:
    mlruns = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [f"{k}={v}" for k, v in SMALL_RL.items()]
    proc = subprocess.run([sys.executable, "-m", "lab", "rl", "-q", "--runs-dir", str(tmp_path / "runs"),
                           f"rl.init={tiny_model_dir}", *args, "log.report_to=tensorboard,wandb,mlflow,trackio",
                           f"log.mlflow_uri={mlruns}", "log.samples_per_step=3"],
                          cwd=ROOT, capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    want = expected_pairs(run_dir)
    assert ("reward/mean", 3) in want and ("eval/acc", 0) in want and ("eval/acc", 2) in want
    ids = json.loads((run_dir / "trackers.json").read_text())

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir / "trackers/tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    tb = {(tag, e.step) for tag in ea.Tags()["scalars"] for e in ea.Scalars(tag)}
    assert want <= tb and {k for k, _ in tb if not k.startswith("summary/")} == {k for k, _ in want}
    assert {"rollouts/text_summary", "config/text_summary"} <= set(ea.Tags()["tensors"])

    hist = wandb_history(run_dir)
    wb = {(k, row["_step"]) for row in hist for k, v in row.items() if not k.startswith("_") and isinstance(v, int | float)}
    assert want <= wb
    tables = [row["rollouts/path"] for row in hist if "rollouts/path" in row]  # a bounded table per step
    files = glob.glob(str(run_dir / "trackers/wandb/wandb/offline-run-*/files"))[0]
    assert len(tables) == 3 and all(len(json.loads(Path(files, t).read_text())["data"]) == 3 for t in tables)

    from mlflow import MlflowClient

    client = MlflowClient(mlruns)
    mlrun = client.get_run(ids["mlflow"])
    assert mlrun.info.run_name == run_dir.name and mlrun.info.status == "FINISHED"
    assert mlrun.data.params["rl.steps"] == "3" and mlrun.data.params["log.project"] == "t1-lab"
    ml = {(k, m.step) for k in {k for k, _ in want} for m in client.get_metric_history(ids["mlflow"], k)}
    assert ml == want

    code = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage as S; "
            "print(json.dumps(S.get_logs('t1-lab', sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", code, run_dir.name], capture_output=True, text=True,
                         env=_env(tmp_path), check=True)
    logs = json.loads(out.stdout.strip().splitlines()[-1])
    tr = {(k, row["step"]) for row in logs for k, v in row.items()
          if k not in ("step", "timestamp") and isinstance(v, int | float) and not isinstance(v, bool)}
    assert want <= tr


def test_resume_continues_the_same_mlflow_run(tmp_path, tiny_model_dir) -> None:
    from mlflow import MlflowClient

    from core.commands import resume_command, run_command

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    over = {"rl.init": str(tiny_model_dir), **SMALL_RL, "rl.steps": 2, "log.report_to": "mlflow", "log.mlflow_uri": uri}
    run, _ = run_command("rl", over, tmp_path / "runs", say=lambda s: None, progress=False)
    first = json.loads(run.trackers_path.read_text())["mlflow"]
    resume_command("rl", run.path, tmp_path / "runs", say=lambda s: None, progress=False, overrides={"rl.steps": 4})
    assert json.loads(run.trackers_path.read_text())["mlflow"] == first
    steps = [m.step for m in MlflowClient(uri).get_metric_history(first, "reward/mean")]
    assert steps == [1, 2, 3, 4]
    assert MlflowClient(uri).get_run(first).info.status == "FINISHED"


def test_budget_curves_and_sft_metrics_in_tensorboard(tmp_path, tiny_model_dir) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from core.commands import run_command

    run, _ = run_command("budget", {"model.name": str(tiny_model_dir), "budget.num_problems": 4,
                                    "budget.budgets": "4,8", "budget.unconstrained_tokens": 0,
                                    "log.report_to": "tensorboard"},
                         tmp_path / "runs", say=lambda s: None, progress=False)
    ea = EventAccumulator(str(run.tracker_dir("tensorboard")))
    ea.Reload()
    (name,) = run.curves()
    acc = ea.Scalars(f"budget/{name}/accuracy")
    points = run.curves()[name]["points"]
    assert [(e.step, round(e.value, 6)) for e in acc] == [(p["budget_tokens"], round(p["accuracy"], 6)) for p in points]

    quick = {"synth.num_problems": 100, "sft.max_steps": 4, "sft.warmup_steps": 1, "sft.batch_size": 8,
             "sft.micro_batch_size": 8, "sft.log_every": 1, "eval.num_problems": 8, "model.hidden_size": 32,
             "model.num_layers": 2, "model.num_heads": 2, "model.intermediate_size": 64,
             "eval.sampling.max_new_tokens": 16, "log.report_to": "tensorboard"}
    sft, _ = run_command("sft", quick, tmp_path / "runs", say=lambda s: None, progress=False)
    ea = EventAccumulator(str(sft.tracker_dir("tensorboard")), size_guidance={"scalars": 0})
    ea.Reload()
    tb = {(tag, e.step) for tag in ea.Tags()["scalars"] for e in ea.Scalars(tag)}
    want = expected_pairs(sft.path)
    assert any(k.startswith("train/") or k.startswith("loss") for k, _ in want) and want <= tb


class Raising:
    """A tracker whose every call raises (a dead network, a full disk)."""

    name = "tensorboard"
    calls = 0

    def __init__(self, run, cfg) -> None:
        pass

    def __getattr__(self, what):
        def fail(*args, **kwargs):
            Raising.calls += 1
            raise ConnectionError("tracker unreachable")
        return fail


class FailsAfterStart(Raising):
    """A tracker that starts, then loses its network."""

    def start(self, *args) -> None:
        return None


def test_a_tracker_that_fails_mid_run_is_left_off_after_a_few(tmp_path, tiny_model_dir, monkeypatch) -> None:
    from core import trackers
    from core.commands import run_command

    monkeypatch.setitem(trackers.CLIENTS, "tensorboard", FailsAfterStart)
    Raising.calls = 0
    lines: list[str] = []
    run, _ = run_command("rl", {"rl.init": str(tiny_model_dir), **SMALL_RL, "log.report_to": "tensorboard"},
                         tmp_path, say=lines.append, progress=False)
    assert run.status() == "complete" and len(run.metrics()) == 6  # evaluations at steps 0, 2, 3; 3 steps
    assert sum(s.startswith("warning:") for s in lines) == 1
    assert Raising.calls == trackers.MAX_FAILURES  # then it was left off


def test_a_failing_tracker_warns_once_and_the_run_loses_nothing(tmp_path, tiny_model_dir, monkeypatch) -> None:
    from core import trackers
    from core.commands import run_command

    monkeypatch.setitem(trackers.CLIENTS, "tensorboard", Raising)
    Raising.calls = 0
    lines: list[str] = []
    over = {"rl.init": str(tiny_model_dir), **SMALL_RL}
    plain, _ = run_command("rl", over, tmp_path / "a", say=lines.append, progress=False)
    lines.clear()
    run, summary = run_command("rl", {**over, "log.report_to": "tensorboard"}, tmp_path / "b", say=lines.append,
                               progress=False)
    warnings = [s for s in lines if s.startswith("warning:")]
    assert len(warnings) == 1 and "tensorboard failed" in warnings[0] and "tracker unreachable" in warnings[0]
    assert run.status() == "complete" and summary["eval/acc"] is not None
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/")) and "time" not in k}  # noqa: E731
                          for r in rows]  # what a clock measures differs from run to run
    assert strip(run.metrics()) == strip(plain.metrics())  # every line, as without the tracker
    assert Raising.calls == 1  # it never started, so nothing else was sent to it


def test_tracker_errors_before_any_run_folder(tmp_path, monkeypatch) -> None:
    from core import trackers
    from core.commands import run_command

    with pytest.raises(ConfigError, match=r"unknown tracker 'wandbb'; choose from tensorboard, wandb, mlflow, trackio"):
        run_command("rl", {"log.report_to": "wandbb"}, tmp_path, say=lambda s: None)
    monkeypatch.setitem(trackers._MODULES, "wandb", "no_such_module_t1lab")
    with pytest.raises(ConfigError, match=r"log.report_to=wandb: .* not installed; pip install -e '.\[wandb\]'"):
        run_command("eval", {"model.name": "runs/none", "log.report_to": "WandB"}, tmp_path, say=lambda s: None)
    assert not any(tmp_path.iterdir())
