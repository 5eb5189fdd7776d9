"""Rollouts as tensors: prompt + response ids, right-padded, with a response mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from core.rl.algos import logprobs_and_entropy, token_logprobs


@dataclass
class RolloutBatch:
    """B sequences. ids: [B, L]; mask: [B, L-1], 1.0 where ids[:, 1:] is a response token.

    Position t of `mask` / log-prob tensors scores token ids[:, t + 1] given ids[:, : t + 1].
    """

    ids: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.ids.size(0)

    def take(self, rows: torch.Tensor) -> RolloutBatch:
        """Rows `rows` (indices), trimmed to the longest of them."""
        return self._trimmed(self.ids[rows], self.mask[rows])

    @staticmethod
    def _trimmed(ids: torch.Tensor, mask: torch.Tensor) -> RolloutBatch:
        width = int(mask.sum(0).nonzero().max()) + 2 if mask.any() else 2
        return RolloutBatch(ids[:, :width], mask[:, : width - 1])

    def widths(self) -> torch.Tensor:
        """[B] long: the columns each row needs (up to its last response token)."""
        pos = torch.arange(1, self.mask.size(1) + 1, device=self.mask.device)
        return (self.mask * pos).amax(dim=1).long() + 1

    def idle(self) -> RolloutBatch:
        """One row, two tokens, nothing scored: the pass a rank runs where others still have rows
        (under FSDP2 every forward is a collective, so every rank runs as many)."""
        return RolloutBatch(self.ids[:1, :2], torch.zeros_like(self.mask[:1, :1]))

    def passes(self, micro: int, max_tokens: int = 0) -> list[torch.Tensor]:
        """Row indices of each forward pass: rows sorted by length (so a pass pads little) and
        grouped into passes of at most `micro` rows and, when `max_tokens` > 0, at most that many
        padded tokens (rows x the longest row's width; a pass has at least one row)."""
        widths = self.widths().tolist()
        order = sorted(range(len(widths)), key=lambda r: widths[r])
        out: list[list[int]] = []
        for r in order:
            cur = out[-1] if out else None
            if cur is None or len(cur) == micro or (max_tokens > 0 and (len(cur) + 1) * widths[r] > max_tokens):
                out.append([r])
            else:
                cur.append(r)
        return [torch.tensor(p, dtype=torch.long, device=self.ids.device) for p in out]


def pack(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int,
         device: str) -> RolloutBatch:
    """Concatenate each prompt with its response; right padding (no attention mask needed)."""
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width - 1))
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, : len(p) + len(r)] = torch.tensor(list(p) + list(r), dtype=torch.long)
        mask[i, len(p) - 1 : len(p) - 1 + len(r)] = 1.0
    return RolloutBatch(ids.to(device), mask.to(device))


def place_logprobs(prompts: Sequence[Sequence[int]], logprobs: Sequence[Sequence[float]],
                   batch: RolloutBatch) -> torch.Tensor:
    """Per-token log-probs reported by the sampler, laid out like `batch.mask`: [B, L-1].

    Row i gets logprobs[i] at positions len(prompt_i) - 1 ... (where `mask` is 1), 0 elsewhere.
    """
    out = torch.zeros(batch.mask.shape)
    for i, (p, lp) in enumerate(zip(prompts, logprobs)):
        out[i, len(p) - 1 : len(p) - 1 + len(lp)] = torch.tensor(lp, dtype=torch.float32)
    return out.to(batch.mask.device)


def forward_stats(
    model: Any, batch: RolloutBatch, with_entropy: bool, bf16: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log-probs [B, L-1] of the actual next tokens, entropies [B, L-1] or None).

    Only positions from the batch's first response token on go through the LM head (the
    model's `logits_to_keep`); earlier columns, all prompt, are 0. With `bf16` the forward runs
    under bf16 autocast; the log-softmax is taken in fp32.
    """
    width = batch.mask.size(1)
    start = int(batch.mask.any(0).nonzero()[0]) if batch.mask.any() else 0
    keep = torch.arange(start, width, device=batch.ids.device)
    with torch.autocast(batch.ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=batch.ids, logits_to_keep=keep).logits
    tokens = batch.ids[:, start + 1 :]
    if with_entropy:
        logp, ent = logprobs_and_entropy(logits, tokens)
        return F.pad(logp, (start, 0)), F.pad(ent, (start, 0))
    return F.pad(token_logprobs(logits, tokens), (start, 0)), None


@torch.no_grad()
def logprobs_no_grad(model: Any, batch: RolloutBatch, micro: int, bf16: bool = False,
                     passes: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """Log-probs [B, L-1] without building a graph, in `passes` (row indices, see
    `RolloutBatch.passes`; None: an idle pass), or else in passes of `micro` length-sorted rows."""
    out = torch.zeros_like(batch.mask)
    for rows in passes if passes is not None else batch.passes(micro):
        if rows is None:
            forward_stats(model, batch.idle(), with_entropy=False, bf16=bf16)
            continue
        logp, _ = forward_stats(model, batch.take(rows), with_entropy=False, bf16=bf16)
        out[rows, : logp.size(1)] = logp
    return out
