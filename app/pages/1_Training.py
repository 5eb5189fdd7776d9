"""Training curves from metrics.jsonl: pick metrics, overlay runs (altair, one panel per metric),
smoothed on request (the raw values stay drawn, faint); for an RL run, the share of groups that
give RLOO no signal (every advantage 0) and of penalised samples per step, and the
step's time per phase, stacked. Refreshes by itself every few seconds while a chosen run runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import altair as alt  # noqa: E402
import streamlit as st  # noqa: E402

from app.common import default_run, follow, load_metrics, page_header, run_ids  # noqa: E402
from core.report.views import (  # noqa: E402
    DEFAULT_METRICS,
    metric_groups,
    metric_keys,
    metrics_long,
    smooth_long,
    step_time_long,
)

REFRESH_S = 5

runs = page_header("Training")
runs_dir = st.session_state["runs_dir"]
follow(lambda: run_ids(runs_dir))  # a run started after the page opened shows up
with_metrics = [r for r in runs if load_metrics(r)]
if runs and not with_metrics:
    st.info("No run has metrics yet.")
if not with_metrics:
    st.stop()

by_id = {r.id: r for r in with_metrics}
wanted = st.query_params.get("run")
chosen = st.sidebar.multiselect("Runs (overlay)", list(by_id),
                                default=[wanted if wanted in by_id else with_metrics[default_run(with_metrics)].id])
keys = metric_keys(row for rid in chosen for row in load_metrics(by_id[rid]))
groups = metric_groups(keys)
group = st.sidebar.selectbox("Namespace", ["(pick below)", *groups])
default = groups[group] if group in groups else [k for k in DEFAULT_METRICS if k in keys] or keys[:2]
metrics = st.multiselect("Metrics", keys, default=default, key="metrics")
weight = st.sidebar.slider("Smoothing", 0.0, 0.99, 0.0, 0.01, help="exponential moving average, weight on the past "
                           "(as TensorBoard's); the raw values stay drawn, faint")
SIGNAL = ("rollout/no_signal_group_frac", "rollout/penalised_frac")
live = any(by_id[rid].status() == "running" for rid in chosen)


@st.fragment(run_every=REFRESH_S if live else None)
def charts() -> None:
    frame = metrics_long({rid: load_metrics(by_id[rid]) for rid in chosen}, metrics)
    if frame.empty:
        st.info("Pick runs and metrics.")
        return
    if live:
        st.caption(f"live: refreshing every {REFRESH_S} s while a run is writing")
    smooth = smooth_long(frame, weight)
    cols = st.columns(2)
    for i, metric in enumerate(metrics):
        part, line = frame[frame.metric == metric], smooth[smooth.metric == metric]
        x = alt.X("step:Q", title="step", axis=alt.Axis(format="d", tickMinStep=1))
        color = alt.Color("run:N", legend=alt.Legend(orient="bottom"))
        drawn = alt.Chart(line, title=metric).mark_line(point=len(line) < 60 and not weight).encode(
            x=x, y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False), axis=alt.Axis(format="~g")),
            color=color, tooltip=["run", "step", alt.Tooltip("value:Q", format=".4g")])
        if weight:
            drawn = alt.Chart(part).mark_line(opacity=0.25).encode(x=x, y="value:Q", color=color) + drawn
        cols[i % 2].altair_chart(drawn, width="stretch")
    rl_runs = [rid for rid in chosen if any(k in row for row in load_metrics(by_id[rid]) for k in SIGNAL)]
    if rl_runs:
        rl_views(rl_runs)


def rl_views(rl_runs: list[str]) -> None:
    """RL runs: how many groups carry signal and how many samples are penalised; time per phase."""
    st.subheader("RL: signal and time per step")
    signal = smooth_long(metrics_long({rid: load_metrics(by_id[rid]) for rid in rl_runs}, SIGNAL), weight)
    left, right = st.columns(2)
    left.altair_chart(alt.Chart(signal, title="groups with no signal, penalised samples").mark_line().encode(
        x=alt.X("step:Q", axis=alt.Axis(format="d", tickMinStep=1)),
        y=alt.Y("value:Q", title="share", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("metric:N", title=None, scale=alt.Scale(scheme="category10"),
                        legend=alt.Legend(orient="bottom", labelLimit=300)),
        strokeDash=alt.StrokeDash("run:N", legend=alt.Legend(orient="bottom") if len(rl_runs) > 1 else None),
        tooltip=["run", "metric", "step", alt.Tooltip("value:Q", format=".3f")]), width="stretch")
    rid = right.selectbox("Time per phase of", rl_runs) if len(rl_runs) > 1 else rl_runs[0]
    times = step_time_long(load_metrics(by_id[rid]))
    if not times.empty:
        right.altair_chart(alt.Chart(times, title=f"step time per phase: {rid}").mark_area().encode(
            x=alt.X("step:Q", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("seconds:Q", stack="zero", title="seconds"),
            color=alt.Color("phase:N", scale=alt.Scale(scheme="tableau10"), legend=alt.Legend(orient="right")),
            tooltip=["step", "phase", alt.Tooltip("seconds:Q", format=".3f")]), width="stretch")


charts()
