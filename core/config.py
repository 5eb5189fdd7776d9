"""Configuration: one frozen dataclass per stage, composed per command. Torch-free.

Each section validates itself with messages that say what to change; a job (one command's
sections) may check what spans sections (`check`). Shared sections (`SamplingConfig`,
`LoraConfig`) are used wherever a stage needs them, never copied field by field. Help strings
name the paper's symbol where there is one. Presets and `key=value` overrides: core.overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A bad configuration; the message says what to change."""


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def _section(factory: Any, help: str) -> Any:
    return field(default_factory=factory, metadata={"help": help})


def _nested(section: Any, prefix: str) -> None:
    """Validate a shared section, its messages naming where it sits ("rl." + "sampling....")."""
    try:
        section.validate()
    except ConfigError as e:
        raise ConfigError(prefix + str(e)) from None


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class TaskConfig:
    name: str = _f("pairsum", "'pairsum' or 'minimath' (embedded, generated); training sets math_train|gsm8k_train|numina; "
                   "evaluation sets math500|aime24|amc23|gsm8k|omni_math500; a hub id; a .jsonl/.parquet path")
    eval_only: bool = _f(False, "mark a local file or unknown hub id as an evaluation set (never trained on)")
    decontaminate: bool = _f(True, "drop training problems whose normalised text matches a known evaluation problem")
    num_count: int = _f(8, "pairsum: numbers in each list (C(n,2) candidate pairs)")
    max_value: int = _f(30, "pairsum: numbers are drawn from 1..max_value")
    x_max: int = _f(20, "minimath: linear problems' x lies in 1..x_max (about log2(x_max) trials)")
    coef_max: int = _f(9, "minimath: a x + b = c with a in 2..coef_max, b in 1..3*coef_max")
    fraction_share: float = _f(0.25, "minimath: share of 'write a/b in lowest terms' problems")
    borrow: bool = _f(False, "minimath: also linear problems whose c - b needs a borrow (harder: a 1M model learns them far less well)")
    heldout_frac: float = _f(0.0, "pairsum, minimath: share of the problem space kept for evaluation (0 = the task's: pairsum 0.1, minimath 0.2)")
    sorted_numbers: bool = _f(True, "pairsum: show each list sorted (the teacher's two-pointer moves need it)")
    seed: int = _f(0, "seed of the problem generator")

    def validate(self) -> None:
        _check(self.num_count >= 3, f"task.num_count must be >= 3 (got {self.num_count})")
        _check(
            self.max_value >= 2 * self.num_count,
            f"task.max_value must be >= 2 * task.num_count = {2 * self.num_count}",
        )
        _check(0 <= self.heldout_frac < 1, "task.heldout_frac must be in [0, 1) (0 = the task's default)")
        _check(self.x_max >= 4, f"task.x_max must be >= 4 (got {self.x_max})")
        _check(self.coef_max >= 2, f"task.coef_max must be >= 2 (got {self.coef_max})")
        _check(0 <= self.fraction_share <= 1, f"task.fraction_share must be in [0, 1] (got {self.fraction_share})")


@dataclass(frozen=True)
class ModelConfig:
    name: str = _f("embedded", "'embedded' (tiny Qwen2 built here), a local HF folder or a hub id")
    hidden_size: int = _f(128, "embedded model width")
    num_layers: int = _f(4, "embedded model depth")
    num_heads: int = _f(4, "embedded model attention heads")
    intermediate_size: int = _f(384, "embedded model MLP width")
    device: str = _f("auto", "'auto' (cuda if present), 'cpu' or 'cuda'")
    dtype: str = _f("auto", "weights: 'auto' (sft/rl: fp32, computing in bf16 autocast; other jobs: bf16 on a GPU that supports it, else fp32), fp32, bf16")
    threads: int = _f(0, "torch CPU threads (0 = torch's default)")
    attn_implementation: str = _f("auto", "'auto' (eager on CPU, sdpa on GPU), eager, sdpa, flash_attention_2")
    fsdp: bool = _f(False, "under torchrun, sft/rl: shard weights, gradients and optimizer state over the ranks (FSDP2, a unit per decoder layer); off: every rank holds the whole model (data parallel)")

    def validate(self) -> None:
        _check(self.device in ("auto", "cpu", "cuda"), "model.device must be auto, cpu or cuda")
        _check(self.dtype in ("auto", "fp32", "bf16"), "model.dtype must be auto, fp32 or bf16")
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            _check(getattr(self, key) >= 1, f"model.{key} must be >= 1 (got {getattr(self, key)})")
        _check(self.hidden_size % self.num_heads == 0, "model.hidden_size must divide by num_heads")
        _check(self.threads >= 0, "model.threads must be >= 0 (0 = torch's default)")


@dataclass(frozen=True)
class SamplingConfig:
    backend: str = _f("hf", "sampler backend: 'hf' (transformers) or 'vllm'")
    temperature: float = _f(1.0, "sampling temperature (0 = greedy)")
    top_p: float = _f(1.0, "nucleus sampling threshold")
    min_p: float = _f(0.0, "min-p threshold relative to the most likely token")
    max_new_tokens: int = _f(128, "generation limit in tokens (the largest budget)")
    batch_size: int = _f(512, "sequences per forward pass")
    stop: tuple[str, ...] = _f((), "extra stop strings")
    hf_decoder: str = _f("auto", "hf: 'auto' (a direct decode pass for Qwen2/Llama models, core/sampling/hf/decoder.py; the model's own forward otherwise) or 'transformers' (always the model's forward)")
    vllm_memory_frac: float = _f(0.3, "vllm: share of GPU memory (CPU: of RAM) the engine may take; the trainer needs the rest")
    vllm_kv_cache_gib: float = _f(1.0, "vllm: KV cache size in GiB")
    vllm_sleep: bool = _f(True, "vllm: free the engine's GPU memory between sampling phases (sleep mode; no-op on CPU)")
    vllm_dtype: str = _f("auto", "vllm: engine weights, 'auto' (the trainer's dtype: greedy output equals hf's), 'bf16' (much faster than fp32 on CPUs with AVX512-BF16; docs/perf_log.md) or 'fp32'")
    vllm_eager: str = _f("auto", "vllm: 'auto' (eager on CPU: quick start; compiled + CUDA graphs on GPU), 'true' or 'false'")

    def validate(self) -> None:
        _check(self.backend in ("hf", "vllm"), "sampling.backend must be 'hf' or 'vllm'")
        _check(self.hf_decoder in ("auto", "transformers"), "sampling.hf_decoder must be 'auto' or 'transformers'")
        _check(0 < self.vllm_memory_frac <= 1, "sampling.vllm_memory_frac must be in (0, 1]")
        _check(self.vllm_kv_cache_gib > 0, "sampling.vllm_kv_cache_gib must be > 0")
        _check(self.vllm_dtype in ("auto", "bf16", "fp32"), "sampling.vllm_dtype must be auto, bf16 or fp32")
        _check(self.vllm_eager in ("auto", "true", "false"), "sampling.vllm_eager must be auto, true or false")
        _check(self.temperature >= 0, "sampling.temperature must be >= 0")
        _check(0 < self.top_p <= 1, "sampling.top_p must be in (0, 1]")
        _check(0 <= self.min_p < 1, "sampling.min_p must be in [0, 1)")
        _check(self.max_new_tokens >= 1, "sampling.max_new_tokens must be >= 1")
        _check(self.batch_size >= 1, "sampling.batch_size must be >= 1")


@dataclass(frozen=True)
class LoraConfig:
    enabled: bool = _f(False, "train LoRA adapters (PEFT) instead of all weights")
    r: int = _f(16, "LoRA rank")
    alpha: int = _f(32, "LoRA alpha")
    targets: str = _f("q_proj,k_proj,v_proj,o_proj", "comma-separated module names for LoRA")

    def validate(self) -> None:
        _check(self.r >= 1, f"lora.r must be >= 1 (got {self.r})")
        _check(self.alpha >= 1, f"lora.alpha must be >= 1 (got {self.alpha})")
        _check(bool(self.target_modules()), "lora.targets must name at least one module")

    def target_modules(self) -> list[str]:
        return [t.strip() for t in self.targets.split(",") if t.strip()]


def _rollout_sampling() -> SamplingConfig:
    return SamplingConfig(temperature=1.2, max_new_tokens=128)


@dataclass(frozen=True)
class SynthConfig:
    style: str = _f("t1", "'t1' (trial-and-error + self-verification) or 'plain' (straight CoT)")
    num_problems: int = _f(40_000, "training problems to synthesize traces for")
    guided_prob: float = _f(0.85, "teacher: chance an attempt follows its reflection (two pointers) instead of a random jump")
    slip_prob: float = _f(0.15, "teacher: chance of an arithmetic slip on a near miss (caught by the check)")
    seed: int = _f(0, "seed of the teacher")

    def validate(self) -> None:
        _check(self.style in ("t1", "plain"), f"synth.style must be 't1' or 'plain' (got {self.style!r})")
        _check(self.num_problems >= 1, "synth.num_problems must be >= 1")
        _check(0 <= self.guided_prob <= 1, "synth.guided_prob must be in [0, 1]")
        _check(0 <= self.slip_prob <= 1, "synth.slip_prob must be in [0, 1]")


def _attempt_sampling() -> SamplingConfig:
    return SamplingConfig(temperature=1.0, max_new_tokens=4096, batch_size=64)


@dataclass(frozen=True)
class TeacherConfig:
    """LLM teachers for math tasks (synth on a math task), or import of public SFT data."""

    models: tuple[str, ...] = _f((), "attempt teachers: model folders / runs / hub ids (transformers) or http(s)://HOST/v1[#MODEL] (OpenAI-compatible); several share the attempts; empty = the embedded task's programmatic teacher")
    critic: str = _f("", "teacher that writes critiques, merges and rewrites ('' = the first of teacher.models)")
    dataset: str = _f("", "import SFT data instead of synthesizing: THUDM/T1 (hub) or a local .jsonl/.parquet in that format")
    num_attempts: int = _f(16, "attempts sampled per problem, N (paper: 16)")
    max_solved_frac: float = _f(0.3, "drop problems solved by more than this fraction of the N attempts (paper: 0.3)")
    min_solved: int = _f(1, "drop problems solved by fewer attempts: 1 (default) = the right path comes from a verified teacher sample; 0 keeps problems no attempt solved (the critic, shown the gold answer, then writes the ending)")
    max_wrong_in_trace: int = _f(3, "failed attempts merged into one trace before the right path")
    merge: str = _f("llm", "'llm' (the critic merges attempts and critiques, as in the paper) or 'concat' (a fixed template, no call)")
    rewrite: bool = _f(True, "rewrite the merged trace into fluent text (one more critic call)")
    max_trace_tokens: int = _f(8192, "drop traces longer than this many tokens")
    critic_temperature: float = _f(0.7, "temperature of critiques, merges and rewrites")
    critique_max_new_tokens: int = _f(512, "token limit of one critique or verification")
    merge_max_new_tokens: int = _f(8192, "token limit of a merge or rewrite")
    http_api: str = _f("chat", "HTTP teachers: 'chat' (/v1/chat/completions) or 'completions' (/v1/completions)")
    api_key_env: str = _f("OPENAI_API_KEY", "environment variable holding the HTTP API key (never stored)")
    timeout_s: float = _f(300.0, "HTTP teachers: seconds to wait for one response")
    retries: int = _f(2, "HTTP teachers: retries after a timeout, connection error, 429 or 5xx")
    concurrency: int = _f(8, "HTTP teachers: requests in flight per teacher call")
    parallel_problems: int = _f(1, "problems in flight at once (HTTP teachers: raise it to keep the server busy; local models: 1)")
    sampling: SamplingConfig = field(default_factory=_attempt_sampling)

    def validate(self) -> None:
        _check(not (self.models and self.dataset), "set teacher.models or teacher.dataset, not both")
        _check(not self.critic or bool(self.models), "teacher.critic needs teacher.models")
        _check(self.num_attempts >= 1, "teacher.num_attempts must be >= 1")
        _check(0 <= self.max_solved_frac <= 1, "teacher.max_solved_frac must be in [0, 1]")
        _check(0 <= self.min_solved <= self.num_attempts, "teacher.min_solved must be in [0, teacher.num_attempts]")
        _check(self.max_wrong_in_trace >= 0, "teacher.max_wrong_in_trace must be >= 0")
        _check(self.merge in ("llm", "concat"), "teacher.merge must be 'llm' or 'concat'")
        _check(self.max_trace_tokens >= 1, "teacher.max_trace_tokens must be >= 1")
        _check(self.critic_temperature >= 0, "teacher.critic_temperature must be >= 0")
        _check(self.critique_max_new_tokens >= 1 and self.merge_max_new_tokens >= 1,
               "teacher.critique_max_new_tokens and teacher.merge_max_new_tokens must be >= 1")
        _check(self.http_api in ("chat", "completions"), "teacher.http_api must be 'chat' or 'completions'")
        _check(self.timeout_s > 0, "teacher.timeout_s must be > 0")
        _check(self.retries >= 0, "teacher.retries must be >= 0")
        _check(self.concurrency >= 1, "teacher.concurrency must be >= 1")
        _check(self.parallel_problems >= 1, "teacher.parallel_problems must be >= 1")
        _nested(self.sampling, "teacher.")


@dataclass(frozen=True)
class SFTConfig:
    data: str = _f("", "traces to train on: a synth run folder or traces .jsonl ('' = synthesize now)")
    lr: float = _f(3e-3, "peak learning rate (AdamW)")
    warmup_steps: int = _f(50, "linear warmup steps before cosine decay")
    max_steps: int = _f(1700, "optimizer steps (cosine decays to 0 at this step)")
    batch_size: int = _f(32, "sequences per optimizer step")
    micro_batch_size: int = _f(32, "sequences per forward pass (gradient accumulation = batch / micro)")
    max_seq_len: int = _f(141, "drop traces longer than this many tokens (prompt + response + end token); 141 keeps "
                          "the embedded task's traces whose response fits its 128-token generation limit after "
                          "the 12-token prompt: longer ones teach responses that evaluation and RL cut off")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    grad_clip: float = _f(1.0, "gradient norm clip")
    lora: LoraConfig = field(default_factory=LoraConfig)
    bf16_autocast: bool = _f(True, "compute in bf16 autocast (weights and optimizer stay fp32)")
    log_every: int = _f(25, "steps between metric lines")
    save_every: int = _f(500, "steps between resumable checkpoints (`lab sft --resume`; 0 = only the final one)")
    seed: int = _f(0, "seed of initialisation and data order")

    def validate(self) -> None:
        _check(self.lr > 0, "sft.lr must be > 0")
        _check(self.max_steps >= 1, "sft.max_steps must be >= 1")
        _check(self.batch_size >= 1 and self.micro_batch_size >= 1,
               "sft.batch_size and sft.micro_batch_size must be >= 1")
        _check(self.grad_clip > 0 and self.weight_decay >= 0, "sft.grad_clip must be > 0 and sft.weight_decay >= 0")
        _check(self.log_every >= 1, "sft.log_every must be >= 1")
        _check(self.save_every >= 0, "sft.save_every must be >= 0 (0 = only the final checkpoint)")
        _check(0 <= self.warmup_steps < self.max_steps, "sft.warmup_steps must be < sft.max_steps")
        _check(
            self.batch_size % self.micro_batch_size == 0,
            f"sft.micro_batch_size ({self.micro_batch_size}) must divide sft.batch_size "
            f"({self.batch_size})",
        )
        _check(self.max_seq_len >= 8, "sft.max_seq_len must be >= 8")
        _nested(self.lora, "sft.")


@dataclass(frozen=True)
class EvalConfig:
    task: str = _f("", "what lab sft / lab rl evaluate on ('' = the embedded task's held-out split; for a math training set: math500); lab eval: instead of task.name")
    split: str = _f("heldout", "task split to evaluate on")
    num_problems: int = _f(500, "problems to evaluate (0 = all of a finite data set)")
    num_samples: int = _f(1, "samples per problem (pass@1 is averaged over them)")
    seed: int = _f(1234, "sampling seed")
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def validate(self) -> None:
        _check(self.split in ("train", "heldout"), "eval.split must be 'train' or 'heldout'")
        _check(self.num_problems >= 0, "eval.num_problems must be >= 0")
        _check(self.num_samples >= 1, "eval.num_samples must be >= 1")
        _nested(self.sampling, "eval.")


@dataclass(frozen=True)
class BudgetConfig:
    budgets: tuple[int, ...] = _f((16, 32, 48, 64, 96, 128), "reasoning budgets in tokens, ascending (paper: 1k..16k)")
    mode: str = _f("forced", "'forced' (the same model answers after a cue) or 'summarizer' (another model reads the cut reasoning)")
    summarizer: str = _f("", "summarizer model (folder, run or hub id) for mode=summarizer")
    answer_cue: str = _f("", "text appended to cut reasoning to force the answer ('' = the task's cue)")
    answer_max_tokens: int = _f(24, "token limit of the forced / summarized answer")
    answer_temperature: float = _f(0.0, "temperature of the answer continuation (0 = greedy)")
    answer_stop: tuple[str, ...] = _f(("\n",), "stop strings of the answer continuation (the answer is one line)")
    extend_wait: int = _f(0, "s1-style: times to append the wait cue to a response that ended before the largest budget")
    wait_text: str = _f("", "the wait cue ('' = the task's)")
    unconstrained_tokens: int = _f(-1, "beside the curve, the same model with no budget: responses still going at the largest budget continue up to this many tokens and are scored as they end, no answer forced (-1 = 4 x the largest budget, 0 = off)")
    checkpoints: str = _f("all", "checkpoints of an RL run to sweep: 'all', 'last', or fractions of its steps like 0,0.3,0.6,1")
    split: str = _f("heldout", "task split")
    num_problems: int = _f(500, "problems (0 = all of a finite data set)")
    num_samples: int = _f(1, "samples per problem; > 1 adds parallel scaling (maj@k, pass@k)")
    seed: int = _f(1234, "sampling seed")
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def validate(self) -> None:
        b = self.budgets
        _check(len(b) >= 1 and all(x >= 1 for x in b), "budget.budgets must be positive token counts")
        _check(list(b) == sorted(set(b)), f"budget.budgets must be strictly ascending, got {list(b)}")
        _check(self.mode in ("forced", "summarizer"), "budget.mode must be 'forced' or 'summarizer'")
        _check(self.mode != "summarizer" or bool(self.summarizer), "budget.mode=summarizer needs budget.summarizer=MODEL")
        _check(self.answer_max_tokens >= 1, "budget.answer_max_tokens must be >= 1")
        _check(self.answer_temperature >= 0, "budget.answer_temperature must be >= 0")
        _check(self.extend_wait >= 0, "budget.extend_wait must be >= 0")
        _check(self.unconstrained_tokens in (-1, 0) or self.unconstrained_tokens > max(b, default=0),
               f"budget.unconstrained_tokens must be -1 (4 x the largest budget), 0 (off) or more than the "
               f"largest budget ({max(b, default=0)}); got {self.unconstrained_tokens}")
        _check(self.split in ("train", "heldout"), "budget.split must be 'train' or 'heldout'")
        _check(self.num_problems >= 0, "budget.num_problems must be >= 0")
        _check(self.num_samples >= 1, "budget.num_samples must be >= 1")
        parse_checkpoints(self.checkpoints)
        _nested(self.sampling, "budget.")


def parse_checkpoints(spec: str) -> str | tuple[float, ...]:
    """'all' | 'last' | fractions of the RL steps ('0,0.3,1'): validated."""
    if spec in ("all", "last"):
        return spec
    try:
        fracs = tuple(float(x) for x in spec.split(","))
    except ValueError:
        fracs = ()
    _check(bool(fracs) and all(0 <= f <= 1 for f in fracs),
           f"budget.checkpoints must be 'all', 'last' or fractions in [0, 1] like 0,0.3,1 (got {spec!r})")
    return fracs


@dataclass(frozen=True)
class RLConfig:
    init: str = _f("", "policy to start from: an SFT run (folder or id), a checkpoint or a hub id ('' = model.name if set, else the latest SFT run)")
    steps: int = _f(150, "RL steps (one batch of prompts each); ~5 min on 2 CPU cores for the embedded default")
    prompts_per_step: int = _f(16, "prompts per step (paper: 32)")
    num_generations: int = _f(8, "K: samples per prompt, the oversampling factor (paper: 64)")
    num_samples_drawn: int = _f(0, "N: samples drawn per prompt, of which K are kept by oversample_rule (0 = K)")
    oversample_rule: str = _f(
        "max_variance",
        "which K of N to keep: 'max_variance' (the reward-balanced subset of largest reward variance; "
        "ties to the earliest drawn) or 'random' (uniform, seeded by the step)",
    )
    sampling: SamplingConfig = _section(_rollout_sampling, "rollouts (paper: temperature 1.2); hitting max_new_tokens is the over-long penalty; the backend also serves the held-out evaluation")
    lr: float = _f(2e-4, "peak learning rate (AdamW, warmup then cosine)")
    warmup_steps: int = _f(5, "linear warmup steps")
    grad_clip: float = _f(1.0, "gradient norm clip")
    micro_batch_size: int = _f(64, "most sequences per forward/backward pass (rows are length-sorted into passes)")
    pass_tokens: int = _f(-1, "most tokens (rows x padded length) per forward/backward pass: -1 = auto (4096 on CPU, where smaller passes run faster; no cap on a GPU), 0 = no cap")
    bf16_autocast: bool = _f(True, "forward/backward under bf16 autocast (weights stay fp32)")
    advantage: str = _f("rloo", "'rloo' (leave-one-out baseline, the paper) or 'grpo' (mean/std)")
    penalty_as: str = _f("reward", "how a -1 penalty enters: 'reward' (the sample's reward is -1, its advantage -1 minus the baseline of the valid others; penalised samples never enter a baseline) or 'advantage' (its advantage is set to -1 after the baseline); T1 states the -1 and the exclusion from the baseline, not which of the two it means")
    entropy_coef: float = _f(0.001, "alpha: weight of the entropy bonus")
    beta: float = _f(2e-4, "beta: weight of the centred KL-to-anchor penalty folded into the reward")
    anchor: str = _f("ema", "reference policy: 'ema' (dynamic), 'reset' (copy every reset_every), 'frozen', 'none'")
    anchor_rate: float = _f(0.99, "a: EMA rate, anchor <- a * anchor + (1 - a) * policy, per step")
    reset_every: int = _f(20, "steps between hard anchor resets (anchor=reset)")
    clip: bool = _f(False, "PPO ratio clip (T1 does not confirm one)")
    clip_low: float = _f(0.2, "ratio clipped below at 1 - clip_low")
    clip_high: float = _f(0.26, "ratio clipped above at 1 + clip_high")
    ppo_epochs: int = _f(1, "passes over each batch (> 1 needs clip=true)")
    drop_equal_groups: bool = _f(False, "skip groups whose rewards are all equal (dynamic filtering)")
    lora: LoraConfig = _section(LoraConfig, "LoRA adapters instead of all weights; the anchor is then an EMA of the adapters")
    penalize_overlong: bool = _f(True, "-1 for responses that hit max_new_tokens")
    penalize_repetition: bool = _f(True, "-1 for repetitive responses")
    penalize_garbled: bool = _f(True, "-1 for garbled responses")
    repeat_chars: int = _f(0, "repetition rule: a substring this long ... (0 = the task's: pairsum 30, minimath 40, math data sets the paper's 80)")
    repeat_count: int = _f(0, "... appearing this many times (0 = the task's: pairsum 4, minimath 8, math data sets the paper's 20)")
    eval_every: int = _f(25, "steps between held-out evaluations (0 = start and end only; what and how: the eval section)")
    save_every: int = _f(25, "steps between resumable checkpoints")
    seed: int = _f(0, "seed of prompt order and sampling")

    def validate(self) -> None:
        _check(self.steps >= 1, "rl.steps must be >= 1")
        _check(self.prompts_per_step >= 1, f"rl.prompts_per_step must be >= 1 (got {self.prompts_per_step})")
        _check(self.micro_batch_size >= 1, f"rl.micro_batch_size must be >= 1 (got {self.micro_batch_size})")
        _check(self.lr > 0, f"rl.lr must be > 0 (got {self.lr})")
        _check(self.warmup_steps >= 0 and self.grad_clip > 0, "rl.warmup_steps must be >= 0 and rl.grad_clip > 0")
        _check(self.entropy_coef >= 0 and self.beta >= 0, "rl.entropy_coef and rl.beta must be >= 0")
        _check(self.eval_every >= 0, f"rl.eval_every must be >= 0 (0 = start and end only; got {self.eval_every})")
        _check(self.save_every >= 0, f"rl.save_every must be >= 0 (0 = the last step only; got {self.save_every})")
        _check(self.ppo_epochs >= 1, f"rl.ppo_epochs must be >= 1 (got {self.ppo_epochs})")
        _check(self.clip_low > 0 and self.clip_high > 0, "rl.clip_low and rl.clip_high must be > 0")
        _check(self.anchor != "reset" or self.reset_every >= 1, "rl.anchor=reset needs rl.reset_every >= 1")
        _check(self.repeat_chars >= 0 and (self.repeat_count == 0 or self.repeat_count >= 2),
               "rl.repeat_chars must be >= 0 and rl.repeat_count 0 or >= 2 (0 = the task's rule)")
        _check(self.advantage in ("rloo", "grpo"), "rl.advantage must be 'rloo' or 'grpo'")
        _check(self.penalty_as in ("reward", "advantage"), f"rl.penalty_as must be 'reward' or 'advantage' (got {self.penalty_as!r})")
        _check(
            self.num_generations >= 2,
            f"rl.num_generations must be >= 2 for a group baseline (got {self.num_generations})",
        )
        _check(self.anchor in ("ema", "reset", "frozen", "none"), "rl.anchor must be ema, reset, frozen or none")
        _check(
            not (self.beta > 0 and self.anchor == "none"),
            "rl.beta > 0 needs an anchor: set rl.anchor=ema|reset|frozen or rl.beta=0",
        )
        _check(0 <= self.anchor_rate <= 1, "rl.anchor_rate must be in [0, 1]")
        batch = self.prompts_per_step * self.num_generations
        _check(
            batch % self.micro_batch_size == 0,
            f"rl.micro_batch_size ({self.micro_batch_size}) must divide prompts_per_step * "
            f"num_generations ({batch})",
        )
        _check(self.pass_tokens >= -1, "rl.pass_tokens must be -1 (auto), 0 (no cap) or a token count")
        _check(self.ppo_epochs == 1 or self.clip, "rl.ppo_epochs > 1 needs rl.clip=true")
        _check(self.sampling.temperature > 0, "rl.sampling.temperature must be > 0")
        _check(
            self.num_samples_drawn == 0 or self.num_samples_drawn >= self.num_generations,
            f"rl.num_samples_drawn ({self.num_samples_drawn}) must be 0 or >= rl.num_generations "
            f"({self.num_generations}): K of the N drawn are kept",
        )
        _check(self.oversample_rule in ("max_variance", "random"), "rl.oversample_rule must be 'max_variance' or 'random'")
        _nested(self.sampling, "rl.")
        _nested(self.lora, "rl.")


TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")


@dataclass(frozen=True)
class LogConfig:
    report_to: tuple[str, ...] = _f((), "experiment trackers that mirror the run folder (every metrics line with its key and step, the config as parameters, budget curves, a few rollouts per step): any of tensorboard, wandb, mlflow, trackio, comma-separated; each an optional extra (pip install -e '.[wandb]')")
    project: str = _f("t1-lab", "tracker project: W&B / trackio project, MLflow experiment; the tracker's run is named after the run folder")
    mlflow_uri: str = _f("", "MLflow tracking URI ('' = MLflow's own: $MLFLOW_TRACKING_URI, else its local store)")
    samples_per_step: int = _f(8, "rollouts of each RL step sent as a table (W&B, trackio, TensorBoard text), each text cut to 2,000 characters; 0 = none")

    def validate(self) -> None:
        names = [n.strip().lower() for n in self.report_to]
        unknown = [n for n in names if n not in TRACKERS]
        _check(not unknown, f"log.report_to: unknown tracker {', '.join(map(repr, unknown))}; choose from "
               f"{', '.join(TRACKERS)} (comma-separated)")
        _check(len(set(names)) == len(names), f"log.report_to names a tracker twice: {','.join(self.report_to)}")
        _check(bool(self.project.strip()), "log.project must not be empty")
        _check(self.samples_per_step >= 0, f"log.samples_per_step must be >= 0 (got {self.samples_per_step})")


@dataclass(frozen=True)
class SynthJob:
    """`python -m lab synth`."""

    task: TaskConfig = field(default_factory=TaskConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)


@dataclass(frozen=True)
class SFTJob:
    """`python -m lab sft`: synthesize (unless sft.data is set) -> train -> evaluate."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)


@dataclass(frozen=True)
class RLJob:
    """`python -m lab rl`: the T1 recipe from an SFT policy."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def check(self) -> None:
        _check_one_engine(self.rl, self.eval)


@dataclass(frozen=True)
class EvalJob:
    """`python -m lab eval`: accuracy of a checkpoint on a task split."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)


@dataclass(frozen=True)
class BudgetJob:
    """`python -m lab budget`: accuracy against reasoning budget for one or more checkpoints."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    log: LogConfig = field(default_factory=LogConfig)


@dataclass(frozen=True)
class ReproduceConfig:
    seeds: tuple[int, ...] = _f((0, 1, 2), "seeds; each sets sft.seed and rl.seed of its SFT and RL runs (traces are shared)")
    k_small: int = _f(4, "claim 4 (oversampling): the small K, rl.num_generations (paper ablation: 4)")
    k_large: int = _f(16, "claim 4 (oversampling): the large K at the same prompts per step (paper: 16, 64); "
                          "also run on rl.prompts_per_step x k_small / k_large prompts (the same rollouts per step)")
    anchor_beta: float = _f(0.2, "claim 6 (EMA anchor vs frozen reference): rl.beta of both arms, large enough that the KL term binds")
    anchor_rate: float = _f(0.9, "claim 6: rl.anchor_rate of the EMA arm (its anchor must move within the run's steps)")
    anchor_steps: int = _f(0, "claim 6: rl.steps of both arms, long enough for a frozen reference to hold the policy back (0 = rl.steps)")
    workers: int = _f(1, "sub-runs at a time, each in a process of its own (set model.threads so that workers x threads fits the cores)")

    def validate(self) -> None:
        _check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
               f"reproduce.seeds must be distinct and at least one (got {list(self.seeds)})")
        _check(2 <= self.k_small < self.k_large,
               f"reproduce.k_small must be >= 2 and < reproduce.k_large (got {self.k_small}, {self.k_large})")
        _check(self.anchor_steps >= 0, f"reproduce.anchor_steps must be >= 0 (got {self.anchor_steps})")
        _check(self.workers >= 1, f"reproduce.workers must be >= 1 (got {self.workers})")
        _check(self.anchor_beta > 0, f"reproduce.anchor_beta must be > 0 (got {self.anchor_beta})")
        _check(0 <= self.anchor_rate < 1, f"reproduce.anchor_rate must be in [0, 1) (got {self.anchor_rate})")


@dataclass(frozen=True)
class ReproduceJob:
    """`python -m lab reproduce`: every section configures the sub-runs; rl is the base T1 recipe."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    reproduce: ReproduceConfig = field(default_factory=ReproduceConfig)

    def check(self) -> None:
        _check_one_engine(self.rl, self.eval)
        k, n = self.reproduce, self.rl.prompts_per_step
        _check(n * k.k_small % k.k_large == 0,
               f"claim 4's compute-matched arm runs K=reproduce.k_large on rl.prompts_per_step x k_small / k_large "
               f"prompts: {n} x {k.k_small} / {k.k_large} is not a whole number (pick rl.prompts_per_step "
               f"a multiple of {k.k_large // math.gcd(k.k_small, k.k_large)})")
        chosen = parse_checkpoints(self.budget.checkpoints)
        _check(chosen == "all" or (isinstance(chosen, tuple) and 0 in chosen and 1 in chosen),
               "claim 2 compares the SFT model's budget curve with the last RL checkpoint's: budget.checkpoints must "
               f"be 'all' or fractions that include 0 and 1, like 0,0.3,0.6,1 (got {self.budget.checkpoints!r})")


def _check_one_engine(rl: RLConfig, ev: EvalConfig) -> None:
    """RL samples rollouts and its held-out evaluations with one engine (one copy of the weights)."""
    _check(rl.sampling.backend == ev.sampling.backend,
           f"lab rl samples and evaluates with one engine: rl.sampling.backend={rl.sampling.backend} and "
           f"eval.sampling.backend={ev.sampling.backend} must match (--sampler sets both)")


# the command line's commands and the job config each one takes (the stages and experiments
# that run them: core.commands)
JOBS: dict[str, type] = {"synth": SynthJob, "sft": SFTJob, "rl": RLJob, "eval": EvalJob,
                         "budget": BudgetJob, "reproduce": ReproduceJob}
