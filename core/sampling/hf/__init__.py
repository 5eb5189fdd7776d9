"""The transformers backend: the sampler (decode loop), its direct decoder for Qwen2/Llama
models, the KV caches it grows and copies, and the forced-answer forks of budgeted sampling."""

from core.sampling.hf.sampler import HFSampler

__all__ = ["HFSampler"]
