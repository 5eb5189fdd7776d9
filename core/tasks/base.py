"""The task interface: problems, prompt rendering, answer checking, trace structure.

A task never imports torch. Tokenizers are passed in as duck-typed objects that have
`apply_chat_template` (hub models) when a chat template is wanted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from core.types import Problem, Trace, Verdict

SPLITS = ("train", "heldout")


@runtime_checkable
class Task(Protocol):
    """What the rest of the lab needs from a task."""

    name: str

    def problems(self, split: str, limit: int | None = None) -> list[Problem]:
        """Problems of `split` ("train" or "heldout"), in a fixed order; at most `limit`."""
        ...

    def render_prompt(self, problem: Problem, tokenizer: Any | None = None) -> str:
        """The full prompt string the model continues (template applied)."""
        ...

    def check(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
        """Score responses against gold answers, one Verdict per (problem, response) pair."""
        ...

    def answer_cue(self) -> str:
        """Text appended to a truncated response to force the final answer."""
        ...

    def answer_end(self, answer: str) -> int | None:
        """Where the answer that follows `answer_cue()` is settled in `answer` (the text
        generated after the cue so far): an index into it once the answer is complete and
        delimited, or can no longer be one; None while more text could still change it. The
        forced answer ends there: generation stops early and the text after is not read (a
        second answer later on the same line does not count)."""
        ...

    def parse_trace(self, response: str) -> Trace:
        """Split a response into attempts / reflections / answer / verification."""
        ...


class TaskError(ValueError):
    """Bad task input (missing file, malformed line, empty data set, unknown split)."""


def split_of(key: str, heldout_frac: float) -> str:
    """"heldout" iff a hash of a problem's canonical key falls below `heldout_frac`: train and
    held-out never overlap, whatever the seeds or sizes."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "heldout" if h < heldout_frac else "train"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
