"""T1 Lab dashboard, Runs page. Start: `python -m lab app` or `streamlit run app/Home.py`.

Every run in the runs folder with its stage, status (complete / running / crashed, from the
files), start time and headline figures, and the config diff between two runs. The other
pages (Training, Rollouts, Traces, Inference scaling) read the same folders; nothing in app/
writes to a run or imports torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

from app.common import follow, page_header, run_config, run_summary  # noqa: E402
from core.report.views import config_diff, drop_empty_columns, run_row  # noqa: E402
from core.store import list_runs  # noqa: E402

runs = page_header("Runs")
runs_dir = st.session_state["runs_dir"]
follow(lambda: tuple((r.id, r.status()) for r in list_runs(runs_dir)))  # runs that start or end
if not runs:
    st.stop()

skipped: list[str] = []
rows = drop_empty_columns([run_row(r.id, run_config(r), run_summary(r, skipped), r.status()) for r in runs])
st.dataframe(rows, width="stretch", hide_index=True)
for reason in skipped:
    st.warning(f"Figures left out, the file is malformed: {reason}")
st.caption("status: complete = summary.json written; running = its process is alive on this "
           "machine; crashed = neither. Figures come from summary.json.")

st.subheader("Config diff")
ids = [r.id for r in runs]
left, right = st.columns(2)
a = left.selectbox("Run A", ids, index=0)
b = right.selectbox("Run B", ids, index=min(1, len(ids) - 1))
by_id = {r.id: r for r in runs}
diff = config_diff(run_config(by_id[a]), run_config(by_id[b]))
if a == b:
    st.info("Pick two different runs.")
elif not diff:
    st.success("Same stage and config.")
else:
    st.dataframe([{"key": d["key"], a: str(d["a"]), b: str(d["b"])} for d in diff],
                 width="stretch", hide_index=True)
