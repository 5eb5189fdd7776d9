"""The math path end to end on one device, each phase timed: SFT -> RL -> budget sweep.

    python -m lab.bench.math_path [--device cuda] [--arch qwen2.5-0.5b|toy] [--out DIR]

The model is randomly initialised with the architecture and vocabulary size of Qwen2.5-0.5B
(896 wide, 24 layers, 14 query / 2 key-value heads, MLP 4,864, 151,936 token embeddings;
`--arch toy`: 2 layers of 64 for a CPU smoke run) and given the embedded math tokenizer, saved in
Hugging Face format. Then the lab's own commands run on `task.name=minimath`, which is the
MATH500 code path (LaTeX prompt template, `\\boxed{}` answers scored by math-verify in worker
processes, the `\\boxed{` forced-answer cue): SFT for a few steps on programmatic traces, T1 RL
for a few steps from the SFT model (K samples per prompt at temperature 1.2, EMA anchor,
penalties), and a budget sweep over the SFT model and the last RL checkpoint.

Printed per phase: seconds, peak GPU memory (torch's allocator, reset before each phase) and
tokens/s (SFT: trained tokens; RL: sampled tokens; budget: generated reasoning tokens). The
model is random, so accuracy means nothing here; the figures are cost. Last stdout line: JSON.
Every phase runs in this process, through `core.commands.run_command`, as `python -m lab` does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lab.bench import ARCHS, build_model

# (phase, sizes on a GPU, sizes for --arch toy)
SIZES = {
    "sft": ({"synth.num_problems": 512, "sft.max_steps": 8, "sft.batch_size": 32, "sft.micro_batch_size": 8,
             "sft.warmup_steps": 1, "sft.log_every": 1, "sft.max_seq_len": 400, "eval.num_problems": 64,
             "eval.sampling.max_new_tokens": 320},
            {"synth.num_problems": 64, "sft.max_steps": 2, "sft.batch_size": 8, "sft.micro_batch_size": 4,
             "sft.warmup_steps": 1, "sft.log_every": 1, "eval.num_problems": 8,
             "eval.sampling.max_new_tokens": 48}),
    "rl": ({"rl.steps": 3, "rl.prompts_per_step": 16, "rl.num_generations": 8, "rl.micro_batch_size": 16,
            "rl.sampling.max_new_tokens": 320, "rl.eval_every": 0, "rl.save_every": 3,
            "eval.num_problems": 64, "eval.sampling.max_new_tokens": 320},
           {"rl.steps": 2, "rl.prompts_per_step": 2, "rl.num_generations": 4, "rl.micro_batch_size": 8,
            "rl.warmup_steps": 1, "rl.sampling.max_new_tokens": 48, "rl.eval_every": 0, "rl.save_every": 2,
            "eval.num_problems": 8, "eval.sampling.max_new_tokens": 48}),
    "budget": ({"budget.budgets": (32, 64, 128, 320), "budget.num_problems": 128,
                "budget.sampling.max_new_tokens": 320, "budget.checkpoints": "0,1"},
               {"budget.budgets": (8, 16, 48), "budget.num_problems": 8, "budget.sampling.max_new_tokens": 48,
                "budget.checkpoints": "0,1"}),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--arch", default="qwen2.5-0.5b", choices=tuple(ARCHS))
    p.add_argument("--out", default="/tmp/math_path", help="runs folder of the phases")
    args = p.parse_args(argv)

    import torch

    from core.commands import run_command
    from core.models import pick_device

    device = pick_device(args.device)
    cuda = device == "cuda"
    toy = args.arch == "toy"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model_dir = build_model(ARCHS[args.arch], out / f"random-{args.arch}")
    figures: dict[str, Any] = {"arch": args.arch, "device": device, "build_s": time.perf_counter() - t0}
    if cuda:
        figures["gpu"] = torch.cuda.get_device_name(0)
    print(f"{args.arch} random model on {device}: {model_dir} (built in {figures['build_s']:.1f} s)")
    common = {"task.name": "minimath", "model.device": device}
    links = {"sft": {"model.name": str(model_dir)}}
    for phase in ("sft", "rl", "budget"):
        overrides = {**common, **SIZES[phase][1 if toy else 0], **links.get(phase, {})}
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        run, summary = run_command(phase, overrides, runs_dir=out, progress=False)
        seconds = time.perf_counter() - t
        metrics = run.metrics()
        figures[f"{phase}_s"] = seconds
        figures[f"{phase}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        figures[f"{phase}_tokens_per_s"] = tokens_per_s(phase, metrics, summary, run.path, seconds)
        print(f"== {phase}: {seconds:.1f} s, peak GPU memory "
              + (f"{figures[f'{phase}_peak_gib']:.2f} GiB" if cuda else "n/a (CPU)")
              + f", {figures[f'{phase}_tokens_per_s']:.0f} tokens/s ({run.path})")
        if phase == "sft":
            links["rl"] = {"rl.init": str(run.path)}
        elif phase == "rl":
            links["budget"] = {"model.name": str(run.path)}
            figures["rl_step_s"] = [m.get("time/sample_s", 0) + m.get("time/update_s", 0) for m in metrics
                                    if "reward/mean" in m]
    print(json.dumps(figures))


def tokens_per_s(phase: str, metrics: list[dict], summary: dict, path: Path, seconds: float) -> float:
    """SFT: trained tokens per second (its own figure); RL: sampled tokens per second of sampling;
    budget: tokens of the responses at the largest budget per second of the sweeps' generation."""
    if phase == "sft":
        rates = [m["perf/tokens_per_s"] for m in metrics if "perf/tokens_per_s" in m]
        return float(rates[-1]) if rates else 0.0
    if phase == "rl":
        steps = [m for m in metrics if "rollout/tokens" in m]
        sampled = sum(m["rollout/tokens"] for m in steps)
        return sampled / max(sum(m.get("time/sample_s", 0) for m in steps), 1e-9)
    used, generation_s = 0.0, 0.0
    for curve in sorted((path / "curves").glob("*.json")):
        data = json.loads(curve.read_text())
        points = data.get("points", [])
        if points:
            used += points[-1].get("mean_tokens_used", 0) * points[-1].get("n", 0)
            generation_s += data.get("generation_s", 0)
    return used / max(generation_s or seconds, 1e-9)


if __name__ == "__main__":
    main()
