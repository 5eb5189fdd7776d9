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
