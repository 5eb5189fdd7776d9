"""From a point of a budget curve (a checkpoint at a budget) to the samples behind it: pure
functions over the rows a sweep writes (eval/budget_<checkpoint>.jsonl, see
`core.budget.budget_rows`), for the dashboard's Inference scaling page and notebooks.

Budget row: {"problem_id", "sample", "budget", "truncated", "tokens_used", "correct",
"predicted", "gold", "status", "response", "answer_start"}; `answer_start` is where the cue and the
forced answer begin in `response` (None when the response ended within the budget and
kept its own answer). No torch, no Streamlit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

Key = tuple[str, int]  # (problem_id, sample)
FLIPS = ("all", "right", "wrong", "wrong -> right", "right -> wrong")


def split_forced(row: Mapping[str, Any]) -> tuple[str, str]:
    """(the reasoning as the budget cut it, the cue and forced answer after it); the whole
    response and "" when nothing was forced."""
    text, start = str(row.get("response") or ""), row.get("answer_start")
    if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= len(text):
        return text, ""
    return text[:start], text[start:]


def at_budget(rows: Iterable[Mapping[str, Any]], budget: int) -> dict[Key, Mapping[str, Any]]:
    """The rows of one budget by (problem_id, sample)."""
    return {(str(r["problem_id"]), int(r["sample"])): r for r in rows
            if r.get("budget") == budget and "problem_id" in r and isinstance(r.get("sample"), int)}


def point_table(rows: Mapping[Key, Mapping[str, Any]], versus: Mapping[Key, Mapping[str, Any]] | None = None,
                only: str = "all") -> pd.DataFrame:
    """One line per sample at the point: problem_id, sample, correct, predicted, forced (the budget
    cut it), tokens_used, and, against `versus` (the same samples at another budget or
    checkpoint), what they were there (`before`). `only` keeps "right", "wrong", or the flips
    "wrong -> right" (wrong in `versus`, right here) and "right -> wrong"."""
    if only not in FLIPS:
        raise ValueError(f"only must be one of {FLIPS}, got {only!r}")
    lines = []
    for key, r in sorted(rows.items()):
        other = (versus or {}).get(key)
        before = None if other is None else bool(other.get("correct"))
        now = bool(r.get("correct"))
        keep = {"all": True, "right": now, "wrong": not now,
                "wrong -> right": before is False and now, "right -> wrong": before is True and not now}[only]
        if keep:
            lines.append({"problem_id": key[0], "sample": key[1], "correct": now, "predicted": r.get("predicted"),
                          "forced": bool(r.get("truncated")), "tokens_used": r.get("tokens_used"),
                          "before": before})
    cols = ["problem_id", "sample", "correct", "predicted", "forced", "tokens_used", "before"]
    return pd.DataFrame(lines, columns=cols)


def problem_grid(rows_by_curve: Mapping[str, Sequence[Mapping[str, Any]]], key: Key) -> pd.DataFrame:
    """The same sample of one problem at every budget (rows) and checkpoint (columns): "✓ 12"
    (right, predicted 12), "✗ 7", "✗ (none)" (no answer); empty where that point has no row."""
    cells: dict[int, dict[str, str]] = {}
    for curve, rows in rows_by_curve.items():
        for r in rows:
            if (str(r.get("problem_id")), r.get("sample")) == key and isinstance(r.get("budget"), int):
                pred = r.get("predicted")
                mark = "✓" if r.get("correct") else "✗"
                cells.setdefault(r["budget"], {})[curve] = f"{mark} {pred if pred is not None else '(none)'}"
    frame = pd.DataFrame.from_dict(cells, orient="index", columns=list(rows_by_curve)).sort_index()
    frame.index.name = "budget"
    return frame.fillna("")
