"""`python -m lab eval`: accuracy of a model on a task split; `evaluate_model` also serves SFT's
held-out evaluation."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.config import EvalConfig, EvalJob, TaskConfig
from core.dist import SINGLE, Dist
from core.evaluate import evaluate
from core.models import load_model
from core.sampling import make_sampler
from core.stages.common import (
    Context,
    Say,
    check_backends,
    check_model,
    check_task,
    require_trained,
)
from core.store import Run, resolve_checkpoint
from core.tasks import Task, make_task, task_problems


def preflight(job: EvalJob, runs_dir: Path | str) -> None:
    check_backends(job.eval.sampling)
    require_trained(job.model.name, "eval")
    check_model(job.model.name, runs_dir)
    check_task(evaluated(job), job.eval.split, job.eval.num_problems)


def run(job: EvalJob, run: Run, ctx: Context) -> dict:
    """Load model.name (folder, run, or hub id) and evaluate it."""
    t0 = time.time()
    task = make_task(evaluated(job))
    model_cfg = replace(job.model, name=resolve_checkpoint(job.model.name, ctx.runs_dir))
    model, tok = load_model(model_cfg, seed=0)
    ctx.say(f"loaded {model_cfg.name}")
    summary = evaluate_model(model, tok, task, job.eval, run, job.eval.split, ctx.say, ctx.progress, ctx.dist)
    return {**summary, "model": model_cfg.name, "time_s": time.time() - t0}


def evaluated(job: EvalJob) -> TaskConfig:
    """What `lab eval` scores: eval.task when set, else task.name."""
    return replace(job.task, name=job.eval.task or job.task.name)


def evaluate_model(model: Any, tokenizer: Any, task: Task, cfg: EvalConfig, run: Run,
                   name: str, say: Say, progress: bool = True, dist: Dist = SINGLE) -> dict:
    """Evaluate a loaded model on `cfg.split`; per-sample rows go to eval/<name>.jsonl (under
    torchrun every rank samples its block of the problems, rank 0 writes all rows)."""
    problems = task_problems(task, cfg.split, cfg.num_problems)
    s = cfg.sampling
    say(f"evaluating on {len(problems)} {cfg.split} problems x {cfg.num_samples} sample(s), "
        f"temperature {s.temperature}, max_new_tokens {s.max_new_tokens}, seed {cfg.seed}")
    sampler = make_sampler(s.backend, model, tokenizer, s)
    t0 = time.time()
    summary, rows = evaluate(sampler, task, problems, cfg, progress=progress, dist=dist)
    run.append_eval(name, rows)
    summary["eval/time_s"] = time.time() - t0
    say(eval_line(summary))
    return summary


def eval_line(summary: dict) -> str:
    """The human log line of an evaluation, from its summary."""
    return (f"accuracy {summary['eval/acc']:.1%} [{summary['eval/acc_ci_low']:.1%}, "
            f"{summary['eval/acc_ci_high']:.1%}], failed-then-fixed {summary['eval/corrected_frac']:.1%}, "
            f"mean length {summary['eval/len_mean']:.0f} tokens, truncated {summary['eval/truncated_frac']:.1%}")
