"""The reference policy pi_ref that the KL penalty pulls towards.

T1 uses a *dynamic* anchor: an exponential moving average of the policy, so the policy may
drift far from the SFT model over training while each step stays close to the recent past.
Modes: "ema" (every step), "reset" (hard copy every `reset_every` steps), "frozen" (the SFT
model: the classic baseline), "none" (no reference; beta must be 0).

With LoRA only the adapters train, so the anchor is an EMA of the adapter tensors alone (the
frozen base is shared): its log-probs come from the policy with the anchor's adapter values
swapped in for one no-grad pass. Without LoRA the anchor is a full frozen copy of the model.

That LoRA anchor is an approximation: its weight delta is scale * EMA(B) @ EMA(A), not the
EMA of the effective deltas scale * B @ A (they differ by the covariance of B and A over the
averaging window; the exact EMA would need a dense delta per adapted matrix, as large as the
base weights LoRA leaves untouched). `python -m lab.bench.lora_anchor` measures the error
against the exact EMA, in weights and in the KL the penalty sees (docs/perf_log.md).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from core.dist import full_state, is_sharded, load_full_state
from core.rl.algos import ema_
from core.rl.batch import RolloutBatch, logprobs_no_grad


def adapter_params(policy: Any) -> dict[str, torch.Tensor]:
    """The trainable LoRA tensors of a PEFT policy, by parameter name."""
    return {n: p for n, p in policy.named_parameters() if p.requires_grad and "lora_" in n}


def lora_effective_deltas(adapters: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """scale * B @ A of each adapted module, by module name, from LoRA tensors named like
    "<module>.lora_A.<adapter>.weight" / "<module>.lora_B.<adapter>.weight"."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in adapters.items():
        for part in ("lora_A", "lora_B"):
            if f".{part}." in name:
                pairs.setdefault(name.split(f".{part}.")[0], {})[part] = t
    return {m: scale * (ab["lora_B"].float() @ ab["lora_A"].float()) for m, ab in pairs.items()
            if "lora_A" in ab and "lora_B" in ab}


class Anchor:
    """A frozen copy of the policy (or of its adapters, with `lora`), updated by the rule of `mode`."""

    def __init__(self, policy: Any, mode: str, rate: float, reset_every: int, lora: bool = False,
                 copy_of: Any = None) -> None:
        """`copy_of`: the anchor's model ready made (a sharded policy's anchor is sharded alike),
        instead of a deep copy of `policy`."""
        self.mode, self.rate, self.reset_every, self.lora = mode, rate, reset_every, lora
        self.model: Any = None
        self.adapters: dict[str, torch.Tensor] = {}
        if mode == "none":
            return
        if lora:
            self.adapters = {n: p.detach().clone() for n, p in adapter_params(policy).items()}
            if not self.adapters:
                raise ValueError("anchor with lora=True needs a PEFT policy with LoRA adapters")
            return
        self.model = (copy.deepcopy(policy) if copy_of is None else copy_of).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def active(self) -> bool:
        return self.mode != "none"

    def _tensors(self, policy: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(anchor tensors, the matching policy tensors), in the same order."""
        if self.lora:
            live = adapter_params(policy)
            return list(self.adapters.values()), [live[n] for n in self.adapters]
        return list(self.model.parameters()), list(policy.parameters())

    def update(self, policy: Any, step: int) -> None:
        """After optimizer step `step` (1-based)."""
        if not self.active or self.mode == "frozen":
            return
        if self.mode == "ema":
            rate = self.rate
        elif step % self.reset_every == 0:
            rate = 0.0
        else:
            return
        ema_(*self._tensors(policy), rate)

    @contextmanager
    def _swapped_in(self, policy: Any) -> Iterator[None]:
        """The policy's adapters hold the anchor's values inside the block, their own after."""
        anchor, live = self._tensors(policy)
        saved = [p.detach().clone() for p in live]
        with torch.no_grad():
            for p, a in zip(live, anchor, strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(live, saved, strict=True):
                    p.copy_(s)

    def logprobs(self, policy: Any, batch: RolloutBatch, passes: Sequence[torch.Tensor | None],
                 bf16: bool) -> torch.Tensor:
        """log pi_ref of the batch's next tokens, [B, L-1], without a graph, in `passes` (row indices)."""
        if not self.lora:
            out = logprobs_no_grad(self.model, batch, 0, bf16, passes)
            if is_sharded(self.model):  # FSDP2 keeps the root unit gathered after a forward with no backward
                self.model.reshard()
            return out
        with self._swapped_in(policy):
            return logprobs_no_grad(policy, batch, 0, bf16, passes)

    def state_dict(self) -> dict[str, Any]:
        """Whole tensors (gathered on rank 0 when the anchor is sharded: collective)."""
        if self.lora:
            return {n: t.clone() for n, t in self.adapters.items()}
        return {} if self.model is None else full_state(self.model)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if self.lora:
            for n, t in self.adapters.items():
                t.copy_(state[n])
        elif self.model is not None:
            load_full_state(self.model, state)
