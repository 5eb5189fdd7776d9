"""One T1 RL step in named phases: sample -> reward -> select -> advantages -> update -> anchor.

The KL to the anchor is the sum of per-token log-ratios (k1) of each response, centred over its
group and folded into the reward with weight beta (T1); the entropy bonus enters the loss.
Penalised samples (-1) are left out of the RLOO baseline. The sampling policy's log-probs come
from the sampler, which computes them while decoding (saving a forward pass); the update is
on-policy REINFORCE unless the PPO clip is on, so its ratio is exactly 1 and needs no stored
log-probs. The story around the steps (logging, evaluation, checkpoints): `core.rl.loop`.
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from typing import Any

import torch

from core.config import RLConfig
from core.dist import (
    SINGLE,
    Dist,
    full_state,
    gradient_scale,
    is_sharded,
    load_optimizer_state,
    optimizer_state,
    shard_model,
)
from core.optim import make_optimizer
from core.rewards import repeat_rule, score
from core.rl import algos
from core.rl.anchor import Anchor, adapter_params
from core.rl.batch import RolloutBatch, forward_stats, logprobs_no_grad, pack, place_logprobs
from core.rl.metrics import PhaseTimer, Rollouts, no_signal_frac, rollout_metrics, rollout_rows
from core.rl.oversample import all_equal, select_groups
from core.sampling.protocol import Sampler, derive_seed
from core.sampling.text import encode_prompts, token_texts
from core.tasks import Task, response_features, trace_stats
from core.types import Completion, Problem


class Trainer:
    """Holds policy, optimizer, anchor and the data position; `step()` runs one iteration.

    With `cfg.lora.enabled` the policy must already carry its LoRA adapters (PEFT); only they train.
    Under torchrun (`dist`) each rank samples its block of the step's prompts (all K samples of
    a prompt on one rank, so RLOO's groups stay whole); selection, the loss's token mean and the
    gradient are global, and so are the metrics: N ranks give what one process gives at the
    same `prompts_per_step` and seeds.

    `replica`, with a policy sharded by FSDP2 (`core.dist.shard_model`): a whole copy of it that
    the sampler decodes with (each rank decodes on its own, as a colocated vLLM engine would),
    refreshed from the sharded weights after each update (`sampling_policy`).
    """

    def __init__(self, policy: Any, tokenizer: Any, sampler: Sampler, task: Task,
                 train: list[Problem], cfg: RLConfig, dist: Dist = SINGLE, replica: Any = None) -> None:
        self.policy, self.tok, self.sampler, self.task, self.train, self.cfg, self.dist = (
            policy, tokenizer, sampler, task, train, cfg, dist)
        self.replica = replica
        self.opt, self.sched = make_optimizer(policy.parameters(), cfg.lr, cfg.warmup_steps, cfg.steps,
                                              betas=(0.9, 0.99))
        anchor_copy = None
        if is_sharded(policy) and cfg.anchor != "none" and not cfg.lora.enabled:  # sharded like the policy
            anchor_copy = shard_model(copy.deepcopy(replica), cfg.bf16_autocast)
        self.anchor = Anchor(policy, cfg.anchor, cfg.anchor_rate, cfg.reset_every, lora=cfg.lora.enabled,
                             copy_of=anchor_copy)
        self.step_idx = 0
        self._order: tuple[int, list[int]] = (-1, [])
        self.device = str(next(policy.parameters()).device)
        self.params = cfg.sampling
        self.num_drawn = cfg.num_samples_drawn or cfg.num_generations
        # auto: on CPU a pass over fewer tokens runs faster per token, down to about 4096 (smaller
        # was slower again; docs/perf_log.md); no cap on a GPU
        self.pass_tokens = cfg.pass_tokens if cfg.pass_tokens >= 0 else (4096 if self.device == "cpu" else 0)
        self._token_texts: list[str] | None = None
        self._idle = 0  # passes this rank runs idle this step (FSDP2: as many passes as the busiest rank)

    def _epoch_order(self, epoch: int) -> list[int]:
        """The shuffled problem order of `epoch` (a pure function of seed and epoch; cached)."""
        if self._order[0] != epoch:
            order = list(range(len(self.train)))
            random.Random(f"{self.cfg.seed}-epoch-{epoch}").shuffle(order)
            self._order = (epoch, order)
        return self._order[1]

    # ---------------------------------------------------------------- phases
    def sample(self) -> Rollouts:
        """Prompts at the data position (an epoch-seeded shuffle) x N samples at temperature:
        this rank's block of them (a sample's draws depend on its prompt's place in the step)."""
        g = self.cfg.prompts_per_step
        start = self.step_idx * g
        epoch, offset = divmod(start, len(self.train))
        mine = self.dist.shard(g)
        idx = [self._epoch_order(epoch + (offset + i) // len(self.train))[(offset + i) % len(self.train)]
               for i in mine]
        problems = [self.train[i] for i in idx]
        prompt_ids = encode_prompts(self.tok, [self.task.render_prompt(p, self.tok) for p in problems])
        with torch.inference_mode():  # lighter than no_grad per op; nothing sampled feeds autograd
            groups = self.sampler.generate(prompt_ids, self.params, n=self.num_drawn,
                                           seed=derive_seed(self.cfg.seed, "rl", self.step_idx),
                                           prompt_offset=mine.start)
        return Rollouts(problems, prompt_ids, groups)

    def reward(self, r: Rollouts) -> None:
        """Correctness from the task's verifier, replaced by -1 when a penalty fires; every drawn sample."""
        flat = [(g, comp) for g, group in enumerate(r.groups) for comp in group]
        verdicts = self.task.check([r.problems[g] for g, _ in flat], [comp.text for _, comp in flat])
        c = self.cfg
        chars, count = repeat_rule(self.task.name, c.repeat_chars, c.repeat_count)
        parts = [score(comp, v, penalize_overlong=c.penalize_overlong, penalize_repetition=c.penalize_repetition,
                       penalize_garbled=c.penalize_garbled, repeat_chars=chars, repeat_count=count)
                 for (_, comp), v in zip(flat, verdicts)]
        n = self.num_drawn
        r.parts = [parts[i * n : (i + 1) * n] for i in range(len(r.groups))]

    def select(self, r: Rollouts) -> None:
        """Oversampling keeps K of the N drawn per group (`oversample_rule`); dynamic filtering
        (optional) then drops groups whose kept rewards are all equal: they teach nothing."""
        rewards = [[p.reward for p in parts] for parts in r.parts]
        seed = derive_seed(self.cfg.seed, "oversample", self.step_idx)
        everyone = [rw for part in self.dist.gather(rewards) for rw in part]  # the rule sees the whole step
        mine = self.dist.shard(len(everyone))
        r.kept = select_groups(everyone, self.cfg.num_generations, self.cfg.oversample_rule, seed)[mine.start : mine.stop]
        r.used = [not (self.cfg.drop_equal_groups and all_equal([x for x, k in zip(rw, kp) if k]))
                  for rw, kp in zip(rewards, r.kept)]

    def logprobs(self, prompts: list[list[int]], comps: list[Completion], batch: RolloutBatch,
                 passes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log pi_old, log pi_ref) of the batch's tokens, [B, L-1] each (ref None without anchor).

        pi_old is the sampling policy: the sampler's own log-probs when it reports them (no extra
        pass), else a no-grad pass. With the PPO ratio in use (clip, several epochs) under bf16
        autocast, it is always the no-grad pass, in the training forward's precision: the fp32
        sampler's log-probs against a bf16 forward would put the first epoch's ratio off 1 by
        rounding alone (and the clip would act on that noise). The anchor pass runs in the
        precision of pi_old: bf16 logits against fp32 ones add a spurious positive KL (E_p[log p
        - log q] of the rounding noise; on the embedded default the mean logged KL rose from
        about 2.5 to 3-4 nats per response).
        """
        c = self.cfg
        bf16 = c.bf16_autocast
        off_policy = c.clip or c.ppo_epochs > 1
        if all(comp.token_logprobs is not None for comp in comps) and not (off_policy and bf16):
            old = place_logprobs(prompts, [comp.token_logprobs or () for comp in comps], batch)
            bf16 = False  # the HF sampler decodes in the weights' dtype, without autocast
        else:
            old = logprobs_no_grad(self.policy, batch, 0, bf16, passes + [None] * self._idle)
        ref = self.anchor.logprobs(self.policy, batch, passes + [None] * self._idle, bf16) if self.anchor.active else None
        return old, ref

    def advantages(self, r: Rollouts, batch: RolloutBatch, old_logp: torch.Tensor,
                   ref_logp: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """RLOO (or GRPO) advantages on KL-shaped rewards of the kept samples; ([G*K], figures)."""
        k = self.cfg.num_generations
        kept = r.kept_flat()
        rewards = torch.tensor([p.reward for _, _, p in kept]).view(-1, k)
        valid = torch.tensor([not p.penalised for _, _, p in kept]).view(-1, k)
        seq_kl = torch.zeros_like(rewards)
        if ref_logp is not None:
            seq_kl = algos.sequence_sum(algos.kl_per_token(old_logp, ref_logp, "k1"), batch.mask).view(-1, k).cpu()
        shaped = algos.kl_shaped_rewards(rewards, seq_kl, self.cfg.beta)
        adv = algos.rloo_advantages(shaped, valid) if self.cfg.advantage == "rloo" else algos.grpo_advantages(shaped)
        if self.cfg.penalty_as == "advantage":  # the other reading of T1's -1: on the advantage itself
            adv = torch.where(valid, adv, torch.full_like(adv, -1.0))
        used = torch.tensor(r.used).unsqueeze(-1).expand_as(adv)
        adv = torch.where(used, adv, torch.zeros_like(adv))
        kl_sum, shaped_sum, n = self.dist.sum([float(seq_kl.sum()), float(shaped.sum()), shaped.numel()])
        return adv.reshape(-1).to(self.device), {"kl/anchor": kl_sum / max(n, 1),
                                                 "reward/shaped_mean": shaped_sum / max(n, 1)}

    def update(self, batch: RolloutBatch, old_logp: torch.Tensor, adv: torch.Tensor,
               passes: list[torch.Tensor]) -> dict:
        """Token-level policy gradient + entropy bonus, micro-batched, clipped, one optimizer step per epoch.

        `passes`: the row indices of each forward/backward pass (`RolloutBatch.passes`); the
        gradient is accumulated over them, so it does not depend on how the rows are split.

        On-policy (no clip, one epoch) the ratio is exp(logp - logp.detach()) = 1: plain
        REINFORCE. A non-finite loss raises FloatingPointError before any weight changes.
        """
        c = self.cfg
        global_tokens = self.dist.sum([float(batch.mask.sum())])[0]  # the token mean is over every rank's rows
        n_tokens = max(global_tokens, 1.0)
        clip = (c.clip_low, c.clip_high) if c.clip else None
        on_policy = clip is None and c.ppo_epochs == 1
        stats = {"loss/policy": 0.0, "loss/entropy": 0.0}
        if not on_policy:  # how far the first epoch's ratio is from 1 (0 up to kernel noise)
            stats["ppo/first_log_ratio_max"] = 0.0
        if global_tokens == 0:  # every group dropped: no gradient, and no optimizer step either
            with warnings.catch_warnings():  # (AdamW's momentum would still move the weights);
                warnings.simplefilter("ignore", UserWarning)  # the schedule goes on: "step before optimizer"
                self.sched.step()
            return {**stats, "optim/grad_norm": 0.0, "optim/lr": self.sched.get_last_lr()[0]}
        sharded = is_sharded(self.policy)
        if sharded:  # every rank runs as many passes (collectives); a pass with nothing to score runs idle
            passes = passes + [None] * self._idle
        else:
            passes = [rows for rows in passes if batch.mask[rows].any()]
        for epoch in range(c.ppo_epochs):
            self.opt.zero_grad(set_to_none=True)
            for rows in passes:
                if rows is None or not batch.mask[rows].any():
                    logp, _ = forward_stats(self.policy, batch.idle(), with_entropy=False, bf16=c.bf16_autocast)
                    (logp.sum() * 0.0).backward()
                    continue
                part = batch.take(rows)
                logp, ent = forward_stats(self.policy, part, with_entropy=True, bf16=c.bf16_autocast)
                old = logp.detach() if on_policy else old_logp[rows, : logp.size(1)]
                if not on_policy and epoch == 0:
                    gap = float(((logp.detach() - old).abs() * part.mask).max())
                    stats["ppo/first_log_ratio_max"] = max(stats["ppo/first_log_ratio_max"], gap)
                # token-mean over the whole batch, every rank's rows (and undoing FSDP2's average)
                weight = part.mask.sum() / n_tokens * gradient_scale(self.policy, self.dist)
                pg = algos.policy_loss(logp, old, adv[rows], part.mask, clip)
                entropy = algos.masked_mean(ent, part.mask)
                loss = (pg - c.entropy_coef * entropy) * weight
                self._check_finite(float(loss.detach()), "loss")
                loss.backward()
                share = float(part.mask.sum()) / n_tokens / c.ppo_epochs
                stats["loss/policy"] += float(pg.detach()) * share
                stats["loss/entropy"] += float(entropy.detach()) * share
            if not sharded:  # FSDP2 reduced them in backward
                self.dist.sum_gradients(self.policy.parameters())
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.grad_clip)
            self._check_finite(float(grad_norm), "gradient norm")
            self.opt.step()
        self.sched.step()
        stats["loss/policy"], stats["loss/entropy"] = self.dist.sum([stats["loss/policy"], stats["loss/entropy"]])
        if not on_policy:
            stats["ppo/first_log_ratio_max"] = self.dist.max([stats["ppo/first_log_ratio_max"]])[0]
        return {**stats, "optim/grad_norm": float(grad_norm), "optim/lr": self.sched.get_last_lr()[0]}

    def _check_finite(self, value: float, what: str) -> None:
        if not math.isfinite(value):
            raise FloatingPointError(f"RL step {self.step_idx + 1}: the {what} is {value}; "
                                     "stopped before updating the weights")

    # ---------------------------------------------------------------- one step
    def step(self) -> tuple[dict, list[dict]]:
        timer = PhaseTimer()
        with timer("sample"):
            r = self.sample()
        with timer("reward"):
            self.reward(r)
        with timer("select"):
            self.select(r)
        with timer("advantages"):
            kept = r.kept_flat()
            prompts = [r.prompt_ids[g] for g, _, _ in kept]
            batch = pack(prompts, [c.token_ids for _, c, _ in kept], self.tok.pad_token_id, self.device)
            passes = batch.passes(self.cfg.micro_batch_size, self.pass_tokens)
            self._idle = int(self.dist.max([len(passes)])[0]) - len(passes) if is_sharded(self.policy) else 0
            old_logp, ref_logp = self.logprobs(prompts, [c for _, c, _ in kept], batch, passes)
            if is_sharded(self.policy):  # FSDP2 keeps the root unit gathered after a forward with no backward
                self.policy.reshard()
            adv, kl_stats = self.advantages(r, batch, old_logp, ref_logp)
        with timer("update"):
            # groups that dynamic filtering dropped leave the loss: not in its token mean, no
            # entropy bonus (their advantages are 0 already)
            used = torch.tensor([r.used[g] for g, _, _ in kept], device=batch.mask.device)
            upd = self.update(RolloutBatch(batch.ids, batch.mask * used.unsqueeze(-1)), old_logp, adv, passes)
        self.step_idx += 1
        with timer("anchor"):
            self.anchor.update(self.policy, self.step_idx)
        seconds = dict(zip(timer.seconds, self.dist.max(list(timer.seconds.values()))))  # the slowest rank's
        r, per_sample = self._whole_step(r, adv.view(-1).tolist())
        structure = trace_stats([response_features(c.text, p.correct, self.task.name)
                                 for group, parts in zip(r.groups, r.parts) for c, p in zip(group, parts)])
        metrics = {"step": self.step_idx, **rollout_metrics(r),
                   "rollout/no_signal_group_frac": no_signal_frac(per_sample, len(r.groups)),
                   **structure, **kl_stats, **upd, **seconds}
        metrics["perf/sampled_tokens_per_s"] = metrics["rollout/tokens"] / max(seconds["time/sample_s"], 1e-9)
        if not self.dist.main:  # rank 0 writes the rows
            return metrics, []
        if self._token_texts is None:  # each token id's text, once: the rows' per-token strips
            self._token_texts = token_texts(self.tok)
        return metrics, rollout_rows(r, per_sample, self.tok, self._token_texts)

    def _whole_step(self, r: Rollouts, adv: list[float]) -> tuple[Rollouts, list[float]]:
        """Every rank's rollouts and advantages, in prompt order (the step as one process saw it)."""
        if not self.dist.active:
            return r, adv
        parts = self.dist.gather((r, adv))
        whole = Rollouts([p for x, _ in parts for p in x.problems], [p for x, _ in parts for p in x.prompt_ids],
                         [g for x, _ in parts for g in x.groups], [p for x, _ in parts for p in x.parts],
                         [k for x, _ in parts for k in x.kept], [u for x, _ in parts for u in x.used])
        return whole, [a for _, x in parts for a in x]

    # ---------------------------------------------------------------- state
    def sampling_policy(self) -> Any:
        """The model the sampler should decode with now: the policy, or its whole replica
        refreshed from the sharded weights (collective)."""
        if self.replica is None:
            return self.policy
        live = self.replica.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, tensor in full_state(self.policy, everywhere=True).items():
                live[name].copy_(tensor)
        return self.replica

    def state(self) -> dict:
        """Everything but the base weights: with LoRA the adapter tensors too. Whole tensors
        (gathered on rank 0 when sharded: collective, every rank calls it)."""
        adapters = {n: p.detach().clone() for n, p in adapter_params(self.policy).items()} if self.cfg.lora.enabled else {}
        return {"step": self.step_idx, "optimizer": optimizer_state(self.policy, self.opt),
                "scheduler": self.sched.state_dict(),
                "anchor": self.anchor.state_dict(), "adapters": adapters,
                "torch_rng": torch.get_rng_state(), "py_rng": random.getstate()}

    def load_state(self, state: dict) -> None:
        self.step_idx = state["step"]
        load_optimizer_state(self.policy, self.opt, state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.anchor.load_state_dict(state["anchor"])
        live = adapter_params(self.policy)
        with torch.no_grad():
            for name, tensor in state.get("adapters", {}).items():
                live[name].copy_(tensor)
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["py_rng"])
