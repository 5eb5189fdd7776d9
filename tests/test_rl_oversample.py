"""Oversampling keep rules on hand-computed groups."""

from __future__ import annotations

import itertools
import statistics

import pytest

from core.rl.oversample import all_equal, keep_max_variance, keep_random, select_groups


def test_max_variance_keeps_a_balanced_subset() -> None:
    assert keep_max_variance([1, 1, 1, 0, 1, 0], 4) == [0, 1, 3, 5]
    # one wrong sample among many right ones: keep it and the earliest right ones
    assert keep_max_variance([1, 1, 0, 1, 1, 1], 3) == [0, 1, 2]
    # penalised (-1) and correct (1) are the extremes; 0s are left out
    assert keep_max_variance([0, -1, 0, 1, 0, 1], 2) == [1, 3]
    # all equal: the first K drawn
    assert keep_max_variance([0, 0, 0, 0], 2) == [0, 1]


def test_max_variance_matches_brute_force() -> None:
    groups = [[1, 0, 0, 0, 1, -1, 0, 1], [0.5, 0.1, 0.9, 0.3, 0.3, 0.7], [1, 1, 1, 0, 0]]
    for rewards in groups:
        for keep in range(2, len(rewards) + 1):
            got = statistics.pvariance([rewards[i] for i in keep_max_variance(rewards, keep)])
            best = max(statistics.pvariance([rewards[i] for i in c])
                       for c in itertools.combinations(range(len(rewards)), keep))
            assert got == pytest.approx(best)


def test_random_rule_is_seeded_and_uniform_sized() -> None:
    a, b = keep_random(8, 4, seed=7), keep_random(8, 4, seed=7)
    assert a == b and len(set(a)) == 4 and a == sorted(a) and all(0 <= i < 8 for i in a)
    assert any(keep_random(8, 4, seed=s) != a for s in range(8, 20))


def test_select_groups_flags_exactly_k_per_group() -> None:
    rewards = [[1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 1]]
    flags = select_groups(rewards, keep=2, rule="max_variance", seed=0)
    assert flags == [[True, True, False, False, False, False], [True, False, False, False, True, False]]
    rand = select_groups(rewards, keep=3, rule="random", seed=5)
    assert [sum(f) for f in rand] == [3, 3] and rand == select_groups(rewards, 3, "random", 5)
    # no oversampling: everything is kept whatever the rule
    assert select_groups([[0, 1]], keep=2, rule="random", seed=1) == [[True, True]]
    with pytest.raises(ValueError, match="unknown oversampling rule"):
        select_groups(rewards, 2, "best", 0)
    with pytest.raises(ValueError, match="cannot keep"):
        keep_max_variance([1, 0], 3)


def test_all_equal() -> None:
    assert all_equal([1, 1, 1]) and all_equal([-1.0, -1.0]) and not all_equal([0, 1, 0])
