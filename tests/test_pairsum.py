"""The embedded task: splits, verifier, trace structure; the teacher's traces."""

from __future__ import annotations

import random

import pytest

from core.synth.programmatic import search_attempts, synthesize, synthesize_trace
from core.tasks.base import TaskError
from core.tasks.pairsum import PairSumSpec, PairSumTask, make_problem, split_of


def test_splits_never_overlap_and_are_stable(pairsum_task) -> None:
    train = {p.id for p in pairsum_task.problems("train", 3000)}
    held = {p.id for p in pairsum_task.problems("heldout", 300)}
    assert not train & held
    # asking for more training problems does not change the held-out set
    assert [p.id for p in pairsum_task.problems("heldout", 50)] == list(
        p.id for p in PairSumTask().problems("heldout", 50)
    )
    assert all(split_of(i, 0.1) == "heldout" for i in held)


def test_problems_have_exactly_one_pair() -> None:
    rng = random.Random(0)
    for _ in range(200):
        p = make_problem(rng, PairSumSpec())
        nums, t = p.meta["numbers"], p.meta["target"]
        pairs = [(a, b) for i, a in enumerate(nums) for b in nums[i + 1 :] if a + b == t]
        assert len(pairs) == 1 and len(set(nums)) == len(nums)


def test_verifier_exact(pairsum_task) -> None:
    p = pairsum_task.problems("heldout", 1)[0]
    a, b = (int(x) for x in p.answer.split(" + "))
    assert pairsum_task.check_one(p, f"answer {a} + {b}").correct
    assert pairsum_task.check_one(p, f"answer {b} + {a}").correct
    wrong = [n for n in p.meta["numbers"] if n not in (a, b)][0]
    assert not pairsum_task.check_one(p, f"answer {a} + {wrong}").correct
    # a number not in the list cannot be used even if the sum is right
    assert not pairsum_task.check_one(p, f"answer {a + b - 1} + 1").correct or 1 in p.meta["numbers"]
    assert pairsum_task.check_one(p, "no idea").status == "no_answer"
    # the last answer counts
    assert pairsum_task.check_one(p, f"answer {a} + {wrong}\nanswer {a} + {b}").correct


@pytest.mark.parametrize("answer, end", [
    (" 13 + 15", None),  # b may go on ("150" with digit tokens)
    (" 13 + 15 = 28 ok\n", 8),  # complete, delimited: settled after b
    (" 13 + 15\n", 8),
    ("", None), (" ", None), (" 13", None), (" 13 +", None), (" 13 + ", None), (" 1", None),
    (" 13 + >", 7),  # no longer an answer: settled as it is (no answer)
    (" larger", 7), ("\n", 1), (" 25 24", 6),
])
def test_answer_end_settles_complete_or_impossible_answers(pairsum_task, answer: str, end: int | None) -> None:
    assert pairsum_task.answer_end(answer) == end
    if end is not None:  # the verdict of the settled part is that of the whole text
        p = pairsum_task.problems("heldout", 1)[0]
        full = pairsum_task.answer_cue() + answer
        assert pairsum_task.check_one(p, full) == pairsum_task.check_one(p, full[: len("answer") + end])


def test_parse_trace_marks_slips_and_reflections(pairsum_task) -> None:
    text = (
        "try 11 + 25 = 37 = 37 ok\ncheck 25 + 11 = 36 no\nwait\n"
        "try 12 + 7 = 19 < 37 larger\ntry 12 + 25 = 37 = 37 ok\ncheck 25 + 12 = 37 yes\nanswer 12 + 25"
    )
    trace = pairsum_task.parse_trace(text)
    kinds = [s.kind for s in trace.steps]
    assert kinds == ["attempt", "verify", "reflection", "attempt", "reflection", "attempt", "verify", "answer"]
    assert trace.num_failed_attempts == 2  # the slip and the small sum
    assert [s.ok for s in trace.steps if s.kind == "verify"] == [False, True]


def test_bad_spec_is_refused() -> None:
    with pytest.raises(TaskError, match="max_value"):
        PairSumTask(PairSumSpec(num_count=10, max_value=12))
    with pytest.raises(TaskError, match="limit"):
        PairSumTask().problems("train")
    with pytest.raises(TaskError, match="unknown split"):
        PairSumTask().problems("test", 3)


def test_teacher_traces_are_correct_and_t1_shaped(pairsum_task) -> None:
    problems = pairsum_task.problems("train", 300)
    traces = list(synthesize(problems, "t1", guided_prob=0.35, slip_prob=0.5, seed=0))
    for p, tr in zip(problems, traces):
        assert pairsum_task.check_one(p, tr["response"]).correct
        structure = pairsum_task.parse_trace(tr["response"])
        assert structure.num_failed_attempts == tr["num_failed"]
        assert structure.has_verification
    assert sum(t["num_failed"] > 0 for t in traces) / len(traces) > 0.6
    assert sum(t["num_slips"] for t in traces) > 0
    # deterministic in the seed
    again = list(synthesize(problems[:20], "t1", 0.35, 0.5, seed=0))
    assert [t["response"] for t in again] == [t["response"] for t in traces[:20]]


def test_plain_style_goes_straight_to_the_answer(pairsum_task) -> None:
    p = pairsum_task.problems("train", 1)[0]
    tr = synthesize_trace(p, random.Random(0), "plain", 0.35, 0.1)
    assert tr["num_attempts"] == 1 and tr["num_failed"] == 0
    assert pairsum_task.check_one(p, tr["response"]).correct


def test_guided_moves_search_faster(pairsum_task) -> None:
    problems = pairsum_task.problems("train", 400)
    def mean_attempts(g: float) -> float:
        rng = random.Random(1)
        return sum(len(search_attempts(p, rng, g, 0.0)) for p in problems) / len(problems)
    assert mean_attempts(1.0) < mean_attempts(0.0) / 2
