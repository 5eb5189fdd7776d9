"""RL step throughput: this lab's `core.rl.trainer.Trainer` against TRL's `GRPOTrainer`.

    python -m lab.bench.rl_step [--steps 5] [--prompts 16] [--k 8] [--max-new-tokens 128]
                                [--model PATH | --random-init] [--fp32] [--threads N]
                                [--pass-tokens N] [--trl-pass-rows N] [--device cpu|cuda]

Defaults are those of `python -m lab rl` on the embedded task: its prompts per step, group size
and token limit, starting from the newest SFT run under --runs-dir (the policy RL starts from,
whose responses end at varied lengths). Without an SFT run, or with --random-init, the
randomly initialised embedded model is used: its responses never end, every sample runs to the
token limit, the worst case for this trainer (it gains nothing from dropping finished rows).

Both trainers run in this one process on the same CPU threads (`--threads`, default torch's),
step by step in turn: one step of ours follows each TRL step (a TRL callback runs it), so
load from other jobs that comes and goes during the run slows both alike. Each does one untimed
warm-up step and then `--steps` timed steps; TRL's time runs from the end of its warm-up step
to the end of its last step, less the steps of ours in between. A step is one generation batch
and one optimizer step: `prompts` prompts x K samples, rewarded, then forward/backward passes
over all prompts * K sequences. Samples per second is steps * prompts * K / wall seconds of the
timed steps; the same per CPU second of this process (`time.process_time`) is reported too, as
it moves much less when other jobs share the cores.

Held equal:
  * weights: the SFT checkpoint, `--model PATH`, or the embedded tiny Qwen2 (`build_tiny_model()`,
    default TinySpec, seed 0) saved in HF format to a temporary folder; both load it with
    `load_policy` (fp32 weights, eager attention), and TRL gets the same tokenizer object;
  * prompts: PairSumTask train problems rendered with `task.render_prompt`;
  * group size K (TRL `num_generations`) and prompts per step: one generation batch of
    prompts * K completions feeds exactly one optimizer step on both. The forward/backward
    passes over it: ours `micro_batch_size` = prompts * K with its default `rl.pass_tokens`
    (on CPU, length-sorted passes of at most 4096 tokens, about 32 rollouts; `--pass-tokens 0`
    for one pass); TRL `per_device_train_batch_size` = `--trl-pass-rows` (default 32, 0 = all
    prompts * K) with `gradient_accumulation_steps` = `steps_per_generation` = the rest (its
    reference pass uses the same chunks);
  * token limit (TRL `max_completion_length`), temperature 1.2, top-p 1, no top-k;
  * reward: 1.0 if `task.check_one` says correct, else 0.0 (our -1 penalties are off; TRL's
    reward function maps each completion back to its problem through a dataset column);
  * reference model and KL: ours keeps its default EMA anchor (rate 0.99) with beta 2e-4, so
    it runs a reference forward pass and an EMA update every step. TRL gets beta=2e-4 (which
    loads a reference model and runs its forward pass) and `sync_ref_model=True`,
    `ref_model_mixup_alpha=0.01`, `ref_model_sync_steps=1`, which is the same EMA update;
  * entropy bonus 0.001 on both (full-vocabulary entropy with gradient);
  * optimizer: AdamW lr 2e-4, betas (0.9, 0.99), no weight decay, grad-norm clip 1.0, 5
    warm-up steps then cosine;
  * precision of the training forward/backward: bf16 autocast on both (the default of each;
    TRL needs `use_cpu=True` for it), or fp32 on both with `--fp32`;
  * no gradient checkpointing (TRL turns it on by default; ours has none), no vLLM, no
    logging, saving or reporting in TRL.

Not equal (kept as each library does it): advantages (ours RLOO; TRL group mean with
`scale_rewards="none"`, i.e. the same centring up to a factor K/(K-1)); the sampling policy's
log-probs (needed for the KL to the reference): ours takes them from the sampler, which
computes them while decoding, TRL uses those of its training forward pass (both skip a separate
old-policy pass; TRL's training forward also covers the prompt tokens' logits, ours starts at
the first response token); TRL's `model.generate` keeps finished rows in the batch, ours drops
them, and decodes Qwen2 models with its own forward pass (`core.sampling.hf.decoder`: fused
projections, KV cache written in place) where TRL calls `model.generate`; TRL generates under
its bf16 autocast wrapper, ours samples in fp32 (bf16 decoding of this tiny model is slower on CPU).

`--device cuda` runs both on a GPU (TRL with `use_cpu=False`, SDPA attention for both, the
clock synchronised with the device at each step end).

The last stdout line is one JSON object with `ours_samples_per_s`, `trl_samples_per_s` and
`ratio` (ours / TRL). Needs TRL: `pip install -e ".[bench]"`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.tasks.pairsum import PairSumTask
from core.types import Problem
from lab.bench import pick_model

TEMPERATURE = 1.2
BETA = 2e-4
ANCHOR_RATE = 0.99  # ours: anchor <- 0.99 * anchor + 0.01 * policy
ENTROPY_COEF = 0.001
LR = 2e-4
WARMUP_STEPS = 5
NUM_PROBLEMS = 1024
SEED = 0


@dataclass
class Result:
    """Timings of one trainer."""

    name: str
    seconds: float
    cpu_seconds: float
    samples: int
    mean_len: float | None
    reward_mean: float | None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds

    @property
    def samples_per_cpu_s(self) -> float:
        return self.samples / self.cpu_seconds


def make_model_dir(folder: Path) -> str:
    """The embedded tiny model (default TinySpec, seed 0), saved in HF format to `folder`."""
    from core.models import build_tiny_model, save_policy

    model, tok = build_tiny_model(seed=SEED)
    save_policy(model, tok, folder)
    return str(folder)


def load(model_dir: str, device: str = "cpu") -> tuple[Any, Any]:
    """Policy and tokenizer as the lab's RL job loads them: fp32 weights, eager attention on
    CPU, SDPA on a GPU."""
    from core.models import load_policy

    attn = "eager" if device == "cpu" else "sdpa"
    return load_policy(model_dir, dtype=torch.float32, device=device, attn_implementation=attn)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class Ours:
    """This lab's trainer, stepped from the TRL run's callback (see `bench`)."""

    def __init__(self, model_dir: str, task: PairSumTask, problems: list[Problem], args: argparse.Namespace) -> None:
        from core.config import RLConfig, SamplingConfig
        from core.rl.trainer import Trainer
        from core.sampling.hf import HFSampler

        torch.manual_seed(SEED)
        policy, tok = load(model_dir, args.device)
        self.batch = args.prompts * args.k
        cfg = RLConfig(
            steps=args.steps + 1, prompts_per_step=args.prompts, num_generations=args.k,
            sampling=SamplingConfig(temperature=TEMPERATURE, max_new_tokens=args.max_new_tokens), lr=LR,
            warmup_steps=WARMUP_STEPS,
            micro_batch_size=self.batch, pass_tokens=args.pass_tokens, bf16_autocast=not args.fp32,
            entropy_coef=ENTROPY_COEF, beta=BETA, anchor="ema", anchor_rate=ANCHOR_RATE, penalize_overlong=False,
            penalize_repetition=False, penalize_garbled=False, seed=SEED,
        )
        cfg.validate()
        self.trainer = Trainer(policy, tok, HFSampler(policy, tok), task, problems, cfg)
        self.sync = args.device != "cpu"
        self.times: list[tuple[float, float]] = []  # (wall, CPU) seconds of each step, warm-up first
        self.lengths: list[float] = []
        self.rewards: list[float] = []

    def step(self) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        metrics, _ = self.trainer.step()
        if self.sync:
            torch.cuda.synchronize()
        self.times.append((time.perf_counter() - t0, time.process_time() - c0))
        self.lengths.append(metrics["rollout/len_mean"])
        self.rewards.append(metrics["reward/mean"])

    def result(self) -> Result:
        timed = self.times[1:]
        return Result("ours (core.rl.trainer.Trainer)", sum(t for t, _ in timed), sum(c for _, c in timed),
                      len(timed) * self.batch, _mean(self.lengths[1:]), _mean(self.rewards[1:]))


def bench(model_dir: str, task: PairSumTask, problems: list[Problem], args: argparse.Namespace,
          out_dir: str) -> tuple[Result, Result]:
    """`GRPOTrainer.train()` for 1 + `args.steps` steps, with one step of ours after each of its
    steps (a callback): T0 O0 T1 O1 ... TN ON, where T0 and O0 are the untimed warm-ups. TRL's
    time is from the end of T0 to the end of TN less the steps of ours in between."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    ours = Ours(model_dir, task, problems, args)
    torch.manual_seed(SEED)
    policy, tok = load(model_dir, args.device)
    batch = args.prompts * args.k
    dataset = Dataset.from_dict({
        "prompt": [task.render_prompt(p, tok) for p in problems],
        "problem_index": list(range(len(problems))),
    })

    def correct(completions: list[str], problem_index: list[int], **_: Any) -> list[float]:
        return [1.0 if task.check_one(problems[i], text).correct else 0.0
                for text, i in zip(completions, problem_index, strict=True)]

    rows = args.trl_pass_rows or batch  # sequences per forward/backward pass
    if batch % rows:
        raise SystemExit(f"--trl-pass-rows {rows} must divide prompts x k = {batch}")
    config = GRPOConfig(
        output_dir=out_dir, max_steps=args.steps + 1, seed=SEED, use_cpu=args.device == "cpu", bf16=not args.fp32,
        per_device_train_batch_size=rows, gradient_accumulation_steps=batch // rows,
        steps_per_generation=batch // rows,
        num_generations=args.k, num_iterations=1, max_completion_length=args.max_new_tokens,
        temperature=TEMPERATURE, top_p=1.0, top_k=0, use_vllm=False,
        beta=BETA, sync_ref_model=True, ref_model_mixup_alpha=1 - ANCHOR_RATE, ref_model_sync_steps=1,
        entropy_coef=ENTROPY_COEF, scale_rewards="none", loss_type="dapo",
        learning_rate=LR, warmup_steps=WARMUP_STEPS, lr_scheduler_type="cosine", adam_beta1=0.9,
        adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0, gradient_checkpointing=False,
        logging_steps=10**9, save_strategy="no", report_to="none", disable_tqdm=True,
        log_completions=False, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=policy, reward_funcs=correct, args=config, train_dataset=dataset,
                          processing_class=tok)
    trainer.remove_callback(PrinterCallback)  # it would print the end-of-training log to stdout

    class Clock(TrainerCallback):
        """The clock at the end of every TRL optimizer step and that step's rollout figures; then
        one step of ours."""

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.cpu_ends: list[float] = []
            self.lengths: list[float] = []
            self.rewards: list[float] = []

        def on_step_end(self, *_: Any, **__: Any) -> None:
            if args.device != "cpu":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())
            metrics = getattr(trainer, "_metrics", {}).get("train", {})
            if metrics.get("completions/mean_length"):
                self.lengths.append(metrics["completions/mean_length"][-1])
            if metrics.get("reward"):
                self.rewards.append(metrics["reward"][-1])
            ours.step()

    clock = Clock()
    trainer.add_callback(clock)  # last, so the ref-model sync of each step is inside its time
    trainer.train()
    if len(clock.ends) != args.steps + 1:
        raise RuntimeError(f"TRL ran {len(clock.ends)} steps, expected {args.steps + 1}")
    inside = ours.times[:-1]  # ours ran between TRL's first and last step ends
    seconds = clock.ends[-1] - clock.ends[0] - sum(t for t, _ in inside)
    cpu_seconds = clock.cpu_ends[-1] - clock.cpu_ends[0] - sum(c for _, c in inside)
    theirs = Result(f"TRL {_trl_version()} GRPOTrainer", seconds, cpu_seconds, args.steps * batch,
                    _mean(clock.lengths[1:]), _mean(clock.rewards[1:]))
    return ours.result(), theirs


def _trl_version() -> str:
    import trl

    return str(trl.__version__)


def table(results: list[Result]) -> str:
    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    head = (f"{'trainer':<32} {'seconds':>8} {'cpu s':>7} {'samples':>8} {'samples/s':>10} "
            f"{'per cpu s':>10} {'mean len':>9} {'reward':>7}")
    rows = [f"{r.name:<32} {r.seconds:>8.2f} {r.cpu_seconds:>7.2f} {r.samples:>8d} {r.samples_per_s:>10.2f} "
            f"{r.samples_per_cpu_s:>10.2f} {fmt(r.mean_len, '9.1f')} {fmt(r.reward_mean, '7.3f')}"
            for r in results]
    return "\n".join([head, *rows])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5, help="timed RL steps per trainer (after 1 warm-up)")
    p.add_argument("--prompts", type=int, default=16, help="prompts per step (lab rl's default)")
    p.add_argument("--k", type=int, default=8, help="samples per prompt (group size; lab rl's default)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="completion token limit (lab rl's default)")
    p.add_argument("--model", default=None,
                   help="HF model folder or run (default: the newest SFT run's checkpoint)")
    p.add_argument("--random-init", action="store_true",
                   help="the randomly initialised embedded model instead (responses never end)")
    p.add_argument("--runs-dir", default="runs", help="where to look for the newest SFT run")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads for both (0 = torch's default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both trainers; TRL through accelerate)")
    p.add_argument("--pass-tokens", type=int, default=-1,
                   help="ours: rl.pass_tokens, the token cap per forward/backward pass (-1 = its default)")
    p.add_argument("--trl-pass-rows", type=int, default=32,
                   help="TRL: sequences per forward/backward pass (per_device_train_batch_size, with "
                        "gradient accumulation over the rest of the generation batch; 0 = all in one)")
    p.add_argument("--fp32", action="store_true",
                   help="train in fp32 on both (default: bf16 autocast on both, each one's default)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.prompts < 1 or args.k < 2 or args.max_new_tokens < 1:
        p.error("need --steps >= 1, --prompts >= 1, --k >= 2, --max-new-tokens >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        version = _trl_version()
    except ImportError:
        sys.exit('TRL is not installed: pip install -e ".[bench]"')
    task = PairSumTask()
    problems = task.problems("train", NUM_PROBLEMS)
    with tempfile.TemporaryDirectory(prefix="bench-rl-step-") as tmp:
        model_dir = None if args.random_init else pick_model(args.model, args.runs_dir)
        label = model_dir or "randomly initialised embedded model (temp copy)"
        model_dir = model_dir or make_model_dir(Path(tmp) / "model")
        print(f"model {label}, {args.device}, "
              f"{torch.get_num_threads()} threads, {args.prompts} prompts x {args.k} samples, "
              f"{args.max_new_tokens} tokens, temperature {TEMPERATURE}, "
              f"{'fp32' if args.fp32 else 'bf16 autocast'}, {args.steps} timed steps each, "
              f"1-min load average {os.getloadavg()[0]:.2f} at start", flush=True)
        ours, theirs = bench(model_dir, task, problems, args, str(Path(tmp) / "trl"))
    print(table([ours, theirs]))
    out = {
        "ours_samples_per_s": round(ours.samples_per_s, 3),
        "trl_samples_per_s": round(theirs.samples_per_s, 3),
        "ratio": round(ours.samples_per_s / theirs.samples_per_s, 3),
        "ours_samples_per_cpu_s": round(ours.samples_per_cpu_s, 3),
        "trl_samples_per_cpu_s": round(theirs.samples_per_cpu_s, 3),
        "cpu_ratio": round(ours.samples_per_cpu_s / theirs.samples_per_cpu_s, 3),
        "device": args.device, "threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2),
        "steps": args.steps, "prompts": args.prompts, "k": args.k,
        "max_new_tokens": args.max_new_tokens, "pass_tokens": args.pass_tokens,
        "trl_pass_rows": args.trl_pass_rows or args.prompts * args.k, "model": label, "trl_version": version,
    }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
