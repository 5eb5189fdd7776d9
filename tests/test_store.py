"""Tests for core.store: run-folder layout, crash-safe writers and tolerant readers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import store
from core.store import (
    Run,
    StoreError,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    is_run_dir,
    iter_jsonl,
    list_runs,
    new_run,
    open_run,
    read_json,
    read_jsonl,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test with cwd outside any git checkout (git_sha -> None, fast)."""
    monkeypatch.chdir(tmp_path)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- low-level helpers -------------------------------------------------------------------------


def test_jsonl_round_trip_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.jsonl"
    assert read_jsonl(path) == []
    append_jsonl(path, [{"x": 1}, {"y": "é"}])
    append_jsonl(path, iter([{"z": [1, 2]}]))
    append_jsonl(path, [])
    assert read_jsonl(path) == [{"x": 1}, {"y": "é"}, {"z": [1, 2]}]
    assert list(iter_jsonl(path)) == read_jsonl(path)
    assert "é" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_append_rejects_non_dict_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    with pytest.raises(StoreError):
        append_jsonl(path, [{"a": 1}, [1, 2]])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        append_jsonl(path, [{"a": 1}, {"b": object()}])
    assert not path.exists()


def test_nan_and_inf_become_null(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    append_jsonl(path, [{"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}}])
    line = path.read_text(encoding="utf-8").strip()
    assert json.loads(line) == {"a": None, "b": [None, 1.5], "c": {"d": None}}
    assert "NaN" not in line and "Infinity" not in line
    jpath = tmp_path / "o.json"
    atomic_write_json(jpath, {"v": math.nan})
    assert read_json(jpath) == {"v": None}


def test_torn_last_line_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n{"b": 2', encoding="utf-8")
    assert read_jsonl(path) == [{"a": 1}]
    assert read_jsonl(path, strict=True) == [{"a": 1}]


def test_unterminated_but_valid_last_line_kept(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}', encoding="utf-8")
    assert read_jsonl(path, strict=True) == [{"a": 1}, {"b": 2}]


def test_append_after_torn_line_keeps_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n{"b": 2', encoding="utf-8")
    append_jsonl(path, [{"c": 3}])
    assert read_jsonl(path) == [{"a": 1}, {"c": 3}]
    with pytest.raises(StoreError, match=r":2: malformed JSON line"):
        read_jsonl(path, strict=True)


def test_malformed_middle_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{not json\n\n{"b": 2}\n', encoding="utf-8")
    with pytest.raises(StoreError) as excinfo:
        read_jsonl(path, strict=True)
    msg = str(excinfo.value)
    assert str(path) in msg and f"{path}:2:" in msg
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]


def test_non_object_line_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(StoreError, match=":2:"):
        read_jsonl(path, strict=True)
    assert read_jsonl(path) == [{"a": 1}]


def test_atomic_write_json_round_trip_and_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "x.json"
    atomic_write_json(path, {"a": [1, 2], "b": "ü"})
    atomic_write_json(path, {"a": 3})
    assert read_json(path) == {"a": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_atomic_write_json_failure_keeps_old_content(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic_write_json(path, {"old": True})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"new": object()})
    assert read_json(path) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_write_text(tmp_path: Path) -> None:
    path = tmp_path / "d" / "f.txt"
    atomic_write_text(path, "hello\n")
    atomic_write_text(path, "bye\n")
    assert path.read_text(encoding="utf-8") == "bye\n"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_read_json_missing_and_malformed(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    assert read_json(path) is None
    assert read_json(path, default={}) == {}
    path.write_text("{oops", encoding="utf-8")
    with pytest.raises(StoreError, match="x.json"):
        read_json(path)


# --- Run: layout, writers, readers ---------------------------------------------------------


def test_paths_layout(tmp_path: Path) -> None:
    run = Run(tmp_path / "r1")
    assert run.id == "r1"
    assert run.config_path == tmp_path / "r1" / "config.json"
    assert run.metrics_path.name == "metrics.jsonl"
    assert run.summary_path.name == "summary.json"
    assert run.traces_path == tmp_path / "r1" / "synth" / "traces.jsonl"
    assert run.samples_path(100) == run.samples_dir / "step_000100.jsonl"
    assert run.curve_path("budget") == run.curves_dir / "budget.json"
    assert run.eval_path("heldout") == run.eval_dir / "heldout.jsonl"
    assert run.checkpoint_dir(50) == run.checkpoints_dir / "step_50"
    assert run.checkpoint_dir("50") == run.checkpoints_dir / "step_50"
    assert run.checkpoint_dir("final") == run.checkpoints_dir / "final"
    with pytest.raises(StoreError):
        run.checkpoint_dir("best")
    with pytest.raises(StoreError):
        run.samples_path(-1)
    assert Run(str(tmp_path / "r1")).path == run.path  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "x y", "../evil", "a\\b"])
def test_curve_name_validation(tmp_path: Path, name: str) -> None:
    run = Run(tmp_path / "r")
    with pytest.raises(StoreError, match="invalid"):
        run.curve_path(name)
    with pytest.raises(StoreError):
        run.write_curve(name, {})
    with pytest.raises(StoreError):
        run.eval_path(name)


def test_curve_name_ok(tmp_path: Path) -> None:
    run = Run(tmp_path / "r")
    assert run.curve_path("gsm8k_v1.2-heldout").name == "gsm8k_v1.2-heldout.json"


def test_config_round_trip(tmp_path: Path) -> None:
    run = new_run(tmp_path / "runs", "rl", {"lr": 1e-6, "nested": {"k": [1, 2]}}, run_id="r1")
    cfg = run.config()
    assert cfg["run_id"] == "r1" and cfg["stage"] == "rl"
    assert cfg["config"] == {"lr": 1e-6, "nested": {"k": [1, 2]}}
    assert cfg["pid"] == os.getpid()
    assert cfg["git_sha"] is None  # cwd is outside git
    assert set(cfg["packages"]) == set(store.TRACKED_PACKAGES)
    assert "+00:00" in cfg["created_at"]
    created = cfg["created_at"]
    run.write_config("rl", {"lr": 2e-6})  # rewrite (resume) keeps created_at
    assert run.config()["created_at"] == created
    assert run.config()["config"] == {"lr": 2e-6}


def test_git_sha_inside_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    sha = store._git_sha()
    assert sha is None or (len(sha) == 40 and all(c in "0123456789abcdef" for c in sha))


def test_metrics_round_trip(tmp_path: Path) -> None:
    run = Run(tmp_path / "r")
    rec = {"step": 1, "reward/mean": 0.5}
    run.log_metrics(rec)
    run.log_metrics({"step": 2, "reward/mean": math.nan, "wall_time": 123.0})
    assert "wall_time" not in rec  # caller's dict untouched
    rows = run.metrics()
    assert rows[0]["step"] == 1 and isinstance(rows[0]["wall_time"], float)
    assert rows[1] == {"step": 2, "reward/mean": None, "wall_time": 123.0}


def test_samples_round_trip(tmp_path: Path) -> None:
    run = Run(tmp_path / "r")
    assert run.sample_steps() == []
    run.append_samples(100, [{"p": "a"}, {"p": "b"}])
    run.append_samples(100, [{"p": "c"}])
    run.append_samples(7, [{"p": "d"}])
    (run.samples_dir / "notes.txt").write_text("x", encoding="utf-8")
    assert run.samples(100) == [{"p": "a"}, {"p": "b"}, {"p": "c"}]
    assert run.samples(5) == []
    assert run.sample_steps() == [7, 100]
    assert (run.samples_dir / "step_000100.jsonl").is_file()


def test_traces_and_eval_round_trip(tmp_path: Path) -> None:
    run = Run(tmp_path / "r")
    run.append_traces([{"q": "1+1", "trace": "2"}])
    run.append_traces([{"q": "2+2", "trace": "4"}])
    assert [t["q"] for t in run.traces()] == ["1+1", "2+2"]
    run.append_eval("heldout", [{"id": "p1", "correct": True}])
    assert run.eval_rows("heldout") == [{"id": "p1", "correct": True}]
    assert run.eval_rows("other") == []


def test_curves_round_trip(tmp_path: Path) -> None:
    run = Run(tmp_path / "r")
    assert run.curves() == {}
    run.write_curve("budget", {"points": [[256, 0.1]]})
    run.write_curve("budget", {"points": [[256, 0.1], [512, 0.2]]})
    run.write_curve("other", {"points": []})
    assert run.curves() == {
        "budget": {"points": [[256, 0.1], [512, 0.2]]},
        "other": {"points": []},
    }
    assert sorted(p.name for p in run.curves_dir.iterdir()) == ["budget.json", "other.json"]


def test_summary_round_trip(tmp_path: Path) -> None:
    run = new_run(tmp_path, "sft", {}, run_id="r")
    assert run.summary() is None
    run.write_summary({"final/acc": 0.7})
    summary = run.summary()
    assert summary is not None and summary["final/acc"] == 0.7 and "finished_at" in summary
    assert run.status() == "complete"


def test_checkpoints_require_complete(tmp_path: Path) -> None:
    run = Run(tmp_path / "r")
    assert run.checkpoints() == [] and run.latest_checkpoint() is None
    for step in (5, 20, 100):
        d = run.checkpoint_dir(step)
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"w")
    run.mark_checkpoint_complete(run.checkpoint_dir(5))
    run.mark_checkpoint_complete(run.checkpoint_dir(20))
    # step_100 has weights but no COMPLETE (crash mid-save); final is not a step checkpoint
    run.checkpoint_dir("final").mkdir()
    run.mark_checkpoint_complete(run.checkpoint_dir("final"))
    assert [s for s, _ in run.checkpoints()] == [5, 20]
    assert run.latest_checkpoint() == run.checkpoint_dir(20)
    with pytest.raises(StoreError):
        run.mark_checkpoint_complete(run.checkpoint_dir(999))


# --- status ---------------------------------------------------------------------------------


def test_status_unknown_without_config(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    assert Run(tmp_path / "r").status() == "unknown"


def test_status_running_with_own_pid(tmp_path: Path) -> None:
    run = new_run(tmp_path, "rl", {}, run_id="r")
    assert run.status() == "running"


def test_status_crashed_with_dead_pid(tmp_path: Path) -> None:
    run = new_run(tmp_path, "rl", {}, run_id="r")
    cfg = run.config()
    cfg["pid"] = _dead_pid()
    atomic_write_json(run.config_path, cfg)
    assert run.status() == "crashed"


def test_status_crashed_on_other_host(tmp_path: Path) -> None:
    run = new_run(tmp_path, "rl", {}, run_id="r")
    cfg = run.config()
    cfg["hostname"] = "some-other-host.invalid"
    atomic_write_json(run.config_path, cfg)
    assert run.status() == "crashed"


def test_status_complete_beats_alive_pid(tmp_path: Path) -> None:
    run = new_run(tmp_path, "rl", {}, run_id="r")
    run.write_summary({})
    assert run.status() == "complete"


# --- run folders ------------------------------------------------------------------------------


def test_new_run_default_id(tmp_path: Path) -> None:
    run = new_run(tmp_path / "runs", "rl", {"a": 1})
    parts = run.id.split("-")
    assert parts[0] == "rl" and len(parts[1]) == 8 and len(parts[2]) == 6 and len(parts[3]) == 4
    assert is_run_dir(run.path)


def test_new_run_refuses_existing_folder(tmp_path: Path) -> None:
    new_run(tmp_path, "rl", {}, run_id="r")
    with pytest.raises(StoreError, match="already exists"):
        new_run(tmp_path, "rl", {}, run_id="r")
    (tmp_path / "empty").mkdir()
    assert new_run(tmp_path, "rl", {}, run_id="empty").config()["run_id"] == "empty"


@pytest.mark.parametrize("bad", ["a/b", "..", "", "x y"])
def test_new_run_rejects_bad_id(tmp_path: Path, bad: str) -> None:
    with pytest.raises(StoreError, match="invalid run id"):
        new_run(tmp_path, "rl", {}, run_id=bad)


def test_open_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = new_run(runs, "rl", {}, run_id="r1")
    assert open_run(run.path).path == run.path
    assert open_run(str(run.path)).path == run.path
    assert open_run("r1", runs_dir=runs).path == run.path
    with pytest.raises(StoreError, match="run not found: nope"):
        open_run("nope", runs_dir=runs)


def test_list_runs_ordering(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert list_runs(runs) == []  # missing
    runs.mkdir()
    assert list_runs(runs) == []  # empty
    for rid, created in [("b", "2025-01-02"), ("a", "2025-01-03"), ("c", "2025-01-02")]:
        run = new_run(runs, "rl", {}, run_id=rid)
        cfg = run.config()
        cfg["created_at"] = created + "T00:00:00.000000+00:00"
        atomic_write_json(run.config_path, cfg)
    (runs / "not_a_run").mkdir()
    (runs / "stray.txt").write_text("x", encoding="utf-8")
    assert [r.id for r in list_runs(runs)] == ["a", "c", "b"]
    assert not is_run_dir(runs / "not_a_run")


def test_import_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import core.store"
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr


def _with_checkpoint(runs: Path, stage: str, run_id: str, name: int | str, config: dict | None = None) -> Run:
    run = new_run(runs, stage, config or {}, run_id=run_id)
    path = run.checkpoint_dir(name)
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}", encoding="utf-8")
    run.mark_checkpoint_complete(path)
    run.write_summary({})
    return run


def test_settings_stage_and_the_model_a_run_stands_for(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    sft = _with_checkpoint(runs, "sft", "sft-1", "final", {"rl": {"steps": 40}, "task": {"name": "pairsum"}})
    rl = _with_checkpoint(runs, "rl", "rl-1", 20)
    assert sft.stage == "sft" and sft.setting("rl.steps") == 40 and sft.setting("task.name") == "pairsum"
    assert sft.setting("rl.nope", "x") == "x" and sft.setting("task.name.deeper") is None
    assert sft.final_checkpoint() == sft.checkpoint_dir("final")
    assert rl.final_checkpoint() == rl.checkpoint_dir(20)  # an RL run stands for its last checkpoint
    assert new_run(runs, "eval", {}, run_id="e").final_checkpoint() is None


def test_find_runs_by_stage_status_settings_and_model(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    old = _with_checkpoint(runs, "sft", "a", "final", {"synth": {"style": "t1"}})
    _with_checkpoint(runs, "sft", "b", "final", {"synth": {"style": "plain"}})
    new_run(runs, "sft", {"synth": {"style": "t1"}}, run_id="c")  # crashed, no model
    _with_checkpoint(runs, "rl", "d", 5)
    assert [r.id for r in store.find_runs(runs, stage="sft")] == ["c", "b", "a"]
    assert [r.id for r in store.find_runs(runs, stage="sft", match={"synth.style": "t1"})] == ["c", "a"]
    assert [r.id for r in store.find_runs(runs, stage="sft", status="complete", match={"synth.style": "t1"},
                                          with_checkpoint=True)] == [old.id]
    assert store.find_runs(runs, match={"synth.style": "nope"}) == []
    assert store.find_runs(tmp_path / "missing") == []


def test_stored_paths_resolve_from_any_working_directory(tmp_path: Path, monkeypatch) -> None:
    """Regression: run folders record paths relative to the directory a command ran in
    ("runs/sft-x/checkpoints/final"); read from notebooks/ (or after the runs folder moved)
    they were looked up against the current directory: "model folder not found"."""
    project = tmp_path / "project"
    runs = project / "runs"
    sft = _with_checkpoint(runs, "sft", "sft-x", "final")
    rl = _with_checkpoint(runs, "rl", "rl-y", 10)
    monkeypatch.chdir(project / "runs" / "..")
    assert store.resolve_checkpoint("runs/sft-x/checkpoints/final", runs) == "runs/sft-x/checkpoints/final"
    (project / "notebooks").mkdir()
    monkeypatch.chdir(project / "notebooks")  # where the notebooks run
    final = sft.checkpoint_dir("final")
    assert Path(store.resolve_checkpoint("runs/sft-x/checkpoints/final", runs)).resolve() == final.resolve()
    assert Path(store.resolve_checkpoint("runs/sft-x", runs)).resolve() == final.resolve()
    assert Path(store.resolve_checkpoint("sft-x", runs)).resolve() == final.resolve()
    assert Path(store.resolve_checkpoint("rl-y", runs)).resolve() == rl.checkpoint_dir(10).resolve()
    assert open_run("runs/rl-y", runs).path.resolve() == rl.path.resolve()
    moved = tmp_path / "elsewhere" / "runs"  # recorded on another machine, or before a move
    assert Path(store.resolve_checkpoint(str(moved / "sft-x" / "checkpoints" / "final"), runs)).resolve() == \
        final.resolve()
    assert store.resolve_checkpoint("Qwen/Qwen2.5-0.5B", runs) == "Qwen/Qwen2.5-0.5B"  # a hub id stays
    assert store.resolve_path("runs/nope", runs) is None


def test_what_an_rl_run_started_from_and_which_run_holds_a_path(tmp_path: Path, monkeypatch) -> None:
    runs = tmp_path / "runs"
    sft = _with_checkpoint(runs, "sft", "sft-x", "final")
    rl = _with_checkpoint(runs, "rl", "rl-y", 10, {"rl": {"init": ""}})
    assert rl.started_from(runs) is None
    rl.log_metrics({"step": 0, "init": "runs/sft-x/checkpoints/final"})  # relative to where lab rl ran
    monkeypatch.chdir(tmp_path / "runs")
    assert Path(rl.started_from(runs)).resolve() == sft.checkpoint_dir("final").resolve()
    assert store.run_of(rl.started_from(runs), runs).id == "sft-x"
    assert store.run_of("Qwen/Qwen2.5-0.5B", runs) is None


def test_every_file_a_run_writes_gets_one_mode(tmp_path: Path) -> None:
    """Regression: config.json and summary.json were written 0600 (mkstemp), other files 0644."""
    run = new_run(tmp_path / "runs", "rl", {}, run_id="r")
    run.log_metrics({"step": 1})
    run.write_summary({})
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.path.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes
    assert modes["config.json"] & 0o044  # readable by others, as the umask allows
