"""RL throughput on 1 and 2 ranks (torchrun), and the cost of FSDP2 on one GPU.

    python -m lab.bench.scaling [--steps 8] [--init RUN] [--runs-dir DIR] [--device cpu|cuda]
                                [key=value ...]

Each configuration is `python -m lab rl` as a user starts it (under `python -m
torch.distributed.run --standalone` for the torchrun ones), from the same policy: --init, else
the newest complete SFT run under --runs-dir (default runs/), else a short SFT made here
(sft.max_steps=300). RL runs `--steps` steps of the default recipe (`key=value` overrides on
top), evaluating 20 held-out problems at the start and the end only; every configuration draws
the same prompts and, keyed draws, the same samples (`core.sampling.draws`).

Throughput is samples drawn (prompts_per_step x samples per prompt) per wall second over the
steps after the first, read from the wall_time of each step's metrics line (the start-up,
evaluations and checkpoint are outside it).

CPU (default): one process with 1 thread; one process with 2 threads; 2 ranks x 1 thread
(data parallel over gloo); 2 ranks x 1 thread with FSDP2 (model.fsdp=true). Scaling efficiency
= samples/s of 2 ranks / (2 x samples/s of 1 rank), each rank with one thread (a rank's work
halves; the step waits for the slower rank and for the all-reduce).
`--device cuda`: one process on one GPU against torchrun with one rank and model.fsdp=true on
it (FSDP2's overhead: the all-gathers and reduce-scatters of one rank, the replica refresh).

Prints one line per configuration and, last, JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lab(args: list[str], ranks: int = 0, threads: int = 0) -> None:
    """`python -m lab ARGS`; under torchrun with `ranks` processes when ranks >= 1."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = (launcher if ranks else [sys.executable]) + ["-m", "lab", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{out.stderr[-3000:]}")


def samples_per_s(run: Path) -> tuple[float, float]:
    """(samples drawn per second, seconds per step) over the steps after the first."""
    from core.store import Run

    steps = [m for m in Run(run).metrics() if "reward/mean" in m]
    if len(steps) < 3:
        raise SystemExit(f"error: {run}: fewer than 3 steps logged")
    drawn = sum(m["oversample/drawn"] for m in steps[1:])
    seconds = steps[-1]["wall_time"] - steps[0]["wall_time"]
    return drawn / seconds, seconds / (len(steps) - 1)


def start_policy(args: argparse.Namespace, runs: Path) -> str:
    if args.init:
        return args.init
    from core.store import find_runs

    found = find_runs(args.runs_dir, stage="sft", status="complete", with_checkpoint=True)
    if found:
        return str(found[0].path)
    print("no complete SFT run: a short one first (sft.max_steps=300)", flush=True)
    lab(["sft", "sft.max_steps=300", "eval.num_problems=20", "--runs-dir", str(runs), "--run-id", "sft", "-q"])
    return str(runs / "sft")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--init", help="the policy RL starts from (a run or checkpoint); default: see above")
    p.add_argument("--runs-dir", default="runs", help="where to look for an SFT run")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("overrides", nargs="*", help="key=value settings for every RL run")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        init = start_policy(args, runs)
        base = ["rl", f"rl.init={init}", f"rl.steps={args.steps}", "rl.eval_every=0", "rl.save_every=0",
                "eval.num_problems=20", f"model.device={args.device}", *args.overrides, "--runs-dir", str(runs), "-q"]
        if args.device == "cpu":
            configs = {"1 rank x 1 thread": ([*base, "model.threads=1"], 0, 1),
                       "1 rank x 2 threads": ([*base, "model.threads=2"], 0, 2),
                       "2 ranks x 1 thread": ([*base, "model.threads=1"], 2, 1),
                       "2 ranks x 1 thread, FSDP2": ([*base, "model.threads=1", "model.fsdp=true"], 2, 1)}
        else:
            configs = {"1 GPU": (base, 0, 0), "1 GPU, torchrun + FSDP2": ([*base, "model.fsdp=true"], 1, 0)}
        figures = {}
        for i, (name, (cmd, ranks, threads)) in enumerate(configs.items()):
            lab([*cmd, "--run-id", f"c{i}"], ranks, threads)
            rate, step_s = samples_per_s(runs / f"c{i}")
            figures[name] = {"samples_per_s": rate, "step_s": step_s}
            print(f"{name:>28}: {rate:7.1f} samples/s ({step_s:.2f} s/step)", flush=True)
    out: dict = {"device": args.device, "steps": args.steps, "init": init, "configs": figures}
    if args.device == "cpu":
        one, two = figures["1 rank x 1 thread"]["samples_per_s"], figures["2 ranks x 1 thread"]["samples_per_s"]
        out["efficiency_2_ranks"] = two / (2 * one)
        out["fsdp2_vs_data_parallel"] = figures["2 ranks x 1 thread, FSDP2"]["samples_per_s"] / two
        print(f"scaling efficiency, 2 ranks against 1 (1 thread each): {out['efficiency_2_ranks']:.1%}; "
              f"FSDP2 against data parallel on 2 ranks: {out['fsdp2_vs_data_parallel']:.2f}x")
    else:
        out["fsdp2_overhead"] = 1 - figures["1 GPU, torchrun + FSDP2"]["samples_per_s"] / figures["1 GPU"]["samples_per_s"]
        print(f"FSDP2 overhead on one GPU: {out['fsdp2_overhead']:.1%} (target <= 5%)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
