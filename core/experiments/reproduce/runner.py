"""Running `lab reproduce`: every sub-run of the plan (a rerun of the same folder finishes what
is left), a partial report each time a seed completes, then the report."""

from __future__ import annotations

import time

from core.config import ReproduceJob
from core.experiments.reproduce.ledger import Ledger, build_report, execute, finished_seeds
from core.experiments.reproduce.plan import plan
from core.report.reproduce import write_report
from core.stages import Context
from core.store import Run
from core.tasks import TaskError


def preflight(job: ReproduceJob, runs_dir: object = None) -> None:
    """Every sub-run's config validates (the K and penalty variants too)."""
    plan(job)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def run(job: ReproduceJob, run: Run, ctx: Context) -> dict:
    """Run (or, on a rerun of the same folder, finish) every sub-run, then write the report."""
    say, progress = ctx.say, ctx.progress
    if job.task.name != "pairsum":
        raise TaskError("lab reproduce runs on the embedded task (task.name=pairsum)")
    p, ledger = plan(job), Ledger(run)
    todo = [s for s in p.subs if not ledger.done(s.key)]
    if len(todo) < len(p.subs):
        say(f"{len(p.subs) - len(todo)} of {len(p.subs)} sub-runs already finished: skipped")
    t0, est_left = time.time(), sum(s.cost_s for s in todo)
    say(f"reproduce: {len(todo)} sub-runs to go, estimated {_clock(est_left)} on an idle 2-core machine")
    est_done = 0.0
    for i, sub in enumerate(todo, 1):
        rate = (time.time() - t0) / est_done if est_done > 60 else 1.0  # too little done to extrapolate
        say(f"[{i}/{len(todo)}] start {sub.key} ({sub.stage}), elapsed {_clock(time.time() - t0)}, "
            f"ETA {_clock(rate * est_left)}")
        sub_say = (lambda m, k=sub.key: say(f"  {k}: {m}")) if progress else (lambda m: None)
        out = execute(sub, ledger, Context(sub_say, progress))
        est_done, est_left = est_done + sub.cost_s, est_left - sub.cost_s
        rate = (time.time() - t0) / est_done if est_done > 60 else 1.0
        acc = f", held-out accuracy {out['eval/acc']:.1%}" if isinstance(out.get("eval/acc"), float) else ""
        say(f"[{i}/{len(todo)}] done {sub.key}{acc}, elapsed {_clock(time.time() - t0)}, "
            f"ETA {_clock(rate * est_left)}")
        seeds = finished_seeds(job, p, ledger)
        if i < len(todo) and sub.seed in seeds:  # a seed just completed: a partial report meanwhile
            write_report(run, build_report(job, p, ledger, seeds))
            say(f"partial report over seeds {seeds}: {run.artifact_path('report.html')}")
    report = build_report(job, p, ledger)
    write_report(run, report)
    say(f"report: {run.artifact_path('report.html')}")
    for c in report["claims"]:
        say(f"claim {c['id']} {c['claim']}: {'reproduced' if c['reproduced'] else 'NOT reproduced'} ({c['figure']})")
    return {"reproduced": {str(c["id"]): c["reproduced"] for c in report["claims"]},
            "report": str(run.artifact_path("report.html")), "time_s": time.time() - t0}
