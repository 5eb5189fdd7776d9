"""The teacher pipeline (T1 section 1): attempts -> labels -> critiques -> merge -> rewrite.

Per problem:
1. sample N attempts from the attempt teachers (split between them in turn),
2. label each with math-verify against the gold answer,
3. drop the problem if it is too easy (solved by more than max_solved_frac * N attempts) or,
   optionally, too hard (fewer than min_solved),
4. ask the critic for a critique of each wrong attempt and a verification of each right one,
5. merge up to max_wrong_in_trace failed attempts (distinct answers first), their critiques,
   and one right attempt with its verification into ONE trace shaped
   attempt -> reflection -> ... -> answer -> self-verification (by the critic, or by a fixed
   template with merge=concat),
6. rewrite it into fluent text,
7. keep it only if its final answer verifies, it fits max_trace_tokens, and no identical trace
   (or identical question) was kept before.

Every problem ends in one row, written as soon as it is done: kept traces go to the run's
traces (what `lab sft` trains on), the rest to the rejected rows with a `status` ("too_easy",
"too_hard", "unverified", "too_long", "duplicate", "error"). A rerun skips every problem that
has a row, except errors, which are retried. Simplified from the paper: one critic writes all
critiques, merges and rewrites (the paper does not say which model did which); the attempts
and the critiques of one problem are batched, but stages are not batched across problems
(teacher.parallel_problems overlaps problems in threads instead, which suits HTTP servers).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from core.config import SamplingConfig, TeacherConfig
from core.sampling.protocol import derive_seed
from core.synth.teacher import prompts
from core.synth.teacher.http import TeacherError
from core.synth.teacher.teachers import Teacher
from core.tasks.base import Task
from core.types import Completion, Problem

FILTERS = ("too_easy", "too_hard", "unverified", "too_long", "duplicate")
STATUSES = ("kept", *FILTERS, "error")


class Sink(Protocol):
    """Where finished problems go (a run folder in the lab, a list in tests)."""

    def rows(self) -> list[dict]:
        """Every row written so far (kept and rejected), in order."""
        ...

    def write(self, row: dict) -> None:
        """Persist one finished problem's row now."""
        ...


@dataclass
class Attempt:
    teacher: str
    text: str
    num_tokens: int
    finish_reason: str
    predicted: str | None = None
    correct: bool = False
    verdict: str = "ok"
    critique: str = ""


@dataclass
class Stats:
    """Counters of one invocation: teacher calls, generated tokens, wall time."""

    calls: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, groups: list[list[Completion]]) -> None:
        with self.lock:  # problems may run in threads
            self.calls += 1
            self.tokens += sum(c.num_tokens for g in groups for c in g)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(time.time() - self.started, 1e-9)


def question_key(question: str) -> str:
    """Duplicate key of a question: whitespace-normalised, case-folded text, hashed."""
    norm = " ".join(question.split()).casefold()
    return hashlib.sha256(norm.encode()).hexdigest()[:16]


def problem_key(problem: Problem) -> str:
    """Resume key: the problem's id and its question (a changed data file is not 'done')."""
    return f"{problem.id}:{question_key(problem.question)}"


def _norm_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def split_attempts(n: int, k: int) -> list[int]:
    """N attempts over k teachers in turn: [n // k + (i < n % k) for each teacher i]."""
    return [n // k + (i < n % k) for i in range(k)]


def sample_attempts(problem: Problem, teachers: Sequence[Teacher], cfg: TeacherConfig,
                    seed: int, stats: Stats) -> list[Attempt]:
    prompt = prompts.attempt_prompt(problem.question)
    out: list[Attempt] = []
    for i, (teacher, n) in enumerate(zip(teachers, split_attempts(cfg.num_attempts, len(teachers)))):
        if n == 0:
            continue
        groups = teacher.complete([prompt], cfg.sampling, derive_seed(seed, "attempt", i), n)
        stats.add(groups)
        out += [Attempt(teacher.name, c.text, c.num_tokens, c.finish_reason) for c in groups[0]]
    return out


def label_attempts(problem: Problem, attempts: list[Attempt], task: Task) -> None:
    """Fill predicted / correct / verdict of each attempt (math-verify vs the gold answer)."""
    verdicts = task.check([problem] * len(attempts), [a.text for a in attempts])
    for a, v in zip(attempts, verdicts):
        a.predicted, a.correct, a.verdict = v.predicted, v.correct, v.status


def critic_params(cfg: TeacherConfig, max_new_tokens: int) -> SamplingConfig:
    return replace(cfg.sampling, temperature=cfg.critic_temperature, max_new_tokens=max_new_tokens,
                   stop=())


def critique_attempts(problem: Problem, attempts: list[Attempt], critic: Teacher,
                      cfg: TeacherConfig, seed: int, stats: Stats) -> None:
    """One critique (wrong) or verification (right) per attempt, in one batched call."""
    texts = [prompts.critique_prompt(problem.question, a.text, a.predicted, problem.answer, a.correct)
             for a in attempts]
    groups = critic.complete(texts, critic_params(cfg, cfg.critique_max_new_tokens),
                             derive_seed(seed, "critique"), 1)
    stats.add(groups)
    for a, g in zip(attempts, groups):
        a.critique = g[0].text.strip()


def plan_trace(attempts: list[Attempt], max_wrong: int) -> list[int]:
    """Indices of the attempts in the merged trace: up to `max_wrong` failed ones (distinct
    predicted answers first, then in sample order), then the first right one, if any."""
    wrong = [i for i, a in enumerate(attempts) if not a.correct]
    seen: set[str | None] = set()
    distinct = [i for i in wrong if not (attempts[i].predicted in seen or seen.add(attempts[i].predicted))]
    chosen = sorted((distinct + [i for i in wrong if i not in distinct])[:max_wrong])
    right = next((i for i, a in enumerate(attempts) if a.correct), None)
    return chosen + ([right] if right is not None else [])


def concat_trace(attempts: list[Attempt], plan: list[int]) -> str:
    """merge=concat: attempt, its critique (the reflection), ..., right attempt, verification."""
    return "\n\n".join(f"{attempts[i].text.strip()}\n\n{attempts[i].critique}" for i in plan)


def merge_and_rewrite(problem: Problem, attempts: list[Attempt], plan: list[int], critic: Teacher,
                      cfg: TeacherConfig, seed: int, stats: Stats) -> tuple[str, str, int | None]:
    """(merged text, final text, final token count if a teacher produced the final text)."""
    params = critic_params(cfg, cfg.merge_max_new_tokens)
    tokens: int | None = None
    if cfg.merge == "concat":
        merged = concat_trace(attempts, plan)
    else:
        steps = [(attempts[i].text, attempts[i].correct, attempts[i].critique) for i in plan]
        groups = critic.complete([prompts.merge_prompt(problem.question, problem.answer, steps)],
                                 params, derive_seed(seed, "merge"), 1)
        stats.add(groups)
        merged, tokens = groups[0][0].text.strip(), groups[0][0].num_tokens
    if not cfg.rewrite:
        return merged, merged, tokens
    groups = critic.complete([prompts.rewrite_prompt(merged)], params, derive_seed(seed, "rewrite"), 1)
    stats.add(groups)
    return merged, groups[0][0].text.strip(), groups[0][0].num_tokens


def base_row(problem: Problem, attempts: list[Attempt], critic: Teacher) -> dict:
    solved = sum(a.correct for a in attempts)
    return {
        "problem_id": problem.id, "key": problem_key(problem), "question": problem.question,
        "answer": problem.answer, "teacher": critic.name,
        "attempt_teachers": sorted({a.teacher for a in attempts}),
        "attempts": [a.__dict__ for a in attempts], "num_solved": solved,
        "solved_frac": solved / len(attempts) if attempts else 0.0,
    }


def synthesize_problem(problem: Problem, task: Task, teachers: Sequence[Teacher], critic: Teacher,
                       cfg: TeacherConfig, seed: int, stats: Stats) -> dict:
    """The row of one problem: a trace with provenance and status "kept", or a rejection.
    (The duplicate filter needs every other trace, so run_teacher applies it.)"""
    attempts = sample_attempts(problem, teachers, cfg, seed, stats)
    label_attempts(problem, attempts, task)
    row = base_row(problem, attempts, critic)
    if row["num_solved"] > cfg.max_solved_frac * cfg.num_attempts:
        return {**row, "status": "too_easy"}
    if row["num_solved"] < cfg.min_solved:
        return {**row, "status": "too_hard"}
    critique_attempts(problem, attempts, critic, cfg, seed, stats)
    plan = plan_trace(attempts, cfg.max_wrong_in_trace)
    merged, response, tokens = merge_and_rewrite(problem, attempts, plan, critic, cfg, seed, stats)
    if tokens is None:
        tokens = critic.count_tokens(response)
    if tokens is None:  # an HTTP critic without a local tokenizer: about 4 characters a token
        tokens = len(response) // 4 + 1
    verdict = task.check([problem], [response])[0]
    row = {**base_row(problem, attempts, critic), "response": response, "merged": merged,
           "plan": plan, "merge": cfg.merge, "rewritten": cfg.rewrite,
           "response_tokens": tokens, "predicted": verdict.predicted, "style": "t1",
           "num_attempts": len(plan), "num_failed": sum(not attempts[i].correct for i in plan),
           "num_slips": 0}
    if not verdict.correct:
        return {**row, "status": "unverified"}
    if tokens > cfg.max_trace_tokens:
        return {**row, "status": "too_long"}
    return {**row, "status": "kept"}


def _short_row(problem: Problem, status: str, **extra: Any) -> dict:
    return {"problem_id": problem.id, "key": problem_key(problem), "question": problem.question,
            "answer": problem.answer, "status": status, "attempts": [], **extra}


def finished(rows: Iterable[dict]) -> tuple[set[str], set[str], set[str]]:
    """(keys of finished problems, question keys of synthesized problems, kept trace texts).
    Error rows do not count as finished: a rerun retries them. Duplicate rows give no question
    key, so the original of a duplicate that failed is retried rather than called a duplicate."""
    keys: set[str] = set()
    questions: set[str] = set()
    texts: set[str] = set()
    for r in rows:
        if r.get("status") == "error" or "key" not in r:
            continue
        keys.add(r["key"])
        if r.get("status") != "duplicate":
            questions.add(question_key(r.get("question", "")))
        if r.get("status") == "kept":
            texts.add(_norm_text(r.get("response", "")))
    return keys, questions, texts


def tally(rows: Iterable[dict]) -> dict[str, int]:
    """Counts of the final status of every problem: a problem with an error row and a later
    finished row counts as finished (rows of the two files come in no common order)."""
    final: dict[str, str] = {}
    for r in rows:
        if "key" not in r:
            continue
        if r.get("status", "kept") != "error":
            final[r["key"]] = r.get("status", "kept")
        else:
            final.setdefault(r["key"], "error")
    counts = Counter(final.values())
    return {s: counts.get(s, 0) for s in STATUSES}


def run_teacher(problems: Sequence[Problem], task: Task, teachers: Sequence[Teacher],
                critic: Teacher, cfg: TeacherConfig, sink: Sink, seed: int = 0,
                progress: bool = True) -> dict[str, Any]:
    """Synthesize traces for `problems`, resuming from what `sink` already holds.

    With cfg.parallel_problems > 1 that many problems are in flight at once (threads; each
    problem's stages stay in order), which keeps HTTP servers busy. Returns namespaced counts:
    synth/<status> over all problems finished so far (this run and earlier ones), synth/resumed
    (skipped as already done), calls, tokens and tokens/s of this invocation. A TeacherError
    ends one problem as "error"; anything else (a bug, Ctrl-C) stops the run.
    """
    from tqdm.auto import tqdm

    done, questions, seen = finished(sink.rows())
    todo = [p for p in problems if problem_key(p) not in done]
    stats = Stats()
    lock = threading.Lock()
    bar = tqdm(total=len(todo), desc="teacher", unit="problem", disable=not progress)
    counts: Counter[str] = Counter()

    def finish(row: dict) -> None:
        """Duplicate check and write, one problem at a time."""
        with lock:
            if row["status"] == "kept" and _norm_text(row["response"]) in seen:
                row = {**row, "status": "duplicate"}
            if row["status"] == "kept":
                seen.add(_norm_text(row["response"]))
            sink.write(row)
            counts[row["status"]] += 1
            bar.update(1)
            bar.set_postfix(kept=counts["kept"], errors=counts["error"],
                            tok_s=f"{stats.tokens_per_s:.0f}")

    def work(p: Problem) -> None:
        try:
            finish(synthesize_problem(p, task, teachers, critic, cfg, derive_seed(seed, p.id), stats))
        except TeacherError as e:
            finish(_short_row(p, "error", error=str(e), error_kind=e.kind))

    jobs = []
    for p in todo:
        qk = question_key(p.question)
        if qk in questions:  # the same question under another id: no teacher calls
            finish(_short_row(p, "duplicate"))
        else:
            questions.add(qk)
            jobs.append(p)
    _run_all(work, jobs, cfg.parallel_problems)
    bar.close()
    return {**{f"synth/{k}": v for k, v in tally(sink.rows()).items()},
            "synth/problems": len(problems), "synth/resumed": len(problems) - len(todo),
            "synth/teacher_calls": stats.calls, "synth/teacher_tokens": stats.tokens,
            "synth/teacher_tokens_per_s": stats.tokens_per_s}


def _run_all(work: Callable[[Problem], None], jobs: Sequence[Problem], parallel: int) -> None:
    """work(p) for every job, `parallel` at a time; the first exception cancels what is queued."""
    if parallel <= 1:
        for p in jobs:
            work(p)
        return
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(work, p) for p in jobs]
        try:
            for f in as_completed(futures):
                f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
