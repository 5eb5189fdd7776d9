"""A KV cache that writes in place instead of concatenating, for short continuations.

transformers' `DynamicCache` appends each decode step with `torch.cat`, which copies the whole
cache of every layer at every step (into freshly allocated memory). `GrowingCache` keeps each
layer's keys and values in a buffer with room for `capacity` positions and hands the attention
a view of the filled part (doubling the buffer if a call outgrows it). The values are the same
as `DynamicCache`'s (a test compares logits), only their storage differs.

On CPU the attention over a view of a larger buffer is slower than over a contiguous tensor,
which ate the gain for whole generations (no faster on the embedded model, docs/perf_log.md).
It pays where the room is small against the filled part: the forced-answer forks of budgeted sampling
(`core.sampling.hf.forks`), a few tokens after a long prefix.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from core.sampling.hf.decoder import DecoderCache


class GrowingLayer(DynamicLayer):
    """One layer: `keys` / `values` are views [B, H, n, D] of buffers [B, H, capacity, D].

    Whatever transformers assigns to `keys` / `values` (crop, reorder, repeat) becomes the new
    buffer, so its own methods keep working unchanged."""

    def __init__(self, capacity: int = 0) -> None:
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._n = 0
        self.capacity = capacity
        super().__init__()

    @property  # type: ignore[override]
    def keys(self) -> torch.Tensor | None:
        return None if self._k is None else self._k[:, :, : self._n]

    @keys.setter
    def keys(self, t: torch.Tensor | None) -> None:
        self._k, self._n = self._adopt(t)

    @property  # type: ignore[override]
    def values(self) -> torch.Tensor | None:
        return None if self._v is None else self._v[:, :, : self._n]

    @values.setter
    def values(self, t: torch.Tensor | None) -> None:
        self._v, self._n = self._adopt(t)

    @staticmethod
    def _adopt(t: torch.Tensor | None) -> tuple[torch.Tensor | None, int]:
        if t is None or t.dim() != 4:  # None, or DynamicLayer's empty placeholder
            return None, 0
        return t, t.shape[-2]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor | None = None) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write [B, H, m, D] after the n filled positions; returns the [B, H, n + m, D] views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, m = self._n, key_states.shape[-2]
        if self._k is None or self._v is None or n + m > self._k.shape[-2]:
            cap = max(self.capacity, 2 * (n + m))
            self._k = self._grow(self._k, key_states, n, cap)
            self._v = self._grow(self._v, value_states, n, cap)
        self._k[:, :, n : n + m].copy_(key_states)
        self._v[:, :, n : n + m].copy_(value_states)
        self._n = n + m
        return self.keys, self.values  # type: ignore[return-value]

    @staticmethod
    def _grow(old: torch.Tensor | None, new: torch.Tensor, n: int, cap: int) -> torch.Tensor:
        b, h, _, d = new.shape
        buf = new.new_empty(b, h, cap, d)
        if old is not None and n:
            buf[:, :, :n].copy_(old[:, :, :n])
        return buf

    def get_seq_length(self) -> int:
        return self._n

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` (one copy of the buffers; the capacity stays)."""
        if self._k is not None and self._v is not None:
            self._k = self._k.index_select(0, indices)
            self._v = self._v.index_select(0, indices)


class GrowingCache(DynamicCache):
    """A `DynamicCache` whose layers are `GrowingLayer`s with room for `capacity` positions."""

    # dropping rows copies the buffers, so the decode loop keeps finished rows in the batch
    # until they are more than this share of it (a pass over a few finished rows is cheaper)
    drop_slack = 0.25

    def __init__(self, capacity: int = 0) -> None:
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)
        self.capacity = capacity

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.layers) <= layer_idx:
            self.layers.append(GrowingLayer(self.capacity))
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)


def select_rows(cache: Any, rows: torch.Tensor, room: int,
                arena: list[torch.Tensor] | None = None, limit: int = 0,
                spare: list[torch.Tensor] | None = None) -> GrowingCache | DecoderCache:
    """A new cache holding rows `rows` (batch dim) of every layer of `cache`, with room for `room`
    more positions; `cache` (a `GrowingCache` or a `DynamicCache`) is unchanged.

    `arena`, when given, is a list of flat buffers reused from call to call (grown as needed):
    the new cache then lives in them, so it must be dropped before the next call with the same
    arena. Fresh memory costs page faults on every call (docs/perf_log.md).
    A `DecoderCache` (the direct decoder's) gives a `DecoderCache`, which on the CPU may grow in
    steps up to `limit` positions and copy into `spare` when it drops rows (see
    `DecoderCache.select`)."""
    if isinstance(cache, DecoderCache):
        return cache.select(rows, room, arena, limit, spare)
    out = GrowingCache()
    for i, layer in enumerate(cache.layers):
        keys, values = layer.keys, layer.values
        shape = (len(rows), keys.shape[1], keys.shape[2] + room, keys.shape[3])
        if arena is None:
            buf_k = keys.new_empty(shape)
            buf_v = torch.empty_like(buf_k)
        else:
            numel = shape[0] * shape[1] * shape[2] * shape[3]
            while len(arena) < 2 * (i + 1):
                arena.append(keys.new_empty(0))
            for j in (2 * i, 2 * i + 1):
                if arena[j].numel() < numel or arena[j].dtype != keys.dtype or arena[j].device != keys.device:
                    arena[j] = keys.new_empty(numel)
            buf_k, buf_v = arena[2 * i][:numel].view(shape), arena[2 * i + 1][:numel].view(shape)
        # into the buffer directly: a fresh tensor costs page faults (docs/perf_log.md)
        torch.index_select(keys, 0, rows, out=buf_k[:, :, : keys.shape[2]])
        torch.index_select(values, 0, rows, out=buf_v[:, :, : keys.shape[2]])
        new = GrowingLayer(keys.shape[2] + room)
        new.lazy_initialization(keys, values)
        new._k, new._v, new._n = buf_k, buf_v, keys.shape[2]
        out.layers.append(new)
    return out
