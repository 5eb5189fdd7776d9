"""Trial-and-error + self-verification trace synthesis (T1 section 1) for the embedded task.

The paper samples attempts from several LLMs, critiques each, merges them into one
`attempt -> reflect -> ... -> answer -> self-verify` path and rewrites it. For the embedded
task a programmatic teacher does the same job exactly: it searches for the pair, writes each
attempt with its check against the target, a reflection ("larger" / "smaller") when it
fails, occasional arithmetic slips that its self-verification catches, and the final answer.

Search policy of the teacher (why it looks like this): with probability `guided_prob` an
attempt follows its reflection (two pointers over the sorted list: "larger" moves the smaller
number up, "smaller" moves the larger number down), else it jumps to a random untried pair.
Guided moves are what a good reasoner does; random jumps are the trial-and-error of a weaker
one and cost tokens. The SFT model imitates the mixture; RL can learn to favour whatever finds
the answer within the token budget. Guided moves copy a neighbour in the list, which a 1M
model learns in minutes.

The `plain` style is the ablation: the correct attempt straight away, no search, no checks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from core.tasks.pairsum import ANSWER_CUE, REFLECT_DOWN, REFLECT_UP
from core.types import Problem

STYLES = ("t1", "plain")


@dataclass(frozen=True)
class Attempt:
    a: int
    b: int
    shown_sum: int  # what the teacher wrote; != a + b when it slipped
    ok: bool  # the pair really sums to the target
    slip: bool
    move: str  # "guided" | "random"


def _random_pair(n: int, tried: set[tuple[int, int]], rng: random.Random) -> tuple[int, int]:
    """A random untried pair of list positions (i < j)."""
    return rng.choice([(i, j) for i in range(n) for j in range(i + 1, n) if (i, j) not in tried])


def search_attempts(
    problem: Problem, rng: random.Random, guided_prob: float, slip_prob: float
) -> list[Attempt]:
    """The teacher's attempts over the sorted list, ending with the correct pair.

    A guided move follows the reflection: "larger" moves the smaller number one place up the
    sorted list, "smaller" moves the larger one down (two pointers, started at both ends).
    Otherwise the teacher jumps to a random untried pair. Pure guided search needs at most
    n - 1 attempts; every random jump can throw that away.
    """
    numbers, target = sorted(problem.meta["numbers"]), int(problem.meta["target"])
    n = len(numbers)
    tried: set[tuple[int, int]] = set()
    guided = rng.random() < guided_prob
    i, j = (0, n - 1) if guided else _random_pair(n, tried, rng)
    attempts: list[Attempt] = []
    while True:
        tried.add((i, j))
        a, b = numbers[i], numbers[j]
        move = "guided" if guided else "random"
        # Slips happen on near misses: the teacher "sees" the target, then its check catches it.
        if a + b != target and abs(a + b - target) <= 3 and rng.random() < slip_prob:
            attempts.append(Attempt(a, b, target, ok=False, slip=True, move=move))
        else:
            attempts.append(Attempt(a, b, a + b, ok=a + b == target, slip=False, move=move))
            if a + b == target:
                return attempts
        ni, nj = (i + 1, j) if a + b < target else (i, j - 1)
        guided = rng.random() < guided_prob and ni < nj and (ni, nj) not in tried
        i, j = (ni, nj) if guided else _random_pair(n, tried, rng)


def render_attempts(attempts: list[Attempt], target: int) -> str:
    """The response text for a list of attempts (the last one correct)."""
    lines: list[str] = []
    for t in attempts:
        if t.shown_sum == target:
            # Self-verification re-adds in the other order: the same facts the attempts use.
            lines.append(f"try {t.a} + {t.b} = {target} = {target} ok")
            real = t.a + t.b
            lines.append(f"check {t.b} + {t.a} = {real} {'yes' if real == target else 'no'}")
            if real != target:
                lines.append("wait")
        else:
            rel, word = ("<", REFLECT_UP) if t.shown_sum < target else (">", REFLECT_DOWN)
            lines.append(f"try {t.a} + {t.b} = {t.shown_sum} {rel} {target} {word}")
    last = attempts[-1]
    lines.append(f"{ANSWER_CUE} {min(last.a, last.b)} + {max(last.a, last.b)}")
    return "\n".join(lines)


def synthesize_trace(
    problem: Problem, rng: random.Random, style: str, guided_prob: float, slip_prob: float
) -> dict:
    """One SFT example as a JSON-ready dict with provenance."""
    if style == "t1":
        attempts = search_attempts(problem, rng, guided_prob, slip_prob)
    elif style == "plain":
        a, b = (int(x) for x in problem.answer.split(" + "))
        attempts = [Attempt(a, b, a + b, ok=True, slip=False, move="oracle")]
    else:
        raise ValueError(f"unknown synth style {style!r}: use one of {', '.join(STYLES)}")
    target = int(problem.meta["target"])
    if style == "plain":
        a, b = attempts[0].a, attempts[0].b
        response = f"try {a} + {b} = {target} = {target} ok\n{ANSWER_CUE} {a} + {b}"
    else:
        response = render_attempts(attempts, target)
    return {
        "problem_id": problem.id,
        "question": problem.question,
        "answer": problem.answer,
        "response": response,
        "style": style,
        "teacher": "programmatic",
        "attempts": [t.__dict__ for t in attempts],
        "num_attempts": len(attempts),
        "num_failed": sum(not t.ok for t in attempts),
        "num_slips": sum(t.slip for t in attempts),
    }


def synthesize(
    problems: list[Problem], style: str, guided_prob: float, slip_prob: float, seed: int
) -> Iterator[dict]:
    """Traces for `problems`, deterministic in `seed` (one RNG stream per problem)."""
    for i, p in enumerate(problems):
        yield synthesize_trace(p, random.Random(f"{seed}-{i}-{p.id}"), style, guided_prob, slip_prob)
