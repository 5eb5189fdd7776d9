"""Teacher synthesis with a scripted teacher (known outputs): the merged trace's structure, what
each filter removes, provenance, resume after a kill; and the import of public T1 SFT data."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import pytest

from core.config import ConfigError, SamplingConfig, SynthJob, TeacherConfig
from core.overrides import build
from core.stages.synth import RunSink
from core.store import new_run
from core.synth.teacher import prompts
from core.synth.teacher.http import TeacherError
from core.synth.teacher.pipeline import Attempt, plan_trace, run_teacher, split_attempts
from core.synth.teacher.public import load_public_traces
from core.tasks.base import TaskError
from core.tasks.math import MathTask
from core.types import Completion, Problem
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data"
BAD_MERGE = "merge-writes-a-wrong-answer"


def prompt_kind(prompt: str) -> str:
    """Which stage a prompt belongs to, read off the templates in core.teacher.prompts."""
    if prompt.startswith("You are reviewing"):
        return "verify" if "is correct." in prompt else "critique"
    if prompt.startswith("Below are a math problem"):
        return "merge"
    if prompt.startswith("Rewrite the reasoning"):
        return "rewrite"
    return "attempt"


def scripted_reply(prompt: str, answers: dict[str, list[str]], k: int) -> str:
    """The scripted teacher's text for one prompt; `k` numbers the attempts of a question."""
    kind = prompt_kind(prompt)
    if kind == "attempt":
        question = prompt.split("\n\nPlease reason step by step")[0]
        ans = answers[question][k % len(answers[question])]
        filler = " step" * 200 if ans.startswith("long:") else ""
        return f"I work it out{filler} and get \\boxed{{{ans.removeprefix('long:')}}}."
    if kind == "critique":
        return "Wait, I slipped in the second step."
    if kind == "verify":
        return "Let me verify by substituting back: it holds."
    if kind == "merge":
        gold = re.search(r"Correct final answer: (.*)", prompt).group(1)
        gold = "12345" if BAD_MERGE in prompt else gold
        steps = re.findall(r"Attempt \d+ \((failed|correct)\):\n(.*?)\n\nReview note:\n(.*?)\n",
                           prompt, re.DOTALL)
        lines = [f"{text}\n{note}" for label, text, note in steps if label == "failed"]
        lines.append(f"So the answer is \\boxed{{{gold}}}.")
        lines += [note for label, _, note in steps if label == "correct"]
        return "\n".join(lines)
    return "Thinking aloud. " + prompt.split("repetition. Output only the rewritten reasoning.\n\n")[1]


class ScriptedTeacher:
    """A Teacher with known outputs. Tokens are words. `fail_on` raises TeacherError for
    prompts containing that text; `interrupt_after` raises KeyboardInterrupt at that attempt
    call (a kill in the middle of a run)."""

    def __init__(self, name: str, answers: dict[str, list[str]], fail_on: str = "",
                 interrupt_after: int | None = None):
        self.name = name
        self.answers = answers
        self.fail_on = fail_on
        self.interrupt_after = interrupt_after
        self.calls: list[tuple[str, str]] = []  # (kind, prompt)
        self.attempts_seen: Counter[str] = Counter()

    def complete(self, prompts_: Sequence[str], params: SamplingConfig, seed: int,
                 n: int = 1) -> list[list[Completion]]:
        out = []
        for i, p in enumerate(prompts_):
            kind = prompt_kind(p)
            if kind == "attempt" and self.interrupt_after is not None:
                if sum(k == "attempt" for k, _ in self.calls) >= self.interrupt_after:
                    raise KeyboardInterrupt
            self.calls.append((kind, p))
            if self.fail_on and self.fail_on in p:
                raise TeacherError("scripted failure: HTTP 500", "http")
            group = []
            for j in range(n):
                key = p.split("\n\nPlease reason")[0]
                text = scripted_reply(p, self.answers, self.attempts_seen[key])
                self.attempts_seen[key] += kind == "attempt"
                group.append(Completion(text, tuple(range(len(text.split()))), "stop", i, j))
            out.append(group)
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class ListSink:
    def __init__(self) -> None:
        self.data: list[dict] = []

    def rows(self) -> list[dict]:
        return list(self.data)

    def write(self, row: dict) -> None:
        self.data.append(json.loads(json.dumps(row)))


@pytest.fixture(scope="module")
def task() -> MathTask:
    return MathTask(str(DATA / "math500_20.jsonl"), heldout_only=False, decontaminate=False)


def cfg(**kw) -> TeacherConfig:
    base = TeacherConfig(models=("scripted",), num_attempts=4, max_solved_frac=0.5,
                         max_wrong_in_trace=2, max_trace_tokens=150)
    return replace(base, **kw)


def five_problems(task: MathTask) -> tuple[list[Problem], dict[str, list[str]]]:
    """Problems and attempt answers, one problem per filter (see test_filter_counts)."""
    p = task.problems("train", 5)  # answers: (3, pi/2) tuple, p - q, 14/3, 9, Evelyn
    problems = [
        p[3],                                                    # kept: solved 1 of 4
        p[2],                                                    # too easy: 3 of 4
        replace(p[1], question=p[1].question + " " + BAD_MERGE),  # unverified merged answer
        replace(p[3], id="again"),                               # the same question again
        Problem("same-trace", "Another question with answer nine.", "9"),  # identical trace
        Problem("long", "A question with a long answer.", "6"),   # too long
        Problem("fails", "A question the teacher cannot answer.", "1"),    # teacher error
    ]
    answers = {
        p[3].question: ["7", "8", "7", "9"],
        p[2].question: ["\\frac{14}{3}", "14/3", "5", "\\frac{14}{3}"],
        problems[2].question: ["q - p", "0", "p - q", "1"],
        "Another question with answer nine.": ["7", "8", "7", "9"],
        "A question with a long answer.": ["long:5", "long:6", "long:7", "long:8"],
        "A question the teacher cannot answer.": ["1"],
    }
    return problems, answers


def test_filter_counts_and_provenance(task) -> None:
    problems, answers = five_problems(task)
    teacher = ScriptedTeacher("scripted", answers, fail_on="cannot answer")
    sink = ListSink()
    out = run_teacher(problems, task, [teacher], teacher, cfg(), sink, progress=False)
    status = {r["problem_id"]: r["status"] for r in sink.rows()}
    assert status == {"3": "kept", "2": "too_easy", "1": "unverified", "again": "duplicate",
                      "same-trace": "duplicate", "long": "too_long", "fails": "error"}
    assert (out["synth/kept"], out["synth/too_easy"], out["synth/unverified"], out["synth/duplicate"],
            out["synth/too_long"], out["synth/error"], out["synth/too_hard"]) == (1, 1, 1, 2, 1, 1, 0)
    kept = next(r for r in sink.rows() if r["status"] == "kept")
    assert [a["correct"] for a in kept["attempts"]] == [False, False, False, True]
    assert [a["predicted"] for a in kept["attempts"]] == ["7", "8", "7", "9"]
    assert kept["num_solved"] == 1 and kept["solved_frac"] == 0.25 and kept["teacher"] == "scripted"
    assert all(a["critique"] for a in kept["attempts"])  # every attempt got a critique
    error = next(r for r in sink.rows() if r["status"] == "error")
    assert "HTTP 500" in error["error"] and error["error_kind"] == "http"
    # too easy is decided before any critique: no critic calls for that problem
    easy_q = problems[1].question
    assert not [p for k, p in teacher.calls if k != "attempt" and easy_q in p]
    # the duplicate question costs no teacher call at all
    assert sum(1 for k, p in teacher.calls if k == "attempt" and problems[0].question in p) == 1


def test_merged_trace_structure_llm_merge_and_rewrite(task) -> None:
    problems, answers = five_problems(task)
    teacher = ScriptedTeacher("scripted", answers)
    sink = ListSink()
    run_teacher(problems[:1], task, [teacher], teacher, cfg(), sink, progress=False)
    row = sink.rows()[0]
    # two failed attempts with distinct answers (7, 8), then the right one (index 3)
    assert row["plan"] == [0, 1, 3] and row["num_failed"] == 2 and row["num_attempts"] == 3
    merge_prompt = next(p for k, p in teacher.calls if k == "merge")
    assert merge_prompt.index("Attempt 1 (failed)") < merge_prompt.index("Attempt 2 (failed)") \
        < merge_prompt.index("Attempt 3 (correct)")
    assert "Correct final answer: 9" in merge_prompt and "Wait, I slipped" in merge_prompt
    assert row["response"] == "Thinking aloud. " + row["merged"] and row["rewritten"]
    assert row["response"].splitlines() == [
        "Thinking aloud. I work it out and get \\boxed{7}.", "Wait, I slipped in the second step.",
        "I work it out and get \\boxed{8}.", "Wait, I slipped in the second step.",
        "So the answer is \\boxed{9}.", "Let me verify by substituting back: it holds."]
    kinds = [s.kind for s in task.parse_trace(row["response"]).steps]
    assert kinds == ["answer", "reflection", "answer", "reflection", "answer", "verify"]
    assert row["predicted"] == "9"


def test_concat_merge_is_attempt_reflection_answer_verify(task) -> None:
    problems, answers = five_problems(task)
    teacher = ScriptedTeacher("scripted", answers)
    sink = ListSink()
    run_teacher(problems[:1], task, [teacher], teacher, cfg(merge="concat", rewrite=False), sink,
                progress=False)
    row = sink.rows()[0]
    assert row["status"] == "kept" and not [k for k, _ in teacher.calls if k in ("merge", "rewrite")]
    parts = row["response"].split("\n\n")
    assert parts == ["I work it out and get \\boxed{7}.", "Wait, I slipped in the second step.",
                     "I work it out and get \\boxed{8}.", "Wait, I slipped in the second step.",
                     "I work it out and get \\boxed{9}.", "Let me verify by substituting back: it holds."]


def test_attempts_are_split_between_teachers(task) -> None:
    problems, answers = five_problems(task)
    a, b = ScriptedTeacher("a", answers), ScriptedTeacher("b", answers)
    sink = ListSink()
    run_teacher(problems[:1], task, [a, b], a, cfg(num_attempts=5), sink, progress=False)
    row = sink.rows()[0]
    assert [x["teacher"] for x in row["attempts"]] == ["a", "a", "a", "b", "b"]
    assert row["attempt_teachers"] == ["a", "b"] and split_attempts(5, 3) == [2, 2, 1]


def test_too_hard_and_plan_without_a_right_attempt(task) -> None:
    problems, answers = five_problems(task)
    teacher = ScriptedTeacher("scripted", {**answers, problems[0].question: ["1", "2", "3", "4"]})
    sink = ListSink()
    out = run_teacher(problems[:1], task, [teacher], teacher, cfg(), sink, progress=False)  # min_solved=1
    assert out["synth/too_hard"] == 1 and sink.rows()[0]["status"] == "too_hard"
    sink = ListSink()  # min_solved=0: the critic, who sees the gold answer, writes the ending
    out = run_teacher(problems[:1], task, [teacher], teacher, cfg(min_solved=0), sink, progress=False)
    assert out["synth/too_hard"] == 0 and sink.rows()[0]["status"] != "too_hard"
    attempts = [Attempt("t", "x", 1, "stop", predicted=p, correct=False) for p in "1121"]
    assert plan_trace(attempts, 2) == [0, 2]  # distinct answers first, no right path to add


def test_kill_and_rerun_finishes_only_the_rest(task, tmp_path) -> None:
    problems = task.problems("train", 5)
    answers = {p.question: ["0", "1", "2", p.answer] for p in problems}
    run = new_run(tmp_path, "synth", {})
    first = ScriptedTeacher("scripted", answers, interrupt_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_teacher(problems, task, [first], first, cfg(), RunSink(run), progress=False)
    assert len(RunSink(run).rows()) == 3
    second = ScriptedTeacher("scripted", answers)
    out = run_teacher(problems, task, [second], second, cfg(), RunSink(run), progress=False)
    asked = {p.id for p in problems for k, q in second.calls if k == "attempt" and p.question in q}
    assert asked == {problems[3].id, problems[4].id} and out["synth/resumed"] == 3
    rows = RunSink(run).rows()
    assert sorted(r["problem_id"] for r in rows) == sorted(p.id for p in problems)
    assert out["synth/kept"] + sum(out[f"synth/{s}"] for s in ("too_easy", "unverified", "too_long",
                                                                "duplicate", "error")) == 5


def test_error_rows_are_retried_on_rerun(task) -> None:
    problems, answers = five_problems(task)
    sink = ListSink()
    flaky = ScriptedTeacher("scripted", answers, fail_on=problems[0].question)
    out = run_teacher(problems[:1], task, [flaky], flaky, cfg(), sink, progress=False)
    assert out["synth/error"] == 1
    healthy = ScriptedTeacher("scripted", answers)
    out = run_teacher(problems[:1], task, [healthy], healthy, cfg(), sink, progress=False)
    assert out["synth/error"] == 0 and out["synth/kept"] == 1 and len(sink.rows()) == 2


def test_a_failed_original_is_retried_not_taken_for_its_duplicate(task) -> None:
    """Regression: a duplicate row used to mark its question as done, so on rerun the failed
    original was called a duplicate of its own duplicate and no trace was ever made."""
    problems, answers = five_problems(task)
    original, again = problems[0], problems[3]  # the same question under two ids
    sink = ListSink()
    flaky = ScriptedTeacher("scripted", answers, fail_on=original.question)
    run_teacher([original, again], task, [flaky], flaky, cfg(), sink, progress=False)
    healthy = ScriptedTeacher("scripted", answers)
    out = run_teacher([original, again], task, [healthy], healthy, cfg(), sink, progress=False)
    assert (out["synth/kept"], out["synth/duplicate"], out["synth/error"]) == (1, 1, 0)


def test_prompts_carry_their_inputs() -> None:
    c = prompts.critique_prompt("Q?", "my work", None, "42", correct=False)
    assert "(no final answer)" in c and "42" in c and c.startswith("You are reviewing")
    v = prompts.critique_prompt("Q?", "my work", "42", "42", correct=True)
    assert "is correct." in v and "Let me verify" in v
    m = prompts.merge_prompt("Q?", "42", [("try one", False, "Wait, no"), ("try two", True, "ok")])
    assert "Attempt 1 (failed):\ntry one" in m and "Attempt 2 (correct)" in m and "\\boxed{...}" in m
    assert prompts.attempt_prompt("Q?").startswith("Q?\n\nPlease reason step by step")


def test_teacher_config_validation() -> None:
    with pytest.raises(ConfigError, match="not both"):
        build(SynthJob, cli={"teacher.models": "m", "teacher.dataset": "THUDM/T1"})
    with pytest.raises(ConfigError, match="teacher.merge"):
        build(SynthJob, cli={"teacher.merge": "glue"})
    job = build(SynthJob, cli={"teacher.models": "a,http://127.0.0.1:1/v1#m", "max_solved_frac": "0.25"})
    assert job.teacher.models == ("a", "http://127.0.0.1:1/v1#m") and job.teacher.max_solved_frac == 0.25


# ----------------------------------------------------------------------------- public data


def test_public_t1_sample_becomes_trace_rows() -> None:
    rows = load_public_traces(str(DATA / "t1_sft_sample.jsonl"))
    assert [r["answer"] for r in rows] == ["5", "11", "24", "6"]
    assert rows[0]["question"].startswith("What is the smallest positive integer")
    assert rows[1]["question"] == "Compute $\\sqrt{49} + \\sqrt{16}$."  # not the system turn
    assert rows[3]["response"].startswith("The divisors are")  # ShareGPT from/value turns
    assert all(r["style"] == "t1" and r["problem_id"] for r in rows)


def test_public_data_parquet_and_bad_rows(tmp_path) -> None:
    import pandas as pd

    rows = [json.loads(x) for x in (DATA / "t1_sft_sample.jsonl").read_text().splitlines()]
    pd.DataFrame({"prompt": [rows[2]["prompt"]], "response": [rows[2]["response"]]}).to_parquet(
        tmp_path / "t1.parquet")
    assert load_public_traces(str(tmp_path / "t1.parquet"))[0]["answer"] == "24"
    (tmp_path / "bad.jsonl").write_text('{"text": "no conversation here"}\n')
    with pytest.raises(TaskError, match="no question and response found"):
        load_public_traces(str(tmp_path / "bad.jsonl"))


def test_public_hub_unreachable_fails_fast(monkeypatch) -> None:
    import time

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    t0 = time.time()
    with pytest.raises(TaskError, match="could not reach the Hugging Face hub"):
        load_public_traces("THUDM/T1")
    assert time.time() - t0 < 5


def _lab(*args: str) -> dict:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_imported_rows_render_as_sft_examples_of_a_math_task(task, tiny_model_dir) -> None:
    from core.models import load_tokenizer
    from core.sft import build_examples

    rows = load_public_traces(str(DATA / "t1_sft_sample.jsonl"))
    tok = load_tokenizer(str(tiny_model_dir))
    examples, dropped = build_examples(rows, task, tok, max_seq_len=4096)
    assert len(examples) == 4 and dropped == 0
    prompt = task.render_prompt(Problem("x", rows[0]["question"], rows[0]["answer"]), tok)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert examples[0].loss_mask[:n_prompt] == (0,) * n_prompt and examples[0].loss_mask[-1] == 1


@pytest.mark.slow
def test_cli_import_then_sft_on_a_math_task(tmp_path, tiny_model_dir) -> None:
    syn = _lab("synth", "-q", "--runs-dir", str(tmp_path), f"teacher.dataset={DATA / 't1_sft_sample.jsonl'}")
    assert syn["synth/num_traces"] == 4
    out = _lab("sft", "-q", "--runs-dir", str(tmp_path), f"sft.data={syn['run_dir']}",
               f"task.name={DATA / 'math500_20.jsonl'}", f"eval.task={DATA / 'math500_20.jsonl'}",
               f"model.name={tiny_model_dir}",
               "sft.max_steps=2", "sft.warmup_steps=0", "sft.batch_size=4", "sft.micro_batch_size=2",
               "sft.max_seq_len=512", "eval.num_problems=2", "eval.sampling.max_new_tokens=4")
    assert out["eval/n"] == 2 and "sft/loss" in out

