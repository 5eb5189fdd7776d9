"""report.json (every figure) and report.html (the claims table, then charts) of `lab reproduce`."""

from __future__ import annotations

import html
import statistics
from typing import Any

from core.report.charts import budget_chart
from core.report.page import write_page
from core.store import Run, atomic_write_json


def write_report(run: Run, report: dict) -> None:
    """report.json (every figure) and report.html (the table, then the charts) in the run folder."""
    import altair as alt

    atomic_write_json(run.artifact_path("report.json"), {k: v for k, v in report.items() if not k.startswith("_")})
    charts = [c for c in (_claims_chart(report["claims"]), budget_chart(_mean_curves(report["_curves"]),
              "Accuracy against budget (mean over seeds; band: range over seeds)"),
              _training_chart(report["_training"])) if c is not None]
    chart = alt.vconcat(*charts).resolve_scale(color="independent") if charts else None
    write_page(run.artifact_path("report.html"), "T1 Lab: reproducing T1's claims", _table(report), chart)


def _table(report: dict) -> str:
    rows = []
    for c in report["claims"]:
        fmt = "{:+.1f} pts/doubling" if c["unit"] == "slope" else "{:.1f}%"
        ctx = ", ".join(f"{k} {fmt.format(100 * v)}" for k, v in c["context"].items())
        verdict = "<b style='color:#1a7f37'>yes</b>" if c["reproduced"] else "<b style='color:#cf222e'>no</b>"
        rows.append(f"<tr><td>{c['id']}. {html.escape(c['claim'])}</td><td>{html.escape(c['figure'])}"
                    f"<br><small>{html.escape(ctx)}</small></td><td>{verdict}</td></tr>")
    seeds = ", ".join(map(str, report["seeds"])) + (" (partial: the other seeds are still running)"
                                                    if report.get("partial") else "")
    return (f"<p>Embedded task, seeds {seeds}. Verdict rule, fixed before the runs: {html.escape(report['rule'])}. "
            "Accuracies are held-out pass@1 (temperature 1.0) at the rollout limit.</p>\n"
            "<table><tr><th>claim</th><th>our figure (mean, 95% interval, per seed)</th><th>reproduced</th></tr>"
            + "".join(rows) + "</table>")


def _claims_chart(cl: list[dict]) -> Any:
    """Each quantity's per-seed values (dots) and mean (tick) against zero."""
    import altair as alt

    rows = [{"quantity": f"{c['id']}. {p['quantity']}", "value": v, "kind": f"seed {i}"}
            for c in cl for p in c["parts"] for i, v in enumerate(p["values"])]
    rows += [{"quantity": f"{c['id']}. {p['quantity']}", "value": p["mean"], "kind": "mean"}
             for c in cl for p in c["parts"]]
    base = alt.Chart(alt.Data(values=rows))
    y = alt.Y("quantity:N", title=None, sort=None)
    dots = base.transform_filter("datum.kind != 'mean'").mark_circle(size=60, opacity=0.6).encode(
        x=alt.X("value:Q", title="difference (positive = as T1 claims)"), y=y, tooltip=["kind:N", "value:Q"])
    mean = base.transform_filter("datum.kind == 'mean'").mark_tick(thickness=3, size=18, color="black").encode(
        x="value:Q", y=y)
    zero = base.mark_rule(color="gray", strokeDash=[3, 3]).encode(x=alt.datum(0))
    return (zero + dots + mean).properties(title="Per-seed differences (dots) and their mean (tick)", width=520)


def _mean_curves(per_seed: list[dict[str, dict]]) -> list[dict]:
    """Curves averaged over seeds, matched by position in training order; ci = range over seeds."""
    ordered = [sorted(c.values(), key=lambda x: x.get("step") or 0) for c in per_seed]
    out = []
    for i, first in enumerate(ordered[0]):
        same = [o[i] for o in ordered if len(o) > i]
        points = []
        for j, p in enumerate(first.get("points") or []):
            accs = [c["points"][j]["accuracy"] for c in same if len(c.get("points") or []) > j]
            trunc = [c["points"][j]["truncated_frac"] for c in same if len(c.get("points") or []) > j]
            points.append({**p, "accuracy": statistics.fmean(accs), "ci_low": min(accs), "ci_high": max(accs),
                           "truncated_frac": statistics.fmean(trunc)})
        out.append({"checkpoint": first.get("checkpoint"), "step": first.get("step"), "points": points})
    return out


def _training_chart(training: dict[str, list[list[dict]]]) -> Any:
    """Mean over seeds, per RL step and variant: reward, truncated fraction, response length."""
    import altair as alt

    keys = ("reward/mean", "rollout/truncated_frac", "rollout/len_mean")
    rows = []
    for variant, seeds in training.items():
        steps: dict[int, list[dict]] = {}
        for metrics in seeds:
            for m in metrics:
                if "reward/mean" in m:
                    steps.setdefault(m["step"], []).append(m)
        for step, ms in sorted(steps.items()):
            rows += [{"variant": variant, "step": step, "metric": k, "value": statistics.fmean(x[k] for x in ms)}
                     for k in keys if all(k in x for x in ms)]
    if not rows:
        return None
    return alt.Chart(alt.Data(values=rows)).mark_line().encode(
        x="step:Q", y=alt.Y("value:Q", title=None), color="variant:N",
        tooltip=["variant:N", "step:Q", "value:Q"],
    ).properties(width=260, height=180).facet(column=alt.Column("metric:N", title=None)).resolve_scale(
        y="independent").properties(title="RL training, mean over seeds")
