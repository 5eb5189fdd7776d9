"""`python -m lab synth` with teacher.models (LLM teachers) or teacher.dataset (public data).

Kept traces go to the run's traces (what `lab sft sft.data=RUN` trains on); rejected and
failed problems go to the rejected rows next to them, so a rerun (`--resume RUN`) knows what
is done and `lab sft` never sees them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from core.config import SynthJob
from core.store import Run
from core.tasks.base import TaskError

Say = Callable[[str], None]
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


def training_problems(source: str, limit: int) -> list:
    """Problems to synthesize for: a local .jsonl or a hub id of TRAINING problems (for
    example a MATH train split). The evaluation benchmarks by short name are refused."""
    from core.tasks.math import BENCHMARKS, MathTask

    if source in BENCHMARKS or source == "pairsum":
        raise TaskError(
            f"task.name={source} is an evaluation set (or the embedded task): give the teacher "
            "training problems as a local .jsonl or a hub id (e.g. a MATH train split)"
        )
    return MathTask(source, heldout_only=False).problems("train", limit or None)


def run_teacher_synth(job: SynthJob, run: Run, say: Say, progress: bool = True,
                      runs_dir: str | Path = "runs") -> dict:
    """LLM-teacher synthesis (resumable) or the import of public SFT data."""
    t0 = time.time()
    if job.teacher.dataset:
        return import_public(job, run, say, t0)
    from core.tasks.math import MathTask
    from core.teacher.pipeline import run_teacher
    from core.teacher.teachers import open_teachers

    t = job.teacher
    problems = training_problems(job.task.name, job.synth.num_problems)
    task = MathTask(job.task.name, heldout_only=False)
    say(f"teacher synthesis on {len(problems)} problems of {job.task.name}: {t.num_attempts} attempts "
        f"each from {', '.join(t.models)}; critic {t.critic or t.models[0]}; keep problems solved "
        f"<= {t.max_solved_frac:.0%}; merge={t.merge}, rewrite={t.rewrite}")
    teachers, critic = open_teachers(t, str(runs_dir))
    sink = RunSink(run)
    out = run_teacher(problems, task, teachers, critic, t, sink, seed=job.synth.seed,
                      progress=progress)
    out["synth/num_traces"] = out["synth/kept"]
    out["time_s"] = time.time() - t0
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
    from core.teacher.public import load_public_traces

    if run.traces_path.exists():
        run.traces_path.unlink()  # an import is one write; a rerun redoes it whole
    rows = load_public_traces(job.teacher.dataset, limit=job.synth.num_problems)
    run.append_traces(rows)
    no_gold = sum(not r["answer"] for r in rows)
    say(f"imported {len(rows)} traces from {job.teacher.dataset} into {run.traces_path}"
        + (f" ({no_gold} without a gold answer)" if no_gold else ""))
    return {"synth/num_traces": len(rows), "synth/without_answer": no_gold,
            "time_s": time.time() - t0}
