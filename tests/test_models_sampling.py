"""Models load by one code path; the sampler is deterministic, batched and exact."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from core.config import SamplingConfig
from core.models import ModelLoadError, build_tokenizer, load_policy, resolve_source
from core.sampling.draws import RowDraws, mix64, mix64_reference
from core.sampling.hf import HFSampler
from core.sampling.hf.sampler import sample_next
from core.sampling.protocol import derive_seed
from core.sampling.text import encode_prompts


def test_tokenizer_round_trip_one_token_per_number() -> None:
    tok = build_tokenizer()
    text = "numbers 12 7 33 target 45\ntry 12 + 33 = 45 = 45 ok\nanswer 12 + 33"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(tok(" 123", add_special_tokens=False)["input_ids"]) == 1
    assert tok.unk_token_id not in ids


def test_local_folder_loads_like_a_hub_model(tiny_model_dir) -> None:
    model, tok = load_policy(str(tiny_model_dir))
    assert model.config.model_type == "qwen2"
    text = "numbers 3 24 target 27"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_missing_model_folder_and_offline_hub(tmp_path, monkeypatch) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_policy(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_policy(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="cannot reach the Hugging Face hub") as e:
        load_policy("someone/not-cached-model")
    assert "\n" not in str(e.value)
    assert resolve_source("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"


@pytest.fixture(scope="module")
def sampler(tiny_model_dir):
    model, tok = load_policy(str(tiny_model_dir))
    return HFSampler(model, tok)


def _prompts(sampler, k=6):
    return encode_prompts(sampler.tokenizer, [f"numbers {i} {i + 3} target {2 * i + 3}\n" for i in range(k)])


def test_same_seed_same_output(sampler) -> None:
    params = SamplingConfig(max_new_tokens=12, temperature=1.0)
    a = sampler.generate(_prompts(sampler), params, seed=derive_seed(0, 1, "p"), n=3)
    b = sampler.generate(_prompts(sampler), params, seed=derive_seed(0, 1, "p"), n=3)
    c = sampler.generate(_prompts(sampler), params, seed=derive_seed(0, 2, "p"), n=3)
    assert a == b and a != c
    assert all(len(g) == 3 for g in a)


def test_greedy_matches_transformers_generate(sampler) -> None:
    prompts = _prompts(sampler, 4)
    params = SamplingConfig(max_new_tokens=10, temperature=0.0, batch_size=3)
    out = sampler.generate(prompts, params, seed=0)
    for p, group in zip(prompts, out):
        ref = sampler.model.generate(
            torch.tensor([p]), max_new_tokens=10, do_sample=False,
            pad_token_id=sampler.pad_id, eos_token_id=sampler.eos_id,
        )[0, len(p):].tolist()
        got = list(group[0].token_ids)
        assert ref[: len(got)] == got


def test_finish_reasons_and_lengths(sampler) -> None:
    params = SamplingConfig(max_new_tokens=7, temperature=1.0)
    for group in sampler.generate(_prompts(sampler), params, seed=3, n=4):
        for c in group:
            assert c.num_tokens <= 7
            if c.finish_reason == "length":
                assert c.num_tokens == 7 and sampler.eos_id not in c.token_ids
            else:
                assert c.token_ids[-1] == sampler.eos_id


def test_eos_stops_a_row_early(sampler) -> None:
    """A model that always says EOS finishes every row after one token."""
    logits = torch.full((2, 10), -1e9)
    logits[:, 1] = 0
    assert sample_next(logits, SamplingConfig(), torch.rand(2, 1, dtype=torch.float64)).tolist() == [1, 1]


def test_draws_follow_the_distribution() -> None:
    """Sampled frequencies match softmax(logits / T); zero-probability tokens never come."""
    from core.sampling.hf.sampler import _inverse_cdf

    probs = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    u = RowDraws(range(20000)).uniform(torch.arange(20000), 0)
    draws = _inverse_cdf(probs.expand(20000, 5), u)
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert torch.allclose(freq, probs, atol=0.015) and freq[1] == 0 and freq[4] == 0
    # rows in groups (bounded memory over a large vocabulary): the same draws
    chunked = _inverse_cdf(probs.expand(20000, 5), u, chunk=7)
    assert torch.equal(chunked, draws)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)
    u = RowDraws(range(20000)).uniform(torch.arange(20000), 1)
    freq = torch.bincount(sample_next(logits, SamplingConfig(temperature=1.5), u), minlength=4).float() / 20000
    assert torch.allclose(freq, torch.softmax(logits[0] / 1.5, dim=-1), atol=0.015)


def test_min_p_and_top_p_filter() -> None:
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    u = RowDraws(range(200)).uniform(torch.arange(200), 0)
    draws = {int(sample_next(logits, SamplingConfig(min_p=0.4), x.view(1, 1))) for x in u}
    assert draws == {0, 1}
    draws = {int(sample_next(logits, SamplingConfig(top_p=0.5), x.view(1, 1))) for x in u}
    assert draws == {0}


def test_stop_string_cuts_text_and_ids(sampler) -> None:
    tok = sampler.tokenizer
    gen = tok("try 1 + 2 = 3 < 9 larger\ntry 2 + 4", add_special_tokens=False)["input_ids"]
    c = sampler._completion(gen, SamplingConfig(stop=("larger",)), 0, 0)
    assert c.text == "try 1 + 2 = 3 < 9 larger" and c.finish_reason == "stop"
    assert tok.decode(list(c.token_ids)) == c.text
    plain = sampler._completion(gen, SamplingConfig(), 0, 0)
    assert plain.finish_reason == "length" and plain.num_tokens == len(gen)
    # the stop in the last token, then EOS (its text is empty): the ids end at the stop
    last = tok(" 3 + 4 larger", add_special_tokens=False)["input_ids"]
    for ids, want in ((last, last), (last + [sampler.eos_id], last)):
        c = sampler._completion(ids, SamplingConfig(stop=("larger",)), 0, 0)
        assert list(c.token_ids) == want and c.text == " 3 + 4 larger" and c.finish_reason == "stop"


def test_growing_kv_cache_gives_dynamic_cache_logits(sampler) -> None:
    """Prefill, decode steps past the capacity (so it grows), dropping rows and copying rows out
    with room to spare: the in-place cache yields the logits of transformers' DynamicCache."""
    from transformers import DynamicCache

    from core.sampling.hf.kv_cache import GrowingCache, select_rows

    model = sampler.model.eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 200, (4, 7), generator=gen)
    steps = torch.randint(5, 200, (4, 12), generator=gen)
    ours, ref = GrowingCache(capacity=9), DynamicCache()
    with torch.no_grad():
        rows = [0, 1, 2, 3]
        for k, x in enumerate([ids, *steps.split(1, dim=1)]):
            drop = {6: [0, 2], 8: [3]}.get(k, [])  # rows finish, twice
            if drop:
                keep = torch.tensor([i for i, r in enumerate(rows) if r not in drop])
                rows = [r for r in rows if r not in drop]
                ours.batch_select_indices(keep)
                ref.batch_select_indices(keep)
            x = x[rows]
            a = model(input_ids=x, past_key_values=ours, use_cache=True).logits
            b = model(input_ids=x, past_key_values=ref, use_cache=True).logits
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert ours.get_seq_length() == ref.get_seq_length() == 7 + 12 and rows == [1]
        x = torch.tensor([[9, 10, 11], [12, 13, 14]])
        pick = torch.tensor([0, 0])
        fork = select_rows(ref, pick, room=2)  # 3 tokens into room for 2: it grows
        a = model(input_ids=x, past_key_values=fork, use_cache=True).logits
        ref2 = DynamicCache()
        for i, layer in enumerate(ref.layers):
            ref2.update(layer.keys[pick], layer.values[pick], i)
        b = model(input_ids=x, past_key_values=ref2, use_cache=True).logits
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert ref.get_seq_length() == 19 and fork.get_seq_length() == 22  # the source is unchanged


def test_prefill_runs_each_distinct_prompt_once(sampler) -> None:
    """n samples per prompt: the prefill runs the distinct prompts only and copies the rows;
    logits and KV cache equal a prefill of every row."""
    from transformers import DynamicCache

    prompts = [p for p in _prompts(sampler, 3) for _ in range(4)]  # 3 prompts x 4 rows
    prompts.insert(5, prompts.pop(0))  # repeats need not be adjacent
    pad = sampler.pad_id
    prompts += [[pad, 7], [7]]  # the same ids once left-padded, but not the same prompt
    st = sampler._start(prompts, SamplingConfig(hf_decoder="transformers"))
    calls = []
    hook = sampler.model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["input_ids"].shape[0]),
                                                  with_kwargs=True)
    try:
        with torch.no_grad():
            shared = sampler._prefill(st.step_ids, st.mask, st.step_pos, st.cache)
    finally:
        hook.remove()
    assert calls == [5]
    ref_cache = DynamicCache()
    with torch.no_grad():
        ref = sampler.model(input_ids=st.step_ids, attention_mask=st.mask, position_ids=st.step_pos,
                            past_key_values=ref_cache, use_cache=True).logits[:, -1, :]
    torch.testing.assert_close(shared, ref, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(st.cache.layers, ref_cache.layers):
        torch.testing.assert_close(ours.keys, theirs.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.values, theirs.values, rtol=1e-5, atol=1e-5)


def _byte_level_bpe() -> object:
    """A small byte-level BPE tokenizer (GPT-2 / Qwen style: merges may glue the newline to
    other text), trained here because no hub files are reachable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    text = ["try 12 + 7 = 19 ok.\n\nanswer 19\n", "Wait, check: 3 * 4 = 12.\n", "é\nü ok\n\n"] * 50
    bpe.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")


@pytest.mark.parametrize("kind", ["embedded", "byte-level-bpe"])
def test_one_character_stop_found_by_token_table(kind) -> None:
    """The token table that finds a newline stop agrees with decoding every row's text: on
    random token streams, both stop each row at the same step."""
    tok = build_tokenizer() if kind == "embedded" else _byte_level_bpe()
    if kind != "embedded":  # merges that glue the newline to other text exist
        assert any("\n" in tok.decode([t]) and tok.decode([t]) != "\n" for t in range(len(tok)))
    sampler = HFSampler(None, tok)
    gen = torch.Generator().manual_seed(0)
    stream = torch.randint(0, len(tok), (64, 30), generator=gen)
    generated: list[list[int]] = [[] for _ in range(64)]
    first_fast: list[int | None] = [None] * 64
    for t in range(30):
        for r in range(64):
            generated[r].append(int(stream[r, t]))
        hit = sampler._hit_stop(torch.arange(64), generated, ("\n",), stream[:, t])
        for r in hit.nonzero().flatten().tolist():
            first_fast[r] = t if first_fast[r] is None else first_fast[r]
    first_slow = [next((t for t in range(30) if "\n" in tok.decode(row[: t + 1], skip_special_tokens=True)), None)
                  for row in stream.tolist()]
    assert first_fast == first_slow
    assert sum(x is not None for x in first_slow) >= 8  # the case is exercised


def test_finished_rows_kept_in_the_batch_change_nothing(monkeypatch) -> None:
    """A cache that is slow to drop rows keeps finished ones in the batch for a while: each
    row's tokens and log-probs are those of dropping every row as soon as it ends."""
    from core.models import TinySpec, build_tiny_model
    from core.sampling.hf.kv_cache import GrowingCache

    model, tok = build_tiny_model(TinySpec(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64))
    with torch.no_grad():  # large random weights: greedy output varies with the context
        for p in model.parameters():
            p.mul_(8)
    sampler = HFSampler(model, tok)
    params = SamplingConfig(max_new_tokens=12, temperature=0.0, stop=("1",))  # stops at varied steps
    runs = {}
    for slack in (0.0, 1.0):
        drops: list[int] = []
        monkeypatch.setattr(GrowingCache, "drop_slack", slack)
        monkeypatch.setattr(GrowingCache, "batch_select_indices", lambda self, keep, drops=drops:
                            drops.append(len(keep)) or super(GrowingCache, self).batch_select_indices(keep))
        state = sampler._start(_prompts(sampler, 8), SamplingConfig(hf_decoder="transformers"))
        state.cache = GrowingCache()
        logprobs: list[list[float]] = [[] for _ in range(8)]
        ids = sampler._decode([], params, RowDraws(range(8)), start=state, logprobs_out=logprobs)
        runs[slack] = (ids, logprobs, drops)
    (eager, eager_lp, eager_drops), (lazy, lazy_lp, lazy_drops) = runs[0.0], runs[1.0]
    assert eager == lazy  # log-probs up to float rounding (the batch shapes differ)
    assert all(torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5) for a, b in zip(eager_lp, lazy_lp))
    assert len({len(g) for g in eager}) > 2  # rows ended at different steps
    assert eager_drops and not lazy_drops  # ... and were kept in the batch until all ended


@pytest.mark.parametrize("kind", ["embedded", "byte-level-bpe"])
def test_decode_text_equals_the_tokenizers_decode(kind) -> None:
    """`decode_text` (transformers' decoding without its per-id input conversion) gives what
    `tokenizer.decode(ids, skip_special_tokens=True)` does, special tokens and all."""
    from core.sampling.text import decode_text

    tok = build_tokenizer() if kind == "embedded" else _byte_level_bpe()
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(0, len(tok), (50, 12), generator=gen).tolist() + [[], [tok.eos_token_id]]
    assert [decode_text(tok, r) for r in rows] == [tok.decode(r, skip_special_tokens=True) for r in rows]
    assert decode_text(tok, tuple(rows[0])) == tok.decode(rows[0], skip_special_tokens=True)


@pytest.mark.parametrize("kind", ["embedded", "byte-level-bpe"])
def test_encode_prompts_in_one_call_equals_one_call_each(kind) -> None:
    tok = build_tokenizer() if kind == "embedded" else _byte_level_bpe()
    texts = ["numbers 1 2 8 target 9\n", "", "try 1 + 2 = 3 ok\nanswer 1 + 2", "  wait\n\n"]
    assert encode_prompts(tok, texts) == [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert encode_prompts(tok, []) == []


def test_generation_ends_where_the_answer_is_settled() -> None:
    """With `until`, a row stops on the token at which its answer is settled (fewer passes)
    and is cut there; the tokens before are those of a run without it (greedy)."""
    from core.models import TinySpec, build_tiny_model
    from core.sampling.text import decode_text

    model, tok = build_tiny_model(TinySpec(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64))
    with torch.no_grad():  # large random weights: greedy output varies with the context
        for p in model.parameters():
            p.mul_(8)
    sampler = HFSampler(model, tok)
    params = SamplingConfig(max_new_tokens=16, temperature=0.0)
    prompts = _prompts(sampler, 8)

    def until(text: str) -> int | None:  # settled once 12 characters are out; the answer: the first 5
        return 5 if len(text) >= 12 else None

    passes = []
    forward = sampler._forward
    sampler._forward = lambda *a: passes.append(1) or forward(*a)  # type: ignore[method-assign]
    free = sampler.generate(prompts, params, seed=1)
    n_free = len(passes)
    cut = sampler.generate(prompts, params, seed=1, until=until)
    assert len(passes) - n_free < n_free  # stopped early, not only cut afterwards
    for (f,), (c,) in zip(free, cut):
        if len(f.text) < 12:
            assert c == f
            continue
        k = next(k for k in range(1, f.num_tokens + 1) if len(decode_text(tok, f.token_ids[:k])) >= 12)
        assert c.text == f.text[:5] and c.finish_reason == "stop"
        assert c.token_ids == f.token_ids[: len(c.token_ids)] and len(c.token_ids) <= k
        assert len(decode_text(tok, c.token_ids)) >= 5 > len(decode_text(tok, c.token_ids[:-1]))
        assert c.token_logprobs == f.token_logprobs[: len(c.token_ids)]


def test_settle_cuts_text_ids_and_logprobs() -> None:
    from core.sampling.text import settle
    from core.types import Completion

    tok = build_tokenizer()
    ids = tuple(tok(" 13 + 15 = 28 ok\n", add_special_tokens=False)["input_ids"])
    c = Completion(" 13 + 15 = 28 ok\n", ids, "stop", token_logprobs=tuple(-0.1 * k for k in range(len(ids))))
    out = settle(tok, c, lambda s: 8)
    assert out.text == " 13 + 15" and out.token_ids == ids[:3] and out.token_logprobs == c.token_logprobs[:3]
    assert settle(tok, c, lambda s: None) == c
    longer = replace(c, finish_reason="length")
    assert settle(tok, longer, lambda s: len(s)).finish_reason == "stop"


def test_trim_to_text_is_the_shortest_covering_prefix() -> None:
    """The fast paths of `trim_to_text` give what a scan over every prefix gives."""
    import random

    from core.sampling.text import decode_text, trim_to_text

    tok = build_tokenizer()
    rng = random.Random(0)
    for _ in range(300):
        gen = [rng.randrange(3, len(tok)) for _ in range(rng.randrange(1, 7))]
        full = decode_text(tok, gen)
        for cut in range(len(full) + 1):
            text = full[:cut]
            want = next((gen[:k] for k in range(1, len(gen) + 1) if len(decode_text(tok, gen[:k])) >= len(text)), gen)
            assert trim_to_text(tok, gen, text) == want, (gen, text)


def test_row_draws_hash_is_splitmix64() -> None:
    """The int64 tensor hash (wrapping multiplies, emulated logical shifts) equals splitmix64's
    finalizer on unsigned Python ints, and the uniforms it gives are uniform."""
    import random

    xs = [random.Random(0).getrandbits(64) for _ in range(2000)]
    got = mix64(torch.tensor([x - (1 << 64) if x >= 1 << 63 else x for x in xs]))
    assert [v % (1 << 64) for v in got.tolist()] == [mix64_reference(x) for x in xs]
    u = RowDraws(range(50000)).uniform(torch.arange(50000), 3)
    assert u.shape == (50000, 1) and 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float((u < 0.1).double().mean()) - 0.1) < 0.01


def test_a_prompts_samples_do_not_depend_on_the_other_prompts(sampler) -> None:
    """Sample j of prompt i depends on (seed, prompt_offset + i, j) only: the prompts split in
    two calls (two ranks' shards, each passing the index of its first prompt) sample the same
    tokens as one call over all of them, with the log-probs up to float rounding."""
    prompts = _prompts(sampler, 6)
    params = SamplingConfig(temperature=1.0, max_new_tokens=24)
    whole = sampler.generate(prompts, params, seed=5, n=3)
    parts = sampler.generate(prompts[:2], params, seed=5, n=3) + sampler.generate(
        prompts[2:], params, seed=5, n=3, prompt_offset=2)
    assert [[c.token_ids for c in g] for g in whole] == [[c.token_ids for c in g] for g in parts]
    assert all(torch.allclose(torch.tensor(a.token_logprobs), torch.tensor(b.token_logprobs), atol=1e-5)
               for ga, gb in zip(whole, parts) for a, b in zip(ga, gb))
    shifted = sampler.generate(prompts[2:], params, seed=5, n=3)  # no offset: other draws
    assert [[c.token_ids for c in g] for g in shifted] != [[c.token_ids for c in g] for g in whole[2:]]
