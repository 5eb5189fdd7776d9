"""Samplers: one protocol, backends loaded lazily (vLLM is imported only when chosen)."""

from __future__ import annotations

from typing import Any

from core.sampling.base import Sampler, derive_seed

__all__ = ["Sampler", "derive_seed", "make_sampler"]


def make_sampler(backend: str, model: Any, tokenizer: Any, **kwargs: Any) -> Sampler:
    """The sampler for `backend` ("hf" or "vllm")."""
    if backend == "hf":
        from core.sampling.hf import HFSampler

        return HFSampler(model, tokenizer, **kwargs)
    if backend == "vllm":
        from core.sampling.vllm import VLLMSampler  # type: ignore[import-not-found]

        return VLLMSampler(model, tokenizer, **kwargs)
    raise ValueError(f"unknown sampler backend {backend!r}: use 'hf' or 'vllm'")
