"""End to end through `lab synth`'s story with a local tiny model as the teacher, sampled by the
real transformers sampler: its text is nonsense, yet every stage runs, every attempt is
labelled, every problem ends in exactly one counted row, and a rerun has nothing left to do."""

from __future__ import annotations

import pytest

from core.config import SynthJob
from core.overrides import build
from core.stages.common import Context
from core.stages.synth import RunSink
from core.stages.synth import run as run_synth
from core.store import new_run
from core.tasks.base import TaskError
from tests.test_teacher import DATA

STATUSES = ("kept", "too_easy", "too_hard", "unverified", "too_long", "duplicate", "error")


def job(tiny_model_dir, **extra: str) -> SynthJob:
    return build(SynthJob, cli={
        "task.name": str(DATA / "math500_20.jsonl"), "task.decontaminate": "false", "synth.num_problems": "5",
        "teacher.models": str(tiny_model_dir), "teacher.num_attempts": "3",
        "teacher.sampling.max_new_tokens": "8", "teacher.critique_max_new_tokens": "4",
        "teacher.merge_max_new_tokens": "6", **extra,
    })


def test_tiny_model_teacher_end_to_end_on_five_math500_problems(tiny_model_dir, tmp_path) -> None:
    said: list[str] = []
    run = new_run(tmp_path, "synth", {})
    out = run_synth(job(tiny_model_dir), run, Context(said.append, progress=False))
    rows = RunSink(run).rows()
    assert sorted(r["problem_id"] for r in rows) == ["0", "1", "2", "3", "4"]
    assert sum(out[f"synth/{s}"] for s in STATUSES) == 5 and out["synth/error"] == 0
    assert out["synth/num_traces"] == out["synth/kept"] == len(run.traces())
    for r in rows:
        assert len(r["attempts"]) == 3 and r["teacher"] == str(tiny_model_dir)
        assert all(a["verdict"] in ("ok", "no_answer", "parse_error", "timeout") for a in r["attempts"])
        assert all(isinstance(a["correct"], bool) and a["num_tokens"] >= 1 for a in r["attempts"])
        if r["status"] not in ("too_easy", "too_hard"):  # critiqued, merged and rewritten
            assert all(a["critique"] is not None for a in r["attempts"]) and "response" in r
    # calls: per problem 1 attempt call (3 samples), then critiques, merge and rewrite unless
    # the problem was dropped as too easy or too hard before the critic was asked
    critiqued = sum(r["status"] not in ("too_easy", "too_hard") for r in rows)
    assert out["synth/teacher_calls"] == 5 + 3 * critiqued
    assert out["synth/teacher_tokens"] > 0 and out["synth/teacher_tokens_per_s"] > 0
    assert any("kept" in line and "unverified" in line for line in said)
    # a rerun of the same run has nothing left to do
    again = run_synth(job(tiny_model_dir), run, Context(said.append, progress=False))
    assert again["synth/resumed"] == 5 and again["synth/teacher_calls"] == 0


def test_teacher_refuses_an_evaluation_benchmark_by_name(tiny_model_dir, tmp_path) -> None:
    run = new_run(tmp_path, "synth", {})
    with pytest.raises(TaskError, match="evaluation set"):
        run_synth(job(tiny_model_dir, **{"task.name": "math500"}), run, Context(lambda s: None, progress=False))
