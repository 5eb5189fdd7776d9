"""The lab's commands as Python calls: one dispatch shared by the command line, the notebooks,
`lab demo` and `lab reproduce`.

    run, out = run_command("sft", {"sft.max_steps": 100}, runs_dir="runs")

is what `python -m lab sft sft.max_steps=100` does: build the config (defaults < preset <
overrides), check its inputs before anything is written, make the run folder, run the
command's story, write summary.json. `resume_command` continues a run in its own folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.config import JOBS, ConfigError
from core.dist import Dist, check_world, from_env
from core.experiments.reproduce import runner as reproduce
from core.overrides import build, flatten, from_dict, preset_for, to_dict
from core.stages import STAGES, Context, Say, Stage, launch
from core.store import FollowerRun, Run, StoreError, open_run
from core.trackers import check_installed, mirrored

# every command's story and preflight: the stages, and the reproduce experiment
COMMANDS: dict[str, Stage] = {**STAGES, "reproduce": Stage(reproduce.run, reproduce.preflight)}


def run_command(command: str, overrides: Mapping[str, Any] | None = None,
                runs_dir: str | Path = "runs", preset: Mapping[str, Any] | None = None,
                say: Say = print, progress: bool = True, run_id: str | None = None,
                dist: Dist | None = None) -> tuple[Run, dict]:
    """`python -m lab <command> [--preset] key=value ...` from Python: (run folder, summary).
    Under torchrun (`dist`, default: from the environment) every rank calls this."""
    cls = job_class(command)
    job = build(cls, preset_for(cls, dict(preset or {}), JOBS.values(), "command"), dict(overrides or {}))
    dist = dist or from_env()
    check_ranks(command, dist)
    return launch(command, job, COMMANDS[command].preflight, COMMANDS[command].run,
                  Context(say, progress, runs_dir, dist=dist), run_id)


def resume_command(command: str, run_or_id: str | Path, runs_dir: str | Path = "runs",
                   say: Say = print, progress: bool = True,
                   overrides: Mapping[str, Any] | None = None, dist: Dist | None = None) -> tuple[Run, dict]:
    """`python -m lab <command> --resume RUN [key=value ...]`: the run's saved config (with
    `overrides` on top, validated and recorded), continued in its folder. Only a run of the same
    command that is not running is resumed; a complete one only to extend it (`EXTENDS`).
    Under torchrun every rank checks the run before rank 0 marks it as running again; the
    number of ranks may differ from the first attempt's (the saved state is whole, not sharded)."""
    dist = dist or from_env()
    check_ranks(command, dist)
    ctx = Context(say, progress, runs_dir, resume=True, dist=dist).for_rank()
    run = resumable(command, run_or_id, runs_dir)
    saved = from_dict(job_class(command), run.job_config())
    job = build(job_class(command), flatten(to_dict(saved)), dict(overrides or {}))
    if run.status() == "complete":
        check_extends(command, saved, job, run)
    check_world(job, dist)
    ctx.say(f"resuming {run.path}" + (f" with {', '.join(f'{k}={v}' for k, v in overrides.items())}" if overrides else ""))
    check_installed(getattr(job, "log", None))
    dist.barrier()  # every rank has checked the run before rank 0 records this attempt in it
    run = run if dist.main else FollowerRun(run.path)
    run.write_config(command, to_dict(job))
    with mirrored(run, getattr(job, "log", None) if dist.main else None, to_dict(job), ctx.say):
        out = COMMANDS[command].run(job, run, ctx)
        run.write_summary(out)
    return run, out


# the commands torchrun may start with more than one rank
DISTRIBUTED = ("sft", "rl", "eval", "budget")


def check_ranks(command: str, dist: Dist) -> None:
    """A command that runs in one process, started on several ranks: ConfigError."""
    if dist.active and command not in DISTRIBUTED:
        raise ConfigError(f"lab {command} runs in one process, not on {dist.world} ranks: start it without "
                          f"torchrun (the stages {', '.join(DISTRIBUTED)} run under torchrun)")


# what makes a complete run worth resuming: the command's size keys, which must grow (a complete
# reproduce run resumes as it is: nothing is left to run, its report is rebuilt)
EXTENDS: dict[str, tuple[str, ...]] = {"rl": ("rl.steps",), "sft": ("sft.max_steps",),
                                       "synth": ("synth.num_problems",), "budget": ()}
REBUILDS = ("reproduce",)


def resumable(command: str, run_or_id: str | Path, runs_dir: str | Path) -> Run:
    """The run `--resume` names, if it is one this command may continue (StoreError otherwise)."""
    job_class(command)
    if command not in (*EXTENDS, *REBUILDS):
        raise ConfigError(f"lab {command} has no --resume")
    run = open_run(run_or_id, runs_dir)
    if run.stage != command:
        what = f"a {run.stage} run" if run.stage else "not a run folder of the lab (no config.json with a stage)"
        raise StoreError(f"{run.path} is {what}: `lab {command} --resume` continues a run that `lab {command}` made")
    if run.status() == "running" and run.config().get("pid") != os.getpid():  # this process: it stopped
        raise StoreError(f"{run.path} is still running (pid {run.config().get('pid')} on this machine): "
                         "stop it first; a run resumes once it has stopped")
    return run


def check_extends(command: str, saved: Any, job: Any, run: Run) -> None:
    """A complete run resumes only when the overrides make it bigger (more steps or problems)."""
    if command in REBUILDS:
        return
    keys = EXTENDS.get(command, ())
    old, new = flatten(to_dict(saved)), flatten(to_dict(job))
    if not any(new[k] > old[k] for k in keys):
        more = " or ".join(f"{k} above {old[k]}" for k in keys)
        hint = f" (to extend it, give {more})" if more else ""
        raise StoreError(f"{run.path} is complete: nothing to resume{hint}")


def job_class(command: str) -> type:
    if command not in JOBS:
        raise ConfigError(f"unknown command {command!r}: one of {', '.join(JOBS)}")
    return JOBS[command]
