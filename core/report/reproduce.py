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


UNITS = {"accuracy": (100, " pts"), "slope": (100, " pts/doubling"), "fraction": (100, " pts"),
         "tokens": (1, " tokens"), "count": (1, " per response")}


def fmt_value(v: float, unit: str, sign: bool = True) -> str:
    scale, suffix = UNITS[unit]
    digits = 2 if unit == "count" else 1
    return f"{v * scale:{'+' if sign else ''}.{digits}f}{suffix}"


def fmt_interval(ci: list[float], unit: str) -> str:
    """[lo, hi] in the unit's scale, without repeating the unit."""
    scale, _ = UNITS[unit]
    digits = 2 if unit == "count" else 1
    return f"[{ci[0] * scale:+.{digits}f}, {ci[1] * scale:+.{digits}f}]"


_VERDICT_COLOR = {"reproduced": "#1a7f37", "contradicted": "#cf222e", "not reproduced": "#9a6700"}


def _table(report: dict) -> str:
    """One row per tested quantity: estimate, 95% interval, per-seed estimates and p, the minimum
    effect, its verdict; the claim's verdict on its first row."""
    rows = []
    for c in report["claims"]:
        ctx = ", ".join(f"{k} {v}" for k, v in c["context"].items())
        note = f"<br><small><i>{html.escape(c['note'])}</i></small>" if c.get("note") else ""
        verdict = f"<b style='color:{_VERDICT_COLOR[c['verdict']]}'>{c['verdict']}</b>"
        for i, p in enumerate(c["parts"]):
            unit = p["unit"]
            lo, hi = p["ci"]
            seeds = "<br>".join(f"{fmt_value(s['estimate'], unit)} {fmt_interval(s['ci'], unit)}, p {s['p']:.3f}"
                                for s in p["seeds"])
            lab_q = "" if p["paper"] else "<br><small>(the lab's question: does not decide the claim)</small>"
            part_verdict = (f"<span style='color:{_VERDICT_COLOR[p['verdict']]}'>{p['verdict']}</span>"
                            f"<br><small>{html.escape(p['why'])}</small>")
            head = (f"<td rowspan={len(c['parts'])}>{c['id']}. {html.escape(c['claim'])}<br><small>{html.escape(ctx)}"
                    f"</small>{note}</td>") if i == 0 else ""
            tail = f"<td rowspan={len(c['parts'])}>{verdict}</td>" if i == 0 else ""
            rows.append(f"<tr>{head}<td>{html.escape(p['quantity'])}{lab_q}</td>"
                        f"<td><b>{fmt_value(p['estimate'], unit)}</b> {fmt_interval([lo, hi], unit)}<br><small>p {p['p']:.3f}, {p['n_problems']} problems</small></td>"
                        f"<td><small>{seeds}</small></td><td>{fmt_value(p['min_effect'], unit)}</td>"
                        f"<td>{part_verdict}</td>{tail}</tr>")
    seeds = ", ".join(map(str, report["seeds"])) + (" (partial: the other seeds are still running)"
                                                    if report.get("partial") else "")
    done = [c["id"] for c in report["claims"] if c["reproduced"]]
    return (f"<p>Embedded task, seeds {seeds}. Reproduced: {', '.join(map(str, done)) or 'none'} of "
            f"{len(report['claims'])} claims.</p>"
            f"<p>Verdict rule, fixed before the runs: {html.escape(report['rule'])} Minimum effects: "
            + ", ".join(f"{u} {fmt_value(v, u)}" for u, v in report["min_effect"].items())
            + ". Accuracies are held-out pass@1 at the eval section's temperature at the rollout limit; "
            "p is one-sided (the share of resampled means at or below zero).</p>\n"
            "<table><tr><th>claim</th><th>quantity (arm A - arm B)</th><th>estimate over seeds [95% interval]</th>"
            "<th>per seed [95% interval], p</th><th>minimum effect</th><th>quantity's verdict</th>"
            "<th>claim's verdict</th></tr>" + "".join(rows) + "</table>")


def _claims_chart(cl: list[dict]) -> Any:
    """Each quantity's estimate and 95% interval (bars) and per-seed estimates (dots), in units of
    its minimum effect: 1 is the bar a reproduced quantity must reach, 0 no effect."""
    import altair as alt

    rows = []
    for c in cl:
        for p in c["parts"]:
            q, m = f"{c['id']}. {p['quantity']}", p["min_effect"]
            rows.append({"quantity": q, "value": p["estimate"] / m, "lo": p["ci"][0] / m, "hi": p["ci"][1] / m,
                         "kind": "over seeds", "verdict": p["verdict"]})
            rows += [{"quantity": q, "value": v / m, "kind": f"seed {i}", "verdict": p["verdict"]}
                     for i, v in enumerate(p["values"])]
    base = alt.Chart(alt.Data(values=rows))
    y = alt.Y("quantity:N", title=None, sort=None)
    color = alt.Color("verdict:N", scale=alt.Scale(domain=list(_VERDICT_COLOR), range=list(_VERDICT_COLOR.values())))
    comb = base.transform_filter("datum.kind == 'over seeds'")
    bars = comb.mark_rule(strokeWidth=3).encode(x=alt.X("lo:Q", title="effect / minimum effect (1 = the bar to reach)"),
                                                x2="hi:Q", y=y, color=color)
    est = comb.mark_tick(thickness=3, size=18, color="black").encode(x="value:Q", y=y)
    dots = base.transform_filter("datum.kind != 'over seeds'").mark_circle(size=40, opacity=0.5).encode(
        x="value:Q", y=y, color=color, tooltip=["kind:N", "value:Q"])
    zero = base.mark_rule(color="gray", strokeDash=[3, 3]).encode(x=alt.datum(0))
    one = base.mark_rule(color="gray").encode(x=alt.datum(1))
    return (zero + one + bars + dots + est).properties(
        title="Each quantity: 95% interval over seeds (bar), estimate (tick), seeds (dots)", width=520)


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
        free = [c["unconstrained"] for c in same if c.get("unconstrained")]
        unconstrained = {**free[0], "accuracy": statistics.fmean(f["accuracy"] for f in free)} if free else None
        out.append({"checkpoint": first.get("checkpoint"), "step": first.get("step"), "points": points,
                    "unconstrained": unconstrained})
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
