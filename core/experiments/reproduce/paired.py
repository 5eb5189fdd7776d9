"""Paired tests at the problem level: how `lab reproduce` judges a difference of two arms.

Both arms of a comparison are scored on the same held-out problems (the eval section's seed
picks them, and keyed draws give a problem the same random numbers in both arms). A quantity is
therefore a per-problem difference d[s, i] = y_A(s, i) - y_B(s, i) for seed s and problem i,
where y is the problem's mean over its samples (correct, tokens, reflections, a curve's slope).

- Per seed: the mean of d[s, :], with a paired bootstrap over problems (95% percentile interval
  and a one-sided p: the share of resampled means at or below zero, i.e. against the claim).
- Over seeds: the mean of the seeds' means; its interval resamples problems, the same draw of
  problem ids in every seed (clustered by problem: a hard problem is hard in every seed). Seeds
  are treated as fixed: the interval covers the evaluation's noise, not what another three
  training seeds would do; the per-seed figures show that spread.
- Verdict: "reproduced" when the combined interval lies above zero (in the claim's direction)
  AND the estimate reaches the claim's minimum effect, fixed in advance; "contradicted" when the
  interval lies below zero; otherwise "not reproduced".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

RESAMPLES = 4000
LEVEL = 0.95


def per_problem(rows: Sequence[dict], key: str) -> dict[str, float]:
    """Problem id -> mean of `key` over that problem's sample rows (booleans count as 0/1)."""
    sums: dict[str, list[float]] = {}
    for r in rows:
        v = r.get(key)
        if v is None:
            continue
        acc = sums.setdefault(str(r["problem_id"]), [0.0, 0])
        acc[0] += float(v)
        acc[1] += 1
    return {pid: s / n for pid, (s, n) in sums.items()}


def curve_slopes(rows: Sequence[dict], key: str = "correct") -> dict[str, float]:
    """Problem id -> least-squares slope of its mean `key` against log2(budget), from the rows of
    one checkpoint's budget sweep (problem_id, budget, correct). The mean of these slopes is the
    slope of the mean curve (the fit is linear in the accuracies)."""
    by: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        by.setdefault(str(r["problem_id"]), {}).setdefault(int(r["budget"]), []).append(float(r[key]))
    out = {}
    for pid, budgets in by.items():
        xs = [math.log2(b) for b in budgets]
        ys = [sum(v) / len(v) for v in budgets.values()]
        if len(xs) < 2:
            continue
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        out[pid] = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return out


def differences(a: Sequence[dict[str, float]], b: Sequence[dict[str, float]]) -> tuple[list[str], np.ndarray]:
    """Per seed, arm A's per-problem values minus arm B's -> (problem ids, array [seeds, problems]),
    on the problems every seed scored in both arms (ValueError when there are none)."""
    common = set(a[0])
    for x, y in zip(a, b):
        common &= set(x) & set(y)
    ids = sorted(common)
    if not ids:
        raise ValueError("the two arms share no scored problem")
    return ids, np.array([[x[i] - y[i] for i in ids] for x, y in zip(a, b)], dtype=np.float64)


def paired_test(d: np.ndarray, min_effect: float, seed: int = 0) -> dict[str, Any]:
    """The test of one quantity from its per-problem differences d [seeds, problems], positive in
    the claim's direction: per-seed and combined estimates, intervals, one-sided p and verdict."""
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    rng = np.random.default_rng(seed)
    n = d.shape[1]
    idx = rng.integers(0, n, size=(RESAMPLES, n))
    boot = d[:, idx].mean(axis=2)  # [seeds, resamples]: the same problem draw in every seed
    lo_q, hi_q = (1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2
    seeds = [{"estimate": float(d[s].mean()), "ci": [float(np.quantile(boot[s], lo_q)), float(np.quantile(boot[s], hi_q))],
              "p": float((1 + np.sum(boot[s] <= 0)) / (RESAMPLES + 1))} for s in range(d.shape[0])]
    comb = boot.mean(axis=0)
    est = float(d.mean())
    ci = [float(np.quantile(comb, lo_q)), float(np.quantile(comb, hi_q))]
    if ci[0] > 0 and est >= min_effect:
        verdict = "reproduced"
    elif ci[1] < 0:
        verdict = "contradicted"
    else:
        verdict = "not reproduced"
    why = {"reproduced": "interval above zero and the estimate reaches the minimum effect",
           "contradicted": "interval below zero: the opposite of the claim",
           "not reproduced": ("interval includes zero" if ci[0] <= 0 else "interval above zero but the estimate is "
                              "below the minimum effect")}[verdict]
    return {"estimate": est, "ci": ci, "p": float((1 + np.sum(comb <= 0)) / (RESAMPLES + 1)),
            "min_effect": min_effect, "verdict": verdict, "why": why, "seeds": seeds, "n_problems": n,
            "values": [s["estimate"] for s in seeds]}
