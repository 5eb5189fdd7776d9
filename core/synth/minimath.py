"""Trial-and-error + self-verification traces for the embedded math task (core.tasks.minimath).

Linear problems: the teacher searches x in 1..x_max. With probability `guided_prob` a trial is
the middle of the range still open (what "too small" / "too large" leave), else a random value
in it: the trial and error of a weaker reasoner, which costs tokens. A trial that lands next to
the answer slips with probability `slip_prob`: it is claimed correct, the check recomputes it,
finds the slip and says "Wait", and the search goes on. A claimed answer is always checked
before it is boxed.

Fractions: the teacher tries the divisors 2, 3, 5, 7 in turn, divides while both parts are
multiples, says which part is not, and checks that what is left has no common factor.

The `plain` style is the ablation: the right value straight away (a check, the answer).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from core.tasks.minimath import (
    ANSWER_LINE,
    CHECK_LINE,
    CLAIM_LINE,
    DIVIDE_LINE,
    DIVISORS,
    LOWEST_LINE,
    NOT_DIVIDE_LINE,
    REDUCE_LINE,
    SLIP_CHECK_LINE,
    TOO_LARGE,
    TOO_SMALL,
    TRY_LINE,
    WAIT_LINE,
    boxed_answer,
    linear_line,
)
from core.types import Problem


def linear_lines(problem: Problem, rng: random.Random, x_max: int, guided_prob: float,
                 slip_prob: float, plain: bool) -> tuple[list[str], int, int, int]:
    """(lines, trials, failed trials, slips) of one linear problem."""
    x = int(problem.answer)
    lines = [linear_line(REDUCE_LINE, problem, x)]
    lo, hi = 1, max(x_max, x)
    trials = failed = slips = 0
    tried: set[int] = set()
    v = x if plain else ((lo + hi) // 2 if rng.random() < guided_prob else rng.randint(lo, hi))
    while True:
        trials += 1
        tried.add(v)
        if v == x:
            lines.append(linear_line(CLAIM_LINE, problem, v))
            lines.append(linear_line(CHECK_LINE, problem, v))
            return lines, trials, failed, slips
        failed += 1
        rel, verdict = ("<", TOO_SMALL) if v < x else (">", TOO_LARGE)  # a > 0: the value grows with x
        if abs(v - x) == 1 and rng.random() < slip_prob:
            slips += 1  # a slip claimed right, caught by the check (which adds b back)
            lines.append(linear_line(CLAIM_LINE, problem, v))
            lines.append(linear_line(SLIP_CHECK_LINE, problem, v))
            lines.append(linear_line(WAIT_LINE, problem, v, rel, verdict))
        else:
            lines.append(linear_line(TRY_LINE, problem, v, rel, verdict))
        if v < x:
            lo = max(lo, v + 1)
        else:
            hi = min(hi, v - 1)
        mid = (lo + hi) // 2
        if rng.random() < guided_prob and mid not in tried:
            v = mid
        else:
            v = rng.choice([u for u in range(lo, hi + 1) if u not in tried])


def fraction_lines(problem: Problem, plain: bool) -> tuple[list[str], int, int, int]:
    """(lines, trials, failed trials, 0) of one fraction problem."""
    num, den = problem.meta["num"], problem.meta["den"]
    lines: list[str] = []
    trials = failed = 0
    if plain:
        g = math.gcd(num, den)
        lines.append(DIVIDE_LINE.format(d=g, num=num, den=den, num_q=num // g, den_q=den // g))
        num, den = num // g, den // g
        trials = 1
    else:
        for d in DIVISORS:
            if math.gcd(num, den) == 1:
                break
            while num % d == 0 and den % d == 0:
                trials += 1
                lines.append(DIVIDE_LINE.format(d=d, num=num, den=den, num_q=num // d, den_q=den // d))
                num, den = num // d, den // d
            if math.gcd(num, den) == 1:
                break
            trials += 1
            failed += 1
            lines.append(NOT_DIVIDE_LINE.format(d=d, n=num if num % d else den))
    lines.append(LOWEST_LINE.format(num=num, den=den))
    return lines, trials, failed, 0


def synthesize_trace(problem: Problem, rng: random.Random, style: str, guided_prob: float,
                     slip_prob: float, x_max: int) -> dict:
    """One SFT example as a JSON-ready dict with provenance."""
    if style not in ("t1", "plain"):
        raise ValueError(f"unknown synth style {style!r}: use t1 or plain")
    plain = style == "plain"
    if problem.meta["family"] == "linear":
        lines, trials, failed, slips = linear_lines(problem, rng, x_max, guided_prob, slip_prob, plain)
    else:
        lines, trials, failed, slips = fraction_lines(problem, plain)
    lines.append(ANSWER_LINE.format(answer=boxed_answer(problem)))
    return {
        "problem_id": problem.id,
        "question": problem.question,
        "answer": problem.answer,
        "response": "\n".join(lines),
        "style": style,
        "teacher": "programmatic",
        "family": problem.meta["family"],
        "num_attempts": trials,
        "num_failed": failed,
        "num_slips": slips,
    }


def synthesize(problems: list[Problem], style: str, guided_prob: float, slip_prob: float, seed: int,
               x_max: int) -> Iterator[dict]:
    """Traces for `problems`, deterministic in `seed` (one RNG stream per problem)."""
    for i, p in enumerate(problems):
        yield synthesize_trace(p, random.Random(f"{seed}-{i}-{p.id}"), style, guided_prob, slip_prob, x_max)
