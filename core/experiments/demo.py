"""`python -m lab demo`: the whole T1 pipeline on the embedded default, then a short report.

    synth -> SFT (defaults) -> RL (a 60-step version of the default recipe, checkpoints every
    20 steps) -> budget curves for the SFT model and every RL checkpoint -> report.html

Each stage is an ordinary run folder (the dashboard lists them); the demo's own run folder
records which ones, the time each took, and holds report.html. A demo that stopped part-way
continues with `--resume DEMO_RUN`: finished stages are reused.

Simplified: RL runs 60 steps instead of the default 150 so that the demo, install included,
stays within about ten minutes on a 2-core laptop; `python -m lab rl` runs the full recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from core.config import BudgetJob, RLJob, SFTJob
from core.overrides import preset_for
from core.report.demo import write_report
from core.stages import Context, run_new
from core.store import Run, open_run

RL_OVERRIDES = {"rl.steps": 60, "rl.eval_every": 20, "rl.save_every": 20}


# (stage, job class, the links to finished stages' run folders), in order
STAGES: list[tuple[str, type, Callable[[dict], dict[str, Any]]]] = [
    ("sft", SFTJob, lambda done: {}),
    ("rl", RLJob, lambda done: {"rl.init": done["sft"]}),
    ("budget", BudgetJob, lambda done: {"model.name": done["rl"]}),
]


def stage_presets(preset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Split one flat preset over the stages by section (a key may serve several stages);
    the demo's RL settings come first. A key no stage has is an error."""
    classes = [cls for _, cls, _ in STAGES]
    return {stage: {**(RL_OVERRIDES if stage == "rl" else {}),
                    **preset_for(cls, preset, classes, "stage of the demo (sft, rl, budget)")}
            for stage, cls, _ in STAGES}


def run_demo(run: Run, ctx: Context, preset: dict[str, Any] | None = None) -> dict:
    """Run (or continue) every stage; write report.html; return the headline figures."""
    presets = stage_presets(preset or {})
    done: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for m in run.metrics():  # stages a previous attempt finished
        if m.get("stage_done") and open_run(m["run_dir"], ctx.runs_dir).summary() is not None:
            done[m["stage_done"]] = str(open_run(m["run_dir"], ctx.runs_dir).path)
            seconds[m["stage_done"]] = m["time_s"]
    for stage, _cls, links in STAGES:
        if stage in done:
            ctx.say(f"{stage}: reusing {done[stage]}")
            continue
        t0 = time.time()
        sub, _ = run_new(stage, links(done), presets[stage], ctx)
        done[stage], seconds[stage] = str(sub.path), time.time() - t0
        run.log_metrics({"stage_done": stage, "run_dir": str(sub.path), "time_s": seconds[stage]})
    figures = headline({s: open_run(p, ctx.runs_dir) for s, p in done.items()}, seconds)
    write_report(run, figures)
    ctx.say(f"report: {run.artifact_path('report.html')}")
    return figures


def headline(done: dict[str, Run], seconds: dict[str, float]) -> dict[str, Any]:
    """SFT and RL held-out accuracy, the budget curves' climb, and the time split."""
    sft, rl, budget = (done[s].summary() or {} for s in ("sft", "rl", "budget"))
    synth_s = sft.get("synth/time_s") or 0.0
    return {
        "runs": {s: str(r.path) for s, r in done.items()},
        "sft/acc": sft.get("eval/acc"), "rl/acc": rl.get("eval/acc"),
        "rl/acc_ci": [rl.get("eval/acc_ci_low"), rl.get("eval/acc_ci_high")],
        "rl/acc_gain": rl.get("eval/acc_gain"),
        "budget/climb": budget.get("climb"), "budget/acc_at_max": budget.get("acc_at_max"),
        "time_s": {"synth": synth_s, "sft": seconds.get("sft", 0.0) - synth_s,
                   "rl": seconds.get("rl"), "budget": seconds.get("budget")},
    }
