"""budget.html beside a sweep's curves: accuracy against budget, one line per checkpoint, and
sequential against parallel scaling."""

from __future__ import annotations

from core.report.charts import budget_chart, parallel_chart
from core.report.page import write_page
from core.store import Run


def write_budget_page(run: Run) -> None:
    import altair as alt

    curves = list(run.curves().values())
    charts = [c for c in (budget_chart(curves), parallel_chart(curves)) if c is not None]
    if charts:
        write_page(run.artifact_path("budget.html"), f"Inference scaling: {run.id}", "", alt.hconcat(*charts))
