"""Evaluation: accuracy (pass@1 averaged over samples), trial-and-error statistics, lengths.

pass@k (unbiased, Chen et al. 2021) and maj@k live here too so that RL, budget sweeps and
`lab eval` share one definition.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from core.config import EvalConfig
from core.dist import SINGLE, Dist
from core.sampling.protocol import Sampler, derive_seed
from core.sampling.text import encode_prompts
from core.tasks.base import Task
from core.types import Completion, Problem


def wilson_interval(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes out of n (n may be an effective size)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(rows: Sequence[dict], z: float = 1.96) -> tuple[float, float]:
    """95% interval of the accuracy of `rows` (each with "correct" and "problem_id").

    One sample per problem: the Wilson interval. Several: samples of one problem are not
    independent draws (an easy problem is right in all of them), so the interval is Wilson's
    at the effective sample size n_eff = p(1 - p) / SE^2, with SE the standard error clustered
    by problem (of the per-problem means); never more than the number of samples."""
    n = len(rows)
    k = sum(bool(r["correct"]) for r in rows)
    by_problem: dict[Any, list[bool]] = {}
    for r in rows:
        by_problem.setdefault(r.get("problem_id"), []).append(bool(r["correct"]))
    m = len(by_problem)
    if m == n or m < 2:
        return wilson_interval(k, n, z)
    p = k / n
    # sum over problems of (successes - p * samples)^2, the cluster-robust variance of k
    var_k = sum((sum(c) - p * len(c)) ** 2 for c in by_problem.values()) * m / (m - 1)
    if var_k <= 0 or p in (0.0, 1.0):
        n_eff = float(m)  # no spread to measure: at least as wide as one sample per problem
    else:
        n_eff = min(float(n), p * (1 - p) * n * n / var_k)
    return wilson_interval(p * n_eff, n_eff, z)  # type: ignore[arg-type]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k), product form."""
    if k > n:
        raise ValueError(f"pass@k needs k <= n (k={k}, n={n})")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def majority_answer(predictions: Sequence[str | None]) -> str | None:
    """Most common non-empty prediction (ties: first seen)."""
    counts = Counter(p for p in predictions if p)
    return counts.most_common(1)[0][0] if counts else None


_GOLD = "\x00gold"
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_NOISE = re.compile(r"\s+|\\left|\\right|\\[!,;: ]|\$")


def vote_key(predicted: str | None, correct: bool) -> str | None:
    """What a sample votes for in maj@k, so that equal answers written apart vote together.

    Every right answer is math-verify-equal to the gold, hence to each other: one class
    (`1/2`, `\\frac{1}{2}` and `0.5` are one vote, not three). Wrong answers are compared after
    a light normalisation (spaces, `\\left`/`\\right`, `$`, `\\frac{a}{b}` -> `a/b`); two wrong
    answers that only math-verify would call equal still vote apart (a pairwise check of every
    wrong pair would cost more than the sampling)."""
    if not predicted or not str(predicted).strip():
        return None
    if correct:
        return _GOLD
    text = _NOISE.sub("", str(predicted))
    return _FRAC.sub(r"\1/\2", text)


def sample_rows(
    task: Task, problems: Sequence[Problem], groups: Sequence[Sequence[Completion]]
) -> list[dict]:
    """One JSON-ready row per completion: text, tokens, finish reason, verdict, structure."""
    flat = [(p, c) for p, g in zip(problems, groups) for c in g]
    verdicts = task.check([p for p, _ in flat], [c.text for _, c in flat])
    rows = []
    for (p, c), v in zip(flat, verdicts):
        trace = task.parse_trace(c.text)
        rows.append({
            "problem_id": p.id, "sample": c.sample_index, "response": c.text,
            "num_tokens": c.num_tokens, "finish_reason": c.finish_reason,
            "correct": v.correct, "predicted": v.predicted, "status": v.status,
            "num_attempts": trace.num_attempts, "num_failed_attempts": trace.num_failed_attempts,
            "num_reflections": trace.num_reflections, "verified": trace.has_verification,
            "corrected": trace.failed_then_fixed(v.correct),
        })
    return rows


def summarize(rows: Sequence[dict], prefix: str = "eval/") -> dict[str, Any]:
    """Headline figures over sample rows."""
    n = len(rows)
    k = sum(r["correct"] for r in rows)
    lo, hi = accuracy_interval(rows)
    statuses = Counter(r["status"] for r in rows)
    return {
        f"{prefix}acc": k / max(n, 1), f"{prefix}acc_ci_low": lo, f"{prefix}acc_ci_high": hi,
        f"{prefix}corrected_frac": sum(r["corrected"] for r in rows) / max(n, 1),
        f"{prefix}len_mean": sum(r["num_tokens"] for r in rows) / max(n, 1),
        f"{prefix}len_max": max((r["num_tokens"] for r in rows), default=0),
        f"{prefix}truncated_frac": sum(r["finish_reason"] == "length" for r in rows) / max(n, 1),
        f"{prefix}failed_attempts_mean": sum(r["num_failed_attempts"] for r in rows) / max(n, 1),
        f"{prefix}no_answer_frac": statuses.get("no_answer", 0) / max(n, 1),
        f"{prefix}timeouts": statuses.get("timeout", 0),
        f"{prefix}parse_errors": statuses.get("parse_error", 0),
        f"{prefix}n": n,
    }


def parallel_scaling(rows: Sequence[dict], num_samples: int, tokens_key: str = "num_tokens",
                     seed: int = 0, draws: int = 32) -> list[dict]:
    """maj@k and unbiased pass@k for k = 1, 2, 4, ... <= num_samples, against total tokens.

    rows: per-sample rows with problem_id, correct, predicted and a token count (`tokens_key`).
    maj@k is the expected accuracy of a majority vote over k samples drawn without replacement
    (averaged over `draws` seeded draws per problem; ties go to the first drawn); equal answers
    written apart vote together (`vote_key`)."""
    by_problem: dict[str, list[dict]] = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], []).append(r)
    mean_tokens = sum(r[tokens_key] for r in rows) / max(len(rows), 1)
    rng = random.Random(seed)
    out = []
    k = 1
    while k <= num_samples:
        maj, pk = [], []
        for samples in by_problem.values():
            n, c = len(samples), sum(s["correct"] for s in samples)
            pk.append(pass_at_k(n, c, k))
            maj.append(sum(_majority_correct(rng.sample(samples, k)) for _ in range(draws)) / draws)
        out.append({"k": k, "total_tokens": k * mean_tokens, "maj_acc": sum(maj) / max(len(maj), 1),
                    "pass_at_k": sum(pk) / max(len(pk), 1)})
        k *= 2
    return out


def _majority_correct(samples: Sequence[dict]) -> bool:
    return majority_answer([vote_key(s["predicted"], s["correct"]) for s in samples]) == _GOLD


def evaluate(
    sampler: Sampler, task: Task, problems: Sequence[Problem], cfg: EvalConfig, progress: bool = False,
    dist: Dist = SINGLE,
) -> tuple[dict[str, Any], list[dict]]:
    """Sample `cfg.num_samples` responses per problem and score them: (summary, rows). Under
    torchrun each rank samples its block of the problems and every rank gets all rows, in the
    problems' order: the figures of one process."""
    mine = [problems[i] for i in dist.shard(len(problems))]
    prompts = [task.render_prompt(p, sampler.tokenizer) for p in mine]
    groups = sampler.generate(
        encode_prompts(sampler.tokenizer, prompts), cfg.sampling,
        seed=derive_seed(cfg.seed, "eval"), n=cfg.num_samples, progress=progress and dist.main,
        prompt_offset=dist.shard(len(problems)).start,
    )
    rows = [r for part in dist.gather(sample_rows(task, mine, groups)) for r in part]
    summary = summarize(rows)
    if cfg.num_samples > 1:
        for p in parallel_scaling(rows, cfg.num_samples, seed=cfg.seed):
            summary[f"eval/pass@{p['k']}"], summary[f"eval/maj@{p['k']}"] = p["pass_at_k"], p["maj_acc"]
    return summary, rows
