"""The lab's commands as Python calls: one dispatch shared by the command line, the notebooks,
`lab demo` and `lab reproduce`.

    run, out = run_command("sft", {"sft.max_steps": 100}, runs_dir="runs")

is what `python -m lab sft sft.max_steps=100` does: build the config (defaults < preset <
overrides), check its inputs before anything is written, make the run folder, run the
command's story, write summary.json.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.config import (
    BudgetJob,
    ConfigError,
    EvalJob,
    ReproduceJob,
    RLJob,
    SFTJob,
    SynthJob,
    build,
    non_defaults,
    to_dict,
)
from core.store import Run, new_run

Say = Callable[[str], None]

JOBS: dict[str, type] = {"synth": SynthJob, "sft": SFTJob, "rl": RLJob, "eval": EvalJob,
                         "budget": BudgetJob, "reproduce": ReproduceJob}


def story(command: str, cfg: Any, run: Run, say: Say, progress: bool = True,
          runs_dir: str | Path = "runs", resume: bool = False) -> dict:
    """Run `command`'s job into `run` (which exists); returns its summary (not yet written)."""
    from core import jobs

    if command == "budget":
        from core.sweeps import run_budget

        return run_budget(cfg, run, say, progress, runs_dir)
    if command == "reproduce":
        from core.reproduce import run_reproduce

        return run_reproduce(cfg, run, say, progress)
    stories: dict[str, Callable[[], dict]] = {
        "synth": lambda: jobs.run_synth(cfg, run, say, progress),
        "sft": lambda: jobs.run_sft(cfg, run, say, runs_dir, progress),
        "rl": lambda: jobs.run_rl(cfg, run, say, progress, runs_dir, resume),
        "eval": lambda: jobs.run_eval(cfg, run, say, progress, runs_dir),
    }
    if command not in stories:
        raise ConfigError(f"unknown command {command!r}: one of {', '.join(JOBS)}")
    return stories[command]()


def run_command(command: str, overrides: Mapping[str, Any] | None = None,
                runs_dir: str | Path = "runs", preset: Mapping[str, Any] | None = None,
                say: Say = print, progress: bool = True, run_id: str | None = None) -> tuple[Run, dict]:
    """`python -m lab <command> [--preset] key=value ...` from Python: (run folder, summary)."""
    from core import jobs

    if command not in JOBS:
        raise ConfigError(f"unknown command {command!r}: one of {', '.join(JOBS)}")
    cfg = build(JOBS[command], dict(preset or {}), dict(overrides or {}))
    changed = non_defaults(cfg)
    say(f"{command}: " + (", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"))
    jobs.preflight(cfg, runs_dir)
    run = new_run(runs_dir, command, to_dict(cfg), run_id=run_id)
    say(f"run folder {run.path}")
    out = story(command, cfg, run, say, progress, runs_dir)
    run.write_summary(out)
    return run, out
