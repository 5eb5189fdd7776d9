"""Small dataclasses that cross module boundaries. Torch-free on purpose.

One name means one thing: a `Completion` is what a sampler produced; whether it was right
lives in a `Verdict`; a reward is never stored in a field called advantage (and vice versa).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length"]
Say = Callable[[str], None]  # where a stage's human log lines go (print, a notebook, a prefix)


@dataclass(frozen=True)
class Problem:
    """One task instance. `question` is the raw problem text (no prompt template applied)."""

    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """One sampled response.

    `token_ids` are the generated ids only (prompt excluded), cut after the end-of-sequence
    token or the first stop string; `num_tokens == len(token_ids)`. `finish_reason` is "stop"
    when the model ended on its own (EOS or a stop string) and "length" when it hit
    `max_new_tokens`. `token_logprobs`, when the backend reports them, are log pi(token | prefix)
    of each generated token under the untempered distribution (temperature 1, no top-p/min-p),
    as the trainer scores them; None otherwise.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    prompt_index: int = 0
    sample_index: int = 0
    token_logprobs: tuple[float, ...] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one response against the gold answer.

    status: "ok" (checked; `correct` is meaningful), "no_answer" (nothing extractable),
    "parse_error" (the checker could not parse), "timeout" (the checker ran out of time).
    """

    correct: bool
    predicted: str | None
    status: Literal["ok", "no_answer", "parse_error", "timeout"] = "ok"


StepKind = Literal["attempt", "reflection", "answer", "verify", "text"]


@dataclass(frozen=True)
class TraceStep:
    """One line of a reasoning trace, classified. `ok` is set for attempts and verifications."""

    kind: StepKind
    text: str
    ok: bool | None = None


@dataclass(frozen=True)
class Trace:
    """A response split into its trial-and-error structure."""

    steps: tuple[TraceStep, ...]

    @property
    def num_failed_attempts(self) -> int:
        return sum(1 for s in self.steps if s.kind == "attempt" and s.ok is False)

    @property
    def num_attempts(self) -> int:
        return sum(1 for s in self.steps if s.kind == "attempt")

    @property
    def num_reflections(self) -> int:
        return sum(1 for s in self.steps if s.kind == "reflection")

    @property
    def has_verification(self) -> bool:
        return any(s.kind == "verify" for s in self.steps)

    def failed_then_fixed(self, correct: bool) -> bool:
        """A failed attempt, then a correct final answer: trial-and-error that worked (what
        evaluation reports as `corrected_frac` and the dashboard as "failed, then fixed")."""
        return bool(correct) and self.num_failed_attempts > 0


@dataclass(frozen=True)
class CurvePoint:
    """Accuracy of one checkpoint at one reasoning budget (tokens)."""

    checkpoint: str
    budget_tokens: int
    accuracy: float
    ci_low: float
    ci_high: float
    truncated_frac: float
    mean_tokens_used: float
    n: int
