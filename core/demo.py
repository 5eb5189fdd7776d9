"""`python -m lab demo`: the whole T1 pipeline on the embedded default, then a short report.

    synth -> SFT (defaults) -> RL (a 60-step version of the default recipe, checkpoints every
    20 steps) -> budget curves for the SFT model and every RL checkpoint -> report.html

Each stage is an ordinary run folder (the dashboard lists them); the demo's own run folder
records which ones, the time each took, and holds report.html. A demo that stopped part-way
continues with `--resume DEMO_RUN`: finished stages are reused.

Simplified: RL runs 60 steps instead of the default 100 so that the demo, install included,
stays within about ten minutes on a 2-core laptop; `python -m lab rl` runs the full recipe.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from core.config import BudgetJob, ConfigError, RLJob, SFTJob
from core.store import Run, open_run

Say = Callable[[str], None]

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
    out = {stage: dict(RL_OVERRIDES) if stage == "rl" else {} for stage, _, _ in STAGES}
    for key, value in preset.items():
        users = [stage for stage, cls, _ in STAGES if key.split(".")[0] in {f.name for f in fields(cls)}]
        if not users:
            raise ConfigError(f"demo preset key {key!r} belongs to no stage (sft, rl, budget)")
        for stage in users:
            out[stage][key] = value
    return out


def run_stage(stage: str, preset: dict[str, Any], links: dict[str, Any], runs_dir: str | Path,
              say: Say, progress: bool) -> tuple[Run, dict]:
    """What `python -m lab <stage> --preset ... key=value` does: build, check, run, summarize."""
    from core.commands import run_command

    return run_command(stage, links, runs_dir, preset, say, progress)


def run_demo(run: Run, say: Say, progress: bool = True, runs_dir: str | Path = "runs",
             preset: dict[str, Any] | None = None) -> dict:
    """Run (or continue) every stage; write report.html; return the headline figures."""
    presets = stage_presets(preset or {})
    done: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for m in run.metrics():  # stages a previous attempt finished
        if m.get("stage_done") and open_run(m["run_dir"]).summary() is not None:
            done[m["stage_done"]], seconds[m["stage_done"]] = m["run_dir"], m["time_s"]
    for stage, _cls, links in STAGES:
        if stage in done:
            say(f"{stage}: reusing {done[stage]}")
            continue
        t0 = time.time()
        sub, _ = run_stage(stage, presets[stage], links(done), runs_dir, say, progress)
        done[stage], seconds[stage] = str(sub.path), time.time() - t0
        run.log_metrics({"stage_done": stage, "run_dir": str(sub.path), "time_s": seconds[stage]})
    figures = headline(done, seconds)
    write_report(run, done, figures)
    say(f"report: {run.artifact_path('report.html')}")
    return figures


def headline(done: dict[str, str], seconds: dict[str, float]) -> dict[str, Any]:
    """SFT and RL held-out accuracy, the budget curves' climb, and the time split."""
    sft, rl, budget = (open_run(done[s]).summary() or {} for s in ("sft", "rl", "budget"))
    synth_s = sft.get("synth/time_s") or 0.0
    return {
        "runs": done,
        "sft/acc": sft.get("eval/acc"), "rl/acc": rl.get("eval/acc"),
        "rl/acc_ci": [rl.get("eval/acc_ci_low"), rl.get("eval/acc_ci_high")],
        "rl/acc_gain": rl.get("eval/acc_gain"),
        "budget/climb": budget.get("climb"), "budget/acc_at_max": budget.get("acc_at_max"),
        "time_s": {"synth": synth_s, "sft": seconds.get("sft", 0.0) - synth_s,
                   "rl": seconds.get("rl"), "budget": seconds.get("budget")},
    }


def write_report(run: Run, done: dict[str, str], figures: dict[str, Any]) -> None:
    """report.html: the headline table, the budget curves and RL's held-out accuracy."""
    import altair as alt

    from core.charts import budget_chart, html_page
    from core.store import atomic_write_text

    rl = open_run(done["rl"])
    evals = [m for m in rl.metrics() if "eval/acc" in m]
    acc = alt.Chart(alt.Data(values=[{"step": m["step"], "accuracy": m["eval/acc"],
                                      "truncated": m.get("eval/truncated_frac")} for m in evals]))
    acc = acc.mark_line(point=True).encode(x="step:Q", y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])))
    charts = [c for c in (budget_chart(list(open_run(done["budget"]).curves().values())),
                          acc.properties(title="RL: held-out accuracy", width=360, height=260)) if c]
    t = figures["time_s"]
    rows = [("SFT held-out accuracy", _pct(figures["sft/acc"])),
            ("RL held-out accuracy [95% CI]", f"{_pct(figures['rl/acc'])} "
             f"[{_pct(figures['rl/acc_ci'][0])}, {_pct(figures['rl/acc_ci'][1])}]"),
            ("budget curve climb (smallest to largest budget)",
             ", ".join(f"{k}: {_pct(v)}" for k, v in (figures["budget/climb"] or {}).items())),
            ("time (s): synth / SFT / RL / budget",
             " / ".join(f"{t[k] or 0:.0f}" for k in ("synth", "sft", "rl", "budget")))]
    table = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in rows)
    runs = "".join(f"<li>{s}: <code>{html.escape(p)}</code></li>" for s, p in done.items())
    body = (f"<table>{table}</table><h2>Runs</h2><ul>{runs}</ul><p>The dashboard "
            "(<code>python -m lab app</code>) shows rollouts, traces and live curves.</p>")
    page = html_page("T1 Lab demo: the embedded pipeline", body, alt.hconcat(*charts) if charts else None)
    atomic_write_text(run.artifact_path("report.html"), page)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
