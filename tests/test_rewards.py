"""Each T1 penalty detector on positive and negative examples; reward composition."""

from __future__ import annotations

from core.rewards import PENALTY, is_garbled, is_repetitive, score
from core.types import Completion, Verdict


def test_repetition_detector() -> None:
    assert is_repetitive("ab" * 100, window_chars=10, min_count=20)
    assert not is_repetitive("ab" * 100, window_chars=10, min_count=200)
    varied = " ".join(f"try {i} + {i + 1} = {2 * i + 1}" for i in range(60))
    assert not is_repetitive(varied, window_chars=40, min_count=3)
    assert not is_repetitive("short", 80, 20)


def test_garbled_detector() -> None:
    assert not is_garbled("try 12 + 7 = 19 < 37 larger\nanswer 12 + 25")
    assert not is_garbled("Let x = 3. Then $\\frac{1}{2}$ … café")
    assert is_garbled("abc\ufffd\ufffd\ufffd" * 5)
    assert is_garbled("hello мир 世界 γειά")  # four scripts
    assert is_garbled("x\x00\x01\x02\x03")


def _c(text: str, finish: str = "stop") -> Completion:
    return Completion(text, (1, 2, 3), finish)  # type: ignore[arg-type]


def test_score_composition_and_switches() -> None:
    right, wrong = Verdict(True, "1"), Verdict(False, "2")
    assert score(_c("answer 1 + 2"), right).reward == 1.0
    assert score(_c("answer 1 + 3"), wrong).reward == 0.0
    cut = score(_c("try 1 + 2", "length"), right)
    assert cut.overlong and cut.penalised and cut.reward == PENALTY
    assert score(_c("try 1 + 2", "length"), right, penalize_overlong=False).reward == 1.0
    rep = score(_c("ab" * 200), right, repeat_chars=10, repeat_count=20)
    assert rep.repetitive and rep.reward == PENALTY


# ------------------------------------------------------- penalties that fit math (no false -1)

import json  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from core.config import TaskConfig  # noqa: E402
from core.rewards import repeat_rule  # noqa: E402
from core.synth import minimath as minimath_synth  # noqa: E402
from core.synth.programmatic import synthesize  # noqa: E402
from core.tasks import make_task  # noqa: E402

MATH500 = Path(__file__).parent / "data" / "math500.jsonl"


def _flagged(texts: list[str], task: str) -> list[str]:
    chars, count = repeat_rule(task)
    return [t for t in texts if is_garbled(t) or is_repetitive(t, chars, count)]


def test_math500_gold_solutions_are_never_penalised() -> None:
    solutions = [json.loads(line)["solution"] for line in MATH500.open()]
    assert len(solutions) == 500
    assert _flagged(solutions, "math500") == []


def test_programmatic_traces_are_never_penalised() -> None:
    pairsum = make_task(TaskConfig())
    traces = [t["response"] for t in synthesize(pairsum.problems("train", 3000), "t1", 0.85, 0.15, 0)]
    assert _flagged(traces, "pairsum") == []
    mini = make_task(TaskConfig(name="minimath"))
    traces = [t["response"] for t in
              minimath_synth.synthesize(mini.problems("train", 3000), "t1", 0.85, 0.15, 0, 20)]
    assert _flagged(traces, "minimath") == []


@pytest.mark.parametrize("text", ["n in ℕ and θ", "the area is πr² … in µm", "𝑥 … θ = π/2",
                                  "设x为正数, 则 x > 0", "Let $x \\in \\mathbb{R}$ and ℓ = 2"])
def test_math_unicode_is_not_garbled(text: str) -> None:
    assert not is_garbled(text)


def test_adversarial_output_is_still_penalised() -> None:
    rng = random.Random(0)
    soup = bytes(rng.randrange(256) for _ in range(400)).decode("utf-8", "replace")
    codepoints = "".join(chr(rng.randrange(0x400, 0x3000)) for _ in range(200))
    for text in (soup, codepoints, "we say hеllo to everyone"):  # the last: a Cyrillic е in a Latin word
        assert is_garbled(text), text[:40]
    line = "Try $x = 12$: $7 \\cdot 12 = 84 < 91$, too small."  # 47 characters
    for task in ("pairsum", "minimath"):
        assert is_repetitive("\n".join([line] * 20), *repeat_rule(task))
    long_line = "So the sum of the first ten terms is the same as before, and we add the next one."
    assert len(long_line) >= 80
    assert is_repetitive("\n".join([long_line] * 20), *repeat_rule("math500"))
    assert repeat_rule("math500") == (80, 20)  # the paper's rule for real math responses
    assert repeat_rule("pairsum", 12, 0) == (12, 4)  # an rl.repeat_* override wins over the task's
