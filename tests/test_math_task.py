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
    with pytest.raises(TaskError, match="is an evaluation set: 5 of its 5 problems are in aime24: never train on it"):
        task.problems("train")
    with pytest.raises(TaskError, match="unknown split"):
        task.problems("validation")
    permissive = MathTask(str(SLICES["aime24"][0]), heldout_only=False, decontaminate=False)
    assert permissive.problems("train") == permissive.problems("heldout")


def _train_rows(n: int) -> list[str]:
    return [json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) for i in range(n)]


def test_local_training_file_is_decontaminated(tmp_path: Path) -> None:
    """Problems equal to an evaluation problem up to case, spacing and $ are dropped and counted;
    the file stays a training set; held-out is the whole file."""
    bench = _rows(SLICES["math500"][0])
    copies = [json.dumps({"problem": "  " + bench[0]["problem"].upper().replace(" ", "  "), "answer": "1"}),
              json.dumps({"question": bench[1]["problem"].replace("$", ""), "answer": "2"})]
    path = _write(tmp_path, _train_rows(10) + copies, "train.jsonl")
    task = MathTask(str(path))
    assert task.role == "train" and not task.heldout_only
    train = task.problems("train")
    assert len(train) == 10 and task.decontaminated == 2 and task.decontaminated_from == {"math500": 2}
    assert len(task.problems("heldout")) == 12
    assert len(MathTask(str(path), decontaminate=False).problems("train")) == 12


def test_run_time_evaluation_set_joins_decontamination(tmp_path: Path) -> None:
    path = _write(tmp_path, _train_rows(6), "train.jsonl")
    task = MathTask(str(path))
    private = MathTask(str(path), eval_only=True).problems("heldout")[:2]  # e.g. Omni-MATH from the hub
    task.exclude(private, "omni_math500")
    assert len(task.problems("train")) == 4 and task.decontaminated_from == {"omni_math500": 2}


def test_eval_only_and_lookalike_files_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, _train_rows(4), "mine.jsonl")
    with pytest.raises(TaskError, match="task.name=.*mine.jsonl is an evaluation set: never train on it"):
        MathTask(str(path), eval_only=True).problems("train")
    everything_known = MathTask(str(SLICES["math500"][0]))
    assert everything_known.role == "eval"
    with pytest.raises(TaskError, match="20 of its 20 problems are in math500") as info:
        everything_known.problems("train")
    assert "math_train" in str(info.value) and "\n" not in str(info.value)


def test_answer_from_the_solution_box_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"problem": "Compute $1+1$.", "solution": "Clearly $\\boxed{2}$."},
            {"problem": "Half of 3?", "solution": "It is $\\boxed{\\frac{3}{2}}$.", "level": "Level 1"}]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    problems = MathTask(str(path)).problems("train")
    assert [p.answer for p in problems] == ["2", "\\frac{3}{2}"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([*rows, {"problem": "No answer here.", "solution": "none"}]), bad)
    with pytest.raises(TaskError, match=r"bad.parquet row 2: missing field 'answer'"):
        MathTask(str(bad))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(TaskError, match="not a readable Parquet file"):
        MathTask(str(tmp_path / "junk.parquet"))


@pytest.mark.parametrize("short", ["math_train", "gsm8k_train", "numina"])
def test_named_training_sources(monkeypatch: pytest.MonkeyPatch, short: str) -> None:
    """Training sets load their published split; rows without a readable answer are skipped
    and counted (NuminaMath has some), never an error mid-load."""
    calls: list[tuple[Any, ...]] = []
    rows = [{"problem": "p0", "question": "p0", "solution": "so $\\boxed{5}$", "answer": "#### 5"},
            {"problem": "p1", "question": "p1", "solution": "no box"}]

    def fake_load(hub_id: str, config: str | None = None, split: str | None = None) -> Any:
        calls.append((hub_id, config, split))
        return rows

    monkeypatch.setattr(math_task.hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    task = MathTask(short)
    src = math_task.SOURCES[short]
    assert calls == [(src.hub_id, src.config, "train")] and src.role == "train"
    assert task.role == "train" and task.skipped == 1
    assert [p.answer for p in task.problems("train")] == ["5"]


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
    src = BENCHMARKS[short]
    assert calls == [(src.hub_id, src.config, src.split)]
    assert hub_task.name == short
    assert hub_task.problems("heldout") == MathTask(str(path)).problems("heldout")
    assert MathTask(src.hub_id).name == short  # a known hub id resolves to the benchmark


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
    # after a cue, the cue's box is the answer: a later box on the line is not read ...
    assert task.extract_prediction(task.answer_cue() + "\\frac{1}{2}} and \\boxed{3}") == "\\frac{1}{2}"
    assert task.extract_prediction(task.answer_cue() + "\\frac{1}{2}}") == "\\frac{1}{2}"
    # ... a box cut before its brace is read as it is, never an earlier box of the reasoning
    assert task.extract_prediction("so \\boxed{7}" + task.answer_cue() + "\\frac{1}{2") == "\\frac{1}{2"
    assert task.extract_prediction("so \\boxed{7}" + task.answer_cue()) is None
