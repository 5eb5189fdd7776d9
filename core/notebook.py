"""What the notebooks share: one setup call, their sizes (the lab's own, or a smoke preset for
CI), and finding a finished run to reuse before training a new one.

    import sys, pathlib; sys.path.insert(0, str(pathlib.Path.cwd().parent))  # run from notebooks/
    from core.notebook import setup
    lab = setup()
    rl_run = lab.rl_run()        # the newest finished RL run in lab.runs, else SFT (if none) + RL now

Runs go to the repository's runs/ (T1LAB_NOTEBOOK_RUNS=DIR changes it), the same folder
`make demo` writes, so the notebooks open what the demo trained. T1LAB_NOTEBOOK_SMOKE=1 switches
to the toy sizes of `SMOKE_PRESET` (seconds per stage; the figures then mean nothing).

Importing this module, setup and finding runs need no torch (notebook 05 reads runs without
it); only making a run imports the stages.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.store import Run, StoreError, find_runs, open_run, run_of

SMOKE_ENV = "T1LAB_NOTEBOOK_SMOKE"  # "1": the notebooks use tiny sizes (CI)
RUNS_ENV = "T1LAB_NOTEBOOK_RUNS"  # where the notebooks write runs (default: the repo's runs/)
ROOT = Path(__file__).resolve().parents[1]

# The notebooks' own sizes where they differ from the lab's defaults: a short `lab rl` (the
# default is 150 steps) with checkpoints for the budget sweep, and a sweep of the SFT model
# (step 0) and RL checkpoints at about 0/30/60/100% of the steps, as in the paper's Figure 1.
SIZES: dict[str, dict[str, Any]] = {
    "sft": {},
    "rl": {"rl.steps": 40, "rl.eval_every": 20, "rl.save_every": 10, "eval.num_problems": 200},
    "budget": {"budget.checkpoints": "0,0.3,0.6,1", "budget.num_problems": 200},
}
# The smoke preset (CI): toy sizes, one torch thread (on a busy 2-core machine two spinning
# threads per process are many times slower).
SMOKE_PRESET: dict[str, dict[str, Any]] = {
    "sft": {"synth.num_problems": 1000, "sft.max_steps": 60, "sft.warmup_steps": 5, "sft.batch_size": 16,
            "sft.micro_batch_size": 16, "sft.log_every": 5, "eval.num_problems": 32, "model.threads": 1},
    "rl": {"rl.steps": 2, "rl.prompts_per_step": 4, "rl.num_generations": 4, "rl.micro_batch_size": 16,
           "rl.eval_every": 0, "rl.save_every": 1, "eval.num_problems": 16, "model.threads": 1},
    "budget": {"budget.checkpoints": "0,0.3,0.6,1", "budget.num_problems": 16, "model.threads": 1},
}
# which finished runs may be reused: embedded task, T1-style traces, full fine-tuning
MATCH: dict[str, dict[str, Any]] = {
    "sft": {"task.name": "pairsum", "synth.style": "t1", "sft.lora.enabled": False},
    "rl": {"task.name": "pairsum", "rl.lora.enabled": False},
    "budget": {"task.name": "pairsum"},
}


def say(text: str) -> None:
    """The command line's progress line format."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass(frozen=True)
class NotebookLab:
    """A notebook's view of the lab: where runs live, its sizes, and runs to reuse or make.
    `made` lists the runs this object made (the rest were reused)."""

    runs: Path
    smoke: bool
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)
    made: list[Run] = field(default_factory=list)

    @property
    def progress(self) -> bool:
        """Progress bars (off in smoke mode, where the notebooks run unattended)."""
        return not self.smoke

    @property
    def threads(self) -> int:
        """torch CPU threads for a model the notebook loads itself (`ModelConfig.threads`): one in
        smoke mode, as the smoke preset's runs; else torch's default (0)."""
        return 1 if self.smoke else 0

    def run(self, command: str, overrides: Mapping[str, Any] | None = None,
            preset: Mapping[str, Any] | None = None) -> tuple[Run, dict]:
        """`python -m lab <command> key=value ...` from the notebook: (run folder, summary), with
        this notebook's sizes for the stage under `overrides`."""
        from core.commands import run_command  # the stages import torch; reading runs does not

        wanted = {**self.sizes.get(command, {}), **(overrides or {})}
        run, out = run_command(command, wanted, self.runs, preset, say, self.progress)
        self.made.append(run)
        return run, out

    def find(self, stage: str, match: Mapping[str, Any] | None = None) -> Run | None:
        """The newest complete run of `stage` that holds a model (SFT, RL) and whose config
        has every dotted key of `match` (default: the notebooks' MATCH) at that value."""
        runs = find_runs(self.runs, stage=stage, status="complete", match=dict(match or MATCH.get(stage, {})),
                         with_checkpoint=stage in ("sft", "rl"))
        return runs[0] if runs else None

    def sft_run(self) -> Run:
        """A finished SFT run on T1 traces: reused, else trained now (the defaults: ~5 min)."""
        return _reused(self.find("sft")) or self.run("sft")[0]

    def rl_run(self) -> Run:
        """A finished RL run with checkpoints: reused, else run now from `sft_run()`."""
        return _reused(self.find("rl")) or self.run("rl", {"rl.init": str(self.sft_run().path)})[0]

    def budget_run(self, rl_run: Run, overrides: Mapping[str, Any] | None = None) -> Run:
        """The newest finished budget sweep of `rl_run`'s checkpoints whose config has the dotted
        keys of `overrides` at those values ({"budget.num_samples": 4}), else one made now with them."""
        wanted = dict(overrides or {})
        for run in find_runs(self.runs, stage="budget", status="complete", match={**MATCH["budget"], **wanted}):
            try:
                if open_run(run.setting("model.name", ""), self.runs).path.resolve() == rl_run.path.resolve():
                    return _reused(run)  # type: ignore[return-value]
            except StoreError:
                continue
        return self.run("budget", {**wanted, "model.name": str(rl_run.path)})[0]

    def started_from(self, rl_run: Run) -> Run | None:
        """The run whose model `rl_run` started from (its SFT run), found without torch; None
        when it started from a model outside the runs folder (a hub id)."""
        model = rl_run.started_from(self.runs)
        return run_of(model, self.runs) if model else None


def _reused(run: Run | None) -> Run | None:
    if run is not None:
        say(f"reusing {run.stage} run {run.path}")
    return run


def setup(runs: str | Path | None = None, smoke: bool | None = None) -> NotebookLab:
    """The notebooks' first cell: runs folder ($T1LAB_NOTEBOOK_RUNS, else the repository's
    runs/; absolute, so the paths runs store resolve from any folder) and sizes
    ($T1LAB_NOTEBOOK_SMOKE=1: the smoke preset)."""
    smoke = os.environ.get(SMOKE_ENV, "") == "1" if smoke is None else smoke
    runs = Path(runs or os.environ.get(RUNS_ENV) or ROOT / "runs").expanduser().absolute()
    sizes = SMOKE_PRESET if smoke else SIZES
    print(("smoke sizes" if smoke else "the lab's sizes") + f" -> runs in {runs}")
    return NotebookLab(runs, smoke, sizes)
