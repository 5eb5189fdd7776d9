"""Evaluation statistics against brute force and hand-computed values."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from core.evaluate import (
    accuracy_interval,
    majority_answer,
    parallel_scaling,
    pass_at_k,
    summarize,
    vote_key,
    wilson_interval,
)


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


def test_interval_is_clustered_by_problem() -> None:
    """8 samples of 100 problems, each problem always right or always wrong: as informative as
    100 samples, not 800 (the pooled Wilson interval was 2.8x too narrow). Independent samples:
    the plain Wilson interval."""
    clustered = [{"problem_id": i, "correct": i % 2 == 0} for i in range(100) for _ in range(8)]
    lo, hi = accuracy_interval(clustered)
    assert (lo, hi) == pytest.approx(wilson_interval(50, 100), abs=2e-3)
    assert hi - lo > 2.5 * (wilson_interval(400, 800)[1] - wilson_interval(400, 800)[0])
    rng = random.Random(0)
    independent = [{"problem_id": i, "correct": rng.random() < 0.5} for i in range(100) for _ in range(8)]
    k = sum(r["correct"] for r in independent)
    assert accuracy_interval(independent) == pytest.approx(wilson_interval(k, 800), abs=5e-3)
    single = [{"problem_id": i, "correct": i < 30} for i in range(100)]
    assert accuracy_interval(single) == wilson_interval(30, 100)


def test_maj_at_k_counts_equal_answers_written_apart_as_one_vote() -> None:
    """Five right answers in four spellings against three identical wrong ones: the majority is
    right (compared as raw strings, "3" won with 3 votes to 2)."""
    spelled = [("3", False)] * 3 + [("1/2", True), ("1/2", True), ("\\frac{1}{2}", True), ("0.5", True),
                                    ("\\dfrac{1}{2}", True)]
    rows = [{"problem_id": "p", "predicted": p, "correct": c, "num_tokens": 1} for p, c in spelled]
    assert parallel_scaling(rows, 8)[-1] == {"k": 8, "total_tokens": 8.0, "maj_acc": 1.0, "pass_at_k": 1.0}
    assert vote_key("\\frac{1}{3}", False) == vote_key(" 1/3", False) != vote_key("1/4", False)
    assert vote_key("", False) is None and vote_key(None, True) is None


def test_majority_and_summary() -> None:
    assert majority_answer(["3", None, "4", "3"]) == "3"
    assert majority_answer([None, ""]) is None
    rows = [{"correct": c, "corrected": c and f, "num_tokens": t, "finish_reason": fr,
             "num_failed_attempts": f, "status": "ok"}
            for c, f, t, fr in [(True, 1, 10, "stop"), (False, 0, 20, "length")]]
    s = summarize(rows)
    assert s["eval/acc"] == 0.5 and s["eval/truncated_frac"] == 0.5 and s["eval/len_mean"] == 15
    assert math.isclose(s["eval/corrected_frac"], 0.5)
