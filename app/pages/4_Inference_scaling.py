"""Inference scaling: accuracy against the reasoning budget (tokens, log2 axis), one line per
checkpoint with its 95% interval, the truncated fraction, and parallel scaling (maj@k, pass@k
against total tokens) on the same axis. Refreshes by itself while a sweep writes its curve."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import altair as alt  # noqa: E402
import streamlit as st  # noqa: E402

from app.common import load_curves, page_header  # noqa: E402
from core.report.views import (  # noqa: E402
    curve_points,
    curve_progress,
    curves_live,
    parallel_points,
    unconstrained_points,
)

REFRESH_S = 3
X = alt.Scale(type="log", base=2)
COLOR = alt.Scale(scheme="category10")

skipped: list[str] = []
runs = [r for r in page_header("Inference scaling") if load_curves(r, skipped)]
for reason in skipped:
    st.warning(f"A curve file is left out: {reason}")
if not runs:
    st.info("No budget curves yet (curves/<name>.json, written by the budget sweep).")
    st.stop()
by_id = {r.id: r for r in runs}
chosen = st.sidebar.multiselect("Runs", list(by_id), default=list(by_id)[:1])


def gather() -> dict[str, dict]:
    """Curves of the chosen runs, named "run/curve" when several runs are shown."""
    out = {}
    for rid in chosen:
        for name, curve in load_curves(by_id[rid]).items():
            out[f"{rid}/{name}" if len(chosen) > 1 else name] = curve
    return out


def live_now(curves: dict[str, dict]) -> bool:
    return curves_live(curves) or any(by_id[rid].status() == "running" for rid in chosen)


def x_axis(points, parallel) -> alt.Axis:
    """Ticks at the budgets (and parallel token totals) instead of log-scale decimals."""
    ticks = sorted({float(t) for t in [*points.budget_tokens, *parallel.get("total_tokens", [])]})
    return alt.Axis(values=ticks, format="~g")


def accuracy_chart(points, parallel, free) -> alt.LayerChart:
    axis = x_axis(points, parallel)
    base = alt.Chart(points).encode(
        x=alt.X("budget_tokens:Q", scale=X, axis=axis, title="budget (tokens)"),
        color=alt.Color("series:N", title="checkpoint", scale=COLOR))
    band = base.mark_area(opacity=0.18).encode(y="ci_low:Q", y2="ci_high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy"),
        tooltip=["series", "budget_tokens", alt.Tooltip("accuracy:Q", format=".3f"),
                 alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f"), "n"])
    layers = [band, line]
    if not free.empty:  # the same model with no budget: a dashed rule in its checkpoint's colour
        layers.append(alt.Chart(free).mark_rule(strokeDash=[6, 3], strokeWidth=1.5).encode(
            y="accuracy:Q", color=alt.Color("series:N", scale=COLOR),
            tooltip=["series", alt.Tooltip("accuracy:Q", format=".3f", title="no budget"),
                     alt.Tooltip("max_tokens:Q", title="up to tokens"), alt.Tooltip("mean_tokens_used:Q", format=".0f"),
                     alt.Tooltip("truncated_frac:Q", format=".3f"), "n"]))
    if not parallel.empty:
        layers.append(alt.Chart(parallel).mark_line(point=True).encode(
            x=alt.X("total_tokens:Q", scale=X, axis=axis), y="value:Q",
            color=alt.Color("series:N", scale=COLOR),
            strokeDash=alt.StrokeDash("metric:N", title="parallel (k samples)"),
            tooltip=["series", "metric", "k", "total_tokens", alt.Tooltip("value:Q", format=".3f")]))
    return alt.layer(*layers).properties(title="Accuracy vs budget", height=360)


curves0 = gather()


@st.fragment(run_every=REFRESH_S if live_now(curves0) else None)
def view() -> None:
    curves = gather()
    if live_now(curves) != live_now(curves0):
        st.rerun()  # a sweep started or finished: switch the periodic refresh on or off
    for name, curve in curves.items():
        done, planned = curve_progress(curve)
        state = "complete" if curve.get("complete") else "running"
        st.caption(f"**{name}**: {curve.get('task')} · {curve.get('mode')} · "
                   f"{done}/{planned} budgets · {state}")
    points, parallel = curve_points(curves), parallel_points(curves)
    if points.empty:
        st.info("The sweep has not finished its first budget yet.")
        return
    free = unconstrained_points(curves)
    st.altair_chart(accuracy_chart(points, parallel, free), width="stretch")
    if not free.empty:
        caps = sorted({int(t) for t in free.max_tokens})
        st.caption("Dashed: the same model with no budget (each response runs to its end, up to "
                   + (f"{caps[0]}" if len(caps) == 1 else
                      ", ".join(f"{s}: {int(t)}" for s, t in zip(free.series, free.max_tokens)))
                   + " tokens), in its checkpoint's colour.")
    st.altair_chart(alt.Chart(points, title="Truncated at the budget").mark_line(point=True).encode(
        x=alt.X("budget_tokens:Q", scale=X, axis=x_axis(points, points.iloc[0:0]), title="budget (tokens)"),
        y=alt.Y("truncated_frac:Q", scale=alt.Scale(domain=[0, 1]), title="truncated fraction"),
        color=alt.Color("series:N", title="checkpoint", scale=COLOR)).properties(height=220),
        width="stretch")
    with st.expander("Points"):
        st.dataframe(points, width="stretch", hide_index=True)
        if not free.empty:
            st.dataframe(free, width="stretch", hide_index=True)


view()
