"""SFT: loss masks, accumulation, schedule, a short run that changes weights, LoRA."""

from __future__ import annotations

import math

import pytest
import torch

from core.config import LoraConfig, SFTConfig
from core.models import TinySpec, apply_lora, build_tiny_model
from core.optim import warmup_cosine
from core.sft import (
    accumulate_gradients,
    build_examples,
    collate,
    dropped_warning,
    render_example,
    response_loss,
    train_sft,
)
from core.synth import minimath as minimath_synth
from core.synth.programmatic import synthesize
from core.tasks.base import TaskError
from core.tasks.minimath import MiniMathTask

SMALL = TinySpec(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


def test_loss_mask_covers_response_and_eos_only(pairsum_task) -> None:
    _, tok = build_tiny_model(SMALL)
    p = pairsum_task.problems("train", 1)[0]
    ex = render_example(pairsum_task, p, "answer 1 + 2", tok)
    prompt_len = len(tok(pairsum_task.render_prompt(p), add_special_tokens=False)["input_ids"])
    assert ex.loss_mask == tuple([0] * prompt_len + [1] * 5)  # answer, 1, +, 2, <eos>
    assert ex.input_ids[-1] == tok.eos_token_id
    batch = collate([ex], tok.pad_token_id, "cpu")
    assert (batch["labels"][0, :prompt_len] == -100).all()


def test_warmup_cosine_shape() -> None:
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0)


def _examples(task, tok, n=32):
    traces = list(synthesize(task.problems("train", n), "t1", 0.8, 0.1, seed=0))
    return build_examples(traces, task, tok, max_seq_len=400)[0]


def test_accumulation_matches_one_big_batch(pairsum_task) -> None:
    """Micro-batches weighted by response tokens give the gradient of the full batch."""
    model, tok = build_tiny_model(SMALL, seed=0)
    ex = _examples(pairsum_task, tok, 8)
    grads = []
    for micro in (8, 3):
        model.zero_grad()
        loss, n = accumulate_gradients(model, ex, micro, tok.pad_token_id, bf16=False)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert n == sum(sum(e.loss_mask[1:]) for e in ex)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_short_run_changes_weights_and_lowers_loss(pairsum_task) -> None:
    model, tok = build_tiny_model(SMALL, seed=0)
    ex = _examples(pairsum_task, tok, 64)
    before = [p.detach().clone() for p in model.parameters()]
    batch = collate(ex[:32], tok.pad_token_id, "cpu")
    loss0 = float(response_loss(model, batch)[0].detach())
    records: list[dict] = []
    cfg = SFTConfig(max_steps=30, warmup_steps=2, batch_size=16, micro_batch_size=8, lr=1e-2, log_every=10)
    train_sft(model, tok, ex, cfg, log=records.append, progress=False)
    assert [r["step"] for r in records] == [10, 20, 30]
    assert all(math.isfinite(r["loss/sft"]) for r in records)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert float(response_loss(model, batch)[0].detach()) < loss0


def test_lora_trains_adapters_only(pairsum_task) -> None:
    model, tok = build_tiny_model(SMALL, seed=0)
    cfg = SFTConfig(max_steps=3, warmup_steps=0, batch_size=8, micro_batch_size=8, lora=LoraConfig(enabled=True, r=4))
    model = apply_lora(model, cfg.lora)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" not in n}
    train_sft(model, tok, _examples(pairsum_task, tok, 16), cfg, log=lambda r: None, progress=False)
    for n, p in model.named_parameters():
        if "lora" not in n:
            assert torch.equal(base[n], p), n
    assert any("lora" in n and p.requires_grad for n, p in model.named_parameters())


def test_empty_and_too_long_data_are_clear_errors(pairsum_task) -> None:
    _, tok = build_tiny_model(SMALL)
    with pytest.raises(TaskError, match="empty"):
        build_examples([], pairsum_task, tok, 100)
    traces = list(synthesize(pairsum_task.problems("train", 3), "t1", 0.8, 0.1, seed=0))
    with pytest.raises(TaskError, match="max_seq_len=8"):
        build_examples(traces, pairsum_task, tok, 8)
    with pytest.raises(TaskError, match="missing response"):
        build_examples([{"question": "numbers 1 2 target 3"}], pairsum_task, tok, 100)


def test_a_length_limit_that_drops_most_traces_is_announced(pairsum_task) -> None:
    """The default length limit drops the pair-sum task's overlong traces without a word; the
    same limit on the embedded math task's longer traces drops most of them, and says so."""
    limit = SFTConfig().max_seq_len
    _, tok = build_tiny_model(SMALL)
    traces = list(synthesize(pairsum_task.problems("train", 400), "t1", 0.8, 0.1, seed=0))
    _, dropped = build_examples(traces, pairsum_task, tok, limit)
    assert 0 < dropped and dropped_warning(len(traces), dropped, limit) is None
    math_task = MiniMathTask()
    _, math_tok = build_tiny_model(SMALL, task="minimath")
    traces = list(minimath_synth.synthesize(math_task.problems("train", 200), "t1", 0.85, 0.15, 0, 20))
    _, dropped = build_examples(traces, math_task, math_tok, limit)
    warning = dropped_warning(len(traces), dropped, limit)
    assert warning is not None and warning.startswith("warning: ") and "\n" not in warning
    assert f"{dropped} of {len(traces)} traces" in warning and f"sft.max_seq_len={limit}" in warning
    assert dropped_warning(10, 5, limit) is None and dropped_warning(0, 0, limit) is None
