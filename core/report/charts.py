"""Altair charts shared by the budget sweep, the reports and the notebooks. Torch-free."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def curve_frame(curves: Sequence[dict]) -> list[dict]:
    """Long-format rows (one per checkpoint and budget) from curve files' `points`."""
    rows = []
    for c in curves:
        for p in c.get("points") or []:
            rows.append({**p, "checkpoint": c.get("checkpoint", p.get("checkpoint")),
                         "step": c.get("step")})
    return rows


def budget_chart(curves: Sequence[dict], title: str = "Accuracy against reasoning budget") -> Any:
    """Accuracy vs budget (log2 axis) with 95% intervals, one line per checkpoint; None if empty."""
    import altair as alt

    rows = curve_frame(curves)
    if not rows:
        return None
    data = alt.Data(values=rows)
    ticks = sorted({r["budget_tokens"] for r in rows})
    x = alt.X("budget_tokens:Q", scale=alt.Scale(type="log", base=2, domain=[ticks[0], ticks[-1]]),
              axis=alt.Axis(values=ticks), title="reasoning budget (tokens, log2)")
    color = alt.Color("checkpoint:N", sort=alt.SortField("step"), title="checkpoint")
    band = alt.Chart(data).mark_area(opacity=0.15).encode(x=x, y="ci_low:Q", y2="ci_high:Q", color=color)
    line = alt.Chart(data).mark_line(point=True).encode(
        x=x, y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])), color=color,
        tooltip=["checkpoint:N", "budget_tokens:Q", alt.Tooltip("accuracy:Q", format=".1%"),
                 alt.Tooltip("ci_low:Q", format=".1%"), alt.Tooltip("ci_high:Q", format=".1%"),
                 alt.Tooltip("truncated_frac:Q", format=".1%"), "mean_tokens_used:Q", "n:Q"])
    free = [{**c["unconstrained"], "checkpoint": c.get("checkpoint"), "step": c.get("step")}
            for c in curves if c.get("unconstrained")]
    layers = band + line
    if free:  # the same model with no budget: a dashed rule in its checkpoint's colour
        layers += alt.Chart(alt.Data(values=free)).mark_rule(strokeDash=[6, 3]).encode(
            y="accuracy:Q", color=color,
            tooltip=["checkpoint:N", alt.Tooltip("accuracy:Q", format=".1%", title="no budget"),
                     alt.Tooltip("budget_tokens:Q", title="up to tokens")])
    trunc = alt.Chart(data).mark_line(point=True, strokeDash=[4, 2]).encode(
        x=x, y=alt.Y("truncated_frac:Q", title="fraction truncated", scale=alt.Scale(domain=[0, 1])),
        color=color)
    if free:
        title = f"{title} (dashed: no budget)"
    return alt.vconcat(layers.properties(title=title, width=420, height=260),
                       trunc.properties(width=420, height=120))


def parallel_chart(curves: Sequence[dict]) -> Any:
    """maj@k and pass@k against total tokens (log2), beside the sequential curve; None if empty."""
    import altair as alt

    rows = []
    for c in curves:
        for p in c.get("parallel") or []:
            rows.append({"checkpoint": c.get("checkpoint"), "tokens": p["total_tokens"], "kind": "maj@k",
                         "accuracy": p["maj_acc"], "k": p["k"]})
            rows.append({"checkpoint": c.get("checkpoint"), "tokens": p["total_tokens"], "kind": "pass@k",
                         "accuracy": p["pass_at_k"], "k": p["k"]})
        for p in c.get("points") or []:
            rows.append({"checkpoint": c.get("checkpoint"), "tokens": p["mean_tokens_used"], "kind": "budget",
                         "accuracy": p["accuracy"], "k": 1})
    if not any(r["kind"] != "budget" for r in rows):
        return None
    return alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("tokens:Q", scale=alt.Scale(type="log", base=2), title="tokens per problem (log2)"),
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])), color="checkpoint:N",
        strokeDash="kind:N", tooltip=["checkpoint:N", "kind:N", "k:Q", "tokens:Q", "accuracy:Q"],
    ).properties(title="Sequential (budget) vs parallel (maj@k, pass@k) scaling", width=420, height=260)
