"""The Sampler protocol every backend implements (transformers, vLLM, HTTP teachers). Torch-free.

What differs between backends is said by capabilities, never by checking a class: `can_fork`
tells whether `generate_forked` exists (answers forked from the KV cache at token budgets while
sampling, the transformers backend); `generate(..., until=)` is honoured by all (the
transformers loop stops decoding where the answer is settled, other backends cut after).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from core.config import SamplingConfig
from core.types import Completion

# the text generated after an answer cue -> where the answer in it is settled (an index into
# it), or None while more text could change it (see `core.tasks.base.Task.answer_end`)
AnswerEnd = Callable[[str], int | None]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from (run seed, step, problem, sample, ...): stable across processes."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# (generated token ids so far, budget) -> the answer cue to fork with there, or None for no fork
ForkPlan = Callable[[list[int], int], Sequence[int] | None]
RowsDone = Callable[[int, int], None]  # (rows done, rows in all)


class Sampler(Protocol):
    """Generates `n` completions per prompt. Same seed, same inputs -> same outputs."""

    tokenizer: Any
    can_fork: bool  # whether `generate_forked` is available

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        params: SamplingConfig,
        seed: int,
        n: int = 1,
        progress: bool = False,
        until: AnswerEnd | None = None,
        prompt_offset: int = 0,
    ) -> list[list[Completion]]:
        """Completions grouped per prompt: result[i][j] is sample j of prompt i. With `until`, a
        completion ends where `until` finds its answer settled (text and tokens cut there).
        Sample j of prompt i depends on (seed, prompt_offset + i, j) and its prompt only, not on
        the other prompts of the call: a process given a shard of the prompts passes the index
        of its first one and samples what one process given all of them samples."""
        ...

    def generate_forked(
        self, prompt_ids: list[list[int]], params: SamplingConfig, seed: int, n: int,
        budgets: Sequence[int], plan: ForkPlan, answer_params: SamplingConfig, answer_seed: int,
        progress: bool = False, until: AnswerEnd | None = None, on_rows: RowsDone | None = None,
        prompt_offset: int = 0,
    ) -> tuple[list[list[Completion]], dict[int, dict[tuple[int, int], Completion]]]:
        """Only where `can_fork`: sample as `generate` does and, as each row passes a budget B
        for which `plan` gives a cue, answer after it from a copy of the row's cache:
        (groups, budget -> {(prompt, sample): answer}). `on_rows(done, total)` is called as
        batches of rows finish (a sweep's progress)."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the sampler use `model`'s current weights (a no-op when it shares them)."""
        ...
