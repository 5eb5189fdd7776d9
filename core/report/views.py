"""Data shaping for the dashboard (app/) and notebooks: pure functions over rows read by core.store.

Responses are parsed by their task's own trace parser (`core.tasks.trace_parser`), the one
evaluation uses, so "failed, then fixed" means the same here and in `eval/corrected_frac`.

No Streamlit and no torch here, so every function is unit-tested on plain dicts. Frames are
pandas DataFrames in long format (one row per plotted value), the shape altair wants.

Row shapes (written by the RL loop, the teacher and the budget sweep):
    metrics line   {"step": int, "wall_time": float, "reward/mean": float, "time/sample_s": ...}
    rollout row    {"problem_id", "question", "sample", "response", "num_tokens",
                    "finish_reason", "correct", "overlong", "repetitive", "garbled",
                    "reward", "advantage", "used", optional "kept"}
    synth trace    {"problem_id", "question", "answer", "response", "num_attempts",
                    "num_failed", "num_slips", ...}
    curve          {"name", "checkpoint", "mode", "budgets", "complete", "points": [...],
                    "parallel": [...]} (see core/budget.py)
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from core.tasks import response_features, trace_stats
from core.types import Trace, TraceStep

PENALTIES = ("overlong", "repetitive", "garbled")
SAMPLE_TAGS = ("correct", "wrong", "penalised", "truncated", "dropped")
# Headline figures of summary.json shown on the runs table, in this order, when present.
HEADLINE_KEYS = ("eval/acc", "eval/acc_gain", "eval/corrected_frac", "eval/len_mean",
                 "eval/truncated_frac", "sft/loss", "synth/num_traces", "time_s")
# Metrics selected on the Training page when the user has not chosen yet.
DEFAULT_METRICS = ("reward/mean", "rollout/acc", "eval/acc", "rollout/len_mean", "loss/sft")
_NOT_METRICS = ("step", "wall_time")


# ------------------------------------------------------------------------------------ runs


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": leaf}; lists stay leaves."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Keys of two config.json contents whose values differ: [{"key", "a", "b"}], sorted.

    Compares the stage and the resolved config; ids, times, pids and hosts always differ
    and are left out. A key missing on one side shows as None there.
    """
    fa = flatten({"stage": a.get("stage"), **a.get("config", {})})
    fb = flatten({"stage": b.get("stage"), **b.get("config", {})})
    return [{"key": k, "a": fa.get(k), "b": fb.get(k)}
            for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)]


def run_row(run_id: str, config: Mapping[str, Any], summary: Mapping[str, Any] | None,
            status: str) -> dict[str, Any]:
    """One line of the runs table: id, stage, status, start time, task, model, headline figures."""
    cfg = config.get("config", {})
    row = {"run": run_id, "stage": config.get("stage"), "status": status,
           "started": str(config.get("created_at") or "")[:19].replace("T", " "),
           "task": cfg.get("task", {}).get("name"), "model": cfg.get("model", {}).get("name")}
    for key in HEADLINE_KEYS:
        row[key] = (summary or {}).get(key)
    return row


def drop_empty_columns(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`rows` without the keys that are None in every row (figures no run reported)."""
    keep = [k for k in (rows[0] if rows else {}) if any(r.get(k) is not None for r in rows)]
    return [{k: r.get(k) for k in keep} for r in rows]


# --------------------------------------------------------------------------------- metrics


def metric_keys(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Sorted keys that hold a number (not a bool) in at least one metrics line."""
    keys: set[str] = set()
    for row in rows:
        keys.update(k for k, v in row.items() if _is_number(v) and k not in _NOT_METRICS)
    return sorted(keys)


def metric_groups(keys: Iterable[str]) -> dict[str, list[str]]:
    """Keys by namespace ("reward/mean" -> "reward"); a key without "/" is its own group."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(key.split("/", 1)[0], []).append(key)
    return groups


def metrics_long(runs: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str]) -> pd.DataFrame:
    """Long frame [run, step, metric, value] of `keys` for every run's metrics lines.

    Lines without an int "step" are skipped; so is a key a line does not hold (SFT lines and
    eval lines of the same step carry different keys).
    """
    wanted = set(keys)
    records = [(run, row["step"], k, float(v))
               for run, rows in runs.items() for row in rows if isinstance(row.get("step"), int)
               for k, v in row.items() if k in wanted and _is_number(v)]
    return pd.DataFrame.from_records(records, columns=["run", "step", "metric", "value"])


def smooth_long(frame: pd.DataFrame, weight: float) -> pd.DataFrame:
    """`frame` (metrics_long's) with `value` smoothed per (run, metric) along the steps by an
    exponential moving average with `weight` on the past, debiased as TensorBoard's (the first
    points are not pulled towards 0); weight 0 returns the values as they are."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out = frame.sort_values(["run", "metric", "step"], ignore_index=True)
    if weight and not out.empty:
        out["value"] = out.groupby(["run", "metric"]).value.transform(
            lambda v: v.ewm(alpha=1 - weight, adjust=True).mean())
    return out


def step_time_long(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Long frame [step, phase, seconds] of an RL run's time per phase ("time/<phase>_s" keys of
    its step lines: sample, reward, update, anchor, sync_weights, ...), for a stacked chart."""
    records = [(row["step"], k[len("time/"):-len("_s")], float(v)) for row in rows
               if isinstance(row.get("step"), int) for k, v in row.items()
               if k.startswith("time/") and k.endswith("_s") and _is_number(v)]
    return pd.DataFrame.from_records(records, columns=["step", "phase", "seconds"])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -------------------------------------------------------------------------------- rollouts


def is_kept(row: Mapping[str, Any]) -> bool:
    """Whether oversampling kept the sample (rows written before "kept" existed: True)."""
    return row.get("kept", True) is not False


def sample_tags(row: Mapping[str, Any]) -> list[str]:
    """The filter tags of one rollout row (a subset of SAMPLE_TAGS)."""
    tags = ["correct" if row.get("correct") else "wrong"]
    if any(row.get(p) for p in PENALTIES):
        tags.append("penalised")
    if row.get("finish_reason") == "length":
        tags.append("truncated")
    if not is_kept(row) or row.get("used") is False:
        tags.append("dropped")
    return tags


def filter_samples(rows: Iterable[dict], tags: Iterable[str] = (), query: str = "") -> list[dict]:
    """Rows carrying ANY of `tags` (none given: all rows) whose question or response contains
    `query` (case-insensitive; empty: no text filter)."""
    wanted, needle = set(tags), query.strip().lower()
    out = []
    for row in rows:
        if wanted and not wanted & set(sample_tags(row)):
            continue
        text = f"{row.get('question', '')}\n{row.get('response', '')}".lower()
        if needle and needle not in text:
            continue
        out.append(row)
    return out


def prompt_table(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One line per prompt in first-seen order: problem_id, question, n, correct, mean reward."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = table.setdefault(row["problem_id"], {
            "problem_id": row["problem_id"], "question": row.get("question", ""),
            "n": 0, "correct": 0, "reward_sum": 0.0})
        entry["n"] += 1
        entry["correct"] += bool(row.get("correct"))
        entry["reward_sum"] += float(row.get("reward") or 0.0)
    return [{**{k: v for k, v in e.items() if k != "reward_sum"},
             "reward_mean": e["reward_sum"] / e["n"]} for e in table.values()]


def prompt_samples(rows: Iterable[dict], problem_id: str) -> list[dict]:
    """The rows of one prompt, by sample index."""
    return sorted((r for r in rows if r.get("problem_id") == problem_id),
                  key=lambda r: r.get("sample", 0))


def step_overview(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Headline figures of one step's rollouts: n, accuracy, mean reward, truncated and kept share."""
    n = max(len(rows), 1)
    return {"samples": len(rows), "acc": sum(bool(r.get("correct")) for r in rows) / n,
            "reward_mean": sum(float(r.get("reward") or 0.0) for r in rows) / n,
            "truncated_frac": sum(r.get("finish_reason") == "length" for r in rows) / n,
            "kept_frac": sum(is_kept(r) for r in rows) / n}


# ---------------------------------------------------------------------------------- traces


def trace_features(row: Mapping[str, Any], task_name: str | None) -> dict[str, Any]:
    """Structure counts of one response row: attempts, failed, reflections, verification.

    A row without "correct" is a teacher's trace, correct by construction."""
    return response_features(str(row.get("response", "")), bool(row.get("correct", True)), task_name)


# the per-step structure chart: the "trace/..." metrics (logged by RL) and their short names
TRACE_STATS = ("failed_then_fixed_frac", "reflection_frac", "verified_frac", "reflection_words_mean")


def trace_step_stats(rows_by_step: Mapping[int, Sequence[Mapping[str, Any]]],
                     task_name: str | None) -> pd.DataFrame:
    """Long frame [step, stat, value]: per step, the share of responses with a failed-then-fixed
    attempt, with any reflection word, with a verification, and reflection words per response."""
    records = []
    for step, rows in sorted(rows_by_step.items()):
        if rows:
            stats = trace_stats([trace_features(r, task_name) for r in rows])
            records += [(step, name, stats[f"trace/{name}"]) for name in TRACE_STATS]
    return pd.DataFrame.from_records(records, columns=["step", "stat", "value"])


def logged_trace_stats(metrics: Iterable[Mapping[str, Any]], steps: Iterable[int]) -> pd.DataFrame | None:
    """The same frame from the "trace/..." metrics an RL run logged at `steps`; None when a step
    lacks them (runs from before they were logged: the rollouts are parsed instead)."""
    by_step = {row["step"]: row for row in metrics
               if isinstance(row.get("step"), int) and all(f"trace/{n}" in row for n in TRACE_STATS)}
    wanted = sorted(set(steps))
    if not wanted or any(s not in by_step for s in wanted):
        return None
    return pd.DataFrame.from_records([(s, n, float(by_step[s][f"trace/{n}"])) for s in wanted for n in TRACE_STATS],
                                     columns=["step", "stat", "value"])


def filter_traces(rows: Iterable[dict], task_name: str | None, only: str = "all",
                  query: str = "") -> list[dict]:
    """Rows whose structure matches `only` ("all", "failed_then_fixed", "reflection",
    "verified", "wrong") and whose text contains `query` (case-insensitive)."""
    needle = query.strip().lower()
    out = []
    for row in rows:
        if needle and needle not in str(row.get("response", "")).lower():
            continue
        if only == "wrong":
            if row.get("correct", True):
                continue
        elif only != "all":
            feats = trace_features(row, task_name)
            key = "reflection_words" if only == "reflection" else only
            if not feats[key]:
                continue
        out.append(row)
    return out


_STEP_STYLE = {
    ("attempt", True): ("#1a7f37", "#dafbe1", "attempt ok"),
    ("attempt", False): ("#cf222e", "#ffebe9", "attempt failed"),
    ("verify", True): ("#0550ae", "#ddf4ff", "check yes"),
    ("verify", False): ("#bc4c00", "#fff1e5", "check no"),
    ("verify", None): ("#0550ae", "#eef6ff", "check"),  # free text: a check nobody can judge line by line
    ("reflection", None): ("#8250df", "#fbefff", "reflection"),
    ("answer", None): ("#1f2328", "#fff8c5", "answer"),
    ("text", None): ("#57606a", "#f6f8fa", "text"),
}


def step_label(step: TraceStep) -> str:
    """Legend name of a step: "attempt ok", "attempt failed", "check yes", "wait", ..."""
    if step.kind == "reflection" and step.text.startswith("wait"):
        return "wait"
    ok = step.ok if step.kind in ("attempt", "verify") else None
    return _STEP_STYLE.get((step.kind, ok), _STEP_STYLE[("text", None)])[2]


def trace_html(trace: Trace) -> str:
    """HTML of a trace: one coloured, labelled line per step (text escaped)."""
    lines = []
    for step in trace.steps:
        ok = step.ok if step.kind in ("attempt", "verify") else None
        fg, bg, _ = _STEP_STYLE.get((step.kind, ok), _STEP_STYLE[("text", None)])
        lines.append(
            f'<div style="font-family:monospace;white-space:pre-wrap;color:{fg};background:{bg};'
            f'padding:1px 6px;margin:1px 0;border-radius:3px"><span style="opacity:.6;'
            f'font-size:.8em">{step_label(step)}</span> {html.escape(step.text)}</div>')
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- curves


def usable_curve(curve: Any) -> bool:
    """Whether a curve file holds what the charts draw: a list of points, each with a numeric
    budget_tokens and accuracy (a file of another shape is shown as skipped, not drawn)."""
    points = curve.get("points") if isinstance(curve, Mapping) else None
    return isinstance(points, list) and all(
        isinstance(p, Mapping) and _is_number(p.get("budget_tokens")) and _is_number(p.get("accuracy"))
        for p in points) and isinstance(curve.get("parallel") or [], list)


def usable_rollout(row: Any) -> bool:
    """Whether a rollout row has what the Rollouts page reads: a problem id, a text response,
    a boolean verdict and a numeric (or missing) reward."""
    return (isinstance(row, Mapping) and isinstance(row.get("problem_id"), str | int)
            and isinstance(row.get("response", ""), str) and isinstance(row.get("correct", False), bool)
            and (row.get("reward") is None or _is_number(row.get("reward"))))


def curves_live(curves: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether any curve is still being written (complete is false or missing)."""
    return any(not c.get("complete", False) for c in curves.values())


def curve_progress(curve: Mapping[str, Any]) -> tuple[int, int]:
    """(budgets finished, budgets planned) of one curve."""
    done = len({p.get("budget_tokens") for p in curve.get("points", [])})
    return done, max(len(curve.get("budgets", [])), done)


def _series(curves: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Curve name -> suffix that keeps series apart when the same checkpoint has several modes."""
    modes = {c.get("mode") for c in curves.values()}
    return {name: f" ({c.get('mode')})" if len(modes) > 1 else "" for name, c in curves.items()}


def curve_points(curves: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Frame of every budget point: curve, series (checkpoint [+ mode]), budget_tokens, accuracy,
    ci_low, ci_high, truncated_frac, mean_tokens_used, n; sorted by series then budget."""
    cols = ["curve", "series", "budget_tokens", "accuracy", "ci_low", "ci_high",
            "truncated_frac", "mean_tokens_used", "n"]
    suffix = _series(curves)
    records = []
    for name, curve in curves.items():
        for p in curve.get("points", []):
            label = str(p.get("checkpoint") or curve.get("checkpoint") or name) + suffix[name]
            records.append((name, label, *(p.get(c) for c in cols[2:])))
    frame = pd.DataFrame.from_records(records, columns=cols)
    return frame.sort_values(["series", "budget_tokens"], ignore_index=True)


def unconstrained_points(curves: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Frame of each curve's no-budget accuracy (where the sweep measured it): series, accuracy,
    ci_low, ci_high, max_tokens, mean_tokens_used, truncated_frac, n."""
    suffix = _series(curves)
    records = []
    for name, curve in curves.items():
        u = curve.get("unconstrained")
        if u:
            label = str(u.get("checkpoint") or curve.get("checkpoint") or name) + suffix[name]
            records.append((label, u.get("accuracy"), u.get("ci_low"), u.get("ci_high"), u.get("budget_tokens"),
                            u.get("mean_tokens_used"), u.get("truncated_frac"), u.get("n")))
    return pd.DataFrame.from_records(records, columns=["series", "accuracy", "ci_low", "ci_high", "max_tokens",
                                                       "mean_tokens_used", "truncated_frac", "n"])


def parallel_points(curves: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Long frame of parallel scaling: series, k, total_tokens, metric ("maj@k" | "pass@k"), value."""
    suffix = _series(curves)
    records = []
    for name, curve in curves.items():
        label = str(curve.get("checkpoint") or name) + suffix[name]
        for p in curve.get("parallel") or []:
            records.append((label, p["k"], p["total_tokens"], "maj@k", p.get("maj_acc")))
            records.append((label, p["k"], p["total_tokens"], "pass@k", p.get("pass_at_k")))
    return pd.DataFrame.from_records(records, columns=["series", "k", "total_tokens", "metric", "value"])


def spread(items: Sequence[Any], k: int) -> list[Any]:
    """At most `k` items evenly spaced over `items`, first and last included."""
    if k <= 0 or not items:
        return []
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[-1]]
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]
