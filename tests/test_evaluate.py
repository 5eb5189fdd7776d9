"""Evaluation statistics against brute force and hand-computed values."""

from __future__ import annotations

import itertools
import math

import pytest

from core.evaluate import majority_answer, pass_at_k, summarize, wilson_interval


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 3, 2), (4, 4, 4), (7, 1, 5)])
def test_pass_at_k_matches_enumeration(n, c, k) -> None:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    brute = sum(any(s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_rejects_k_above_n() -> None:
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo < 1.0


def test_majority_and_summary() -> None:
    assert majority_answer(["3", None, "4", "3"]) == "3"
    assert majority_answer([None, ""]) is None
    rows = [{"correct": c, "corrected": c and f, "num_tokens": t, "finish_reason": fr,
             "num_failed_attempts": f, "status": "ok"}
            for c, f, t, fr in [(True, 1, 10, "stop"), (False, 0, 20, "length")]]
    s = summarize(rows)
    assert s["eval/acc"] == 0.5 and s["eval/truncated_frac"] == 0.5 and s["eval/len_mean"] == 15
    assert math.isclose(s["eval/corrected_frac"], 0.5)
