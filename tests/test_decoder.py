"""The direct decoder (`core.sampling.hf.decoder`) computes what the transformers forward does."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from core.config import SamplingConfig
from core.models import build_tokenizer
from core.sampling.hf import HFSampler
from core.sampling.hf.decoder import Decoder, supports
from core.sampling.hf.kv_cache import select_rows
from core.sampling.hf.state import left_pad


def _model(kind: str, kv_heads: int = 2, seed: int = 0):
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128,
                  rope_theta=500.0, pad_token_id=0)
    torch.manual_seed(seed)
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, attention_bias=True, tie_word_embeddings=False))
    with torch.no_grad():  # larger weights than the init's: differences show
        for p in model.parameters():
            p.mul_(4.0)
    return model.eval()


@pytest.mark.parametrize("read", ["views", "whole"])
@pytest.mark.parametrize("kind,kv_heads", [("qwen2", 4), ("qwen2", 2), ("llama", 1)])
def test_decoder_logits_equal_transformers(kind, kv_heads, read, monkeypatch) -> None:
    """Left-padded prompts of different lengths, a prefill, decode steps past the buffer's
    capacity (it grows), rows dropped (repeats too), a fork with a padded multi-token cue: the
    logits are transformers' with a DynamicCache, to float rounding. Decode steps read the
    filled part of the buffers (`views`) or the whole buffers (`whole`); every fresh buffer
    starts out NaN, so a position read before it is written or cleared would show."""
    from core.sampling.hf import decoder

    monkeypatch.setattr(decoder, "_FULL_READ_SHARE", 99.0 if read == "views" else 0.0)
    fresh = decoder.DecoderCache._allocate
    monkeypatch.setattr(decoder.DecoderCache, "_allocate",
                        lambda self, rows, cap: tuple([b.fill_(float("nan")) for b in bufs]
                                                      for bufs in fresh(self, rows, cap)))
    model = _model(kind, kv_heads)
    assert supports(model)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 64, (n,), generator=gen).tolist() for n in (5, 9, 2, 9)]
    ids, mask = left_pad(prompts, 0, "cpu")
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    dec = Decoder(model)
    ours, ref = dec.cache(capacity=ids.shape[1] + 3), DynamicCache()
    close = dict(rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        a = dec.forward(ours, ids, pos, mask)
        b = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=ref).logits[:, -1]
        torch.testing.assert_close(a, b, **close)
        step_pos = pos[:, -1:]
        for k in range(8):
            if k == 4:  # rows 0 and 2 finish, row 3 is repeated (the prefill's copies do so)
                keep = torch.tensor([1, 3, 3])
                ours.batch_select_indices(keep)
                ref.batch_select_indices(keep)
                mask, step_pos = mask[keep], step_pos[keep]
            x = torch.randint(3, 64, (len(mask), 1), generator=gen)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            step_pos = step_pos + 1
            a = dec.forward(ours, x, step_pos, mask)
            b = model(input_ids=x, attention_mask=mask, position_ids=step_pos, past_key_values=ref).logits[:, -1]
            torch.testing.assert_close(a, b, **close)
        assert ours.get_seq_length() == ref.get_seq_length() == 9 + 8 and ours.capacity > 12
        # a fork of rows [2, 0] feeding a 3-token cue, left-padded for row 0
        rows = torch.tensor([2, 0])
        arena = [torch.full((4096,), float("nan")) for _ in range(2 * len(dec.layers))]
        fork = select_rows(ours, rows, room=2, arena=arena, limit=17 + 5)  # grows in steps, as forks do
        ref_fork = DynamicCache()
        for i, layer in enumerate(ref.layers):
            ref_fork.update(layer.keys[rows], layer.values[rows], i)
        cue = torch.tensor([[7, 8, 9], [0, 8, 9]])
        cue_mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
        fmask = torch.cat([mask[rows], cue_mask], dim=1)
        fpos = step_pos[rows] + cue_mask.cumsum(dim=1)
        a = dec.forward(fork, cue, fpos, fmask)
        b = model(input_ids=cue, attention_mask=fmask, position_ids=fpos, past_key_values=ref_fork).logits[:, -1]
        torch.testing.assert_close(a, b, **close)
        assert ours.get_seq_length() == 17 and fork.get_seq_length() == 20  # the source is unchanged


def test_cpu_buffers_grow_in_steps_and_shrink_on_drops() -> None:
    """On the CPU a cache made for 100 positions starts at the prompt plus `grow_step`, grows
    by that step, and a drop shrinks its room back; the logits do not depend on it (the test
    above compares them with transformers')."""
    model = _model("qwen2")
    dec = Decoder(model)
    cache = dec.cache(100)
    ids = torch.randint(3, 64, (3, 9))
    mask = torch.ones_like(ids)
    pos = torch.arange(9).expand(3, 9)
    step = cache.grow_step
    with torch.no_grad():
        dec.forward(cache, ids, pos, mask)
        assert cache.capacity == 9 + step
        for t in range(step + 1):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            dec.forward(cache, ids[:, :1], torch.full((3, 1), 9 + t), mask)
        assert cache.n == 10 + step and cache.capacity == min(100, cache.n + step)
        cache.batch_select_indices(torch.tensor([0, 2]))
        assert cache.capacity == min(100, cache.n + step) and len(cache.keys[0]) == 2
        assert Decoder(model).cache(100).capacity == 0  # sized by its first pass


def test_sampler_output_with_and_without_the_decoder() -> None:
    """Greedy generations through the decoder equal those through the model's forward, with
    the same log-probs."""
    tok = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    sampler = HFSampler(model, tok)
    prompts = [tok(f"numbers {i} {2 * i + 1} target {i + 9}\n")["input_ids"] for i in range(5)]
    prompts[2] = prompts[2][:3]
    out = {}
    for mode in ("auto", "transformers"):
        greedy = SamplingConfig(temperature=0.0, max_new_tokens=20, hf_decoder=mode)
        out[mode] = sampler.generate(prompts, greedy, seed=0, n=1)
    for a, b in zip(out["auto"], out["transformers"]):
        assert a[0].token_ids == b[0].token_ids and a[0].finish_reason == b[0].finish_reason
        torch.testing.assert_close(torch.tensor(a[0].token_logprobs), torch.tensor(b[0].token_logprobs),
                                   rtol=1e-4, atol=1e-4)


def test_models_the_decoder_does_not_cover() -> None:
    from peft import LoraConfig, get_peft_model

    model = _model("qwen2")
    assert supports(model)
    wrapped = get_peft_model(_model("qwen2"), LoraConfig(r=2, target_modules=["q_proj"]))
    assert not supports(wrapped)
    scaled = _model("llama")
    scaled.config.rope_parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}
    assert not supports(scaled)
    windowed = _model("qwen2")
    windowed.config.layer_types = ["sliding_attention", "full_attention"]
    assert not supports(windowed)
    with pytest.raises(ValueError, match="not a model"):
        Decoder(wrapped)


def test_decoder_benchmark_runs(capsys) -> None:
    """`python -m lab.bench.decoder` end to end at toy size: both paths timed, a ratio printed."""
    import json

    from lab.bench.decoder import main

    out = main(["--models", "tiny", "--prompts", "2", "--n", "2", "--max-new-tokens", "8", "--repeats", "1"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == out and last["ratio_tiny"] > 0
    assert last["decoder_tokens_per_s_tiny"] > 0 and last["transformers_tokens_per_s_tiny"] > 0
