"""Tasks: problem sources, prompt rendering, answer checking and trace parsing.

`make_task` builds the task a config names: the embedded pairsum task, or a math data set (a
benchmark short name, a hub id or a local .jsonl). Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from core.config import TaskConfig
from core.tasks import math as math_task
from core.tasks import minimath, pairsum
from core.tasks.base import Task, TaskError
from core.types import Problem, Trace

__all__ = ["Task", "TaskError", "eval_task_config", "make_task", "train_pool", "reflection_words", "task_problems", "trace_parser"]


def make_task(cfg: TaskConfig) -> Task:
    """The embedded task or a math data set (short name, hub id or .jsonl/.parquet path)."""
    if cfg.name == "pairsum":
        spec = pairsum.PairSumSpec(cfg.num_count, cfg.max_value, cfg.heldout_frac or 0.1, cfg.sorted_numbers)
        return pairsum.PairSumTask(spec, seed=cfg.seed)
    if cfg.name == minimath.NAME:
        mspec = minimath.MiniMathSpec(cfg.x_max, cfg.coef_max, cfg.fraction_share, cfg.heldout_frac or 0.2, cfg.borrow)
        return minimath.MiniMathTask(mspec, seed=cfg.seed)
    # loads its data set here: a bad source fails now
    return math_task.MathTask(cfg.name, eval_only=cfg.eval_only, decontaminate=cfg.decontaminate)


GENERATED = ("pairsum", minimath.NAME)


def eval_task_config(cfg: TaskConfig, eval_task: str) -> TaskConfig:
    """The task a training run evaluates on: `eval_task` when set; else the generated task itself
    (its held-out split) or, for a math data set, the default benchmark (MATH500): so the curves
    of a run on math training data are on the benchmark."""
    name = eval_task or (cfg.name if cfg.name in GENERATED else math_task.DEFAULT_EVAL)
    return replace(cfg, name=name)


# how many training problems RL draws from a generated task (a data set gives all it has)
TRAIN_POOL = {"pairsum": 50_000, minimath.NAME: 5_000}


def train_pool(task: Task) -> list[Problem]:
    """The problems RL samples its prompts from: the whole training split."""
    return task_problems(task, "train", TRAIN_POOL.get(task.name, 0))


def task_problems(task: Task, split: str, limit: int) -> list[Problem]:
    """`limit` problems of `split` (0 = all of a finite data set); TaskError when there are none."""
    problems = task.problems(split, limit or None)
    if not problems:
        raise TaskError(f"task {task.name!r} has no {split} problems")
    return problems


def trace_parser(task_name: str | None) -> Callable[[str], Trace]:
    """The task's own trace parser by task name, without loading its data (the dashboard reads
    runs of any task): the embedded tasks', else the free-text one of math tasks."""
    if task_name == "pairsum":
        return pairsum.parse_trace
    if task_name == minimath.NAME:
        return minimath.parse_minimath_trace
    return math_task.parse_trace


def reflection_words(text: str, task_name: str | None) -> int:
    """How many reflection words a response holds (embedded: larger/smaller/wait; math: wait,
    alternatively, let me check, hmm, but, mistake ...)."""
    pattern = pairsum.REFLECTION_RE if task_name == "pairsum" else math_task.REFLECTION_RE
    return len(pattern.findall(text))


def response_features(text: str, correct: bool, task_name: str | None) -> dict[str, Any]:
    """Structure counts of one response: attempts, failed attempts, reflections, reflection
    words, whether it verifies, and whether a failed attempt was fixed (`correct`: its verdict)."""
    trace = trace_parser(task_name)(text)
    return {"attempts": trace.num_attempts, "failed_attempts": trace.num_failed_attempts,
            "reflections": trace.num_reflections, "reflection_words": reflection_words(text, task_name),
            "verified": trace.has_verification, "failed_then_fixed": trace.failed_then_fixed(correct)}


def trace_stats(features: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per-step structure of responses (`response_features` of each), as metrics: the share with a
    failed-then-fixed attempt, with any reflection word, with a verification, and reflection
    words per response."""
    n = max(len(features), 1)
    return {"trace/failed_then_fixed_frac": sum(f["failed_then_fixed"] for f in features) / n,
            "trace/reflection_frac": sum(f["reflection_words"] > 0 for f in features) / n,
            "trace/verified_frac": sum(bool(f["verified"]) for f in features) / n,
            "trace/reflection_words_mean": sum(f["reflection_words"] for f in features) / n}
