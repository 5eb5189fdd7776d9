"""Uniform numbers keyed by (row key, draw index): what makes a row's sample independent of its batch.

A decode loop that draws from one generator for the whole batch gives row r the numbers left
after the rows before it, so the same prompt samples differently in another batch (another
process's shard of the prompts, a smaller evaluation, a resumed sweep). Here draw t of a row is
a hash of (its key, t) (splitmix64, counter-based like Philox): the key is derived from (call
seed, prompt index, sample index), so N ranks that each decode a shard of the prompts draw what
one process decoding all of them draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 that has its bits (torch has no uint64 arithmetic)."""
    c &= _MASK64
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (`>>` on int64 is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 tensors (multiplication wraps mod 2^64, as in C)."""
    x = (x ^ _shr(x, 30)) * _signed(_M1)
    x = (x ^ _shr(x, 27)) * _signed(_M2)
    return x ^ _shr(x, 31)


def mix64_reference(x: int) -> int:
    """`mix64` on one unsigned 64-bit Python int (what the tests check the tensor version against)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * _M1) & _MASK64
    x = ((x ^ (x >> 27)) * _M2) & _MASK64
    return x ^ (x >> 31)


class RowDraws:
    """Draw t of row r: a uniform float64 in [0, 1) from (keys[r], t) alone.

    keys: one non-negative 63-bit int per row of a decode (`core.sampling.protocol.derive_seed`)."""

    def __init__(self, keys: Sequence[int], device: str | torch.device = "cpu") -> None:
        self.keys = torch.tensor([_signed(k) for k in keys], dtype=torch.long, device=device)

    def uniform(self, rows: torch.Tensor, t: int) -> torch.Tensor:
        """[B] row indices (into `keys`), draw index t -> [B, 1] float64 uniforms in [0, 1)."""
        x = self.keys[rows] + _signed((t + 1) * _GOLDEN)
        return (_shr(mix64(x), 11).double() * 2.0**-53).unsqueeze(-1)
