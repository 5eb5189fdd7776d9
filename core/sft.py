"""Supervised fine-tuning on reasoning traces (T1 section 1-2).

Loss on response tokens only (the prompt is masked), AdamW with linear warmup and cosine
decay, gradient accumulation, gradient clipping, full fine-tuning or LoRA (PEFT).
Simplified from the paper: it trains 3 epochs at lr 1e-5 on ~12k long traces of a 14B/32B
model; the embedded preset trains a 1M-parameter model for a fixed number of steps at a much
higher rate, which is what a model that small needs.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from core.config import SFTConfig
from core.dist import (
    SINGLE,
    Dist,
    gradient_scale,
    is_sharded,
    load_optimizer_state,
    optimizer_state,
)
from core.optim import make_optimizer
from core.tasks.base import Task, TaskError
from core.types import Problem


@dataclass(frozen=True)
class Example:
    """One training sequence. `loss_mask[i]` is 1 where token i is a response token."""

    input_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]


def render_example(
    task: Task, problem: Problem, response: str, tokenizer: Any
) -> Example:
    """Prompt (masked) + response + EOS (trained). Tokenized apart so the boundary is exact."""
    prompt_ids = tokenizer(task.render_prompt(problem, tokenizer), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return Example(
        tuple(prompt_ids + response_ids), tuple([0] * len(prompt_ids) + [1] * len(response_ids))
    )


def trace_problem(trace: dict, where: str) -> Problem:
    """The Problem a synthesized trace answers (its question and gold answer)."""
    missing = [k for k in ("question", "response") if not trace.get(k)]
    if missing:
        raise TaskError(f"{where}: trace is missing {', '.join(missing)}")
    return Problem(
        id=str(trace.get("problem_id", where)),
        question=trace["question"],
        answer=str(trace.get("answer", "")),
        meta=trace.get("meta") or {},
    )


def build_examples(
    traces: Sequence[dict], task: Task, tokenizer: Any, max_seq_len: int
) -> tuple[list[Example], int]:
    """Examples for `traces`, dropping those longer than `max_seq_len`; returns (kept, dropped)."""
    kept: list[Example] = []
    for i, trace in enumerate(traces):
        ex = render_example(task, trace_problem(trace, f"trace {i + 1}"), trace["response"], tokenizer)
        if len(ex.input_ids) <= max_seq_len:
            kept.append(ex)
    if not kept:
        raise TaskError(
            f"no SFT examples left: {len(traces)} traces, all longer than max_seq_len={max_seq_len}"
            if traces else "the SFT data set is empty"
        )
    return kept, len(traces) - len(kept)


# more than this share of the traces dropped for length: the run says so (the embedded pair-sum
# task's default drops about a quarter, its overlong traces, on purpose)
DROPPED_WARN_SHARE = 0.5


def dropped_warning(total: int, dropped: int, max_seq_len: int) -> str | None:
    """A warning line when `max_seq_len` drops more than half of `total` traces: SFT then learns
    from the short ones only, as when a task with long traces runs without its preset."""
    if total == 0 or dropped / total <= DROPPED_WARN_SHARE:
        return None
    return (f"warning: {dropped} of {total} traces ({dropped / total:.0%}) are longer than sft.max_seq_len="
            f"{max_seq_len} tokens and were dropped; raise sft.max_seq_len to train on them (the presets in "
            f"lab/presets set the lengths their tasks need, e.g. --preset minimath)")


def collate(batch: Sequence[Example], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (-100 outside the response)."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        att[i, :n] = 1
        mask = torch.tensor(e.loss_mask, dtype=torch.bool)
        labels[i, :n] = torch.where(mask, ids[i, :n], torch.full_like(ids[i, :n], -100))
    return {"input_ids": ids.to(device), "attention_mask": att.to(device), "labels": labels.to(device)}


def response_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over response tokens; returns (loss, token count).

    No attention mask is passed: padding is on the right, so under the causal mask no real
    token ever sees a pad, and the unmasked path is the fast fused one.
    """
    logits = model(input_ids=batch["input_ids"]).logits
    labels = batch["labels"][:, 1:]
    logits = logits[:, :-1].float()
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    n = int((labels != -100).sum())
    return loss / max(n, 1), n


def batches(examples: Sequence[Example], batch_size: int, seed: int, pool: int = 64):
    """Endless shuffled batches of similar length (deterministic in seed).

    Each epoch is shuffled, cut into pools of `pool` batches, each pool sorted by length and
    cut into batches, and the batches shuffled again: padding stays small (traces range
    from 20 to 300 tokens) while every batch is still a random draw of problems.
    """
    epoch = 0
    while True:
        rng = random.Random(f"{seed}-{epoch}")
        order = list(range(len(examples)))
        rng.shuffle(order)
        out: list[list[int]] = []
        span = batch_size * pool
        for p in range(0, len(order), span):
            chunk = sorted(order[p : p + span], key=lambda i: len(examples[i].input_ids))
            out += [chunk[s : s + batch_size] for s in range(0, len(chunk) - batch_size + 1, batch_size)]
        rng.shuffle(out)
        for idx in out:
            yield [examples[i] for i in idx]
        epoch += 1


def train_sft(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    cfg: SFTConfig,
    log: Callable[[dict], None],
    progress: bool = True,
    state: dict | None = None,
    save: Callable[[int, dict], None] | None = None,
    dist: Dist = SINGLE,
) -> dict:
    """Train in place. Calls `log(record)` every `cfg.log_every` steps and, every
    `cfg.save_every` steps before the last, `save(step, resume state)`; returns final figures.
    With `state` (what `save` got), training continues exactly where it was saved: optimizer,
    schedule, RNG and the position in the data order. Under torchrun every rank draws the same
    batches and trains its block of each one's sequences; the gradients are summed over ranks
    with each block weighted by its share of the batch's response tokens, so the step is the
    one-process step."""
    batch_size = min(cfg.batch_size, len(examples))
    micro = min(cfg.micro_batch_size, batch_size)
    opt, sched = make_optimizer(model.parameters(), cfg.lr, cfg.warmup_steps, cfg.max_steps,
                                betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    model.train()
    data = batches(examples, batch_size, cfg.seed)
    start = 0
    if state is not None:
        load_optimizer_state(model, opt, state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
        for _ in range(start):  # the batches already trained on: the data order goes on from there
            next(data)
    t0, tokens, last = time.time(), 0, {}
    bar = tqdm(range(start, cfg.max_steps), desc="sft", unit="step", disable=not progress,
               initial=start, total=cfg.max_steps)
    for step in bar:
        batch = next(data)
        mine = [batch[i] for i in dist.shard(len(batch))]
        loss_mean, n = accumulate_gradients(model, mine, micro, tokenizer.pad_token_id, cfg.bf16_autocast,
                                            total=_count(batch), scale=gradient_scale(model, dist))
        if dist.active:
            loss_sum, n_sum = dist.sum([loss_mean * n, n])
            loss_mean = loss_sum / max(n_sum, 1)
            if not is_sharded(model):  # FSDP2 reduced them in backward
                dist.sum_gradients(model.parameters())
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += sum(len(e.input_ids) for e in batch)
        last = {"step": step + 1, "loss/sft": loss_mean, "optim/lr": sched.get_last_lr()[0],
                "optim/grad_norm": float(grad_norm), "time/elapsed_s": time.time() - t0,
                "perf/tokens_per_s": tokens / max(time.time() - t0, 1e-9)}
        bar.set_postfix(loss=f"{last['loss/sft']:.3f}")
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
            if not math.isfinite(last["loss/sft"]):
                raise FloatingPointError(f"SFT loss is {last['loss/sft']} at step {step + 1}: lower sft.lr")
            log(last)
        if save is not None and cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.max_steps:
            save(step + 1, {"step": step + 1, "optimizer": optimizer_state(model, opt), "scheduler": sched.state_dict(),
                            "torch_rng": torch.get_rng_state()})
    return last


def accumulate_gradients(
    model: Any, batch: Sequence[Example], micro: int, pad_id: int, bf16: bool, total: int | None = None,
    scale: float = 1.0,
) -> tuple[float, int]:
    """Backward over `batch` in micro-batches; grads equal those of one full-batch pass.

    Each micro-batch loss is weighted by its share of the batch's response tokens (`total`;
    default: those of `batch`; a rank's block of a batch passes the whole batch's), so the sum
    of the micro gradients is the gradient of the full batch's token-mean loss (times `scale`:
    what undoes a reduction that averages over ranks, `core.dist.gradient_scale`).
    Returns (token-mean loss, response tokens) of `batch`.
    """
    device = str(next(model.parameters()).device)
    total = _count(batch) if total is None else total
    loss_sum, n_sum = 0.0, 0
    for m in range(0, len(batch), micro):
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss, n = response_loss(model, collate(batch[m : m + micro], pad_id, device))
        (loss * (n * scale / total)).backward()
        loss_sum, n_sum = loss_sum + float(loss.detach()) * n, n_sum + n
    return loss_sum / max(n_sum, 1), n_sum


def _count(batch: Sequence[Example]) -> int:
    """Response tokens in a batch: the normaliser that makes accumulation match one big batch."""
    return sum(sum(e.loss_mask[1:]) for e in batch)
