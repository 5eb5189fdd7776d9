"""Inference scaling: accuracy against the reasoning budget (tokens, log2 axis), one line per
checkpoint with its 95% interval, the truncated fraction, and parallel scaling (maj@k, pass@k
against total tokens) on the same axis. Refreshes by itself while a sweep writes its curve.
A click on a point opens the samples behind it: each response cut at the budget with the answer
its cue forced, the verdict, and the same sample at the other budgets and checkpoints; filters
keep the samples that flipped against another budget or checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import html  # noqa: E402

import altair as alt  # noqa: E402
import streamlit as st  # noqa: E402

from app.common import default_run, follow, load_curves, load_eval_rows, page_header, run_ids  # noqa: E402
from core.report.points import FLIPS, at_budget, point_table, problem_grid, split_forced  # noqa: E402
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
runs = [r for r in page_header("Inference scaling")
        if load_curves(r, skipped) or (r.stage == "budget" and r.status() == "running")]
runs_dir = st.session_state["runs_dir"]
follow(lambda: run_ids(runs_dir))  # a sweep started after the page opened shows up
for reason in skipped:
    st.warning(f"A curve file is left out: {reason}")
if not runs:
    st.info("No budget curves yet (curves/<name>.json, written by the budget sweep).")
    st.stop()
by_id = {r.id: r for r in runs}
wanted = st.query_params.get("run")
chosen = st.sidebar.multiselect("Runs", list(by_id),
                                default=[wanted if wanted in by_id else runs[default_run(runs)].id])


def gather() -> dict[str, dict]:
    """Curves of the chosen runs, named "run/curve" when several runs are shown."""
    out = {}
    for rid in chosen:
        for name, curve in load_curves(by_id[rid]).items():
            out[f"{rid}/{name}" if len(chosen) > 1 else name] = curve
    return out


def sample_rows(key: str) -> list[dict]:
    """The per-sample rows behind curve `key` (eval/budget_<name>.jsonl of its run)."""
    rid, _, name = key.rpartition("/")
    run = by_id[rid] if rid else by_id[chosen[0]]
    return load_eval_rows(run, f"budget_{name}")


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
    line = base.mark_line(point=alt.OverlayMarkDef(size=80, filled=True)).encode(
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy"),
        tooltip=["series", "budget_tokens", alt.Tooltip("accuracy:Q", format=".3f"),
                 alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f"), "n"]
    ).add_params(alt.selection_point(name="pick", fields=["curve", "budget_tokens"], on="click"))
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
    if not curves:
        st.info("The sweep is loading its first checkpoint.")
        return
    for name, curve in curves.items():
        done, planned = curve_progress(curve)
        made = curve.get("generated")
        rows = f" ({made[0]:,} / {made[1]:,} responses)" if isinstance(made, list) and len(made) == 2 else ""
        state = ("complete" if curve.get("complete") else
                 f"generating the responses{rows}" if not done else "scoring the budgets")
        st.caption(f"**{name}**: {curve.get('task')} · {curve.get('mode')} · "
                   f"{done}/{planned} budgets · {state}")
    points, parallel = curve_points(curves), parallel_points(curves)
    if points.empty:
        st.info("The sweep has not finished its first budget yet.")
        return
    free = unconstrained_points(curves)
    event = st.altair_chart(accuracy_chart(points, parallel, free), width="stretch", on_select="rerun",
                            key="accuracy")
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
    open_point(curves, points, (event.selection.get("pick") or []) if event else [])


def open_point(curves: dict[str, dict], points, picked: list[dict]) -> None:
    """The samples behind one point (clicked, or chosen in the boxes)."""
    st.subheader("Samples behind a point")
    names = [n for n in curves if (points.curve == n).any()]
    if picked and picked[0].get("curve") in names:  # a click sets the boxes
        st.session_state["pt_curve"], st.session_state["pt_budget"] = picked[0]["curve"], int(picked[0]["budget_tokens"])
    if st.session_state.get("pt_curve") not in names:
        st.session_state["pt_curve"] = names[-1]
    label = dict(zip(points.curve, points.series))
    left, mid, right, far = st.columns(4)
    curve = left.selectbox("Checkpoint", names, key="pt_curve", format_func=label.get,
                           help="or click a point of the chart")
    budgets = sorted(int(b) for b in points[points.curve == curve].budget_tokens)
    if st.session_state.get("pt_budget") not in budgets:
        st.session_state["pt_budget"] = budgets[-1]
    budget = mid.selectbox("Budget (tokens)", budgets, key="pt_budget")
    against = right.selectbox("Compare with", ["a smaller budget", "another checkpoint"], key="pt_against")
    if against == "a smaller budget":
        smaller = [b for b in budgets if b < budget] or budgets[:1]
        other_curve, other_budget = curve, far.selectbox("Budget", smaller, index=len(smaller) - 1, key="pt_ob")
    else:
        others = [n for n in names if n != curve] or names
        other_curve, other_budget = far.selectbox("Checkpoint", others, key="pt_oc", format_func=label.get), budget
    rows = at_budget(sample_rows(curve), budget)
    if not rows:
        st.info(f"No per-sample rows for {curve} at {budget} tokens yet (eval/budget_<checkpoint>.jsonl).")
        return
    only = st.radio("Show", FLIPS, horizontal=True, key="pt_only",
                    help=f"flips: wrong or right at {label[other_curve]}, {other_budget} tokens -> here")
    table = point_table(rows, at_budget(sample_rows(other_curve), other_budget), only)
    right_n = sum(bool(r.get("correct")) for r in rows.values())
    st.caption(f"**{label[curve]}** at **{budget}** tokens: {right_n}/{len(rows)} right, "
               f"{sum(bool(r.get('truncated')) for r in rows.values())} cut by the budget; "
               f"{len(table)} shown; *before*: right or wrong at {label[other_curve]}, {other_budget} tokens.")
    if table.empty:
        return
    event = st.dataframe(table, width="stretch", hide_index=True, on_select="rerun", selection_mode="single-row",
                         key="pt_table", height=240)
    picked_rows = event.selection.rows if event else []
    line = table.iloc[picked_rows[0] if picked_rows else 0]
    key = (str(line["problem_id"]), int(line["sample"]))
    show_sample(rows[key], key, {label[n]: sample_rows(n) for n in names})


def show_sample(row: dict, key: tuple[str, int], rows_by_curve: dict[str, list[dict]]) -> None:
    """One response and the same sample at every budget and checkpoint (any of them opened)."""
    show_response(row, key)
    st.caption("The same sample at every budget (rows) and checkpoint (columns):")
    st.dataframe(problem_grid(rows_by_curve, key), width="stretch")
    cells = {(label, b): r for label, rows in rows_by_curve.items() for b in sorted({r.get("budget") for r in rows})
             if (r := at_budget(rows, b).get(key)) is not None}
    if cells:
        where = st.selectbox("Open the response at", list(cells), format_func=lambda c: f"{c[0]}, {c[1]} tokens",
                             key="pt_cell")
        show_response(cells[where], key)


def show_response(row: dict, key: tuple[str, int]) -> None:
    """One response: the reasoning cut at the budget, then (highlighted) what the cue forced."""
    reasoning, forced = split_forced(row)
    verdict = "right" if row.get("correct") else "wrong"
    st.markdown(f"**{key[0]}**, sample {key[1]} at {row.get('budget')} tokens: **{verdict}** "
                f"(answered {row.get('predicted')!r}, "
                f"gold {row.get('gold')!r}; {row.get('tokens_used')} tokens" +
                ("; the budget cut the reasoning, the highlighted part is the forced answer)" if forced else
                 "; ended within the budget with its own answer)"))
    def lines(text: str) -> str:
        return html.escape(text).replace("\n", "<br>")

    st.markdown(f"<div class='point-sample' style='font-family:monospace;font-size:0.9em'>{lines(reasoning)}"
                f"<mark>{lines(forced)}</mark></div>", unsafe_allow_html=True)


view()
