"""Dashboard load times on a large synthetic RL run (targets: Rollouts <= 0.5 s, Training <= 1 s).

    python -m lab.bench.app_load [--steps 200] [--rollouts 512] [--repeats 5] [--keep DIR]
    python -m lab.bench.app_load --math [--tokens 2000]   # math responses with per-token log-probs

`--math`: responses of `--tokens` tokens of math text (lines of the embedded math task's
traces, cut into tokens at word, digit and symbol boundaries as a BPE pre-tokenizer would), each
with its per-token log-probs stored as the RL loop stores them (`core.strip`: levels drawn
like a trained policy's, mostly confident); targets then <= 1 s for every page's data, and the
stored log-probs <= 50% of the samples folder (reported against the same rows without them).

Builds a run with `steps` RL steps of `rollouts` rollouts each (teacher traces of the embedded
task, some cut short as truncated) and one metrics line per step (plus an eval line every 10
steps) through core.store's writers, in a temp folder. Then times, with the dashboard's caches
cleared before every repeat, the loads the pages run:

    Rollouts page   the step's rollouts file, the steps list, the filters, the prompt table,
                    one prompt's samples and the step overview
    Training page   metrics.jsonl, its metric keys and the long frame of the default metrics
    Traces page     (no target, reported; with --math <= 1 s) the per-step structure chart over 40
                    of the steps and the structure of one step's responses

The files were just written, so the OS page cache is warm: this measures parsing and shaping,
not the disk. Prints the median of the repeats; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

from core.report.rollouts import strip_html, strip_pieces
from core.report.views import (
    DEFAULT_METRICS,
    filter_samples,
    filter_traces,
    metric_keys,
    metrics_long,
    prompt_samples,
    prompt_table,
    spread,
    step_overview,
    trace_features,
)
from core.store import Run, new_run
from core.strip import encode_strip
from core.synth.programmatic import synthesize
from core.tasks.pairsum import PairSumTask

TARGETS_S = {"rollouts_s": 0.5, "training_s": 1.0}
MATH_TARGETS_S = {"rollouts_s": 1.0, "training_s": 1.0, "traces_chart_s": 1.0}
STRIP_SHARE_TARGET = 0.5
_PIECE = re.compile(r" ?[A-Za-z]+| ?\d|\s+|[^\w\s]")


def math_rows(rng: random.Random, group: int, prompts: int, tokens: int, step: int) -> tuple[list[dict], int]:
    """`prompts` x `group` rollout rows of ~`tokens`-token math responses with stored log-probs;
    also the bytes those rows take without them."""
    from core.tasks.minimath import tokenizer_corpus

    lines = math_rows.corpus if hasattr(math_rows, "corpus") else tokenizer_corpus()
    math_rows.corpus = lines  # type: ignore[attr-defined]
    rows, plain = [], 0
    for g in range(prompts):
        question = lines[(step * prompts + g) % len(lines)]
        for s in range(group):
            pieces: list[str] = []
            while len(pieces) < tokens:
                pieces += _PIECE.findall(lines[rng.randrange(len(lines))] + "\n")
            pieces = pieces[:tokens]
            u = [rng.random() for _ in pieces]  # a trained policy: mostly confident tokens
            lps = [-0.02 * x if x < 0.6 else -rng.uniform(0.05, 1.0) if x < 0.85 else -rng.uniform(1.0, 8.0) for x in u]
            row = {"problem_id": f"m{step}-{g}", "question": question, "sample": s, "response": "".join(pieces),
                   "num_tokens": len(pieces), "finish_reason": "length", "correct": rng.random() < 0.5,
                   "overlong": False, "repetitive": False, "garbled": False, "reward": float(rng.random() < 0.5),
                   "advantage": rng.gauss(0, 1), "used": True, "kept": True}
            plain += len(json.dumps(row)) + 1
            row["tokens"] = encode_strip(lps, [len(p) for p in pieces])
            rows.append(row)
    return rows, plain


def build_run(runs_dir: Path, steps: int, rollouts: int, group: int = 8, math_tokens: int = 0) -> tuple[Run, int]:
    """An RL run folder with `steps` x `rollouts` rollout rows and one metrics line per step
    (`math_tokens`: math responses of that many tokens with their log-probs); also the bytes of
    the math rows without their log-probs (0 for pairsum)."""
    task = PairSumTask()
    problems = task.problems("train", rollouts // group * 4)
    traces = list(synthesize(problems, "t1", 0.85, 0.15, seed=0))
    rng = random.Random(0)
    name = "minimath" if math_tokens else "pairsum"
    run = new_run(runs_dir, "rl", {"task": {"name": name}, "rl": {"num_generations": group}})
    plain = 0
    for step in range(1, steps + 1):
        if math_tokens:
            rows, size = math_rows(rng, group, rollouts // group, math_tokens, step)
            plain += size
            run.append_samples(step, rows)
            run.log_metrics(_metrics_line(step, rng))
            continue
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
    return run, plain


def _metrics_line(step: int, rng: random.Random) -> dict:
    keys = ["reward/mean", "rollout/acc", "rollout/len_mean", "rollout/truncated_frac", "loss/entropy",
            "loss/policy", "kl/anchor", "penalty/overlong", "select/kept", "optim/grad_norm", "optim/lr",
            "time/sample_s", "time/reward_s", "time/advantages_s", "time/update_s", "time/anchor_s",
            # the per-step structure of the responses, as the RL loop logs it for the Traces chart
            "trace/failed_then_fixed_frac", "trace/reflection_frac", "trace/verified_frac",
            "trace/reflection_words_mean"]
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
    for row in prompt_samples(shown, table[0]["problem_id"]):  # the cards, token strips drawn
        pieces = strip_pieces(row)
        if pieces is not None:
            strip_html(pieces)
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
    """Cold-cache seconds of the Traces page: its per-step chart over `k` evenly spread steps
    (from the logged metrics) and the structure of the last step's responses (parsed)."""
    from app.common import clear_caches, load_sample_steps, load_samples, load_trace_stats

    clear_caches()
    t0 = time.perf_counter()
    task = run.setting("task.name")
    steps = load_sample_steps(run)
    load_trace_stats(run, spread(steps, k), task)
    for row in filter_traces(load_samples(run, steps[-1]), task)[:2000]:
        trace_features(row, task)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rollouts", type=int, default=512, help="rollouts per step")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--keep", type=Path, help="build the run here and keep it (default: a temp dir)")
    p.add_argument("--math", action="store_true", help="math responses with per-token log-probs")
    p.add_argument("--tokens", type=int, default=2000, help="tokens per math response (with --math)")
    args = p.parse_args(argv)
    from streamlit.logger import set_log_level

    set_log_level(logging.ERROR)  # outside `streamlit run` every cached call warns "no runtime"

    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.keep or Path(tmp)
        t0 = time.perf_counter()
        run, plain = build_run(runs_dir, args.steps, args.rollouts, math_tokens=args.tokens if args.math else 0)
        samples = sum(f.stat().st_size for f in run.samples_dir.rglob("*") if f.is_file())
        size_mb = sum(f.stat().st_size for f in run.path.rglob("*") if f.is_file()) / 1e6
        print(f"built {run.path}: {args.steps} steps x {args.rollouts} rollouts"
              + (f" of {args.tokens} tokens" if args.math else "") + f", {size_mb:.0f} MB, "
              f"{time.perf_counter() - t0:.1f} s")
        step = args.steps // 2
        out = {"rollouts_s": statistics.median(time_rollouts(run, step) for _ in range(args.repeats)),
               "training_s": statistics.median(time_training(run) for _ in range(args.repeats))}
        traces_s = time_traces(run)
    targets = MATH_TARGETS_S if args.math else TARGETS_S
    print(f"traces page (chart over 40 steps, {args.rollouts} responses parsed): {traces_s:.2f} s"
          + (f" (target <= {targets['traces_chart_s']} s)" if "traces_chart_s" in targets else ""))
    for key, value in out.items():
        verdict = "ok" if value <= targets[key] else "SLOWER than target"
        print(f"{key}: {value:.3f} s (target <= {targets[key]} s, median of {args.repeats} cold loads) {verdict}")
    extra = {}
    if args.math:
        share = samples / plain - 1
        extra = {"strip_share": share, "samples_mb": samples / 1e6, "samples_without_strips_mb": plain / 1e6}
        print(f"samples folder {samples / 1e6:.0f} MB, {plain / 1e6:.0f} MB without the per-token log-probs: "
              f"+{share:.1%} (target <= {STRIP_SHARE_TARGET:.0%}) {'ok' if share <= STRIP_SHARE_TARGET else 'OVER'}")
    print(json.dumps({**out, "traces_chart_s": traces_s, "steps": args.steps,
                      "rollouts_per_step": args.rollouts, **extra}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
