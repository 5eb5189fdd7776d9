"""T1 Lab dashboard (read-only over run folders). Start: `streamlit run app/Home.py`.

This first page lists runs; the Training, Rollouts, Traces and Inference-scaling pages read
the same run folders through core.store (no torch import anywhere in app/).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

from core.store import list_runs  # noqa: E402

st.set_page_config(page_title="T1 Lab", layout="wide")
st.title("T1 Lab runs")
runs_dir = st.sidebar.text_input("runs folder", os.environ.get("T1LAB_RUNS", "runs"))
runs = list_runs(runs_dir)
if not runs:
    st.info(f"No runs in {runs_dir!r} yet: `python -m lab sft` makes one.")
else:
    rows = []
    for run in runs:
        cfg, summary = run.config(), run.summary() or {}
        rows.append({
            "run": run.id, "stage": cfg.get("stage"), "status": run.status(),
            "started": cfg.get("created_at"), "eval/acc": summary.get("eval/acc"),
            "eval/corrected_frac": summary.get("eval/corrected_frac"),
        })
    st.dataframe(rows, use_container_width=True)
