"""Oversampling: draw N >= K samples per prompt, keep K of them by a stated rule.

T1 draws K samples per prompt and trains on all of them. Drawing more than are kept and
choosing which K to train on is an option (`rl.num_samples_drawn` > `rl.num_generations`);
the rules, both deterministic given their inputs:

* "max_variance": keep the K samples whose rewards have the largest variance, i.e. a
  reward-balanced subset (as many rewarded as unrewarded samples when both exist). The
  variance-maximising K-subset of a sorted list is always some i lowest plus K - i highest
  values, so all K + 1 splits are tried; ties go to the most balanced split, then to the
  earliest-drawn samples. A group whose rewards are all equal keeps its first K samples.
* "random": a uniform random K-subset, from a generator seeded with the step's seed and the
  group index, so a resumed run keeps the same samples.

Pure functions on Python lists; indices are 0-based positions in the drawn group, ascending.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

RULES = ("max_variance", "random")


def _variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


def keep_max_variance(rewards: Sequence[float], keep: int) -> list[int]:
    """Indices of the `keep` rewards with the largest (population) variance. [N] -> [keep].

    Example: rewards [1, 1, 1, 0, 1, 0], keep 4 -> [0, 1, 3, 5] (two right, two wrong).
    """
    n = len(rewards)
    if not 1 <= keep <= n:
        raise ValueError(f"cannot keep {keep} of {n} samples")
    order = sorted(range(n), key=lambda i: rewards[i])  # stable: equal rewards keep draw order
    best: tuple[float, int, list[int]] | None = None
    for low in range(keep + 1):
        high = keep - low
        # the lowest from the front; the highest from the back, earliest-drawn first among ties
        picked = order[:low] + _highest(order[low:], rewards, high)
        key = (-_variance([rewards[i] for i in picked]), abs(low - high))
        if best is None or key < best[:2]:
            best = (*key, picked)
    assert best is not None
    return sorted(best[2])


def _highest(order: list[int], rewards: Sequence[float], count: int) -> list[int]:
    """The `count` highest rewards of `order` (ascending by reward), earliest index first on ties."""
    return sorted(order, key=lambda i: (-rewards[i], i))[:count]


def keep_random(num_drawn: int, keep: int, seed: int) -> list[int]:
    """A uniform random `keep`-subset of range(num_drawn) from `random.Random(seed)`, sorted."""
    if not 1 <= keep <= num_drawn:
        raise ValueError(f"cannot keep {keep} of {num_drawn} samples")
    return sorted(random.Random(seed).sample(range(num_drawn), keep))


def select_groups(rewards: Sequence[Sequence[float]], keep: int, rule: str, seed: int) -> list[list[bool]]:
    """Kept flags per drawn sample, [G][N] -> [G][N] bool with exactly `keep` True per group.

    With N == keep every sample is kept (no oversampling, whatever the rule).
    """
    if rule not in RULES:
        raise ValueError(f"unknown oversampling rule {rule!r}: use {' or '.join(RULES)}")
    flags = []
    for g, group in enumerate(rewards):
        if len(group) == keep:
            idx = list(range(keep))
        elif rule == "max_variance":
            idx = keep_max_variance(group, keep)
        else:
            idx = keep_random(len(group), keep, seed * 1_000_003 + g)
        chosen = set(idx)
        flags.append([i in chosen for i in range(len(group))])
    return flags


def all_equal(rewards: Sequence[float]) -> bool:
    """True when a group's rewards carry no signal for a group baseline (dynamic filtering)."""
    return len(set(rewards)) <= 1
