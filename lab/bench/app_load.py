"""Dashboard load times on a large synthetic RL run (targets: Rollouts <= 0.5 s, Training <= 1 s).

    python -m lab.bench.app_load [--steps 200] [--rollouts 512] [--repeats 5] [--keep DIR]

Builds a run with `steps` RL steps of `rollouts` rollouts each (teacher traces of the embedded
task, some cut short as truncated) and one metrics line per step (plus an eval line every 10
steps) through core.store's writers, in a temp folder. Then times, with the dashboard's caches
cleared before every repeat, the loads the pages run:

    Rollouts page   the step's rollouts file, the steps list, the filters, the prompt table,
                    one prompt's samples and the step overview
    Training page   metrics.jsonl, its metric keys and the long frame of the default metrics
    Traces page     (no target, reported) the per-step structure chart over 40 of the steps

The files were just written, so the OS page cache is warm: this measures parsing and shaping,
not the disk. Prints the median of the repeats; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

from core.report.views import (
    DEFAULT_METRICS,
    filter_samples,
    metric_keys,
    metrics_long,
    prompt_samples,
    prompt_table,
    spread,
    step_overview,
)
from core.store import Run, new_run
from core.synth.programmatic import synthesize
from core.tasks.pairsum import PairSumTask

TARGETS_S = {"rollouts_s": 0.5, "training_s": 1.0}


def build_run(runs_dir: Path, steps: int, rollouts: int, group: int = 8) -> Run:
    """An RL run folder with `steps` x `rollouts` rollout rows and one metrics line per step."""
    task = PairSumTask()
    problems = task.problems("train", rollouts // group * 4)
    traces = list(synthesize(problems, "t1", 0.85, 0.15, seed=0))
    rng = random.Random(0)
    run = new_run(runs_dir, "rl", {"task": {"name": "pairsum"}, "rl": {"num_generations": group}})
    for step in range(1, steps + 1):
        start = (step * (rollouts // group)) % (len(problems) - rollouts // group)
        rows = []
        for g in range(rollouts // group):
            p, t = problems[start + g], traces[start + g]
            for s in range(group):
                cut = rng.random() < 0.2
                text = t["response"][: rng.randint(20, 60)] if cut else t["response"]
                correct = not cut
                rows.append({"problem_id": p.id, "question": p.question, "sample": s, "response": text,
                             "num_tokens": len(text.split()), "finish_reason": "length" if cut else "stop",
                             "correct": correct, "overlong": cut, "repetitive": False, "garbled": False,
                             "reward": 1.0 if correct else -1.0 if cut else 0.0,
                             "advantage": rng.gauss(0, 1), "used": True, "kept": rng.random() < 0.9})
        run.append_samples(step, rows)
        run.log_metrics(_metrics_line(step, rng))
        if step % 10 == 0:
            run.log_metrics({"step": step, "eval/acc": rng.random(), "eval/len_mean": 70.0})
    return run


def _metrics_line(step: int, rng: random.Random) -> dict:
    keys = ["reward/mean", "rollout/acc", "rollout/len_mean", "rollout/truncated_frac", "loss/entropy",
            "loss/policy", "kl/anchor", "penalty/overlong", "select/kept", "optim/grad_norm", "optim/lr",
            "time/sample_s", "time/reward_s", "time/advantages_s", "time/update_s", "time/anchor_s"]
    return {"step": step, **{k: rng.random() for k in keys}}


def time_rollouts(run: Run, step: int) -> float:
    """Cold-cache seconds of the Rollouts page's loads for one step."""
    from app.common import clear_caches, load_sample_steps, load_samples

    clear_caches()
    t0 = time.perf_counter()
    steps = load_sample_steps(run)
    rows = load_samples(run, steps[steps.index(step)])
    shown = filter_samples(rows, (), "")
    table = prompt_table(shown)
    prompt_samples(shown, table[0]["problem_id"])
    step_overview(rows)
    return time.perf_counter() - t0


def time_training(run: Run) -> float:
    """Cold-cache seconds of the Training page's loads for one run."""
    from app.common import clear_caches, load_metrics

    clear_caches()
    t0 = time.perf_counter()
    rows = load_metrics(run)
    keys = metric_keys(rows)
    metrics_long({run.id: rows}, [k for k in DEFAULT_METRICS if k in keys])
    return time.perf_counter() - t0


def time_traces(run: Run, k: int = 40) -> float:
    """Cold-cache seconds of the Traces page's per-step chart over `k` evenly spread steps."""
    from app.common import clear_caches, load_sample_steps, load_trace_stats

    clear_caches()
    t0 = time.perf_counter()
    load_trace_stats(run, spread(load_sample_steps(run), k), "pairsum")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rollouts", type=int, default=512, help="rollouts per step")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--keep", type=Path, help="build the run here and keep it (default: a temp dir)")
    args = p.parse_args(argv)
    from streamlit.logger import set_log_level

    set_log_level(logging.ERROR)  # outside `streamlit run` every cached call warns "no runtime"

    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.keep or Path(tmp)
        t0 = time.perf_counter()
        run = build_run(runs_dir, args.steps, args.rollouts)
        size_mb = sum(f.stat().st_size for f in run.path.rglob("*") if f.is_file()) / 1e6
        print(f"built {run.path}: {args.steps} steps x {args.rollouts} rollouts, {size_mb:.0f} MB, "
              f"{time.perf_counter() - t0:.1f} s")
        step = args.steps // 2
        out = {"rollouts_s": statistics.median(time_rollouts(run, step) for _ in range(args.repeats)),
               "training_s": statistics.median(time_training(run) for _ in range(args.repeats))}
        traces_s = time_traces(run)
    print(f"traces page per-step chart (40 steps x {args.rollouts} responses): {traces_s:.2f} s")
    for key, value in out.items():
        verdict = "ok" if value <= TARGETS_S[key] else "SLOWER than target"
        print(f"{key}: {value:.3f} s (target <= {TARGETS_S[key]} s, median of {args.repeats} cold loads) {verdict}")
    print(json.dumps({**out, "traces_chart_s": traces_s, "steps": args.steps,
                      "rollouts_per_step": args.rollouts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
