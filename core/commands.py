"""The lab's commands as Python calls: one dispatch shared by the command line, the notebooks,
`lab demo` and `lab reproduce`.

    run, out = run_command("sft", {"sft.max_steps": 100}, runs_dir="runs")

is what `python -m lab sft sft.max_steps=100` does: build the config (defaults < preset <
overrides), check its inputs before anything is written, make the run folder, run the
command's story, write summary.json. `resume_command` continues a run in its own folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.config import JOBS, ConfigError
from core.experiments.reproduce import runner as reproduce
from core.overrides import build, from_dict, to_dict
from core.stages import STAGES, Context, Say, Stage, launch
from core.store import Run, open_run

# every command's story and preflight: the stages, and the reproduce experiment
COMMANDS: dict[str, Stage] = {**STAGES, "reproduce": Stage(reproduce.run, reproduce.preflight)}


def run_command(command: str, overrides: Mapping[str, Any] | None = None,
                runs_dir: str | Path = "runs", preset: Mapping[str, Any] | None = None,
                say: Say = print, progress: bool = True, run_id: str | None = None) -> tuple[Run, dict]:
    """`python -m lab <command> [--preset] key=value ...` from Python: (run folder, summary)."""
    job = build(job_class(command), dict(preset or {}), dict(overrides or {}))
    return launch(command, job, COMMANDS[command].preflight, COMMANDS[command].run,
                  Context(say, progress, runs_dir), run_id)


def resume_command(command: str, run_or_id: str | Path, runs_dir: str | Path = "runs",
                   say: Say = print, progress: bool = True) -> tuple[Run, dict]:
    """`python -m lab <command> --resume RUN`: the run's saved config, continued in its folder."""
    job_class(command)
    run = open_run(run_or_id, runs_dir)
    job = from_dict(job_class(command), run.job_config())
    say(f"resuming {run.path}")
    run.write_config(command, to_dict(job))
    out = COMMANDS[command].run(job, run, Context(say, progress, runs_dir, resume=True))
    run.write_summary(out)
    return run, out


def job_class(command: str) -> type:
    if command not in JOBS:
        raise ConfigError(f"unknown command {command!r}: one of {', '.join(JOBS)}")
    return JOBS[command]
