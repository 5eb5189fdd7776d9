"""`python -m lab synth`: training traces from the programmatic teacher (embedded task), LLM
teachers (teacher.models: T1's attempts -> critiques -> merge -> rewrite) or public data
(teacher.dataset).

Kept traces go to the run's traces (what `lab sft sft.data=RUN` trains on); rejected and
failed problems go to the rejected rows next to them, so a rerun (`--resume RUN`) knows what
is done and `lab sft` never sees them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from core.config import SynthJob, TaskConfig
from core.stages.common import Context, Say, check_backends, check_model, check_task
from core.store import Run
from core.synth import minimath as minimath_synth
from core.synth.programmatic import synthesize
from core.synth.teacher.http import is_http_spec
from core.synth.teacher.pipeline import run_teacher
from core.synth.teacher.public import load_public_traces
from core.synth.teacher.teachers import open_teachers
from core.tasks import GENERATED, TaskError, make_task, task_problems
from core.tasks import minimath as minimath_task
from core.tasks.math import MathTask, refuse_training_on


def preflight(job: SynthJob, runs_dir: Path | str) -> None:
    """Teacher models and a local public data file must exist, the task must load."""
    check_backends(job.teacher.sampling)
    if job.teacher.dataset and Path(job.teacher.dataset).suffix:
        load_public_traces(job.teacher.dataset, limit=1)
    for spec in (*job.teacher.models, job.teacher.critic):
        if spec and not is_http_spec(spec):
            check_model(spec, runs_dir)
    check_task(job.task, "train" if job.teacher.models else None)


def run(job: SynthJob, run: Run, ctx: Context) -> dict:
    """Write T1-shaped (or plain) traces for the task's training problems. A rerun on the same
    run (--resume) skips problems that already have a trace."""
    if job.teacher.models or job.teacher.dataset:
        return run_teacher_synth(job, run, ctx)
    if job.task.name not in ("pairsum", minimath_task.NAME):
        raise TaskError("the programmatic teacher only knows the embedded tasks (task.name=pairsum or minimath); "
                        "for a math data set name LLM teachers: teacher.models=MODEL_OR_URL[,...]")
    t0, say = time.time(), ctx.say
    task = make_task(job.task)
    problems = task_problems(task, "train", job.synth.num_problems)
    if (copies := -(-job.synth.num_problems // len(problems))) > 1:  # a small problem space
        say(f"the training split has {len(problems)} problems: up to {copies} traces each, each its own search")
        problems = [p if k == 0 else replace(p, id=f"{p.id}#{k}") for k in range(copies)
                    for p in problems][: job.synth.num_problems]
    s = job.synth
    say(f"synthesizing {len(problems)} {s.style} traces (guided_prob={s.guided_prob}, slip_prob={s.slip_prob})")
    if ctx.resume and (torn := run.repair_jsonl(run.traces_path)):
        say(f"dropped {torn} torn line(s) from {run.traces_path} (a crash mid-write); their problems are redone")
    done = {t.get("problem_id") for t in run.traces()}
    batch: list[dict] = []
    if job.task.name == minimath_task.NAME:
        traces_of = minimath_synth.synthesize(problems, s.style, s.guided_prob, s.slip_prob, s.seed, job.task.x_max)
    else:
        traces_of = synthesize(problems, s.style, s.guided_prob, s.slip_prob, s.seed)
    for trace in tqdm(traces_of,
                      total=len(problems), desc="synth", unit="trace", disable=not ctx.progress):
        if trace["problem_id"] in done:
            continue
        batch.append(trace)
        if len(batch) >= 2000:
            run.append_traces(batch)
            batch = []
    run.append_traces(batch)
    traces = run.traces()  # the whole file: a resumed run's figures cover what earlier attempts wrote
    out = {"synth/num_traces": len(traces),
           "synth/with_failed_attempt_frac": sum(t["num_failed"] > 0 for t in traces) / max(len(traces), 1),
           "synth/slips": sum(t["num_slips"] for t in traces), "time_s": time.time() - t0}
    say(f"wrote {len(problems)} traces to {run.traces_path} ({out['synth/with_failed_attempt_frac']:.0%} "
        "contain a failed attempt)")
    return out


class RunSink:
    """Kept rows -> run.append_traces; other rows -> synth/rejected.jsonl. Both appended
    (one write + fsync per problem), so a killed run loses at most the problem in flight."""

    def __init__(self, run: Run):
        self.run = run

    def write(self, row: dict) -> None:
        if row.get("status") == "kept":
            self.run.append_traces([row])
        else:
            self.run.append_rejected([row])

    def rows(self) -> list[dict]:
        return self.run.traces() + self.run.rejected()

    def rejected(self) -> list[dict]:
        return self.run.rejected()


def training_problems(cfg: TaskConfig, limit: int) -> list:
    """Problems to synthesize for: a training set (a local .jsonl/.parquet, a hub id, e.g.
    math_train), decontaminated. Evaluation sets and the embedded tasks are refused."""
    if cfg.name in GENERATED:
        raise TaskError(f"task.name={cfg.name} is an embedded task: its programmatic teacher needs no teacher.models")
    refuse_training_on(cfg.name)
    return MathTask(cfg.name, eval_only=cfg.eval_only, decontaminate=cfg.decontaminate).problems("train", limit or None)


def run_teacher_synth(job: SynthJob, run: Run, ctx: Context) -> dict:
    """LLM-teacher synthesis (resumable) or the import of public SFT data."""
    t0, say = time.time(), ctx.say
    if job.teacher.dataset:
        return import_public(job, run, say, t0)
    for path in (run.traces_path, run.rejected_path) if ctx.resume else ():
        if torn := run.repair_jsonl(path):
            say(f"dropped {torn} torn line(s) from {path} (a crash mid-write); their problems are redone")
    t = job.teacher
    problems = training_problems(job.task, job.synth.num_problems)
    task = MathTask(job.task.name, heldout_only=False)
    say(f"teacher synthesis on {len(problems)} problems of {job.task.name}: {t.num_attempts} attempts "
        f"each from {', '.join(t.models)}; critic {t.critic or t.models[0]}; keep problems solved "
        f"<= {t.max_solved_frac:.0%}; merge={t.merge}, rewrite={t.rewrite}")
    teachers, critic = open_teachers(t, str(ctx.runs_dir))
    sink = RunSink(run)
    out = run_teacher(problems, task, teachers, critic, t, sink, seed=job.synth.seed,
                      progress=ctx.progress)
    out["synth/num_traces"] = out["synth/kept"]
    out["time_s"] = time.time() - t0
    if out["synth/kept"] == 0 and out["synth/error"] == len(problems):
        first = next((r.get("error") for r in run.rejected() if r.get("status") == "error"), "")
        raise TaskError(f"every problem failed with a teacher error, nothing was kept (the first: {first}); "
                        f"check teacher.models, then continue with --resume {run.path}")
    if out["synth/resumed"]:
        say(f"resumed: {out['synth/resumed']} problems were already done")
    removed = ", ".join(f"{k.split('/')[1]} {out[k]}" for k in
                        ("synth/too_easy", "synth/too_hard", "synth/unverified", "synth/too_long",
                         "synth/duplicate"))
    say(f"kept {out['synth/kept']} of {len(problems)} problems ({removed}; teacher errors "
        f"{out['synth/error']}); {out['synth/teacher_tokens']} teacher tokens at "
        f"{out['synth/teacher_tokens_per_s']:.0f} tok/s; traces in {run.traces_path}")
    return out


def import_public(job: SynthJob, run: Run, say: Say, t0: float) -> dict:
    """teacher.dataset: public SFT rows (THUDM/T1 or a local file) into the run's traces."""
    if run.traces_path.exists():
        run.traces_path.unlink()  # an import is one write; a rerun redoes it whole
    rows = load_public_traces(job.teacher.dataset, limit=job.synth.num_problems)
    run.append_traces(rows)
    no_gold = sum(not r["answer"] for r in rows)
    say(f"imported {len(rows)} traces from {job.teacher.dataset} into {run.traces_path}"
        + (f" ({no_gold} without a gold answer)" if no_gold else ""))
    return {"synth/num_traces": len(rows), "synth/without_answer": no_gold,
            "time_s": time.time() - t0}
