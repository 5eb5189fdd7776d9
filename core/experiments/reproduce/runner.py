"""Running `lab reproduce`: every sub-run of the plan (a rerun of the same folder finishes what
is left), a partial report each time a seed completes, then the report.

With reproduce.workers = 1 the sub-runs run one after another in this process. With more,
each runs in a worker process (spawned: torch does not survive a fork well) as soon as the
sub-runs it needs have finished, at most `workers` at a time; this process alone writes the
ledger and the reports, and prints the workers' log lines, each prefixed by its sub-run.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from core.config import ReproduceJob
from core.experiments.reproduce.ledger import Ledger, build_report, finished_seeds, prepare
from core.experiments.reproduce.plan import SubRun, plan
from core.report.reproduce import write_report
from core.stages import Context, run_stage
from core.store import Run
from core.tasks import TaskError
from core.types import Say


def preflight(job: ReproduceJob, runs_dir: object = None) -> None:
    """Every sub-run's config validates (the K and penalty variants too)."""
    plan(job)


def _clock(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


_LINES: Any = None  # a worker process's queue of log lines to the parent


def _init_worker(lines: Any) -> None:
    global _LINES
    _LINES = lines


class _ToParent:
    """A worker's `say`: the line goes to the parent, which prints it."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, line: str) -> None:
        _LINES.put(f"  {self.key}: {line}")


def _run_sub(stage: str, cfg: Any, path: str, resumed: bool, runs_dir: str, progress: bool, say: Say) -> dict:
    """One prepared sub-run, in whichever process runs it; marks it complete."""
    run = Run(Path(path))
    out = run_stage(stage, cfg, run, Context(say, progress, Path(runs_dir), resumed))
    run.write_summary(out)
    return out


class _Inline:
    """Runs each submitted sub-run at once, in this process (reproduce.workers = 1)."""

    def submit(self, fn: Any, *args: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except Exception as e:  # noqa: BLE001 (handed to the scheduler, which raises it)
            f.set_exception(e)
        return f

    def shutdown(self, cancel_futures: bool = False) -> None:
        pass


def run(job: ReproduceJob, run: Run, ctx: Context) -> dict:
    """Run (or, on a rerun of the same folder, finish) every sub-run, then write the report."""
    say = ctx.say
    if job.task.name != "pairsum":
        raise TaskError("lab reproduce runs on the embedded task (task.name=pairsum)")
    p, ledger = plan(job), Ledger(run)
    todo = [s for s in p.subs if not ledger.done(s.key)]
    if len(todo) < len(p.subs):
        say(f"{len(p.subs) - len(todo)} of {len(p.subs)} sub-runs already finished: skipped")
    workers = min(job.reproduce.workers, max(len(todo), 1))
    t0, est_left = time.time(), sum(s.cost_s for s in todo)
    say(f"reproduce: {len(todo)} sub-runs to go, estimated {_clock(est_left / workers)} on an idle 2-core machine"
        + (f" ({workers} at a time)" if workers > 1 else ""))
    lines: Any = None
    if workers > 1:
        mp = multiprocessing.get_context("spawn")
        lines = mp.Queue()
        pool: Any = ProcessPoolExecutor(workers, mp_context=mp, initializer=_init_worker, initargs=(lines,))
    else:
        pool = _Inline()
    running: dict[Future, SubRun] = {}
    est_done, n_done = 0.0, 0

    def eta() -> str:
        rate = (time.time() - t0) / est_done if est_done > 60 else 1.0 / workers  # too little done to extrapolate
        return f"elapsed {_clock(time.time() - t0)}, ETA {_clock(rate * est_left)}"

    def drain() -> None:
        while lines is not None:
            try:
                say(lines.get_nowait())
            except queue.Empty:
                return

    try:
        pending = list(todo)
        while pending or running:
            for sub in list(pending):
                if len(running) >= workers:
                    break
                if not all(ledger.done(p.key(dep)) for dep in sub.needs.values()):
                    continue
                pending.remove(sub)
                say(f"start {sub.key} ({sub.stage}); {n_done} of {len(todo)} done, {eta()}")
                cfg, sub_run, resumed = prepare(sub, ledger)
                sub_say: Say = _quiet
                if ctx.progress:
                    sub_say = _ToParent(sub.key) if workers > 1 else (lambda m, k=sub.key: say(f"  {k}: {m}"))
                progress = ctx.progress and workers == 1  # bars of several processes would interleave
                running[pool.submit(_run_sub, sub.stage, cfg, str(sub_run.path), resumed, str(ledger.runs_dir),
                                    progress, sub_say)] = sub
            if not running:  # nothing can start: a dependency is neither done nor running
                raise RuntimeError(f"reproduce: {[s.key for s in pending]} wait on sub-runs that did not finish")
            finished: set[Future] = set()
            while not finished:
                finished, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                drain()
            for f in finished:
                sub = running.pop(f)
                out = f.result()  # a sub-run's error stops the experiment (the others finish first)
                n_done += 1
                est_done, est_left = est_done + sub.cost_s, est_left - sub.cost_s
                acc = f", held-out accuracy {out['eval/acc']:.1%}" if isinstance(out.get("eval/acc"), float) else ""
                say(f"[{n_done}/{len(todo)}] done {sub.key}{acc}, {eta()}")
                seeds = finished_seeds(job, p, ledger)
                if n_done < len(todo) and sub.seed in seeds:  # a seed just completed: a partial report meanwhile
                    write_report(run, build_report(job, p, ledger, seeds))
                    say(f"partial report over seeds {seeds}: {run.artifact_path('report.html')}")
    finally:
        pool.shutdown(cancel_futures=True)
        drain()
    report = build_report(job, p, ledger)
    write_report(run, report)
    say(f"report: {run.artifact_path('report.html')}")
    for c in report["claims"]:
        say(f"claim {c['id']} {c['claim']}: {c['verdict']} ({c['figure']})")
    return {"reproduced": {str(c["id"]): c["reproduced"] for c in report["claims"]},
            "verdicts": {str(c["id"]): c["verdict"] for c in report["claims"]},
            "report": str(run.artifact_path("report.html")), "time_s": time.time() - t0}


def _quiet(line: str) -> None:
    """A quiet (-q) sub-run's log lines."""
