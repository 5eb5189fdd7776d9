"""The embedded math task: problems, teacher traces scored by math-verify, the BPE tokenizer,
forced answers and trace parsing, all on MathTask's path."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from core.answers import VerifierPool
from core.budget import Cue, find_subsequence
from core.config import TaskConfig
from core.models import TinySpec, build_tiny_model, save_policy
from core.synth.minimath import synthesize, synthesize_trace
from core.tasks import make_task, task_problems, train_pool
from core.tasks.base import TaskError
from core.tasks.math import ANSWER_CUE, PROMPT_TEMPLATE, MathTask
from core.tasks.minimath import MiniMathSpec, MiniMathTask, all_problems, boxed_answer

SMALL = TinySpec(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(num_workers=2, timeout_s=5.0) as p:
        yield p


def test_problems_are_distinct_disjoint_and_fixed() -> None:
    task = make_task(TaskConfig(name="minimath"))
    assert isinstance(task, MathTask)  # the MATH500 path: prompt, checking, cue, parsing
    train, heldout = task.problems("train", 10_000), task.problems("heldout", 10_000)
    linear, fractions = all_problems(MiniMathSpec())
    assert len(train) + len(heldout) == len(linear) + len(fractions)
    assert not {p.id for p in train} & {p.id for p in heldout}
    assert 0.15 < len(heldout) / (len(train) + len(heldout)) < 0.25
    assert task.problems("heldout", 50) == MiniMathTask().problems("heldout", 50)
    assert task.problems("train", 20) == task.problems("train", 200)[:20]  # more never reorders
    assert {p.meta["family"] for p in train[:200]} == {"linear", "fraction"}
    assert len(train_pool(task)) == len(train)
    with pytest.raises(TaskError, match="pass a limit"):
        task.problems("train")


def test_prompt_is_the_math500_template() -> None:
    task = make_task(TaskConfig(name="minimath"))
    p = task.problems("heldout", 1)[0]
    assert task.render_prompt(p) == PROMPT_TEMPLATE.format(question=p.question) + "\n"


def test_teacher_traces_are_right_by_math_verify(pool: VerifierPool) -> None:
    """Every teacher trace scores correct through the worker pool; fraction golds are "p/q" while
    the traces box \\frac{p}{q}, so math-verify's equivalence does the scoring."""
    task = MiniMathTask(verifier=pool)
    problems = task.problems("train", 300)
    traces = list(synthesize(problems, "t1", 0.85, 0.3, 0, 20))
    verdicts = task.check(problems, [t["response"] for t in traces])
    assert all(v.correct for v in verdicts), [t["response"] for t, v in zip(traces, verdicts) if not v.correct][:1]
    fractions = [(p, t) for p, t in zip(problems, traces) if p.meta["family"] == "fraction"]
    assert fractions and all("/" in p.answer and "\\frac{" in t["response"] for p, t in fractions)
    assert sum(t["num_failed"] > 0 for t in traces) > 0.8 * len(traces)  # trial and error
    assert sum(t["num_slips"] for t in traces) > 0  # slips, caught by the check
    wrong = [t["response"].rsplit("\\boxed{", 1)[0] + "\\boxed{999}$." for t in traces[:40]]
    assert not any(v.correct for v in task.check(problems[:40], wrong))


def test_slip_is_checked_and_reflected() -> None:
    task = MiniMathTask()
    problems = [p for p in task.problems("train", 400) if p.meta["family"] == "linear"]
    slipped = next(t for p in problems
                   if (t := synthesize_trace(p, random.Random(p.id), "t1", 0.9, 1.0, 20))["num_slips"])
    lines = slipped["response"].splitlines()
    no = next(i for i, line in enumerate(lines) if line.endswith("No."))
    assert lines[no - 1].endswith("correct.") and lines[no + 1].startswith("Wait,")
    steps = task.parse_trace(slipped["response"])
    kinds = [s.kind for s in steps.steps]
    assert kinds[-1] == "answer" and "verify" in kinds and "reflection" in kinds


def test_trials_parse_as_attempts_as_the_teacher_counted_them() -> None:
    """The dashboard's trial-and-error counts (attempts, failed ones, verified checks) come from
    the parser: on teacher traces they equal what the teacher wrote; a slip is a failed attempt."""
    task = MiniMathTask()
    problems = task.problems("train", 400)
    traces = list(synthesize(problems, "t1", 0.85, 0.3, 0, 20))
    for t in traces:
        trace = task.parse_trace(t["response"])
        assert (trace.num_attempts, trace.num_failed_attempts) == (t["num_attempts"], t["num_failed"]), t["response"]
        checks = [s.ok for s in trace.steps if s.kind == "verify" and s.text.startswith("Check: $")]
        assert checks.count(True) <= 1 and (checks.count(False) == t["num_slips"])
    wrong = task.parse_trace("We need $3x = 26 - 11 = 15$.\nTry $x = 5$: $3 \\cdot 5 = 16$, correct.\n"
                             "Try $x = 6$: $3 \\cdot 6 = 15$, correct.\nCheck: $3 \\cdot 5 + 11 = 15 + 11 = 27$. Yes.")
    assert [s.ok for s in wrong.steps if s.kind in ("attempt", "verify")] == [False, False, False]


def test_plain_style_goes_straight_to_the_answer() -> None:
    task = MiniMathTask()
    for p in task.problems("train", 50):
        t = synthesize_trace(p, random.Random(0), "plain", 0.85, 0.15, 20)
        assert t["num_failed"] == 0


def test_bpe_tokenizer_splits_digits_and_reloads_as_qwen2(tmp_path) -> None:
    model, tok = build_tiny_model(SMALL, task="minimath")
    assert len(tok) < 600
    ids = tok("$7 \\cdot 125 = 875$", add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["7", "1", "2", "5", "8", "7", "5"]
    text = MiniMathTask().problems("heldout", 1)[0].question + "\n" + "Try $x = 3$: too small. é ℕ\n\nFinal answer: \\boxed{\\frac{3}{4}}"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # bytes: any text
    save_policy(model, tok, tmp_path / "m")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert reloaded(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert reloaded.eos_token_id == tok.eos_token_id and reloaded.pad_token_id == tok.pad_token_id


def test_forced_answer_cue_and_end() -> None:
    task = MiniMathTask()
    assert task.answer_cue() == ANSWER_CUE
    assert task.answer_end("\\frac{2}{3}} and more") == len("\\frac{2}{3}}")
    assert task.answer_end("\\frac{2}{3") is None
    problem = next(p for p in task.problems("heldout", 400) if p.meta["family"] == "fraction")
    num, den = problem.answer.split("/")
    forced = "Try 2: ...\n" + ANSWER_CUE + f"\\frac{{{num}}}{{{den}}}"
    assert task.check([problem], [forced])[0].correct


def test_traces_answer_with_the_cue_token_for_token() -> None:
    """Each teacher trace ends with the forced-answer cue's own tokens, then the answer: a cut
    response given the cue continues as every trace did (no brace merged into "{\\")."""
    task = MiniMathTask()
    _, tok = build_tiny_model(SMALL, task="minimath")
    cue = Cue.build(tok, task.answer_cue())
    problems = task.problems("train", 300)
    for p, t in zip(problems, synthesize(problems, "t1", 0.85, 0.3, 0, 20)):
        ids = tok(t["response"], add_special_tokens=False)["input_ids"]
        at = find_subsequence(ids, cue.core)
        assert at is not None, t["response"]
        answer = tok(boxed_answer(p) + "}", add_special_tokens=False)["input_ids"]
        assert ids[at + len(cue.core):] == answer


def test_knobs_are_validated() -> None:
    with pytest.raises(TaskError, match="task.x_max"):
        MiniMathTask(MiniMathSpec(x_max=2))
    small = MiniMathTask(MiniMathSpec(x_max=5, coef_max=3, fraction_share=0.0))
    assert all(p.meta["family"] == "linear" for p in task_problems(small, "train", 100))


def test_no_borrow_by_default_and_the_knob_puts_them_back() -> None:
    def borrows(p) -> bool:  # noqa: ANN001
        c, b = p.meta["c"], p.meta["b"]
        return any((c // 10**k) % 10 < (b // 10**k) % 10 for k in range(3))

    easy = MiniMathTask().problems("train", 10_000)
    assert not any(borrows(p) for p in easy if p.meta["family"] == "linear")
    hard = make_task(TaskConfig(name="minimath", borrow=True)).problems("train", 10_000)
    assert sum(borrows(p) for p in hard if p.meta["family"] == "linear") > 1000
    assert len(all_problems(MiniMathSpec(borrow=True))[0]) == 8 * 27 * 20
