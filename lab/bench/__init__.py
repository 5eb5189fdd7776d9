"""Benchmarks of the lab against reference implementations.

Shared here: picking the model a benchmark starts from, and the randomly initialised models
of a real architecture that the GPU checks use (`lab.bench.math_path`, `lab.bench.rl_step`):
Qwen2.5-0.5B's shapes and vocabulary size, or a toy of the same family for CPU smoke runs,
each given the embedded math tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Qwen2.5-0.5B's config.json (hidden sizes, heads, rope), without its weights or tokenizer
QWEN25_05B = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
              "intermediate_size": 4864, "vocab_size": 151936, "max_position_embeddings": 32768,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
# heads of 32: vLLM's CPU attention has no kernel for heads of 16
TOY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
       "intermediate_size": 128, "vocab_size": 1024, "max_position_embeddings": 1024,
       "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
ARCHS = {"qwen2.5-0.5b": QWEN25_05B, "toy": TOY}


def pick_model(name: str | None, runs_dir: str) -> str | None:
    """The model folder of `name` (a folder or run), else of the newest SFT run; None if none."""
    from core.stages.common import latest_sft_checkpoint
    from core.store import resolve_checkpoint
    from core.tasks import TaskError

    if name is not None:
        return resolve_checkpoint(name, runs_dir)
    try:
        return latest_sft_checkpoint(runs_dir)
    except TaskError:
        return None


def build_model(arch: dict[str, Any], path: Path) -> Path:
    """A random Qwen2 model of `arch` with the embedded math tokenizer (`task.name=minimath`),
    saved at `path`. The embedding and LM head keep `arch["vocab_size"]` rows, more than the
    tokenizer's ids (as real checkpoints pad theirs): ids beyond the tokenizer can be sampled,
    and decode to nothing."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from core.models import embedded_tokenizer, save_policy

    tok = embedded_tokenizer("minimath")
    assert len(tok) <= arch["vocab_size"], "the tokenizer must fit the embedding"
    config = Qwen2Config(**arch, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return save_policy(model, tok, path)


def lm_head_rows(model: Any) -> int:
    """Rows of the model's output projection: the ids it can sample."""
    return int(model.get_output_embeddings().weight.shape[0])
