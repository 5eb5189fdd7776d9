"""Correctness reward and T1's -1 penalties (over-long, repetitive, garbled). Torch-free.

T1 sets the reward of a penalised response to -1 and leaves it out of the RLOO baseline.
The repetition rule of the authors' code is "any 80-character substring appearing >= 20
times"; embedded traces are ~100 characters per 30 tokens, so the lab's defaults scale it down
through the `repeat_chars` / `repeat_count` knobs. Which penalties apply and those knobs are
fields of `RLConfig` in core.config (penalize_overlong, penalize_repetition, penalize_garbled,
repeat_chars, repeat_count), which `core.rl.trainer.Trainer` passes to `score`.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

from core.types import Completion, Verdict

PENALTY = -1.0


@dataclass(frozen=True)
class RewardParts:
    """Every part of one sample's reward, stored per rollout so the dashboard can explain it."""

    correct: bool
    overlong: bool
    repetitive: bool
    garbled: bool
    reward: float

    @property
    def penalised(self) -> bool:
        return self.overlong or self.repetitive or self.garbled


def is_repetitive(text: str, window_chars: int = 80, min_count: int = 20) -> bool:
    """Some `window_chars`-long substring occurs at least `min_count` times (overlaps count)."""
    if window_chars <= 0 or len(text) < window_chars + min_count - 1:
        return False
    counts = Counter(text[i : i + window_chars] for i in range(len(text) - window_chars + 1))
    return counts.most_common(1)[0][1] >= min_count


def _script(ch: str) -> str:
    """Coarse writing system of a letter: the first word of its Unicode name (LATIN, CJK, ...)."""
    try:
        return unicodedata.name(ch).split()[0]
    except ValueError:
        return "UNKNOWN"


def is_garbled(text: str, max_bad_frac: float = 0.02, max_scripts: int = 2) -> bool:
    """Replacement / control / private-use characters above `max_bad_frac` of the text, or
    letters from more than `max_scripts` writing systems (mixed-script gibberish)."""
    if not text:
        return False
    bad = sum(
        ch == "\ufffd" or (unicodedata.category(ch) in ("Cc", "Co", "Cs") and ch not in "\n\t\r")
        for ch in text
    )
    if bad / len(text) > max_bad_frac:
        return True
    scripts = {_script(ch) for ch in text if ch.isalpha()}
    return len(scripts) > max_scripts


def score(
    completion: Completion,
    verdict: Verdict,
    *,
    penalize_overlong: bool = True,
    penalize_repetition: bool = True,
    penalize_garbled: bool = True,
    repeat_chars: int = 80,
    repeat_count: int = 20,
) -> RewardParts:
    """1 if correct else 0, replaced by -1 when an enabled penalty fires."""
    overlong = penalize_overlong and completion.finish_reason == "length"
    repetitive = penalize_repetition and is_repetitive(completion.text, repeat_chars, repeat_count)
    garbled = penalize_garbled and is_garbled(completion.text)
    reward = PENALTY if (overlong or repetitive or garbled) else float(verdict.correct)
    return RewardParts(verdict.correct, overlong, repetitive, garbled, reward)
