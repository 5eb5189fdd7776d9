"""The reference policy pi_ref that the KL penalty pulls towards.

T1 uses a *dynamic* anchor: an exponential moving average of the policy, so the policy may
drift far from the SFT model over training while each step stays close to the recent past.
Modes: "ema" (every step), "reset" (hard copy every `reset_every` steps), "frozen" (the SFT
model: the classic baseline), "none" (no reference; beta must be 0).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from core.rl.algos import ema_


class Anchor:
    """A frozen copy of the policy, updated by the rule of `mode`."""

    def __init__(self, policy: Any, mode: str, rate: float, reset_every: int) -> None:
        self.mode, self.rate, self.reset_every = mode, rate, reset_every
        self.model = None
        if mode != "none":
            self.model = copy.deepcopy(policy).eval()
            for p in self.model.parameters():
                p.requires_grad_(False)

    def update(self, policy: Any, step: int) -> None:
        """After optimizer step `step` (1-based)."""
        if self.model is None or self.mode == "frozen":
            return
        if self.mode == "ema":
            rate = self.rate
        elif step % self.reset_every == 0:
            rate = 0.0
        else:
            return
        ema_(list(self.model.parameters()), list(policy.parameters()), rate)

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        assert self.model is not None
        return self.model(input_ids=input_ids).logits

    def state_dict(self) -> dict[str, Any]:
        return {} if self.model is None else self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.model is not None and state:
            self.model.load_state_dict(state)
