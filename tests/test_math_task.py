"""Tests for core.tasks.math.MathTask: loading, errors, prompts, checking and traces."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import datasets
import pytest

import core.tasks.math as math_task
from core.answers import VerifierPool
from core.tasks.base import Task, TaskError
from core.tasks.math import BENCHMARKS, PROMPT_TEMPLATE, MathTask

DATA = Path(__file__).parent / "data"
SLICES = {
    "math500": (DATA / "math500_20.jsonl", 20),
    "aime24": (DATA / "aime24_5.jsonl", 5),
    "amc23": (DATA / "amc23_5.jsonl", 5),
    "gsm8k": (DATA / "gsm8k_5.jsonl", 5),
}


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(num_workers=2, timeout_s=2.0) as p:
        yield p


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open()]


def _write(tmp_path: Path, lines: list[str], name: str = "bench.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


# -------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("short", sorted(SLICES))
def test_load_local_slices(short: str) -> None:
    path, count = SLICES[short]
    task = MathTask(str(path))
    assert isinstance(task, Task)
    assert task.name == path.stem
    problems = task.problems("heldout")
    assert len(problems) == count
    assert all(p.question and p.answer for p in problems)
    assert len({p.id for p in problems}) == count


def test_answer_and_id_normalisation() -> None:
    gsm = MathTask(str(SLICES["gsm8k"][0])).problems("heldout")
    assert gsm[0].answer == "18" and gsm[0].id == "0"
    assert gsm[0].question.startswith("Janet")
    assert gsm[0].meta["solution"].endswith("#### 18")
    amc = MathTask(str(SLICES["amc23"][0])).problems("heldout")
    assert [p.answer for p in amc[:2]] == ["27", "36"]
    aime = MathTask(str(SLICES["aime24"][0])).problems("heldout")
    assert aime[0].id == "60" and aime[0].answer == "204"
    math500 = MathTask(str(SLICES["math500"][0])).problems("heldout")
    assert math500[0].id == "0"  # no id field: the line index
    assert math500[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert math500[0].meta["level"] == 2


def test_gsm8k_thousands_separator(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({"question": "q", "answer": "work\n#### 1,234"})])
    assert MathTask(str(path)).problems("heldout")[0].answer == "1234"


def test_limit(tmp_path: Path) -> None:
    path = SLICES["math500"][0]
    assert len(MathTask(str(path), limit=3).problems("heldout")) == 3
    assert len(MathTask(str(path)).problems("heldout", limit=4)) == 4


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(TaskError, match="not found") as info:
        MathTask(str(missing))
    assert str(missing) in str(info.value)


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({"problem": "1+1?", "answer": "2"}), "{not json"])
    with pytest.raises(TaskError) as info:
        MathTask(str(path))
    assert str(info.value).startswith(f"{path}:2: malformed JSON: ")


@pytest.mark.parametrize(
    ("record", "missing"),
    [
        ({"problem": "1+1?"}, "'answer'"),
        ({"answer": "2"}, "'question'"),
        ({"problem": "q", "answer": ""}, "'answer'"),
    ],
)
def test_missing_field_names_file_line_and_field(
    tmp_path: Path, record: dict[str, Any], missing: str
) -> None:
    good = json.dumps({"question": "2+2?", "answer": 4})
    path = _write(tmp_path, [good, "", json.dumps(record)])
    with pytest.raises(TaskError) as info:
        MathTask(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:3: missing field")
    assert missing in message


@pytest.mark.parametrize("lines", [[], ["", "   "]])
def test_empty_file(tmp_path: Path, lines: list[str]) -> None:
    path = _write(tmp_path, lines)
    with pytest.raises(TaskError, match="has no problems") as info:
        MathTask(str(path))
    assert str(path) in str(info.value)


def test_unknown_source() -> None:
    with pytest.raises(TaskError, match="unknown math source"):
        MathTask("not a source")


# --------------------------------------------------------------------------------- splits


def test_train_split_refused() -> None:
    task = MathTask(str(SLICES["aime24"][0]), name="aime24")
    with pytest.raises(TaskError, match="aime24 is an evaluation set: never train on it"):
        task.problems("train")
    with pytest.raises(TaskError, match="unknown split"):
        task.problems("validation")
    permissive = MathTask(str(SLICES["aime24"][0]), heldout_only=False)
    assert permissive.problems("train") == permissive.problems("heldout")


# ------------------------------------------------------------------------------------ hub


def test_hub_unreachable_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/MATH-500' on the Hub\n(details)")

    monkeypatch.setattr(math_task.hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(TaskError) as info:
        MathTask("math500")
    message = str(info.value)
    assert "\n" not in message
    assert "could not reach the Hugging Face hub" in message
    assert "local JSONL" in message
    assert info.value.__suppress_context__  # raised `from None`: no chained traceback


def test_hub_probe_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("load_dataset called although the hub is unreachable")

    monkeypatch.setattr(math_task.hub, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(datasets, "load_dataset", must_not_run)
    start = time.monotonic()
    with pytest.raises(TaskError, match="could not reach the Hugging Face hub"):
        MathTask("HuggingFaceH4/aime_2024")
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("short", ["gsm8k", "amc23", "math500", "aime24"])
def test_hub_path_maps_fields_like_local(monkeypatch: pytest.MonkeyPatch, short: str) -> None:
    path, _ = SLICES[short]
    calls: list[tuple[Any, ...]] = []

    def fake_load(hub_id: str, config: str | None = None, split: str | None = None) -> Any:
        calls.append((hub_id, config, split))
        return _rows(path)

    monkeypatch.setattr(math_task.hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    hub_task = MathTask(short)
    hub_id, config, split, _ = BENCHMARKS[short]
    assert calls == [(hub_id, config, split)]
    assert hub_task.name == short
    assert hub_task.problems("heldout") == MathTask(str(path)).problems("heldout")
    assert MathTask(hub_id).name == short  # a known hub id resolves to the benchmark


# ------------------------------------------------------------------------------- prompts


class FakeChatTokenizer:
    chat_template = "{{ messages }}"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        self.calls.append({"messages": messages, **kwargs})
        return f"<user>{messages[0]['content']}</user><assistant>"


def test_render_prompt_plain_and_chat() -> None:
    task = MathTask(str(SLICES["gsm8k"][0]))
    problem = task.problems("heldout")[0]
    expected = PROMPT_TEMPLATE.format(question=problem.question)
    assert expected.endswith("within \\boxed{}.")
    assert task.render_prompt(problem) == expected + "\n"

    class NoTemplate:
        chat_template = None

    assert task.render_prompt(problem, NoTemplate()) == expected + "\n"
    tok = FakeChatTokenizer()
    assert task.render_prompt(problem, tok) == f"<user>{expected}</user><assistant>"
    (call,) = tok.calls
    assert call["messages"] == [{"role": "user", "content": expected}]
    assert call["tokenize"] is False and call["add_generation_prompt"] is True


# -------------------------------------------------------------------------------- checking


def test_check(pool: VerifierPool) -> None:
    task = MathTask(str(SLICES["gsm8k"][0]), verifier=pool)
    p = task.problems("heldout")[0]  # gold "18"
    cue = task.answer_cue()
    responses = {
        "So she makes \\boxed{18} dollars.": (True, "ok"),
        "So she makes \\boxed{\\$18}.": (True, "ok"),
        "She makes 9 * 2 = 18 dollars.": (True, "ok"),  # no box: last number
        "She makes \\boxed{17}.": (False, "ok"),
        "I am not sure.": (False, "no_answer"),
        "Let me think" + cue + "18}": (True, "ok"),
        "Let me think" + cue + "18": (True, "ok"),  # closing brace eaten by a stop string
        "Let me think" + cue + "19}": (False, "ok"),
    }
    verdicts = task.check([p] * len(responses), list(responses))
    assert [(v.correct, v.status) for v in verdicts] == list(responses.values())
    assert verdicts[0].predicted == "18" and verdicts[4].predicted is None


def test_check_equivalent_golds(pool: VerifierPool) -> None:
    amc = MathTask(str(SLICES["amc23"][0]), verifier=pool).problems("heldout")[0]  # 27
    math500 = MathTask(str(SLICES["math500"][0]), verifier=pool)
    frac = math500.problems("heldout")[2]  # \frac{14}{3}
    verdicts = math500.check(
        [amc, frac, frac], ["\\boxed{27.0}", "\\boxed{\\dfrac{14}{3}}", "\\boxed{4.67}"]
    )
    assert [v.correct for v in verdicts] == [True, True, False]


def test_extract_prediction_last_number_with_commas() -> None:
    task = MathTask(str(SLICES["gsm8k"][0]))
    assert task.extract_prediction("In total 1,234 eggs, not 12.") == "12"
    assert task.extract_prediction("In total: 1,234") == "1234"
    assert task.extract_prediction("-3.5 degrees") == "-3.5"


def test_check_length_mismatch() -> None:
    task = MathTask(str(SLICES["gsm8k"][0]))
    with pytest.raises(ValueError):
        task.check(task.problems("heldout")[:2], ["\\boxed{1}"])


# ---------------------------------------------------------------------------------- traces


def test_parse_trace() -> None:
    task = MathTask(str(SLICES["gsm8k"][0]))
    lines = [
        "First, 16 - 3 - 4 = 9 eggs.",
        "",
        "Wait, I should double the count.",
        "Hmm, no: each egg sells for $2.",
        "So the answer is \\boxed{18}.",
        "Let me verify: 9 * 2 = 18.",
        "Done.",
    ]
    response = "\n".join(lines)
    trace = task.parse_trace(response)
    kinds = [s.kind for s in trace.steps]
    assert kinds == ["text", "reflection", "reflection", "answer", "verify", "text"]
    assert all(s.ok is None for s in trace.steps)
    assert trace.num_reflections == 2 and trace.has_verification
    assert task.parse_trace("").steps == ()
    # Before the answer, "let me check" is a reflection, not a verification.
    assert task.parse_trace("Let me check the sum.").steps[0].kind == "reflection"


def test_answer_end_is_the_brace_that_closes_the_box() -> None:
    task = MathTask(str(SLICES["gsm8k"][0]))  # the cue opens a box: "...\\boxed{"
    assert task.answer_cue().endswith("\\boxed{")
    assert task.answer_end("42") is None
    assert task.answer_end("42}. So") == 3
    assert task.answer_end("\\frac{1}{2}} and more") == 12
    assert task.answer_end("a \\} b} c") == 7  # an escaped brace does not close it
    assert task.extract_prediction(task.answer_cue() + "\\frac{1}{2}} and \\boxed{3}") == "3"  # read whole ...
    assert task.extract_prediction(task.answer_cue() + "\\frac{1}{2}}") == "\\frac{1}{2}"  # ... settled
