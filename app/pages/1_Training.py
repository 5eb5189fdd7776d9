"""Training curves from metrics.jsonl: pick metrics, overlay runs (altair, one panel per metric).

Refreshes by itself every few seconds while one of the chosen runs is running.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import altair as alt  # noqa: E402
import streamlit as st  # noqa: E402

from app.common import load_metrics, page_header  # noqa: E402
from core.report.views import DEFAULT_METRICS, metric_groups, metric_keys, metrics_long  # noqa: E402

REFRESH_S = 5

runs = page_header("Training")
with_metrics = [r for r in runs if load_metrics(r)]
if runs and not with_metrics:
    st.info("No run has metrics yet.")
if not with_metrics:
    st.stop()

by_id = {r.id: r for r in with_metrics}
wanted = st.query_params.get("run")
chosen = st.sidebar.multiselect("Runs (overlay)", list(by_id),
                                default=[wanted if wanted in by_id else next(iter(by_id))])
keys = metric_keys(row for rid in chosen for row in load_metrics(by_id[rid]))
groups = metric_groups(keys)
group = st.sidebar.selectbox("Namespace", ["(pick below)", *groups])
default = groups[group] if group in groups else [k for k in DEFAULT_METRICS if k in keys] or keys[:2]
metrics = st.multiselect("Metrics", keys, default=default, key="metrics")
live = any(by_id[rid].status() == "running" for rid in chosen)


@st.fragment(run_every=REFRESH_S if live else None)
def charts() -> None:
    frame = metrics_long({rid: load_metrics(by_id[rid]) for rid in chosen}, metrics)
    if frame.empty:
        st.info("Pick runs and metrics.")
        return
    if live:
        st.caption(f"live: refreshing every {REFRESH_S} s while a run is writing")
    cols = st.columns(2)
    for i, metric in enumerate(metrics):
        part = frame[frame.metric == metric]
        chart = alt.Chart(part, title=metric).mark_line(point=len(part) < 60).encode(
            x=alt.X("step:Q", title="step", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False), axis=alt.Axis(format="~g")),
            color=alt.Color("run:N", legend=alt.Legend(orient="bottom")),
            tooltip=["run", "step", alt.Tooltip("value:Q", format=".4g")])
        cols[i % 2].altair_chart(chart, width="stretch")


charts()
