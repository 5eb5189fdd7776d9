"""The T1 RL loop: sample -> reward -> select -> advantages -> update -> anchor -> log -> save.

Simplified from the paper, on purpose and configurable: K=8 samples per prompt instead of 64,
16 prompts per step instead of 32, a 128-token limit instead of 10k, learning rate scaled to a
1M-parameter model. The KL to the anchor is the sum of per-token log-ratios (k1) of each
response, centred over its group and folded into the reward with weight beta (T1); the entropy
bonus enters the loss. Penalised samples (-1) are left out of the RLOO baseline.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from core.config import EvalConfig, RLConfig, SamplingConfig
from core.evaluate import evaluate
from core.rewards import RewardParts, score
from core.rl import algos
from core.rl.anchor import Anchor
from core.rl.batch import RolloutBatch, forward_stats, logprobs_no_grad, pack
from core.sampling.base import Sampler, derive_seed, encode_prompts
from core.sft import warmup_cosine
from core.tasks.base import Task
from core.types import Completion, Problem


@dataclass
class Rollouts:
    """One step's samples, grouped [G][K], with everything later phases add."""

    problems: list[Problem]
    prompt_ids: list[list[int]]
    groups: list[list[Completion]]
    parts: list[list[RewardParts]] = field(default_factory=list)
    used: list[bool] = field(default_factory=list)  # per group, after selection

    def flat(self) -> list[tuple[int, Completion]]:
        return [(g, c) for g, group in enumerate(self.groups) for c in group]


class Trainer:
    """Holds policy, optimizer, anchor and the data position; `step()` runs one iteration."""

    def __init__(self, policy: Any, tokenizer: Any, sampler: Sampler, task: Task,
                 train: list[Problem], cfg: RLConfig) -> None:
        self.policy, self.tok, self.sampler, self.task, self.train, self.cfg = (
            policy, tokenizer, sampler, task, train, cfg)
        params = [p for p in policy.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.steps))
        self.anchor = Anchor(policy, cfg.anchor, cfg.anchor_rate, cfg.reset_every)
        self.step_idx = 0
        self._order: tuple[int, list[int]] = (-1, [])
        self.device = str(next(policy.parameters()).device)
        self.params = SamplingConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)

    def _epoch_order(self, epoch: int) -> list[int]:
        """The shuffled problem order of `epoch` (a pure function of seed and epoch; cached)."""
        if self._order[0] != epoch:
            order = list(range(len(self.train)))
            random.Random(f"{self.cfg.seed}-epoch-{epoch}").shuffle(order)
            self._order = (epoch, order)
        return self._order[1]

    # ---------------------------------------------------------------- phases
    def sample(self) -> Rollouts:
        """Prompts at the data position (an epoch-seeded shuffle) x K samples at temperature."""
        g = self.cfg.prompts_per_step
        start = self.step_idx * g
        epoch, offset = divmod(start, len(self.train))
        idx = [self._epoch_order(epoch + (offset + i) // len(self.train))[(offset + i) % len(self.train)]
               for i in range(g)]
        problems = [self.train[i] for i in idx]
        prompt_ids = encode_prompts(self.tok, [self.task.render_prompt(p, self.tok) for p in problems])
        groups = self.sampler.generate(prompt_ids, self.params, seed=derive_seed(self.cfg.seed, "rl", self.step_idx),
                                       n=self.cfg.num_generations)
        return Rollouts(problems, prompt_ids, groups)

    def reward(self, r: Rollouts) -> None:
        flat = r.flat()
        verdicts = self.task.check([r.problems[g] for g, _ in flat], [c.text for _, c in flat])
        c = self.cfg
        parts = [score(comp, v, penalize_overlong=c.penalize_overlong, penalize_repetition=c.penalize_repetition,
                       penalize_garbled=c.penalize_garbled, repeat_chars=c.repeat_chars, repeat_count=c.repeat_count)
                 for (_, comp), v in zip(flat, verdicts)]
        k = c.num_generations
        r.parts = [parts[i * k : (i + 1) * k] for i in range(len(r.groups))]

    def select(self, r: Rollouts) -> None:
        """Dynamic filtering (optional): a group whose rewards are all equal teaches nothing."""
        r.used = [not (self.cfg.drop_equal_groups and len({p.reward for p in parts}) == 1) for parts in r.parts]

    def advantages(self, r: Rollouts, batch: RolloutBatch, old_logp: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """RLOO (or GRPO) advantages on KL-shaped rewards; returns ([G*K], figures)."""
        k = self.cfg.num_generations
        rewards = torch.tensor([[p.reward for p in parts] for parts in r.parts])
        valid = torch.tensor([[not p.penalised for p in parts] for parts in r.parts])
        seq_kl = torch.zeros_like(rewards)
        if self.anchor.model is not None:
            ref_logp = logprobs_no_grad(self.anchor.model, batch, self.cfg.micro_batch_size, self.cfg.bf16_autocast)
            seq_kl = algos.sequence_sum(algos.kl_per_token(old_logp, ref_logp, "k1"), batch.mask).view(-1, k).cpu()
        shaped = algos.kl_shaped_rewards(rewards, seq_kl, self.cfg.beta)
        adv = algos.rloo_advantages(shaped, valid) if self.cfg.advantage == "rloo" else algos.grpo_advantages(shaped)
        used = torch.tensor(r.used).unsqueeze(-1).expand_as(adv)
        adv = torch.where(used, adv, torch.zeros_like(adv))
        return adv.reshape(-1).to(self.device), {"kl/anchor": float(seq_kl.mean()), "reward/shaped_mean": float(shaped.mean())}

    def update(self, batch: RolloutBatch, old_logp: torch.Tensor, adv: torch.Tensor) -> dict:
        """Token-level policy gradient + entropy bonus, micro-batched, clipped, one optimizer step per epoch."""
        c, n_tokens = self.cfg, batch.mask.sum().clamp(min=1)
        clip = (c.clip_low, c.clip_high) if c.clip else None
        stats = {"loss/policy": 0.0, "loss/entropy": 0.0}
        for _ in range(c.ppo_epochs):
            self.opt.zero_grad(set_to_none=True)
            for s in range(0, len(batch), c.micro_batch_size):
                part = batch.slice(s, s + c.micro_batch_size)
                logp, ent = forward_stats(self.policy, part, with_entropy=True, bf16=c.bf16_autocast)
                width = logp.size(1)
                weight = part.mask.sum() / n_tokens  # token-mean over the whole batch
                pg = algos.policy_loss(logp, old_logp[s : s + c.micro_batch_size, :width], adv[s : s + c.micro_batch_size], part.mask, clip)
                entropy = algos.masked_mean(ent, part.mask)
                ((pg - c.entropy_coef * entropy) * weight).backward()
                stats["loss/policy"] += float(pg.detach()) * float(weight) / c.ppo_epochs
                stats["loss/entropy"] += float(entropy.detach()) * float(weight) / c.ppo_epochs
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.grad_clip)
            if not math.isfinite(float(grad_norm)):
                raise FloatingPointError(f"non-finite gradient norm at RL step {self.step_idx + 1}")
            self.opt.step()
        self.sched.step()
        return {**stats, "optim/grad_norm": float(grad_norm), "optim/lr": self.sched.get_last_lr()[0]}

    # ---------------------------------------------------------------- one step
    def step(self) -> tuple[dict, list[dict]]:
        timer = PhaseTimer()
        with timer("sample"):
            r = self.sample()
        with timer("reward"):
            self.reward(r)
            self.select(r)
        with timer("advantages"):
            flat = r.flat()
            batch = pack([r.prompt_ids[g] for g, _ in flat], [c.token_ids for _, c in flat], self.tok.pad_token_id, self.device)
            old_logp = logprobs_no_grad(self.policy, batch, self.cfg.micro_batch_size, self.cfg.bf16_autocast)
            adv, kl_stats = self.advantages(r, batch, old_logp)
        with timer("update"):
            upd = self.update(batch, old_logp, adv)
        self.step_idx += 1
        with timer("anchor"):
            self.anchor.update(self.policy, self.step_idx)
        metrics = {"step": self.step_idx, **rollout_metrics(r), **kl_stats, **upd, **timer.seconds}
        metrics["perf/sampled_tokens_per_s"] = metrics["rollout/tokens"] / max(timer.seconds["time/sample_s"], 1e-9)
        return metrics, rollout_rows(r, adv.view(-1).tolist())

    # ---------------------------------------------------------------- state
    def state(self) -> dict:
        return {"step": self.step_idx, "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "anchor": self.anchor.state_dict(), "torch_rng": torch.get_rng_state(), "py_rng": random.getstate()}

    def load_state(self, state: dict) -> None:
        self.step_idx = state["step"]
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.anchor.load_state_dict(state["anchor"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["py_rng"])


class PhaseTimer:
    """Wall seconds per named phase: `with timer("sample"): ...` -> seconds["time/sample_s"]."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self) -> None:
                self.t0 = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                timer.seconds[f"time/{name}_s"] = time.perf_counter() - self.t0

        return _Ctx()


def rollout_metrics(r: Rollouts) -> dict[str, float]:
    parts = [p for group in r.parts for p in group]
    comps = [c for group in r.groups for c in group]
    n = len(parts)
    lengths = [c.num_tokens for c in comps]
    solved = [sum(p.correct for p in g) / len(g) for g in r.parts]
    return {
        "reward/mean": sum(p.reward for p in parts) / n,
        "rollout/acc": sum(p.correct and not p.penalised for p in parts) / n,
        "rollout/group_pass_frac": sum(s > 0 for s in solved) / len(solved),
        "rollout/group_all_solved_frac": sum(s == 1 for s in solved) / len(solved),
        "rollout/len_mean": sum(lengths) / n, "rollout/len_max": max(lengths), "rollout/tokens": sum(lengths),
        "rollout/truncated_frac": sum(c.finish_reason == "length" for c in comps) / n,
        "penalty/overlong": sum(p.overlong for p in parts), "penalty/repetitive": sum(p.repetitive for p in parts),
        "penalty/garbled": sum(p.garbled for p in parts),
        "select/drawn": n, "select/kept": sum(len(g) for g, u in zip(r.groups, r.used) if u),
        "select/groups_dropped": sum(not u for u in r.used),
    }


def rollout_rows(r: Rollouts, adv: Sequence[float]) -> list[dict]:
    rows, i = [], 0
    for g, (p, group, parts) in enumerate(zip(r.problems, r.groups, r.parts)):
        for c, part in zip(group, parts):
            rows.append({"problem_id": p.id, "question": p.question, "sample": c.sample_index, "response": c.text,
                         "num_tokens": c.num_tokens, "finish_reason": c.finish_reason, "correct": part.correct,
                         "overlong": part.overlong, "repetitive": part.repetitive, "garbled": part.garbled,
                         "reward": part.reward, "advantage": adv[i], "used": r.used[g]})
            i += 1
    return rows


def heldout_eval(sampler: Sampler, task: Task, problems: list[Problem], max_new_tokens: int, seed: int) -> dict:
    """Held-out accuracy at temperature 1.0 and the rollout length limit."""
    cfg = EvalConfig(num_problems=len(problems), seed=seed,
                     sampling=SamplingConfig(temperature=1.0, max_new_tokens=max_new_tokens))
    summary, _ = evaluate(sampler, task, problems, cfg)
    return summary


def train(trainer: Trainer, heldout: list[Problem], on_step: Callable[[dict, list[dict]], None],
          on_eval: Callable[[dict], None], on_save: Callable[[], None], progress: bool = True) -> dict:
    """Run the remaining steps; evaluate and save on schedule. Returns the last eval summary."""
    c = trainer.cfg
    last_eval: dict = {}
    bar = tqdm(range(trainer.step_idx, c.steps), desc="rl", unit="step", disable=not progress,
               initial=trainer.step_idx, total=c.steps)
    for _ in bar:
        metrics, rows = trainer.step()
        on_step(metrics, rows)
        bar.set_postfix(reward=f"{metrics['reward/mean']:.2f}", len=f"{metrics['rollout/len_mean']:.0f}")
        s = trainer.step_idx
        if (c.eval_every and s % c.eval_every == 0) or s == c.steps:
            last_eval = {"step": s, **heldout_eval(trainer.sampler, trainer.task, heldout, c.max_new_tokens, 1234)}
            on_eval(last_eval)
        if (c.save_every and s % c.save_every == 0) or s == c.steps:
            on_save()
    return last_eval
