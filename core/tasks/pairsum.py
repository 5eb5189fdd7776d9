"""The embedded task: pick two numbers from a list that add up to a target.

    prompt    numbers 4 7 9 12 18 25 30 33 target 37
    response  try 4 + 33 = 37 < 37 ...

Why this task: every attempt is cheap to check (one addition, one comparison), exactly one
pair is right, and a list of `num_count` numbers has C(num_count, 2) pairs, more than fit in
the default token budget. So a model that searches, checks and reflects ("larger" / "smaller")
genuinely does better with more tokens, and the order of attempts matters (what RL can
improve). Every number is one token, so a 1M-parameter model learns the arithmetic in minutes.

Splits: a problem belongs to "heldout" iff a hash of its canonical form falls below
`heldout_frac`, so train and held-out sets never overlap, whatever the seeds or sizes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.tasks.base import TaskError, check_split, split_of
from core.types import Problem, Trace, TraceStep, Verdict

ANSWER_CUE = "answer"
REFLECT_UP, REFLECT_DOWN = "larger", "smaller"
# the words a reflection is made of: "larger"/"smaller" follow a failed try
REFLECTION_RE = re.compile(r"\b(larger|smaller|wait)\b")
# Every word the task writes; the embedded tokenizer gives each one (and each number) one token.
WORDS = (
    "numbers", "target", "try", "+", "-", "=", "<", ">", REFLECT_UP, REFLECT_DOWN,
    "ok", "check", "yes", "no", "wait", ANSWER_CUE,
)

_ATTEMPT = re.compile(r"^try (\d+) \+ (\d+) = (\d+) ([<>=]) (\d+)\b")
_CHECK = re.compile(r"^check (\d+) \+ (\d+) = (\d+) (yes|no)\b")
_ANSWER = re.compile(r"answer (\d+) \+ (\d+)")
# after the cue "answer": " a + b" and a character that is not a digit (b is then whole)
_FORCED_DONE = re.compile(r" \d+ \+ \d+(?=\D)")
# the texts that may still become one: prefixes of " a + b"
_FORCED_OPEN = re.compile(r"(?: (?:\d+(?: (?:\+(?: \d*)?)?)?)?)?")


@dataclass(frozen=True)
class PairSumSpec:
    """Difficulty knobs. Defaults are the embedded preset."""

    num_count: int = 8  # numbers in the list (C(n, 2) candidate pairs)
    max_value: int = 30  # numbers are drawn from 1..max_value, all distinct
    heldout_frac: float = 0.1  # share of the problem space reserved for evaluation
    sorted_numbers: bool = True  # sorted lists allow the two-pointer search

    def validate(self) -> None:
        if self.num_count < 3:
            raise TaskError(f"num_count must be >= 3 (got {self.num_count})")
        if self.max_value < 2 * self.num_count:
            raise TaskError(
                f"max_value must be >= 2 * num_count = {2 * self.num_count} "
                f"(got {self.max_value}): too few distinct numbers for a unique pair"
            )
        if not 0.0 < self.heldout_frac < 1.0:
            raise TaskError(f"heldout_frac must be in (0, 1) (got {self.heldout_frac})")


def problem_key(numbers: Sequence[int], target: int) -> str:
    """Canonical form (order-free), used for ids and the split hash."""
    return "-".join(str(n) for n in sorted(numbers)) + f":{target}"



def make_problem(rng: random.Random, spec: PairSumSpec) -> Problem:
    """Draw one problem with exactly one pair summing to the target."""
    while True:
        numbers = rng.sample(range(1, spec.max_value + 1), spec.num_count)
        i, j = rng.sample(range(spec.num_count), 2)
        target = numbers[i] + numbers[j]
        pairs = [
            (a, b) for x, a in enumerate(numbers) for b in numbers[x + 1 :] if a + b == target
        ]
        if len(pairs) == 1:
            break
    if spec.sorted_numbers:
        numbers = sorted(numbers)
    key = problem_key(numbers, target)
    return Problem(
        id=key,
        question=f"numbers {' '.join(map(str, numbers))} target {target}",
        answer=f"{min(pairs[0])} + {max(pairs[0])}",
        meta={"numbers": numbers, "target": target},
    )


class PairSumTask:
    """Countdown-style pair search with an exact verifier."""

    name = "pairsum"

    def __init__(self, spec: PairSumSpec | None = None, seed: int = 0) -> None:
        self.spec = spec or PairSumSpec()
        self.spec.validate()
        self.seed = seed

    def problems(self, split: str, limit: int | None = None) -> list[Problem]:
        """`limit` problems of `split`, distinct, in a fixed order for a given seed."""
        check_split(split)
        if limit is None:
            raise TaskError("the embedded task is generated: pass a limit (number of problems)")
        # Different streams per split so that asking for more train problems never changes
        # the held-out set.
        rng = random.Random(f"{self.seed}-{split}")
        out: list[Problem] = []
        seen: set[str] = set()
        tries = 0
        while len(out) < limit:
            tries += 1
            if tries > 200 * limit + 10_000:
                raise TaskError(
                    f"could not draw {limit} distinct {split} problems: the problem space is too "
                    "small; raise max_value or num_count"
                )
            p = self._draw(rng, split)
            if p is not None and p.id not in seen:
                seen.add(p.id)
                out.append(p)
        return out

    def _draw(self, rng: random.Random, split: str) -> Problem | None:
        p = make_problem(rng, self.spec)
        return p if split_of(p.id, self.spec.heldout_frac) == split else None

    def render_prompt(self, problem: Problem, tokenizer: Any | None = None) -> str:
        return problem.question + "\n"

    def answer_cue(self) -> str:
        return ANSWER_CUE

    def answer_end(self, answer: str) -> int | None:
        """After the cue: settled at the end of " a + b" once a non-digit follows it, or where
        the text stops being a prefix of one (no answer then)."""
        done = _FORCED_DONE.match(answer)
        if done is not None:
            return done.end()
        return None if _FORCED_OPEN.fullmatch(answer) is not None else len(answer)

    def wait_cue(self) -> str:
        """The s1-style extension cue: the word the traces use before a second look."""
        return "wait\n"

    def extract_answer(self, response: str) -> tuple[int, int] | None:
        """The last `answer a + b` in the response."""
        found = _ANSWER.findall(response)
        if not found:
            return None
        a, b = found[-1]
        return int(a), int(b)

    def check(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
        return [self.check_one(p, r) for p, r in zip(problems, responses, strict=True)]

    def check_one(self, problem: Problem, response: str) -> Verdict:
        pred = self.extract_answer(response)
        if pred is None:
            return Verdict(correct=False, predicted=None, status="no_answer")
        a, b = pred
        numbers = list(problem.meta["numbers"])
        ok = a != b and a in numbers and b in numbers and a + b == problem.meta["target"]
        return Verdict(correct=ok, predicted=f"{a} + {b}")

    def parse_trace(self, response: str) -> Trace:
        return parse_trace(response)


def parse_trace(response: str) -> Trace:
    """Attempts (ok when the sum is right and meets the target), their reflections
    ("larger"/"smaller"), checks, "wait" lines and the answer, line by line."""
    steps: list[TraceStep] = []
    for line in response.splitlines():
        if line.strip():
            steps.extend(_classify(line.strip()))
    return Trace(tuple(steps))


def _classify(line: str) -> list[TraceStep]:
    """One line -> its steps. An attempt's trailing "larger"/"smaller" is its reflection.

    A verification is ok when its re-added sum is right and it says "yes"; whether that sum
    meets the target is the attempt's business.

    An attempt is ok only if the arithmetic is true AND the sum meets the target, so a slip
    ("try 11 + 25 = 37 = 37 ok" with 11 + 25 = 36) counts as a failed attempt.
    """
    m = _ATTEMPT.match(line)
    if m:
        a, b, s, rel, t = m.groups()
        ok = rel == "=" and int(a) + int(b) == int(t) == int(s)
        rest = line[m.end() :].strip()
        steps = [TraceStep("attempt", line[: m.end()], ok=ok)]
        if rest and rest != "ok":
            steps.append(TraceStep("reflection", rest))
        return steps
    m = _CHECK.match(line)
    if m:
        b, a, total, word = m.groups()
        ok = word == "yes" and int(a) + int(b) == int(total)
        steps = [TraceStep("verify", line[: m.end()], ok=ok)]
        rest = line[m.end() :].strip()
        return steps + ([TraceStep("reflection", rest)] if rest else [])
    if line.startswith(ANSWER_CUE):
        return [TraceStep("answer", line)]
    if line.startswith("wait"):
        return [TraceStep("reflection", line)]
    return [TraceStep("text", line)]
