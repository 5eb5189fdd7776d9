"""The embedded math task: small algebra problems served through exactly the MATH500 path.

    prompt    Find the integer $x$ with $3x + 2 = 38$.  (+ MathTask's "reason step by step,
              put your final answer within \\boxed{}" template)
    response  We need $3x = 38 - 2 = 36$.
              Try $x = 10$: $3 \\cdot 10 = 30 < 36$, too small.
              Try $x = 15$: $3 \\cdot 15 = 45 > 36$, too large.
              Try $x = 12$: $3 \\cdot 12 = 36$, correct.
              Check: $3 \\cdot 12 + 2 = 36 + 2 = 38$. Yes.

              Final answer: \\boxed{12}

Two families:
- **linear**: find the integer x with a x + b = c. Trial and error pays: a reasoner tries
  values, reads "too small / too large" and narrows the range, so more tokens mean more trials
  and a better chance of the answer. The reasoner first moves b across (one subtraction), then
  each trial is one multiplication fact and a comparison: of the layouts tried, the one a model
  of a million parameters learns best in minutes (docs/perf_log.md). By default c - b needs no
  borrow (47 - 16, not 43 - 16): written digit by digit, with a borrow, it was the step such a
  model got wrong most (`task.borrow=true` puts those problems back).
- **fraction**: write a/b in lowest terms by trying divisors 2, 3, 5, 7. The gold answer is
  stored as "p/q" while traces box `\\frac{p}{q}`, so math-verify's equivalence is what scores.

Everything after the problems (prompt template, `\\boxed{}` answers, math-verify in the worker
pool, the `\\boxed{` forced-answer cue, free-text trace parsing) is `MathTask`'s; the parser only
adds what it cannot know, which lines are trials and whether their arithmetic holds.

The line templates live here, next to the problems, because three readers share them: the
programmatic teacher (core.synth.minimath), the tokenizer's training text (core.models) and
the tests. The problem space is enumerated (2,488 linear and 244 fraction problems at the
defaults; `lab synth` writes several traces per problem when asked for more, each its own
search); a problem is held out iff a hash of its id falls below `heldout_frac` (as in
pairsum), so train and held-out never overlap.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

from core.answers import VerifierPool
from core.tasks.base import TaskError, check_split, split_of
from core.tasks.math import PROMPT_TEMPLATE, MathTask, parse_trace
from core.types import Problem, Trace, TraceStep

NAME = "minimath"
FAMILIES = ("linear", "fraction")
DIVISORS = (2, 3, 5, 7)

# The teacher's lines (format with str.format); see core.synth.minimath for the search.
LINEAR_QUESTION = "Find the integer $x$ with ${a}x + {b} = {c}$."
FRACTION_QUESTION = "Write $\\frac{{{num}}}{{{den}}}$ in lowest terms."
REDUCE_LINE = "We need ${a}x = {c} - {b} = {target}$."
TRY_LINE = "Try $x = {x}$: ${a} \\cdot {x} = {product} {rel} {target}$, {verdict}."
CLAIM_LINE = "Try $x = {x}$: ${a} \\cdot {x} = {target}$, correct."
CHECK_LINE = "Check: ${a} \\cdot {x} + {b} = {product} + {b} = {value}$. Yes."
SLIP_CHECK_LINE = "Check: ${a} \\cdot {x} + {b} = {product} + {b} = {value}$, not {c}. No."
WAIT_LINE = "Wait, ${product} {rel} {target}$, so $x = {x}$ is {verdict}."
DIVIDE_LINE = "Try {d}: ${num} = {d} \\cdot {num_q}$ and ${den} = {d} \\cdot {den_q}$, so $\\frac{{{num_q}}}{{{den_q}}}$."
NOT_DIVIDE_LINE = "Try {d}: ${n}$ is not a multiple of {d}."
LOWEST_LINE = "Check: {num} and {den} have no common factor. Yes."
# a blank line, then the forced-answer cue's own words (MathTask.answer_cue): a budget sweep's
# cue then asks for the answer the way the model always gave it
ANSWER_LINE = "\nFinal answer: \\boxed{{{answer}}}"
TOO_SMALL, TOO_LARGE = "too small", "too large"
# fractions: p/q (coprime, 1 <= p < q <= 9) times one of these, both parts at most 90
MULTIPLIERS = (2, 3, 4, 5, 6, 8, 9, 10, 12, 15)


@dataclass(frozen=True)
class MiniMathSpec:
    """Difficulty knobs (the task.* fields of the same names)."""

    x_max: int = 20  # linear: x in 1..x_max (binary search: about log2(x_max) trials)
    coef_max: int = 9  # linear: a in 2..coef_max, b in 1..3 * coef_max
    fraction_share: float = 0.25  # share of fraction problems (until they run out)
    heldout_frac: float = 0.2
    borrow: bool = False  # linear: also problems whose c - b needs a borrow

    def validate(self) -> None:
        if self.x_max < 4:
            raise TaskError(f"task.x_max must be >= 4 (got {self.x_max})")
        if self.coef_max < 2:
            raise TaskError(f"task.coef_max must be >= 2 (got {self.coef_max})")
        if not 0.0 <= self.fraction_share <= 1.0:
            raise TaskError(f"task.fraction_share must be in [0, 1] (got {self.fraction_share})")
        if not 0.0 < self.heldout_frac < 1.0:
            raise TaskError(f"task.heldout_frac must be in (0, 1) (got {self.heldout_frac})")



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
    linear = [linear_problem(a, b, x) for a in range(2, spec.coef_max + 1) for b in range(1, 3 * spec.coef_max + 1)
              for x in range(1, spec.x_max + 1) if spec.borrow or not _borrows(a * x + b, b)]
    fractions = {(k * p, k * q) for q in range(2, 10) for p in range(1, q) if math.gcd(p, q) == 1
                 for k in MULTIPLIERS if k * q <= 90}
    return linear, [fraction_problem(n, d) for n, d in sorted(fractions)]


def _borrows(c: int, b: int) -> bool:
    """Whether c - b, written digit by digit, needs a borrow (43 - 16 does, 47 - 16 does not)."""
    while b:
        if c % 10 < b % 10:
            return True
        c, b = c // 10, b // 10
    return False


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

    def parse_trace(self, response: str) -> Trace:
        return parse_minimath_trace(response)


# A trial as the traces write it; a model's slips (a wrong product, a wrong comparison) still match.
_LINEAR_TRY = re.compile(
    r"^Try \$x = (\d+)\$: \$(\d+) \\cdot (\d+) = (\d+)(?: ([<>]) (\d+))?\$(?:, (correct)\.?)?")
_FRACTION_TRY = re.compile(
    r"^Try (\d+): \$(\d+) = (\d+) \\cdot (\d+)\$ and \$(\d+) = (\d+) \\cdot (\d+)\$")
_FRACTION_MISS = re.compile(r"^Try (\d+): \$\d+\$ is not a multiple of \d+\.?")
_REDUCE = re.compile(r"^We need \$\d+x = \d+ - \d+ = (\d+)\$")
_LINEAR_CHECK = re.compile(r"^Check: \$(\d+) \\cdot (\d+) \+ (\d+) = (\d+) \+ (\d+) = (\d+)\$")


def parse_minimath_trace(response: str) -> Trace:
    """MathTask's free-text parse, with the trials recognised as attempts.

    A linear trial is ok only if its product is right and it claims the target the trace
    itself moved b across to ("We need $3x = ... = 36$"), so a slip counts as a failed attempt;
    its "too small / too large" is its reflection. A fraction trial is ok when both
    factorisations are right; "not a multiple" is a failed attempt. A check of a linear
    answer is ok when its arithmetic is right and it says "Yes"."""
    steps: list[TraceStep] = []
    target: int | None = None
    for step in parse_trace(response).steps:
        line = step.text
        if m := _REDUCE.match(line):
            target = int(m.group(1))
        if m := _LINEAR_TRY.match(line):
            x, a, x2, product, rel, _, claim = m.groups()
            right = int(a) * int(x) == int(product) and x == x2
            ok = bool(claim) and rel is None and right and (target is None or int(product) == target)
            steps.append(TraceStep("attempt", line[: m.end()].rstrip(",. "), ok=ok))
            rest = line[m.end():].strip(",. ")
            if rest and not claim:
                steps.append(TraceStep("reflection", rest))
        elif m := _FRACTION_TRY.match(line):
            d, num, d1, q1, den, d2, q2 = (int(g) for g in m.groups())
            steps.append(TraceStep("attempt", line, ok=d == d1 == d2 and num == d * q1 and den == d * q2))
        elif _FRACTION_MISS.match(line):
            steps.append(TraceStep("attempt", line, ok=False))
        elif (m := _LINEAR_CHECK.match(line)) and step.kind == "verify":
            a, x, b, product, b2, value = (int(g) for g in m.groups())
            right = a * x == product and b == b2 and product + b == value
            steps.append(TraceStep("verify", line, ok=right and line.rstrip(". ").endswith("Yes")))
        else:
            steps.append(step)
    return Trace(tuple(steps))


def prompt_of(problem: Problem) -> str:
    """The plain prompt (no chat template), for the tokenizer's training text."""
    return PROMPT_TEMPLATE.format(question=problem.question) + "\n"


def tokenizer_corpus(seed: int = 0) -> list[str]:
    """Text the embedded math tokenizer is trained on: prompts and every kind of trace line over
    a sample of the problem space (digits are split anyway; words and LaTeX get merged)."""
    rng = random.Random(f"tokenizer-{seed}")
    linear, fractions = all_problems(MiniMathSpec())
    lines: list[str] = []
    for p in rng.sample(linear, min(1500, len(linear))) + fractions:
        lines.append(prompt_of(p))
        m: dict[str, Any] = dict(p.meta)
        if m["family"] == "linear":
            x = int(p.answer)
            lines += [linear_line(template, p, v, rel, verdict) for template, v, rel, verdict in
                      ((REDUCE_LINE, x, "", ""), (TRY_LINE, x + 1, ">", TOO_LARGE),
                       (TRY_LINE, max(x - 1, 1), "<", TOO_SMALL), (CLAIM_LINE, x, "", ""),
                       (CHECK_LINE, x, "", ""), (SLIP_CHECK_LINE, x + 1, "", ""), (WAIT_LINE, x + 1, ">", TOO_LARGE))]
        else:
            lines += [
                DIVIDE_LINE.format(d=2, num=m["num"], den=m["den"], num_q=m["num"] // 2, den_q=m["den"] // 2),
                NOT_DIVIDE_LINE.format(d=3, n=m["den"]),
                LOWEST_LINE.format(num=m["num"], den=m["den"]),
            ]
        lines.append(ANSWER_LINE.format(answer=boxed_answer(p)))
    return lines


def linear_line(template: str, problem: Problem, x: int, rel: str = "", verdict: str = "") -> str:
    """One line of a linear problem's trace for a trial value `x`."""
    m = problem.meta
    a, b, c = m["a"], m["b"], m["c"]
    return template.format(a=a, b=b, c=c, x=x, product=a * x, value=a * x + b, target=c - b, rel=rel,
                           verdict=verdict)


def boxed_answer(problem: Problem) -> str:
    """What the traces box: the integer, or \\frac{p}{q} for a fraction's "p/q" gold."""
    if "/" in problem.answer:
        num, den = problem.answer.split("/")
        return f"\\frac{{{num}}}{{{den}}}"
    return problem.answer
