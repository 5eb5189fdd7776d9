"""RL step throughput: this lab's `core.rl.trainer.Trainer` against TRL's `GRPOTrainer`.

    python -m lab.bench.rl_step [--steps 5] [--prompts 16] [--k 8] [--max-new-tokens 128]
                                [--model PATH | --random-init | --arch embedded|qwen2.5-0.5b|toy]
                                [--sampler hf|vllm] [--fp32] [--threads N] [--pass-tokens N]
                                [--trl-pass-rows N] [--device cpu|cuda]

    # the GPU run (lab/bench/gpu_checks.sh, step 6), then the same with --sampler vllm:
    python -m lab.bench.rl_step --device cuda --arch qwen2.5-0.5b --prompts 16 --k 8 \\
                                --max-new-tokens 512 --steps 3

Defaults are those of `python -m lab rl` on the embedded task: its prompts per step, group size
and token limit, starting from the newest SFT run under --runs-dir (the policy RL starts from,
whose responses end at varied lengths). Without an SFT run, or with --random-init (= --arch
embedded), the randomly initialised embedded model is used: its responses never end, every
sample runs to the token limit, the worst case for this trainer (it gains nothing from dropping
finished rows). `--arch qwen2.5-0.5b` (or `toy`, 2 layers of 64 for CPU smoke runs) starts from
a random Qwen2 of Qwen2.5-0.5B's shapes and vocabulary size with the embedded math tokenizer,
built as `lab.bench.math_path` builds it (`lab.bench.build_model`), on the embedded math task
(`task.name=minimath`, the MATH500 code path: LaTeX prompt, `\\boxed{}` answers scored by
math-verify), so that prompts and token ids fit that tokenizer. Its responses never end either.

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
  * weights: the SFT checkpoint, `--model PATH`, the embedded tiny Qwen2 (`build_tiny_model()`,
    default TinySpec, seed 0) or the random model of `--arch`, saved in HF format to a temporary
    folder; both load it with `load_policy` (fp32 weights, eager attention), and TRL gets the
    same tokenizer object;
  * vocabulary: both sample from every row of the LM head (151,936 for qwen2.5-0.5b, checked on
    both policies), although the embedded math tokenizer has only a few hundred ids, as with a
    real checkpoint whose head is padded past its tokenizer. A sampled id the tokenizer lacks
    decodes to nothing on both (the tokenizer's `decode` skips it; ours' per-token rows skip it
    too), which is what `lab.bench.math_path` relies on: nothing is suppressed. With vLLM
    neither engine detokenizes (ours runs with `skip_tokenizer_init`, TRL gets vLLM's
    `detokenize=False` through `generation_kwargs`): vLLM's incremental detokenizer fails on
    ids the tokenizer lacks, and both trainers decode the ids themselves anyway;
  * prompts: train problems of the task (PairSumTask for the embedded model or a checkpoint,
    MiniMathTask for --arch qwen2.5-0.5b|toy) rendered with `task.render_prompt`;
  * group size K (TRL `num_generations`) and prompts per step: one generation batch of
    prompts * K completions feeds exactly one optimizer step on both. The forward/backward
    passes over it: ours `micro_batch_size` = prompts * K with `rl.pass_tokens` = `--pass-tokens`
    (default: the trainer's own on CPU, length-sorted passes of at most 4096 tokens, about 32
    rollouts; on a GPU, where the trainer's own default is no cap, as many tokens as one pass of
    TRL's, `--trl-pass-rows` x (longest prompt + token limit), which also keeps the logits of a
    151,936-token vocabulary within memory; `--pass-tokens 0` for one pass); TRL
    `per_device_train_batch_size` = `--trl-pass-rows` (default 32, 0 = all prompts * K) with
    `gradient_accumulation_steps` = `steps_per_generation` = the rest (its reference pass uses
    the same chunks);
  * token limit (TRL `max_completion_length`), temperature 1.2, top-p 1, no top-k;
  * reward: 1.0 if `task.check` says correct, else 0.0 (our -1 penalties are off; TRL's
    reward function maps each completion back to its problem through a dataset column). The
    math task's verifier processes are started before either clock runs;
  * reference model and KL: ours keeps its default EMA anchor (rate 0.99) with beta 2e-4, so
    it runs a reference forward pass and an EMA update every step. TRL gets beta=2e-4 (which
    loads a reference model and runs its forward pass) and `sync_ref_model=True`,
    `ref_model_mixup_alpha=0.01`, `ref_model_sync_steps=1`, which is the same EMA update;
  * entropy bonus 0.001 on both (full-vocabulary entropy with gradient);
  * optimizer: AdamW lr 2e-4, betas (0.9, 0.99), no weight decay, grad-norm clip 1.0, 5
    warm-up steps then cosine;
  * precision of the training forward/backward: bf16 autocast on both (the default of each;
    TRL needs `use_cpu=True` for it), or fp32 on both with `--fp32`;
  * no gradient checkpointing (TRL turns it on by default; ours has none), no logging, saving
    or reporting in TRL;
  * the sampler (`--sampler`): `hf` (default) is transformers on both: ours its own decoder,
    TRL `model.generate`. `vllm` is a vLLM engine in this process on both: ours the lab's
    backend (`rl.sampling.backend=vllm`, `core.sampling.vllm`, as `python -m lab rl` builds it),
    TRL `use_vllm=True, vllm_mode="colocate"`. Engine settings held equal: the engine's share
    of GPU memory (`vllm_memory_frac` = `vllm_gpu_memory_utilization` = 0.3, each one's
    default), sleep mode off on both (vLLM allows one sleeping engine per process, and a
    sleeping engine would move the weight copy into the next generation), prefix caching and
    CUDA graphs (each engine's default on a GPU), and the engine dtype: TRL's engine cannot be
    given one and takes vLLM's `auto`, which downcasts the saved fp32 weights (bf16 on current
    GPUs and CPUs), so TRL's engine is built first and ours gets the dtype it got (`vllm_dtype`
    in the JSON). KV cache: ours is sized to hold the
    whole generation batch (prompts * K rows of longest prompt + token limit, 25% spare, at
    least 1 GiB: `vllm_kv_cache_gib`); TRL's is whatever its memory share leaves (TRL has no
    KV setting; its `max_num_seqs` is the generation batch), so neither waits for cache. The
    vllm arm runs on a GPU only: on vLLM's CPU backend TRL's weight copy fails (that backend
    repacks the linear weights after loading and drops the `weight_loader` that TRL's
    `sync_weights` writes through), so `--device cpu --sampler vllm` is refused; the CPU smoke
    test of this arm (tests/test_vllm.py) steps ours alone.

Not equal (kept as each library does it): advantages (ours RLOO; TRL group mean with
`scale_rewards="none"`, i.e. the same centring up to a factor K/(K-1)); the sampling policy's
log-probs (needed for the KL to the reference): with `hf`, ours takes them from the sampler,
which computes them while decoding, TRL uses those of its training forward pass (both skip a
separate old-policy pass; TRL's training forward also covers the prompt tokens' logits, ours
starts at the first response token); with `vllm` both run an old-policy pass (ours: the engine
reports none, so the trainer scores the samples with its own weights; TRL: for its importance-
sampling correction against the engine's log-probs, on by default); TRL's `model.generate`
keeps finished rows in the batch, ours drops them, and decodes Qwen2 models with its own
forward pass (`core.sampling.hf.decoder`: fused projections, KV cache written in place); TRL
generates under its bf16 autocast wrapper, ours samples in fp32 (bf16 decoding of the tiny
model is slower on CPU).

Weight sync: with `vllm` the engine holds its own copy of the weights, refreshed after each
optimizer step. Ours: `trainer.sampler.sync_weights(trainer.sampling_policy())` after each of
its steps, timed as `python -m lab rl` times it (`time/sync_weights_s`), inside the step's
time; `ours_sync_weights_s` is its mean over the timed steps. With `hf` the sampler decodes the
policy's own weights: nothing is copied and the figure is about 0. TRL copies its weights into
its engine (`VLLMGeneration.sync_weights`) at the start of each step's generation, inside its
step time; this script wraps that method with a clock, and `trl_sync_weights_s` is the mean of
the copies in the timed steps (vllm only: with `hf` TRL has no engine and the key is absent).
On a GPU both clocks are synchronised with the device around each copy.

`--device cuda` runs both on a GPU (TRL with `use_cpu=False`, SDPA attention for both, the
clock synchronised with the device at each step end).

The last stdout line is one JSON object with `ours_samples_per_s`, `trl_samples_per_s`,
`ratio` (ours / TRL), `arch`, `sampler`, `ours_sync_weights_s` (and `trl_sync_weights_s` with
vllm). Needs TRL: `pip install -e ".[bench]"`; `--sampler vllm` also needs vLLM on a GPU
machine: `pip install -e ".[vllm]"`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from core.config import SamplingConfig
from core.types import Problem
from lab.bench import ARCHS, build_model, lm_head_rows, pick_model

TEMPERATURE = 1.2
BETA = 2e-4
ANCHOR_RATE = 0.99  # ours: anchor <- 0.99 * anchor + 0.01 * policy
ENTROPY_COEF = 0.001
LR = 2e-4
WARMUP_STEPS = 5
NUM_PROBLEMS = 1024
SEED = 0
VLLM_MEMORY_FRAC = 0.3  # ours: sampling.vllm_memory_frac; TRL: vllm_gpu_memory_utilization (both default 0.3)
GIB = 1024**3
ENGINE_DTYPES = {torch.bfloat16: "bf16", torch.float32: "fp32"}  # vLLM's dtype -> sampling.vllm_dtype


@dataclass
class Result:
    """Timings of one trainer."""

    name: str
    seconds: float
    cpu_seconds: float
    samples: int
    mean_len: float | None
    reward_mean: float | None
    sync_s: float | None = None  # mean seconds of one weight copy into the sampler (None: not measured)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds

    @property
    def samples_per_cpu_s(self) -> float:
        return self.samples / self.cpu_seconds


@dataclass
class Setup:
    """What both trainers share: the model folder, the task and its problems, the sampling
    settings and ours' pass cap."""

    model_dir: str
    arch: str  # embedded | qwen2.5-0.5b | toy (randomly initialised), or checkpoint
    task: Any
    problems: list[Problem]
    config: Any  # the model's transformers config (vocab_size: the LM head rows both policies must have)
    tokenizer_size: int  # ids the tokenizer knows (fewer than vocab_size for --arch qwen2.5-0.5b|toy)
    sampling: SamplingConfig
    pass_tokens: int
    longest_prompt: int


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


def check_vocab(policy: Any, want: int, who: str) -> None:
    rows = lm_head_rows(policy)
    if rows != want:
        raise RuntimeError(f"{who}: the LM head has {rows} rows, the model was built with {want}")


def make_task(arch: str) -> Any:
    """PairSumTask for the embedded model (its word-level tokenizer); the embedded math task
    (`task.name=minimath`) for a model with the embedded math tokenizer."""
    from core.config import TaskConfig
    from core.tasks import make_task as task_of

    return task_of(TaskConfig(name="pairsum" if arch == "embedded" else "minimath"))


def kv_cache_gib(config: Any, rows: int, tokens: int, dtype: str) -> float:
    """GiB of KV cache that hold `rows` sequences of `tokens` tokens (plus one 16-token block
    each), 25% spare, at least 1 GiB (the lab's default)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * (2 if dtype == "bf16" else 4)
    return max(1.0, math.ceil(1.25 * rows * (tokens + 16) * per_token / GIB * 4) / 4)


def with_engine(setup: Setup, dtype: str, args: argparse.Namespace) -> Setup:
    """`setup` with ours' vLLM engine in `dtype` (TRL's engine's) and a KV cache that holds the
    whole generation batch."""
    kv = kv_cache_gib(setup.config, args.prompts * args.k, setup.longest_prompt + args.max_new_tokens, dtype)
    return replace(setup, sampling=replace(setup.sampling, vllm_dtype=dtype, vllm_kv_cache_gib=kv))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _device_sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


class Ours:
    """This lab's trainer, stepped from the TRL run's callback (see `bench`)."""

    def __init__(self, setup: Setup, args: argparse.Namespace) -> None:
        from core.config import RLConfig
        from core.rl.trainer import Trainer
        from core.sampling import make_sampler

        torch.manual_seed(SEED)
        policy, tok = load(setup.model_dir, args.device)
        check_vocab(policy, setup.config.vocab_size, "ours")
        self.batch = args.prompts * args.k
        self.device = args.device
        cfg = RLConfig(
            steps=args.steps + 1, prompts_per_step=args.prompts, num_generations=args.k,
            sampling=setup.sampling, lr=LR, warmup_steps=WARMUP_STEPS,
            micro_batch_size=self.batch, pass_tokens=setup.pass_tokens, bf16_autocast=not args.fp32,
            entropy_coef=ENTROPY_COEF, beta=BETA, anchor="ema", anchor_rate=ANCHOR_RATE, penalize_overlong=False,
            penalize_repetition=False, penalize_garbled=False, seed=SEED,
        )
        cfg.validate()
        sampler = make_sampler(setup.sampling.backend, policy, tok, setup.sampling)
        self.trainer = Trainer(policy, tok, sampler, setup.task, setup.problems, cfg)
        self.times: list[tuple[float, float]] = []  # (wall, CPU) seconds of each step, warm-up first
        self.syncs: list[float] = []  # seconds of the weight copy after each step, warm-up first
        self.lengths: list[float] = []
        self.rewards: list[float] = []

    def step(self) -> None:
        """One step, then the weight copy into the sampler as `core.rl.loop.train` does it."""
        t0, c0 = time.perf_counter(), time.process_time()
        metrics, _ = self.trainer.step()
        _device_sync(self.device)
        s0 = time.perf_counter()
        self.trainer.sampler.sync_weights(self.trainer.sampling_policy())
        _device_sync(self.device)
        self.syncs.append(time.perf_counter() - s0)
        self.times.append((time.perf_counter() - t0, time.process_time() - c0))
        self.lengths.append(metrics["rollout/len_mean"])
        self.rewards.append(metrics["reward/mean"])

    def result(self) -> Result:
        timed = self.times[1:]
        return Result("ours (core.rl.trainer.Trainer)", sum(t for t, _ in timed), sum(c for _, c in timed),
                      len(timed) * self.batch, _mean(self.lengths[1:]), _mean(self.rewards[1:]),
                      _mean(self.syncs[1:]))

    def close(self) -> None:
        close = getattr(self.trainer.sampler, "close", None)
        if close is not None:
            close()


def clock_method(obj: Any, name: str, device: str, into: list[float]) -> None:
    """Replace `obj.name` with a wrapper that appends the seconds of each call to `into`."""
    inner: Callable[..., Any] = getattr(obj, name)

    def timed(*a: Any, **kw: Any) -> Any:
        _device_sync(device)
        t0 = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            _device_sync(device)
            into.append(time.perf_counter() - t0)

    setattr(obj, name, timed)


def bench(setup: Setup, args: argparse.Namespace, out_dir: str) -> tuple[Result, Result, str | None]:
    """`GRPOTrainer.train()` for 1 + `args.steps` steps, with one step of ours after each of its
    steps (a callback): T0 O0 T1 O1 ... TN ON, where T0 and O0 are the untimed warm-ups. TRL's
    time is from the end of T0 to the end of TN less the steps of ours in between. Returns the
    two results and, with vLLM, the engines' dtype (TRL's engine is built first: ours follows it)."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    task, problems = setup.task, setup.problems
    vllm = setup.sampling.backend == "vllm"
    torch.manual_seed(SEED)
    policy, tok = load(setup.model_dir, args.device)
    check_vocab(policy, setup.config.vocab_size, "TRL")
    batch = args.prompts * args.k
    dataset = Dataset.from_dict({
        "prompt": [task.render_prompt(p, tok) for p in problems],
        "problem_index": list(range(len(problems))),
    })

    def correct(completions: list[str], problem_index: list[int], **_: Any) -> list[float]:
        verdicts = task.check([problems[i] for i in problem_index], completions)
        return [1.0 if v.correct else 0.0 for v in verdicts]

    rows = args.trl_pass_rows or batch  # sequences per forward/backward pass
    engine = (dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=VLLM_MEMORY_FRAC,
                   vllm_enable_sleep_mode=False, generation_kwargs={"detokenize": False}) if vllm
              else dict(use_vllm=False))
    config = GRPOConfig(
        output_dir=out_dir, max_steps=args.steps + 1, seed=SEED, use_cpu=args.device == "cpu", bf16=not args.fp32,
        per_device_train_batch_size=rows, gradient_accumulation_steps=batch // rows,
        steps_per_generation=batch // rows,
        num_generations=args.k, num_iterations=1, max_completion_length=args.max_new_tokens,
        temperature=TEMPERATURE, top_p=1.0, top_k=0,
        beta=BETA, sync_ref_model=True, ref_model_mixup_alpha=1 - ANCHOR_RATE, ref_model_sync_steps=1,
        entropy_coef=ENTROPY_COEF, scale_rewards="none", loss_type="dapo",
        learning_rate=LR, warmup_steps=WARMUP_STEPS, lr_scheduler_type="cosine", adam_beta1=0.9,
        adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0, gradient_checkpointing=False,
        logging_steps=10**9, save_strategy="no", report_to="none", disable_tqdm=True,
        log_completions=False, dataloader_num_workers=0, **engine,
    )
    trainer = GRPOTrainer(model=policy, reward_funcs=correct, args=config, train_dataset=dataset,
                          processing_class=tok)
    trainer.remove_callback(PrinterCallback)  # it would print the end-of-training log to stdout
    trl_syncs: list[float] = []
    engine_dtype = None
    if vllm:
        clock_method(trainer.vllm_generation, "sync_weights", args.device, trl_syncs)
        got = trainer.vllm_generation.llm.llm_engine.model_config.dtype
        if got not in ENGINE_DTYPES:
            raise SystemExit(f"error: TRL's vLLM engine runs in {got}, which the lab's engine cannot be set to "
                             f"(sampling.vllm_dtype: {', '.join(ENGINE_DTYPES.values())})")
        engine_dtype = ENGINE_DTYPES[got]
        setup = with_engine(setup, engine_dtype, args)
    ours = Ours(setup, args)

    class Clock(TrainerCallback):
        """The clock at the end of every TRL optimizer step and that step's rollout figures; then
        one step of ours."""

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.cpu_ends: list[float] = []
            self.lengths: list[float] = []
            self.rewards: list[float] = []

        def on_step_end(self, *_: Any, **__: Any) -> None:
            _device_sync(args.device)
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
    try:
        trainer.train()
    finally:
        ours.close()
    if len(clock.ends) != args.steps + 1:
        raise RuntimeError(f"TRL ran {len(clock.ends)} steps, expected {args.steps + 1}")
    if vllm and len(trl_syncs) != args.steps + 1:  # one copy at the start of each step's generation
        raise RuntimeError(f"TRL copied its weights into vLLM {len(trl_syncs)} times in {args.steps + 1} steps")
    inside = ours.times[:-1]  # ours ran between TRL's first and last step ends
    seconds = clock.ends[-1] - clock.ends[0] - sum(t for t, _ in inside)
    cpu_seconds = clock.cpu_ends[-1] - clock.cpu_ends[0] - sum(c for _, c in inside)
    theirs = Result(f"TRL {_trl_version()} GRPOTrainer", seconds, cpu_seconds, args.steps * batch,
                    _mean(clock.lengths[1:]), _mean(clock.rewards[1:]), _mean(trl_syncs[1:]))
    return ours.result(), theirs, engine_dtype


def _trl_version() -> str:
    import trl

    return str(trl.__version__)


def vllm_version() -> str:
    """vLLM's version; SystemExit with one `error:` line when it does not import. The lab's
    backend module is imported first: it sets vLLM's environment (in-process engine, logs on
    stderr) before vLLM is loaded, which TRL's colocated engine needs as well."""
    try:
        importlib.import_module("core.sampling.vllm")
        import vllm
    except (ImportError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SystemExit(f"error: --sampler vllm needs vLLM, which does not import here ({first}): "
                         "pip install -e '.[vllm]'") from None
    return str(vllm.__version__)


def table(results: list[Result]) -> str:
    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    head = (f"{'trainer':<32} {'seconds':>8} {'cpu s':>7} {'samples':>8} {'samples/s':>10} "
            f"{'per cpu s':>10} {'mean len':>9} {'reward':>7} {'sync s':>8}")
    rows = [f"{r.name:<32} {r.seconds:>8.2f} {r.cpu_seconds:>7.2f} {r.samples:>8d} {r.samples_per_s:>10.2f} "
            f"{r.samples_per_cpu_s:>10.2f} {fmt(r.mean_len, '9.1f')} {fmt(r.reward_mean, '7.3f')} "
            f"{fmt(r.sync_s, '8.4f')}"
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
                   help="the randomly initialised embedded model instead (= --arch embedded; responses never end)")
    p.add_argument("--arch", choices=("embedded", *ARCHS), default=None,
                   help="a randomly initialised model instead: the embedded one, or a Qwen2 of Qwen2.5-0.5B's "
                        "shapes and vocabulary (or a toy of 2 layers) with the embedded math tokenizer, on minimath")
    p.add_argument("--sampler", choices=("hf", "vllm"), default="hf",
                   help="both trainers sample with transformers (hf) or with a colocated vLLM engine (vllm)")
    p.add_argument("--runs-dir", default="runs", help="where to look for the newest SFT run")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads for both (0 = torch's default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both trainers; TRL through accelerate)")
    p.add_argument("--pass-tokens", type=int, default=-1,
                   help="ours: rl.pass_tokens, the token cap per forward/backward pass (-1 = its default on "
                        "CPU; on a GPU the tokens of one of TRL's passes)")
    p.add_argument("--trl-pass-rows", type=int, default=32,
                   help="TRL: sequences per forward/backward pass (per_device_train_batch_size, with "
                        "gradient accumulation over the rest of the generation batch; 0 = all in one)")
    p.add_argument("--fp32", action="store_true",
                   help="train in fp32 on both (default: bf16 autocast on both, each one's default)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.prompts < 1 or args.k < 2 or args.max_new_tokens < 1:
        raise SystemExit("error: need --steps >= 1, --prompts >= 1, --k >= 2, --max-new-tokens >= 1")
    if args.random_init and args.arch not in (None, "embedded"):
        raise SystemExit(f"error: --random-init is --arch embedded; it contradicts --arch {args.arch}")
    if args.model is not None and (args.random_init or args.arch is not None):
        raise SystemExit("error: --model names the weights to start from; --random-init and --arch build random "
                         "ones: pass one of them")
    if args.random_init:
        args.arch = "embedded"
    batch = args.prompts * args.k
    if batch % (args.trl_pass_rows or batch):
        raise SystemExit(f"error: --trl-pass-rows {args.trl_pass_rows} must divide prompts x k = {batch}")
    return args


def prepare(args: argparse.Namespace, tmp: Path) -> tuple[Setup, str]:
    """The shared setup and a label for the model: the random model of --arch (built into
    `tmp`), else --model or the newest SFT run, else the random embedded model."""
    from transformers import AutoConfig

    from core.models import load_tokenizer
    from core.sampling.text import encode_prompts

    model_dir = None if args.arch is not None else pick_model(args.model, args.runs_dir)
    arch = args.arch or "embedded"
    if model_dir is not None:
        label = model_dir
    elif arch == "embedded":
        label, model_dir = "randomly initialised embedded model (temp copy)", make_model_dir(tmp / "model")
    else:
        label, model_dir = f"randomly initialised {arch} (temp copy)", str(build_model(ARCHS[arch], tmp / "model"))
    task = make_task(arch)
    problems = task.problems("train", NUM_PROBLEMS)
    # the math task's verifier starts its worker processes at its first answer: here, before
    # either trainer's clock runs, not inside whichever step meets the first number
    task.check(problems[:1], [f"\\boxed{{{problems[0].answer}}}"])
    tok = load_tokenizer(model_dir)
    longest = max(len(ids) for ids in encode_prompts(tok, [task.render_prompt(p, tok) for p in problems]))
    config = AutoConfig.from_pretrained(model_dir)
    rows = args.prompts * args.k
    pass_tokens = args.pass_tokens
    if pass_tokens < 0 and args.device != "cpu":  # one of TRL's passes: rows x (prompt + completion)
        pass_tokens = (args.trl_pass_rows or rows) * (longest + args.max_new_tokens)
    sampling = SamplingConfig(backend=args.sampler, temperature=TEMPERATURE, max_new_tokens=args.max_new_tokens,
                              vllm_memory_frac=VLLM_MEMORY_FRAC, vllm_sleep=False)
    return Setup(model_dir, "checkpoint" if label == model_dir else arch, task, problems, config, len(tok),
                 sampling, pass_tokens, longest), label


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sampler == "vllm" and args.device == "cpu":
        raise SystemExit("error: --sampler vllm needs --device cuda: TRL's colocated engine cannot take weight "
                         "updates on vLLM's CPU backend (which repacks the linear weights TRL writes into)")
    try:
        version = _trl_version()
    except ImportError:
        raise SystemExit('error: TRL is not installed: pip install -e ".[bench]"') from None
    engine_version = vllm_version() if args.sampler == "vllm" else None
    with tempfile.TemporaryDirectory(prefix="bench-rl-step-") as tmp:
        setup, label = prepare(args, Path(tmp))
        print(f"model {label}, {args.device}, {args.sampler} sampler"
              + (f" (vLLM {engine_version})" if engine_version else "")
              + f", LM head {setup.config.vocab_size} rows, {torch.get_num_threads()} threads, "
              f"{args.prompts} prompts x {args.k} samples, {args.max_new_tokens} tokens, temperature {TEMPERATURE}, "
              f"{'fp32' if args.fp32 else 'bf16 autocast'}, {args.steps} timed steps each, "
              f"1-min load average {os.getloadavg()[0]:.2f} at start", flush=True)
        ours, theirs, engine_dtype = bench(setup, args, str(Path(tmp) / "trl"))
    print(table([ours, theirs]))
    if args.sampler == "hf":
        print("weight sync: the hf sampler decodes the policy's own weights, nothing is copied "
              f"(ours {ours.sync_s or 0:.2e} s per step); TRL has no engine to copy into")
    else:
        print(f"weight sync into the vLLM engine ({engine_dtype}): ours {ours.sync_s:.3f} s, "
              f"TRL {theirs.sync_s:.3f} s per step")
    rows = args.prompts * args.k
    out: dict[str, Any] = {
        "ours_samples_per_s": round(ours.samples_per_s, 3),
        "trl_samples_per_s": round(theirs.samples_per_s, 3),
        "ratio": round(ours.samples_per_s / theirs.samples_per_s, 3),
        "ours_samples_per_cpu_s": round(ours.samples_per_cpu_s, 3),
        "trl_samples_per_cpu_s": round(theirs.samples_per_cpu_s, 3),
        "cpu_ratio": round(ours.samples_per_cpu_s / theirs.samples_per_cpu_s, 3),
        "arch": setup.arch, "sampler": args.sampler,
        "ours_sync_weights_s": round(ours.sync_s or 0.0, 6),
    }
    if theirs.sync_s is not None:
        out["trl_sync_weights_s"] = round(theirs.sync_s, 6)
    if args.sampler == "vllm":
        out |= {"vllm_version": engine_version, "vllm_dtype": engine_dtype,
                "vllm_kv_cache_gib": with_engine(setup, engine_dtype or "fp32", args).sampling.vllm_kv_cache_gib}
    out |= {
        "ours_mean_len": ours.mean_len, "trl_mean_len": theirs.mean_len,
        "device": args.device, "threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2),
        "steps": args.steps, "prompts": args.prompts, "k": args.k,
        "max_new_tokens": args.max_new_tokens, "pass_tokens": setup.pass_tokens,
        "trl_pass_rows": args.trl_pass_rows or rows, "vocab_size": setup.config.vocab_size,
        "tokenizer_size": setup.tokenizer_size,
        "model": label, "trl_version": version,
    }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":  # the guard matters: vLLM and math-verify may start worker processes
    main()
