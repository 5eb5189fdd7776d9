"""What the notebooks share: their size switches, running a stage, finding a run to reuse.

`run_job` takes the steps of `python -m lab <command>` (core.demo.run_stage: build the config,
check its inputs, make the run folder, run the job, write summary.json). `find_run` picks the
newest complete run of a stage whose config matches, so a notebook can reuse what an earlier
notebook (or `make demo`) trained. Torch is imported only when a job runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.config import BudgetJob, RLJob, SFTJob, flatten
from core.store import Run, list_runs

SMOKE_ENV = "T1LAB_NOTEBOOK_SMOKE"  # "1": the notebooks use tiny sizes (CI)
RUNS_ENV = "T1LAB_NOTEBOOK_RUNS"  # where the notebooks write runs (default: the repo's runs/)
STAGES: dict[str, type] = {"sft": SFTJob, "rl": RLJob, "budget": BudgetJob}


def smoke() -> bool:
    """Whether the notebooks should use their tiny CI sizes."""
    return os.environ.get(SMOKE_ENV, "") == "1"


def runs_dir(default: str | Path) -> Path:
    """The runs folder the notebooks write to: $T1LAB_NOTEBOOK_RUNS, else `default`."""
    return Path(os.environ.get(RUNS_ENV) or default)


def say(text: str) -> None:
    """The command line's progress line format."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def run_job(command: str, overrides: Mapping[str, Any] | None = None, runs: str | Path = "runs",
            preset: Mapping[str, Any] | None = None, progress: bool = True,
            log: Callable[[str], None] = say) -> tuple[Run, dict]:
    """Run `command` (synth | sft | rl | eval | budget) like the command line; (run, summary).

    `overrides` are dotted keys as on the command line ({"sft.max_steps": 100}); `preset` is a
    loaded preset (core.config.load_preset). Returns the run folder and its summary.json."""
    from core.commands import run_command

    return run_command(command, overrides, runs, preset, log, progress)


def config_matches(config: Mapping[str, Any], match: Mapping[str, Any]) -> bool:
    """Whether a config.json's resolved config has every dotted key of `match` at that value."""
    flat = flatten(config.get("config", {}))
    return all(flat.get(k) == v for k, v in match.items())


def find_run(runs: str | Path, stage: str, match: Mapping[str, Any] | None = None) -> Run | None:
    """The newest complete run of `stage` under `runs` whose config matches `match`, or None.

    RL runs also need a saved checkpoint (a budget sweep starts from them)."""
    for run in list_runs(runs):
        cfg = run.config()
        if cfg.get("stage") != stage or run.status() != "complete":
            continue
        if stage == "rl" and not run.checkpoints():
            continue
        if config_matches(cfg, match or {}):
            return run
    return None
