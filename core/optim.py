"""The optimizer and learning-rate schedule SFT and RL share: AdamW, linear warmup, cosine decay."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear 0->1 over `warmup` steps, then cosine 1->0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float, warmup_steps: int, total_steps: int,
                   betas: tuple[float, float], weight_decay: float = 0.0) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the parameters that train, and its warmup-cosine LambdaLR schedule."""
    trainable = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, betas=betas, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup_steps, total_steps))
    return opt, sched
