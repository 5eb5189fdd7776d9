"""The decode loop's state between two forward passes, and left padding of token rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


def left_pad(rows: Sequence[Sequence[int]], pad_id: int,
              device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """[R, W] ids and attention mask of `rows` left-padded to the longest, each built in one
    call from lists: much faster than a tensor per row (docs/perf_log.md)."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids.to(device), mask.to(device)


@dataclass
class DecodeState:
    """The decode loop between two forward passes. Rows of the tensors are live rows only.

    t: tokens generated so far by the longest-running rows; cache: KV of everything fed so far
    (prompt + all but the last generated token); mask: [R, W] attention mask of the cache plus
    the pending token; step_ids / step_pos: [R, 1] the pending token and its position;
    live: [R] original row index of each live row; generated: per original row, its tokens;
    finished: [R] bool or None, rows that have ended but are still in the batch (a cache that is
    slow to drop rows keeps a few; they are dropped with the next ones)."""

    t: int
    cache: Any
    mask: torch.Tensor
    step_ids: torch.Tensor
    step_pos: torch.Tensor
    live: torch.Tensor
    generated: list[list[int]]
    finished: torch.Tensor | None = None


DecodeHook = Callable[[DecodeState], None]
