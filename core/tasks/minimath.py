"""The embedded math task: small algebra problems served through exactly the MATH500 path.

    prompt    Find the integer $x$ with $3x + 17 = 53$.  (+ MathTask's "reason step by step,
              put your final answer within \\boxed{}" template)
    response  Try $x = 8$: $3 \\cdot 8 = 24$ and $24 + 17 = 41 < 53$, too small.
              Try $x = 13$: $3 \\cdot 13 = 39$ and $39 + 17 = 56 > 53$, too large.
              Try $x = 12$: $3 \\cdot 12 = 36$ and $36 + 17 = 53$, correct.
              Check: $53 - 17 = 36$ and $36 = 3 \\cdot 12$. Yes.
              The answer is $\\boxed{12}$.

Two families:
- **linear**: find the integer x with a x + b = c. Trial and error pays: a reasoner tries
  values, reads "too small / too large" and narrows the range, so more tokens mean more trials
  and a better chance of the answer. Each trial writes its product and its sum apart: one
  multiplication-table fact and one addition, what a model of a million parameters can learn.
- **fraction**: write a/b in lowest terms by trying divisors 2, 3, 5, 7. The gold answer is
  stored as "p/q" while traces box `\\frac{p}{q}`, so math-verify's equivalence is what scores.

Everything after the problems (prompt template, `\\boxed{}` answers, math-verify in the worker
pool, the `\\boxed{` forced-answer cue, free-text trace parsing) is `MathTask`'s, unchanged.

The line templates live here, next to the problems, because three readers share them: the
programmatic teacher (core.synth.minimath), the tokenizer's training text (core.models) and
the tests. The problem space is small and enumerated (3,240 linear and 244 fraction problems at
the defaults); a problem is held out iff a hash of its id falls below `heldout_frac` (as in
pairsum), so train and held-out never overlap.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

from core.answers import VerifierPool
from core.tasks.base import TaskError, check_split
from core.tasks.math import PROMPT_TEMPLATE, MathTask
from core.types import Problem

NAME = "minimath"
FAMILIES = ("linear", "fraction")
DIVISORS = (2, 3, 5, 7)

# The teacher's lines (format with str.format); see core.synth.minimath for the search.
LINEAR_QUESTION = "Find the integer $x$ with ${a}x + {b} = {c}$."
FRACTION_QUESTION = "Write $\\frac{{{num}}}{{{den}}}$ in lowest terms."
TRY_LINE = "Try $x = {x}$: ${a} \\cdot {x} = {product}$ and ${product} + {b} = {value} {rel} {c}$, {verdict}."
CLAIM_LINE = "Try $x = {x}$: ${a} \\cdot {x} = {product}$ and ${product} + {b} = {c}$, correct."
CHECK_LINE = "Check: ${c} - {b} = {diff}$ and ${diff} = {a} \\cdot {x}$. Yes."
SLIP_CHECK_LINE = "Check: ${c} - {b} = {diff}$ but ${a} \\cdot {x} = {product}$. No."
WAIT_LINE = "Wait, ${product} + {b} = {value} {rel} {c}$, so $x = {x}$ is {verdict}."
DIVIDE_LINE = "Try {d}: ${num} = {d} \\cdot {num_q}$ and ${den} = {d} \\cdot {den_q}$, so $\\frac{{{num_q}}}{{{den_q}}}$."
NOT_DIVIDE_LINE = "Try {d}: ${n}$ is not a multiple of {d}."
LOWEST_LINE = "Check: {num} and {den} have no common factor. Yes."
ANSWER_LINE = "The answer is $\\boxed{{{answer}}}$."
TOO_SMALL, TOO_LARGE = "too small", "too large"
# fractions: p/q (coprime, 1 <= p < q <= 9) times one of these, both parts at most 90
MULTIPLIERS = (2, 3, 4, 5, 6, 8, 9, 10, 12, 15)


@dataclass(frozen=True)
class MiniMathSpec:
    """Difficulty knobs (the task.* fields of the same names)."""

    x_max: int = 15  # linear: x in 1..x_max (binary search: about log2(x_max) trials)
    coef_max: int = 9  # linear: a in 2..coef_max, b in 1..3 * coef_max
    fraction_share: float = 0.25  # share of fraction problems (until they run out)
    heldout_frac: float = 0.1

    def validate(self) -> None:
        if self.x_max < 4:
            raise TaskError(f"task.x_max must be >= 4 (got {self.x_max})")
        if self.coef_max < 2:
            raise TaskError(f"task.coef_max must be >= 2 (got {self.coef_max})")
        if not 0.0 <= self.fraction_share <= 1.0:
            raise TaskError(f"task.fraction_share must be in [0, 1] (got {self.fraction_share})")
        if not 0.0 < self.heldout_frac < 1.0:
            raise TaskError(f"task.heldout_frac must be in (0, 1) (got {self.heldout_frac})")


def split_of(key: str, heldout_frac: float) -> str:
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "heldout" if h < heldout_frac else "train"


def linear_problem(a: int, b: int, x: int) -> Problem:
    c = a * x + b
    return Problem(
        id=f"lin:{a}x+{b}={c}",
        question=LINEAR_QUESTION.format(a=a, b=b, c=c),
        answer=str(x),
        meta={"family": "linear", "a": a, "b": b, "c": c},
    )


def fraction_problem(num: int, den: int) -> Problem:
    g = math.gcd(num, den)
    return Problem(
        id=f"frac:{num}/{den}",
        question=FRACTION_QUESTION.format(num=num, den=den),
        answer=f"{num // g}/{den // g}",
        meta={"family": "fraction", "num": num, "den": den},
    )


def all_problems(spec: MiniMathSpec) -> tuple[list[Problem], list[Problem]]:
    """The whole problem space: (linear, fraction) problems. A linear problem is one (a, b, c):
    its x is then unique."""
    linear = [linear_problem(a, b, x) for a in range(2, spec.coef_max + 1)
              for b in range(1, 3 * spec.coef_max + 1) for x in range(1, spec.x_max + 1)]
    fractions = {(k * p, k * q) for q in range(2, 10) for p in range(1, q) if math.gcd(p, q) == 1
                 for k in MULTIPLIERS if k * q <= 90}
    return linear, [fraction_problem(n, d) for n, d in sorted(fractions)]


class MiniMathTask(MathTask):
    """Generated problems with MathTask's prompt, checking, answer cue and trace parsing."""

    def __init__(self, spec: MiniMathSpec | None = None, seed: int = 0, *,
                 verifier: VerifierPool | None = None):
        self.spec = spec or MiniMathSpec()
        self.spec.validate()
        self.seed = seed
        self.name = NAME
        self.source = NAME
        self.role = "train"
        self.heldout_only = False
        self.decontaminated = 0
        self._verifier = verifier
        self._problems = []

    def problems(self, split: str, limit: int | None = None) -> list[Problem]:
        """Up to `limit` distinct problems of `split` (all of them when the split is smaller), in
        a fixed order for a given seed: each family shuffled, then interleaved so that about
        `fraction_share` of them are fractions while both last (0: none, 1: only fractions)."""
        check_split(split)
        if limit is None:
            raise TaskError("the embedded math task is generated: pass a limit (number of problems)")
        linear, fractions = (
            [p for p in family if split_of(p.id, self.spec.heldout_frac) == split] for family in all_problems(self.spec)
        )
        share = self.spec.fraction_share
        linear, fractions = (linear if share < 1 else []), (fractions if share > 0 else [])
        rng = random.Random(f"{self.seed}-{split}-{NAME}")
        rng.shuffle(linear)
        rng.shuffle(fractions)
        out: list[Problem] = []
        while len(out) < limit and (linear or fractions):
            pick_fraction = fractions and (not linear or rng.random() < share)
            out.append((fractions if pick_fraction else linear).pop())
        return out


def prompt_of(problem: Problem) -> str:
    """The plain prompt (no chat template), for the tokenizer's training text."""
    return PROMPT_TEMPLATE.format(question=problem.question) + "\n"


def tokenizer_corpus(seed: int = 0) -> list[str]:
    """Text the embedded math tokenizer is trained on: prompts and every kind of trace line over
    a sample of the problem space (digits are split anyway; words and LaTeX get merged)."""
    rng = random.Random(f"tokenizer-{seed}")
    linear, fractions = all_problems(MiniMathSpec())
    lines: list[str] = []
    for p in rng.sample(linear, 1500) + fractions:
        lines.append(prompt_of(p))
        m: dict[str, Any] = dict(p.meta)
        if m["family"] == "linear":
            x = int(p.answer)
            v = x + 1
            common = {"a": m["a"], "b": m["b"], "c": m["c"], "product": m["a"] * v, "value": m["a"] * v + m["b"]}
            lines += [
                TRY_LINE.format(x=v, rel=">", verdict=TOO_LARGE, **common),
                TRY_LINE.format(x=v, rel="<", verdict=TOO_SMALL, **common),
                CLAIM_LINE.format(x=x, **{**common, "product": m["a"] * x}),
                CHECK_LINE.format(x=x, diff=m["c"] - m["b"], **common),
                SLIP_CHECK_LINE.format(x=v, diff=m["c"] - m["b"], **common),
                WAIT_LINE.format(x=v, rel=">", verdict=TOO_LARGE, **common),
            ]
        else:
            lines += [
                DIVIDE_LINE.format(d=2, num=m["num"], den=m["den"], num_q=m["num"] // 2, den_q=m["den"] // 2),
                NOT_DIVIDE_LINE.format(d=3, n=m["den"]),
                LOWEST_LINE.format(num=m["num"], den=m["den"]),
            ]
        lines.append(ANSWER_LINE.format(answer=boxed_answer(p)))
    return lines


def boxed_answer(problem: Problem) -> str:
    """What the traces box: the integer, or \\frac{p}{q} for a fraction's "p/q" gold."""
    if "/" in problem.answer:
        num, den = problem.answer.split("/")
        return f"\\frac{{{num}}}{{{den}}}"
    return problem.answer
