"""Invariants of the RL math, with hand-computed numbers and loop references."""

from __future__ import annotations

import math

import pytest
import torch

from core.rl.algos import (
    centred,
    ema_,
    entropy_from_logits,
    grpo_advantages,
    kl_per_token,
    kl_shaped_rewards,
    logprobs_and_entropy,
    policy_loss,
    rloo_advantages,
    token_logprobs,
)


def close(t, expected) -> bool:
    return torch.allclose(t.float(), torch.tensor(expected, dtype=torch.float32), atol=1e-5)


def _loop_rloo(rewards, valid):
    out = []
    for row, vrow in zip(rewards, valid):
        res = []
        for i, r in enumerate(row):
            others = [row[j] for j in range(len(row)) if j != i and vrow[j]]
            res.append(r - (sum(others) / len(others) if others else 0.0))
        out.append(res)
    return out


def test_rloo_hand_computed_and_sums_to_zero() -> None:
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert close(rloo_advantages(r), [[2 / 3, -2 / 3, -2 / 3, 2 / 3]])
    g = torch.Generator().manual_seed(0)
    r = torch.randint(0, 2, (16, 8), generator=g).float()
    assert torch.allclose(rloo_advantages(r).sum(-1), torch.zeros(16), atol=1e-6)


def test_rloo_matches_loop_with_penalised_samples_left_out() -> None:
    g = torch.Generator().manual_seed(1)
    r = torch.randint(-1, 2, (10, 6), generator=g).float()
    valid = r > -1
    got = rloo_advantages(r, valid)
    want = torch.tensor(_loop_rloo(r.tolist(), valid.tolist()))
    assert torch.allclose(got, want, atol=1e-6)
    # a -1 sample is judged against the mean of its valid peers
    r = torch.tensor([[-1.0, 1.0, 0.0]])
    assert close(rloo_advantages(r, r > -1), [[-1.5, 1.0, -1.0]])


def test_grpo_advantages_are_standardised() -> None:
    a = grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    assert a.tolist()[0] == pytest.approx([1, -1, -1, 1], abs=1e-3)


def test_entropy_of_uniform_logits_is_log_v() -> None:
    assert torch.allclose(entropy_from_logits(torch.zeros(2, 3, 50)), torch.full((2, 3), math.log(50)))


def test_kl_of_identical_policies_is_zero_and_k3_nonnegative() -> None:
    logp = torch.log_softmax(torch.randn(4, 7), -1)
    for kind in ("k1", "k3"):
        assert torch.allclose(kl_per_token(logp, logp, kind), torch.zeros(4, 7))
    other = torch.log_softmax(torch.randn(4, 7), -1)
    assert (kl_per_token(logp, other, "k3") >= 0).all()


def test_centred_kl_sums_to_zero_and_shapes_rewards() -> None:
    d = torch.tensor([[1.0, 2.0, 6.0], [0.5, 0.5, 0.5]])
    assert torch.allclose(centred(d).sum(-1), torch.zeros(2))
    shaped = kl_shaped_rewards(torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]), d, beta=0.1)
    assert close(shaped, [[1.2, 1.1, 0.7], [0.0, 1.0, 0.0]])


def test_fused_logprobs_and_entropy_match_the_separate_functions() -> None:
    logits, tokens = torch.randn(3, 5, 11), torch.randint(0, 11, (3, 5))
    logp, ent = logprobs_and_entropy(logits, tokens)
    assert torch.allclose(logp, token_logprobs(logits, tokens)) and torch.allclose(ent, entropy_from_logits(logits))


def test_token_logprobs_gather() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = [1/4, 3/4]
    assert token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))


def test_policy_loss_on_policy_is_reinforce_and_clip_limits_ratio() -> None:
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss = policy_loss(logp, logp.detach(), adv, mask)
    assert loss.item() == pytest.approx(-(1 + 1 - 2) / 3)
    loss.backward()
    assert close(logp.grad, [[-1 / 3, -1 / 3], [2 / 3, 0.0]])
    # ratio 2 with positive advantage is clipped at 1.26
    lp = torch.tensor([[math.log(2.0)]])
    clipped = policy_loss(lp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1), (0.2, 0.26))
    assert clipped.item() == pytest.approx(-1.26)


def test_one_ema_step_hand_computed() -> None:
    anchor, params = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 0.0])]
    ema_(anchor, params, rate=0.75)
    assert anchor[0].tolist() == pytest.approx([1.5, 1.5])
    ema_(anchor, params, rate=0.0)  # hard reset copies the policy
    assert anchor[0].tolist() == [3.0, 0.0]
