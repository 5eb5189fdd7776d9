"""Reasoning structure: responses split into attempts, checks, reflections and the answer,
highlighted; per step, how often responses fix a failed attempt and use reflection words;
the synthesized SFT traces and evaluation responses browsable the same way."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import altair as alt  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app.common import (  # noqa: E402
    follow,
    load_eval_rows,
    load_sample_steps,
    load_samples,
    load_trace_stats,
    load_traces,
    page_header,
    pick_run,
    run_ids,
    task_name,
)
from core.report.rollouts import trace_markdown  # noqa: E402
from core.report.views import filter_traces, spread, trace_features, trace_html  # noqa: E402
from core.store import Run, StoreError  # noqa: E402
from core.tasks import trace_parser  # noqa: E402

PAGE_SIZE = 10
STATS_ROWS = 2000  # structure figures over at most this many responses (parsing costs ~25 us each)
ONLY = {"all": "all responses", "failed_then_fixed": "failed, then fixed",
        "reflection": "with reflection words", "verified": "with a verification", "wrong": "wrong"}


def sources(run: Run) -> list[str]:
    """What this run holds that has responses in it."""
    out = []
    if load_sample_steps(run):
        out.append("RL rollouts")
    if run.traces_path.exists():
        out.append("synthesized SFT traces")
    if eval_name(run) and run.eval_path(eval_name(run)).exists():
        out.append("evaluation responses")
    return out


def eval_name(run: Run) -> str | None:
    try:
        return run.setting("eval.split")
    except StoreError:
        return None


runs = [r for r in page_header("Traces") if sources(r)]
runs_dir = st.session_state["runs_dir"]
if not runs:
    follow(lambda: run_ids(runs_dir))  # a run that starts shows up
    st.info("No run with responses (rollouts, synthesized traces or evaluation rows) here.")
    st.stop()
run = pick_run("Run", runs)
task = task_name(run)
follow(lambda: (run_ids(runs_dir), tuple(load_sample_steps(run))))  # new runs and steps appear
source = st.sidebar.radio("Responses", sources(run))

if source == "RL rollouts":
    steps = load_sample_steps(run)
    k = st.sidebar.slider("Steps in the chart", 1, len(steps), min(len(steps), 40)) if len(steps) > 1 else 1
    stats = load_trace_stats(run, spread(steps, k), task)
    st.subheader("Per step")
    per_response = stats.stat == "reflection_words_mean"
    # One chart per row, legend on the right: in a narrow column a bottom legend and the title
    # took the fixed height that Streamlit's fit-to-width sizing leaves, and the plot collapsed.
    for part, title in zip((stats[~per_response], stats[per_response]),
                           ("share of responses", "reflection words per response")):
        lo, hi = (float(part.value.min()), float(part.value.max())) if len(part) else (0.0, 1.0)
        pad = 0 if hi > lo else max(abs(lo) * 0.1, 0.05)  # flat data: an axis around it, not one tick
        st.altair_chart(alt.Chart(part, title=title, height=280).mark_line(point=True).encode(
            x=alt.X("step:Q", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False, domain=[lo - pad, hi + pad] if pad else alt.Undefined)),
            color=alt.Color("stat:N", scale=alt.Scale(scheme="category10"),
                            legend=alt.Legend(orient="right", title=None)),
            tooltip=["step", "stat", alt.Tooltip("value:Q", format=".3f")]), width="stretch")
    newest = st.sidebar.toggle("Follow the newest step", value=run.status() == "running", key=f"newest-{run.id}",
                               help="while on, the page moves to each new step as the run writes it")
    step = (st.sidebar.select_slider("Step to browse", steps, value=steps[-1], disabled=newest)
            if len(steps) > 1 else steps[0])
    rows = load_samples(run, step)
elif source == "synthesized SFT traces":
    rows = load_traces(run)
else:
    rows = load_eval_rows(run, eval_name(run) or "")

left, right = st.columns([2, 3])
only = left.selectbox("Show", list(ONLY), format_func=ONLY.get, key="only")
query = right.text_input("Search responses")
shown = filter_traces(rows, task, only, query)
feats = pd.DataFrame([trace_features(r, task) for r in shown[:STATS_ROWS]])
cols = st.columns(4)
cols[0].metric("responses shown", f"{len(shown)} / {len(rows)}")
if not feats.empty:
    cols[1].metric("failed, then fixed", f"{feats.failed_then_fixed.mean():.1%}")
    cols[2].metric("with reflection words", f"{(feats.reflection_words > 0).mean():.1%}")
    cols[3].metric("attempts per response", f"{feats.attempts.mean():.2f}")
if len(shown) > STATS_ROWS:
    st.caption(f"Figures over the first {STATS_ROWS} responses shown.")
if not shown:
    st.stop()

pages = (len(shown) - 1) // PAGE_SIZE + 1
page = st.number_input(f"Page (of {pages})", 1, pages, 1) if pages > 1 else 1
for row in shown[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]:
    box = st.container(border=True)
    f = trace_features(row, task)
    verdict = "" if "correct" not in row else (":green[correct] · " if row["correct"] else ":red[wrong] · ")
    box.markdown(f"`{row.get('question', row.get('problem_id', ''))}`")
    box.caption(f"{verdict}{f['attempts']} attempts ({f['failed_attempts']} failed) · "
                f"{f['reflection_words']} reflection words · "
                f"{'verified' if f['verified'] else 'no verification'}"
                + (f" · {row['num_tokens']} tokens" if "num_tokens" in row else ""))
    trace = trace_parser(task)(str(row.get("response", "")))
    if task == "pairsum":
        box.markdown(trace_html(trace), unsafe_allow_html=True)
    else:  # math: each step's label in its colour, the LaTeX rendered
        box.markdown("\n\n".join(trace_markdown(trace)))
