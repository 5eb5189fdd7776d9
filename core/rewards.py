"""Correctness reward and T1's -1 penalties (over-long, repetitive, garbled). Torch-free.

T1 sets the reward of a penalised response to -1 and leaves it out of the RLOO baseline.
The repetition rule of the authors' code is "any 80-character substring appearing >= 20
times", made for responses of thousands of tokens; the embedded tasks' responses are a few
hundred characters, so each task has its own scale (`repeat_rule`), chosen so that none of the
task's teacher traces (nor any of the 500 MATH500 gold solutions, for math data sets) trips it
while a line said over and over still does (tests/test_rewards.py). Which penalties apply and
the rule's knobs are fields of `RLConfig` in core.config (penalize_overlong,
penalize_repetition, penalize_garbled, repeat_chars, repeat_count; 0 = the task's rule), which
`core.rl.trainer.Trainer` passes to `score`.

Garbled text: unreadable characters (replacement, control, private use) above a small share,
letters of more than two writing systems, or one word mixing two writing systems. Math
notation is not a writing system of its own: Greek letters and the letter-like math symbols
(ℕ, 𝑥, µ, ℓ ...) count as Latin, so ordinary math reasoning is never called garbled.
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


# task -> (repeat_chars, repeat_count); anything else (math data sets): the paper's rule
REPEAT_RULES = {"pairsum": (30, 4), "minimath": (40, 8)}
PAPER_REPEAT_RULE = (80, 20)


def repeat_rule(task_name: str, chars: int = 0, count: int = 0) -> tuple[int, int]:
    """(window characters, count) of the repetition rule: the given values, 0 = the task's."""
    default = REPEAT_RULES.get(task_name, PAPER_REPEAT_RULE)
    return chars or default[0], count or default[1]


def is_repetitive(text: str, window_chars: int = 80, min_count: int = 20) -> bool:
    """Some `window_chars`-long substring occurs at least `min_count` times (overlaps count)."""
    if window_chars <= 0 or len(text) < window_chars + min_count - 1:
        return False
    counts = Counter(text[i : i + window_chars] for i in range(len(text) - window_chars + 1))
    return counts.most_common(1)[0][1] >= min_count


# writing systems written without spaces: a "word" of theirs may hold a Latin variable (设x为)
_UNSPACED = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER", "MYANMAR"})


def _script(ch: str) -> str:
    """Coarse writing system of a letter: the first word of the Unicode name of its compatibility
    form (so 𝑥 -> x and ℕ -> N are LATIN), with GREEK counted as LATIN (math notation)."""
    try:
        script = unicodedata.name(unicodedata.normalize("NFKC", ch)[:1] or ch).split()[0]
    except ValueError:
        return "UNKNOWN"
    return "LATIN" if script == "GREEK" else script


def is_garbled(text: str, max_bad_frac: float = 0.02, max_scripts: int = 2) -> bool:
    """Replacement / control / private-use characters above `max_bad_frac` of the text, letters
    from more than `max_scripts` writing systems, or a word mixing two of them (gibberish like
    "hеllo" with a Cyrillic е), outside the systems written without spaces."""
    if not text:
        return False
    bad = sum(
        ch == "\ufffd" or (unicodedata.category(ch) in ("Cc", "Co", "Cs") and ch not in "\n\t\r")
        for ch in text
    )
    if bad / len(text) > max_bad_frac:
        return True
    scripts: set[str] = set()
    word: set[str] = set()
    for ch in text + " ":
        if ch.isalpha():
            word.add(_script(ch))
            continue
        if len(word) > 1 and not word & _UNSPACED:
            return True
        scripts |= word
        word = set()
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
