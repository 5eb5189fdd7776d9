"""report.html of `lab demo`: the headline table, the budget curves and RL's held-out accuracy."""

from __future__ import annotations

import html
from typing import Any

from core.report.charts import budget_chart
from core.report.page import write_page
from core.store import Run, open_run


def write_report(run: Run, figures: dict[str, Any]) -> None:
    """report.html in the demo's run folder, from `headline` figures (their "runs" name the
    stages' folders)."""
    import altair as alt

    done = figures["runs"]
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
    write_page(run.artifact_path("report.html"), "T1 Lab demo: the embedded pipeline", body,
               alt.hconcat(*charts) if charts else None)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
