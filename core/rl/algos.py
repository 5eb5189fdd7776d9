"""Pure tensor math of the T1 RL recipe. No state, no I/O; shapes in every docstring.

Notation: G prompts (groups), K samples per prompt, B = G*K sequences, T response tokens,
V vocabulary. `mask` is 1.0 on real response tokens, 0.0 on padding.
"""

from __future__ import annotations

import torch


def rloo_advantages(rewards: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """REINFORCE leave-one-out: A_i = r_i - mean_{j != i, j valid} r_j (no std division).

    rewards: [G, K]. valid: [G, K] bool; invalid (penalised) samples keep their own reward
    in A_i but are left out of every baseline, as T1 does. A sample with no valid peer gets
    baseline 0. Returns [G, K]. With all samples valid, each row of A sums to 0.
    """
    r = rewards.float()
    v = torch.ones_like(r, dtype=torch.bool) if valid is None else valid.bool()
    vf = v.float()
    total, count = (r * vf).sum(-1, keepdim=True), vf.sum(-1, keepdim=True)
    others_sum = total - r * vf  # remove self only if self is counted
    others_n = count - vf
    baseline = torch.where(others_n > 0, others_sum / others_n.clamp(min=1), torch.zeros_like(r))
    return r - baseline


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: (r - mean) / (std + eps) over each group. rewards: [G, K] -> [G, K]."""
    r = rewards.float()
    return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True, unbiased=False) + eps)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token_t | prefix). logits: [B, T, V] (already aligned to tokens), tokens: [B, T] -> [B, T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each next-token distribution. [B, T, V] -> [B, T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """token_logprobs and entropy_from_logits from one log-softmax (one pass over V, not two).

    logits: [B, T, V] (aligned to tokens), tokens: [B, T] -> ([B, T], [B, T]).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Estimate of KL(pi || pi_ref) per sampled token, from log-probs of the sampled tokens.

    logp, ref_logp: [B, T]. kind "k1": logp - ref_logp (unbiased, can be negative);
    "k3": exp(ref - logp) - (ref - logp) - 1 (unbiased, >= 0, lower variance; Schulman).
    Returns [B, T]; 0 where the two policies agree.
    """
    diff = ref_logp - logp
    if kind == "k1":
        return -diff
    if kind == "k3":
        return torch.expm1(diff) - diff
    raise ValueError(f"unknown KL estimator {kind!r}: use k1 or k3")


def sequence_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over real tokens. values, mask: [B, T] -> [B]."""
    return (values * mask).sum(-1)


def centred(x: torch.Tensor) -> torch.Tensor:
    """x - mean over each group. [G, K] -> [G, K]; rows sum to 0 (T1's centred KL penalty)."""
    return x - x.mean(-1, keepdim=True)


def kl_shaped_rewards(rewards: torch.Tensor, seq_kl: torch.Tensor, beta: float) -> torch.Tensor:
    """T1: r_i - beta * (d_i - mean_j d_j), d = KL(pi || pi_ref) of each response. [G, K] -> [G, K]."""
    return rewards.float() - beta * centred(seq_kl.float())


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Token-level policy-gradient loss, averaged over all real tokens of the batch.

    logp (with grad), old_logp (sampling policy, no grad): [B, T]; advantages: [B];
    mask: [B, T]. Without clipping the ratio is exp(logp - old_logp) (= 1 on-policy, with
    gradient grad logp: plain REINFORCE). With clip_eps = (low, high), PPO's pessimistic clip
    to [1 - low, 1 + high]. Returns a scalar. Its value sits near -mean(A) by construction:
    watch reward, entropy and KL, not this number.
    """
    ratio = torch.exp(logp - old_logp.detach())
    adv = advantages.unsqueeze(-1)
    surrogate = ratio * adv
    if clip_eps is not None:
        clipped = ratio.clamp(1 - clip_eps[0], 1 + clip_eps[1]) * adv
        surrogate = torch.minimum(surrogate, clipped)
    return -(surrogate * mask).sum() / mask.sum().clamp(min=1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens. [B, T] -> scalar."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def ema_(anchor: list[torch.Tensor], params: list[torch.Tensor], rate: float) -> None:
    """In place: anchor <- rate * anchor + (1 - rate) * params (the dynamic reference).

    rate 0 copies the policy (a hard reset); rate 1 freezes the anchor.
    """
    for a, p in zip(anchor, params, strict=True):
        a.mul_(rate).add_(p.detach().to(a.dtype), alpha=1 - rate)
