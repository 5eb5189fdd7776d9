"""Cost of a budget sweep against one generation at the largest budget.

    python -m lab.bench.budget_sweep [--model PATH|RUN] [--problems 500] [--repeats 5]
        [--task pairsum|minimath] [--budgets 16,32,...] [--answer-max-tokens N]

Times, in one process on the same prompts and seed, interleaved `--repeats` times (median):
  * `generate`: one plain generation at the largest budget (the unit), timed just before and
    just after each sweep (their mean);
  * `sweep`: `core.budget.generate_sweep` + scoring of all budgets (what `lab budget` does);
  * `naive`: regenerate per budget (max_new_tokens = B), then force an answer for responses
    the budget cut, as a sweep without sharing would.
The forced answers themselves set a floor: each cut response needs a cue and a short answer at
each budget it is cut at, which on the embedded default's short reasoning is a sizeable share of
the generation's tokens (figures in docs/perf_log.md) and with the thousands of reasoning tokens
of real models a few percent.
Model: the newest SFT run's final checkpoint under --runs-dir, or --model; without one, a
randomly initialised embedded model, whose responses never end (every budget cuts every
response: the worst case for forcing). Last stdout line: JSON with `ratio` (sweep /
generate), `naive_ratio` (naive / generate) and `cpu_ratio` (the sweep's ratio in CPU seconds of
this process, steadier than wall time when other jobs share the cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

from core.budget import generate_sweep, sweep_curve
from core.config import BudgetConfig, TaskConfig
from core.sampling.hf import HFSampler
from core.sampling.protocol import derive_seed
from core.sampling.text import encode_prompts
from core.tasks import make_task
from lab.bench import pick_model


def _model(name: str | None, runs_dir: str, task: str) -> tuple[object, object, str]:
    from core.models import build_tiny_model, load_policy

    path = pick_model(name, runs_dir)
    if path is None:
        model, tok = build_tiny_model(task=task)
        return model, tok, "random embedded model"
    model, tok = load_policy(path)
    return model, tok, path


def _timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall seconds, CPU seconds of this process) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--problems", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--task", default="pairsum", help="pairsum or minimath (the MATH500 code path)")
    p.add_argument("--budgets", help="comma-separated budgets (default: the budget section's)")
    p.add_argument("--answer-max-tokens", type=int, help="token limit of a forced answer (default: the budget section's)")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    model, tok, label = _model(args.model, args.runs_dir, args.task)
    task = make_task(TaskConfig(name=args.task))
    problems = task.problems("heldout", args.problems)
    cfg = BudgetConfig(num_problems=args.problems)
    if args.answer_max_tokens:
        cfg = replace(cfg, answer_max_tokens=args.answer_max_tokens)
    if args.budgets:
        budgets = tuple(int(b) for b in args.budgets.split(","))
        cfg = replace(cfg, budgets=budgets, sampling=replace(cfg.sampling, max_new_tokens=max(budgets)))
    sampler = HFSampler(model, tok)
    prompts = encode_prompts(tok, [task.render_prompt(q) for q in problems])
    top = max(cfg.budgets)
    seed = derive_seed(cfg.seed, "budget")

    def generate() -> None:
        sampler.generate(prompts, replace(cfg.sampling, max_new_tokens=top), seed=seed)

    def sweep() -> None:
        sweep_curve(task, problems, generate_sweep(sampler, task, problems, cfg), cfg, "bench", tok)

    def naive() -> None:
        for b in cfg.budgets:  # one budget per call, no KV-cache forks: regenerate + force
            one = replace(cfg, budgets=(b,))
            sweep_curve(task, problems, generate_sweep(sampler, task, problems, one, fork=False),
                        one, "naive", tok)

    print(f"task {task.name}; model: {label}; {len(problems)} problems; budgets {list(cfg.budgets)}; "
          f"{args.threads} threads; {args.repeats} interleaved repeats")
    generate()  # warm-up
    # interleaved, so that load from other processes hits all three alike; each sweep is set
    # against the mean of the generations just before and after it, which cancels a drift of
    # the machine's speed within a run (seen here; docs/perf_log.md)
    runs = []
    for _ in range(args.repeats):
        before, s, after, n = _timed(generate), _timed(sweep), _timed(generate), _timed(naive)
        g = ((before[0] + after[0]) / 2, (before[1] + after[1]) / 2)
        runs.append((g, s, n))
    for k, ((g, gc), (s, sc), (n, nc)) in enumerate(runs):
        print(f"repeat {k}: generate {g:.2f} s (mean of the two around the sweep), sweep {s:.2f} s "
              f"({s / g:.2f}x), naive {n:.2f} s ({n / g:.2f}x); "
              f"CPU seconds {gc:.2f} / {sc:.2f} ({sc / gc:.2f}x) / {nc:.2f} ({nc / gc:.2f}x)")
    ratio = statistics.median(s[0] / g[0] for g, s, _ in runs)
    naive_ratio = statistics.median(n[0] / g[0] for g, _, n in runs)
    cpu_ratio = statistics.median(s[1] / g[1] for g, s, _ in runs)
    t_gen, t_sweep, t_naive = (statistics.median(x[0] for x in col) for col in zip(*runs))
    print(f"median: one generation at {top} tokens {t_gen:.2f} s; sweep over {len(cfg.budgets)} budgets "
          f"{ratio:.2f}x ({cpu_ratio:.2f}x in CPU seconds, which other jobs on the machine move less); "
          f"naive (regenerate per budget) {naive_ratio:.2f}x")
    print(json.dumps({"generate_s": t_gen, "sweep_s": t_sweep, "naive_s": t_naive,
                      "ratio": ratio, "naive_ratio": naive_ratio, "cpu_ratio": cpu_ratio,
                      "budgets": list(cfg.budgets), "problems": len(problems), "model": label,
                      "task": task.name}))

if __name__ == "__main__":
    main()
