"""`python -m lab budget`: which checkpoints to sweep, and the sweep of each into a run folder.

A model name may be an RL run (folder or id): its checkpoints are swept, starting with the
policy it started from (step 0, the SFT model), as the paper's Figure 1 does. Anything else
(an SFT run, a checkpoint folder, a hub id) is one model.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from core.budget import generate_sweep, sweep_curve, unconstrained
from core.config import BudgetJob, parse_checkpoints
from core.models import load_model
from core.report.budget import write_budget_page
from core.sampling import make_sampler
from core.stages.common import (
    Context,
    check_backends,
    check_model,
    check_same_task,
    check_task,
    latest_sft_checkpoint,
    require_trained,
)
from core.store import Run, StoreError, open_run, resolve_checkpoint, resolve_path
from core.tasks import TaskError, make_task, task_problems
from core.types import CurvePoint


@dataclass(frozen=True)
class Checkpoint:
    """One model to sweep: curve file name, legend label, RL step (None outside RL), path."""

    name: str
    label: str
    step: int | None
    path: str


def _rl_run(name: str, runs_dir: str | Path) -> Run | None:
    try:
        run = open_run(name, runs_dir)
    except StoreError:
        return None
    return run if run.stage == "rl" else None


def rl_init(run: Run, runs_dir: str | Path) -> str:
    """The policy an RL run started from (`Run.started_from`), else the newest SFT run's."""
    return run.started_from(runs_dir) or latest_sft_checkpoint(runs_dir)


def checkpoints_to_sweep(model: str, spec: str, runs_dir: str | Path = "runs") -> list[Checkpoint]:
    """The models a budget sweep covers, in training order."""
    run = _rl_run(model, runs_dir)
    if run is None:
        path = resolve_checkpoint(model, runs_dir)
        name = Path(model).name if resolve_path(model, runs_dir) is not None else model
        safe = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in name)
        return [Checkpoint(safe, name, None, path)]
    found = [(0, rl_init(run, runs_dir))] + [(s, str(p)) for s, p in run.checkpoints()]
    if len(found) == 1:
        raise TaskError(f"RL run {run.path} has no complete checkpoint yet")
    chosen = parse_checkpoints(spec)
    if chosen == "last":
        found = found[-1:]
    elif isinstance(chosen, tuple):
        total = int(run.setting("rl.steps", found[-1][0]))
        picks = {min(found, key=lambda sp: abs(sp[0] - f * total))[0] for f in chosen}
        found = [sp for sp in found if sp[0] in picks]
    return [Checkpoint(f"step_{s:05d}", "SFT (step 0)" if s == 0 else f"RL step {s}", s, p)
            for s, p in found]


def preflight(job: BudgetJob, runs_dir: Path | str) -> None:
    check_backends(job.budget.sampling)
    require_trained(job.model.name, "budget")
    check_same_task(job.model.name, job.task, runs_dir, "model.name")
    for ck in checkpoints_to_sweep(job.model.name, job.budget.checkpoints, runs_dir):
        check_model(ck.path, runs_dir)
    if job.budget.mode == "summarizer":
        check_model(job.budget.summarizer, runs_dir)
    check_task(job.task, job.budget.split, job.budget.num_problems)


def run(job: BudgetJob, run: Run, ctx: Context) -> dict:
    """Sweep every checkpoint; each curve file grows as its budgets are scored."""
    t0, say, runs_dir = time.time(), ctx.say, ctx.runs_dir
    cfg = job.budget
    task = make_task(job.task)
    problems = task_problems(task, cfg.split, cfg.num_problems)
    ckpts = checkpoints_to_sweep(job.model.name, cfg.checkpoints, runs_dir)
    say(f"budget sweep: {len(ckpts)} checkpoint(s) x {len(problems)} {cfg.split} problems x "
        f"{cfg.num_samples} sample(s), budgets {list(cfg.budgets)}, answers {cfg.mode}")
    summarizer = None
    if cfg.mode == "summarizer":
        smodel, stok = load_model(replace(job.model, name=resolve_checkpoint(cfg.summarizer, runs_dir)), seed=0)
        summarizer = make_sampler(cfg.sampling.backend, smodel, stok, cfg.sampling)
    out: dict[str, Any] = {"acc_at_max": {}, "acc_at_min": {}, "climb": {}, "truncated_at_min": {},
                           "acc_unconstrained": {}}
    done = {n: c for n, c in run.curves().items() if c.get("complete")} if ctx.resume else {}
    sampler = None
    for ck in ckpts:
        if ck.name in done:  # --resume: a curve finished before the stop stands
            points = [CurvePoint(**p) for p in done[ck.name]["points"]]
            free = CurvePoint(**done[ck.name]["unconstrained"]) if done[ck.name].get("unconstrained") else None
            say(f"{ck.label}: finished before, kept")
        else:
            model, tok = load_model(replace(job.model, name=ck.path), seed=0)
            if sampler is None:
                sampler = make_sampler(cfg.sampling.backend, model, tok, cfg.sampling)
            else:  # the next checkpoint of the same model: swap weights, keep the engine
                sampler.sync_weights(model)
            points, free = sweep_checkpoint(job, ck, run, sampler, tok, task, problems, summarizer, ctx)
        lo, hi = points[0], points[-1]
        if free is not None:
            out["acc_unconstrained"][ck.name] = free.accuracy
        out["acc_at_max"][ck.name], out["acc_at_min"][ck.name] = hi.accuracy, lo.accuracy
        out["climb"][ck.name] = hi.accuracy - lo.accuracy
        out["truncated_at_min"][ck.name] = lo.truncated_frac
    if ctx.dist.main:
        write_budget_page(run)
    return {**out, "time_s": time.time() - t0}


def sweep_checkpoint(job: BudgetJob, ck: Checkpoint, run: Run, sampler: Any, tok: Any, task: Any,
                     problems: list, summarizer: Any, ctx: Context) -> tuple[list[CurvePoint], CurvePoint | None]:
    """One checkpoint's sweep; its curve file grows as each budget is scored (rows of a curve
    that an earlier attempt left unfinished are dropped first). Returns (points, the
    unconstrained point or None)."""
    cfg = job.budget
    run.reset_eval(f"budget_{ck.name}")
    base = {"name": ck.name, "checkpoint": ck.label, "step": ck.step, "path": ck.path,
            "task": job.task.name, "mode": cfg.mode, "budgets": list(cfg.budgets), "generation_s": None}
    # listed at once (the dashboard follows the sweep from its start), no point yet; the rows
    # generated so far as they come

    def generating(done: int, total: int) -> None:
        run.write_curve(ck.name, {**base, "complete": False, "points": [], "parallel": [], "generated": [done, total]})

    total = len(problems) * cfg.num_samples
    generating(0, total)
    t1 = time.time()
    sweep = generate_sweep(sampler, task, problems, cfg, ctx.progress, summarizer,  # under torchrun: ranks share it
                           on_rows=lambda done, _: generating(min(done * ctx.dist.world, total), total),
                           dist=ctx.dist)
    base["generation_s"] = gen_s = time.time() - t1

    def on_point(points: list, rows: list[dict]) -> None:
        run.write_curve(ck.name, {**base, "complete": False, "points": [asdict(p) for p in points],
                                  "parallel": []})
        run.append_eval(f"budget_{ck.name}", rows)

    points, _, parallel = sweep_curve(task, problems, sweep, cfg, ck.label, tok, on_point)
    free = unconstrained(sampler, task, problems, sweep, cfg, ck.label, ctx.dist)
    run.write_curve(ck.name, {**base, "complete": True, "points": [asdict(p) for p in points],
                              "parallel": parallel, "unconstrained": asdict(free[0]) if free else None})
    ctx.say(f"{ck.label}: " + ", ".join(f"{p.budget_tokens}: {p.accuracy:.1%}" for p in points)
            + (f"; no budget (up to {free[0].budget_tokens}): {free[0].accuracy:.1%}" if free else "")
            + f" (generation {gen_s:.1f}s)")
    return points, (free[0] if free else None)
