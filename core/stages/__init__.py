"""The lab's stages: synth, sft, eval, rl, budget. Each is one module with `run(job, run, ctx)`
(the command's story into an existing run folder; returns the summary) and `preflight(job,
runs_dir)` (checks the inputs the job names before any run folder is made)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import JOBS
from core.overrides import build
from core.stages import budget, rl, sft, synth
from core.stages import eval as eval_stage
from core.stages.common import Context, Say, launch
from core.store import Run

__all__ = ["STAGES", "Context", "Say", "Stage", "launch", "run_new", "run_stage"]


@dataclass(frozen=True)
class Stage:
    """One command's story and the check of its inputs."""

    run: Callable[[Any, Run, Context], dict]
    preflight: Callable[[Any, Path | str], None]


STAGES: dict[str, Stage] = {name: Stage(mod.run, mod.preflight)
                            for name, mod in (("synth", synth), ("sft", sft), ("eval", eval_stage),
                                              ("rl", rl), ("budget", budget))}


def run_stage(name: str, job: Any, run: Run, ctx: Context) -> dict:
    """Run stage `name`'s story into `run` (which exists); returns its summary (not yet written)."""
    return STAGES[name].run(job, run, ctx)


def run_new(name: str, overrides: Mapping[str, Any] | None, preset: Mapping[str, Any] | None,
            ctx: Context, run_id: str | None = None) -> tuple[Run, dict]:
    """`python -m lab <name> [--preset] key=value ...` for a stage: (its new run folder, summary)."""
    job = build(JOBS[name], dict(preset or {}), dict(overrides or {}))
    stage = STAGES[name]
    return launch(name, job, stage.preflight, stage.run, ctx, run_id)
