"""GPU checks: sampler, RL steps, SFT and budgeted sampling on a CUDA device, on tiny models.

Run on a machine with a GPU (each test takes seconds):

    python -m pytest -q -m gpu tests/test_gpu.py

Every test here is marked `gpu` (deselected by the default `-m 'not ... gpu ...'` of
pyproject.toml) and skips when `torch.cuda.is_available()` is False.

`T1_GPU_TEST_DEVICE` picks the device the test bodies run on (default `cuda`). Set it to `cpu`
to check the tests' own logic on a machine without a GPU:

    T1_GPU_TEST_DEVICE=cpu python -m pytest -q -m gpu tests/test_gpu.py

(the device-vs-CPU comparisons then compare the CPU with itself). A value starting with
`cuda` (`cuda:1`, say) still skips when no CUDA device is present.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import replace

import pytest
import torch

from core.config import BudgetConfig, LoraConfig, RLConfig, SamplingConfig, SFTConfig
from tests.test_budget import RecordingSampler

DEVICE = os.environ.get("T1_GPU_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                       reason=f"needs a CUDA device (T1_GPU_TEST_DEVICE={DEVICE})"),
]

# shapes and RL settings as tests/test_rl_trainer.py and tests/test_sft.py use them
RL_SMALL = dict(steps=4, prompts_per_step=3, num_generations=4, sampling=SamplingConfig(temperature=1.2, max_new_tokens=12), micro_batch_size=12,
                lr=1e-2, warmup_steps=1, eval_every=0, seed=0)
BUDGET = BudgetConfig(budgets=(4, 8, 16, 24), num_problems=12, num_samples=2, answer_max_tokens=6,
                      sampling=SamplingConfig(temperature=20.0, stop=("ok", "yes")))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# `sampling.hf_decoder`: the direct decode pass ("auto") and the model's own forward ("transformers")
HF_DECODERS = ("auto", "transformers")


def _decoder(params: SamplingConfig, decoder: str) -> SamplingConfig:
    return replace(params, hf_decoder=decoder)


def _on_device(module: torch.nn.Module) -> bool:
    """Every parameter and buffer of `module` lives on DEVICE's device type."""
    want = torch.device(DEVICE).type
    return all(t.device.type == want for t in [*module.parameters(), *module.buffers()])


def _load(model_dir, dtype: str = "fp32", attn: str = "eager", device: str = DEVICE):
    from core.models import load_policy

    return load_policy(str(model_dir), dtype=DTYPES[dtype], device=device, attn_implementation=attn)


def _peaked(model):
    """A 20x sharper head (tied: the embeddings too), so greedy choices have no near-ties that
    float rounding across devices or kernels could flip (as tests/test_budget.py does)."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)
    return model


def _prompts(tok, pairsum_task, k: int):
    """Rendered pairsum prompts; their lengths differ, so batches are left-padded."""
    from core.sampling.text import encode_prompts

    prompts = encode_prompts(tok, [pairsum_task.render_prompt(p, tok) for p in pairsum_task.problems("train", k)])
    prompts += encode_prompts(tok, ["numbers 3 9 target 12\n", "numbers 1 2 4 8 16 target 24\ntry"])
    assert len({len(p) for p in prompts}) > 1
    return prompts


def _check_completions(groups, n: int, max_new: int, eos_id: int) -> None:
    """Shapes, finish reasons and log-probs of `generate`'s output."""
    assert all(len(g) == n for g in groups)
    for i, group in enumerate(groups):
        for j, c in enumerate(group):
            assert (c.prompt_index, c.sample_index) == (i, j)
            assert 1 <= c.num_tokens <= max_new
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert c.num_tokens == max_new and eos_id not in c.token_ids
            else:
                assert c.token_ids[-1] == eos_id
            assert c.token_logprobs is not None and len(c.token_logprobs) == c.num_tokens
            assert all(math.isfinite(x) and x <= 1e-6 for x in c.token_logprobs), c.token_logprobs


# ----------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("decoder", HF_DECODERS)
@pytest.mark.parametrize("dtype, attn", [("fp32", "eager"), ("fp32", "sdpa"), ("bf16", "sdpa")])
def test_sampler_same_seed_same_tokens(tiny_model_dir, pairsum_task, dtype, attn, decoder) -> None:
    """Seeded sampling on the device: same seed -> same tokens and log-probs, another seed ->
    other tokens; finish reasons and log-probs are reported and finite (left-padded prompts
    of different lengths; bf16 + sdpa is what `model.dtype=auto` loads on a GPU for evaluation
    and budget jobs)."""
    from core.sampling.hf import HFSampler

    model, tok = _load(tiny_model_dir, dtype, attn)
    sampler = HFSampler(model, tok)
    assert sampler.device.startswith(torch.device(DEVICE).type) and _on_device(model)
    prompts = _prompts(tok, pairsum_task, 4)
    params = _decoder(SamplingConfig(temperature=1.0, max_new_tokens=16, batch_size=8), decoder)  # 3 batches
    a = sampler.generate(prompts, params, seed=11, n=4)
    b = sampler.generate(prompts, params, seed=11, n=4)
    c = sampler.generate(prompts, params, seed=12, n=4)
    assert a == b
    assert [x.token_ids for g in a for x in g] != [x.token_ids for g in c for x in g]
    for groups in (a, c):
        _check_completions(groups, 4, 16, tok.eos_token_id)
    # stop strings end rows early (the token-table path and the decode-the-tail path)
    for stop in (("\n",), ("ok", "try")):
        out = sampler.generate(prompts, replace(params, stop=stop), seed=11, n=4)
        for g in out:
            for x in g:
                assert x.num_tokens <= 16 and x.finish_reason in ("stop", "length")
                if x.finish_reason == "length":
                    assert not any(s in x.text for s in stop)


def test_sampler_logprobs_match_a_full_forward(tiny_model_dir, pairsum_task) -> None:
    """The decode loop's log-probs (left-padded KV-cache decode on the device) equal those of a
    right-padded full forward pass, as the trainer computes them."""
    from core.rl.batch import logprobs_no_grad, pack, place_logprobs
    from core.sampling.hf import HFSampler

    model, tok = _load(tiny_model_dir)
    prompts = _prompts(tok, pairsum_task, 3)
    groups = HFSampler(model, tok).generate(prompts, SamplingConfig(temperature=1.2, max_new_tokens=16),
                                            seed=3, n=3)
    flat = [(prompts[i], c) for i, g in enumerate(groups) for c in g]
    batch = pack([p for p, _ in flat], [c.token_ids for _, c in flat], tok.pad_token_id, str(model.device))
    reported = place_logprobs([p for p, _ in flat], [c.token_logprobs for _, c in flat], batch)
    recomputed = logprobs_no_grad(model, batch, micro=len(flat)) * batch.mask
    assert reported.device == recomputed.device == batch.ids.device
    assert torch.allclose(reported, recomputed, atol=1e-3), (reported - recomputed).abs().max()
    assert (reported[batch.mask > 0] < 0).all()


@pytest.mark.parametrize("decoder", HF_DECODERS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_greedy_on_device_equals_greedy_on_cpu(tiny_model_dir, pairsum_task, attn, decoder) -> None:
    """Temperature 0: the device's tokens are the CPU's (same fp32 weights, eager on CPU), and
    so are their log-probs up to rounding."""
    from core.sampling.hf import HFSampler

    cpu_model, tok = _load(tiny_model_dir, device="cpu")
    _peaked(cpu_model)
    dev_model = copy.deepcopy(cpu_model).to(DEVICE)
    dev_model.set_attn_implementation(attn)  # the same weights; the attention kernel of the test
    prompts = _prompts(tok, pairsum_task, 5)
    params = SamplingConfig(temperature=0.0, max_new_tokens=16, batch_size=3)
    on_cpu = HFSampler(cpu_model, tok).generate(prompts, params, seed=0)  # the CPU's default decode path
    on_dev = HFSampler(dev_model, tok).generate(prompts, _decoder(params, decoder), seed=1)  # greedy: seed unused
    _check_completions(on_dev, 1, 16, tok.eos_token_id)
    for g_cpu, g_dev in zip(on_cpu, on_dev, strict=True):
        a, b = g_cpu[0], g_dev[0]
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason and a.text == b.text
        assert torch.allclose(torch.tensor(a.token_logprobs), torch.tensor(b.token_logprobs), atol=1e-3, rtol=1e-3)
    assert len({g[0].token_ids for g in on_dev}) > 1  # not one degenerate answer for every prompt


# ----------------------------------------------------------------------------- RL


def _trainer(model_dir, pairsum_task, lora: bool = False, dtype: str = "fp32", attn: str = "eager", lora_r: int = 16,
             **overrides):
    from core.models import apply_lora
    from core.rl.trainer import Trainer
    from core.sampling.hf import HFSampler

    cfg = RLConfig(**{**RL_SMALL, "lora": LoraConfig(enabled=lora, r=lora_r), **overrides})
    cfg.validate()
    policy, tok = _load(model_dir, dtype, attn)
    if lora:
        torch.manual_seed(0)
        policy = apply_lora(policy, cfg.lora)
    return Trainer(policy, tok, HFSampler(policy, tok), pairsum_task, pairsum_task.problems("train", 64), cfg)


def _check_metrics(metrics: dict, step: int) -> None:
    assert metrics["step"] == step
    assert metrics["oversample/drawn"] == metrics["oversample/kept"] == 12
    for key, value in metrics.items():
        if isinstance(value, int | float):
            assert math.isfinite(value), (key, value)
    assert metrics["optim/grad_norm"] > 0
    assert metrics["loss/entropy"] > 0


@pytest.mark.parametrize("dtype, attn", [("fp32", "eager"), ("bf16", "sdpa")], ids=["fp32-weights", "bf16-weights"])
def test_rl_two_steps_bf16_autocast(tiny_model_dir, pairsum_task, dtype, attn) -> None:
    """Two Trainer steps on the device under bf16 autocast: finite metrics, changed weights, the
    EMA anchor between the start and the policy; no pass cap on a GPU. fp32 weights are what
    `lab rl` loads on a GPU (`model.dtype=auto`); bf16 weights + sdpa what `model.dtype=bf16` does."""
    trainer = _trainer(tiny_model_dir, pairsum_task, dtype=dtype, attn=attn, bf16_autocast=True, anchor_rate=0.5)
    assert _on_device(trainer.policy) and _on_device(trainer.anchor.model)
    if torch.device(DEVICE).type != "cpu":
        assert trainer.pass_tokens == 0
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    for step in (1, 2):
        metrics, rows = trainer.step()
        _check_metrics(metrics, step)
        assert len(rows) == 12 and all(math.isfinite(r["advantage"]) for r in rows)
    after = dict(trainer.policy.named_parameters())
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert len(changed) > len(before) // 2, changed
    assert all(torch.isfinite(p).all() for p in after.values())
    anchor = dict(trainer.anchor.model.named_parameters())
    assert any(not torch.equal(anchor[n], before[n]) for n in changed)
    assert all(torch.isfinite(p).all() for p in anchor.values())
    assert all(p.device == after[n].device for n, p in anchor.items())


def test_rl_two_steps_lora(tiny_model_dir, pairsum_task) -> None:
    """LoRA on the device under bf16 autocast: only the adapters train, the anchor (an EMA of
    the adapters) lives on the device and moves, the metrics are finite."""
    trainer = _trainer(tiny_model_dir, pairsum_task, lora=True, lora_r=4, lr=5e-2, anchor_rate=0.5,
                       bf16_autocast=True)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    adapters = {n for n in before if "lora_" in n}
    assert adapters and set(trainer.anchor.state_dict()) == adapters
    assert all(t.device.type == torch.device(DEVICE).type for t in trainer.anchor.adapters.values())
    for step in (1, 2):
        _check_metrics(trainer.step()[0], step)
    after = dict(trainer.policy.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in adapters)
    assert all(torch.equal(before[n], after[n]) for n in before if n not in adapters)
    assert all(torch.isfinite(after[n]).all() for n in adapters)
    anchor = trainer.anchor.state_dict()
    assert any(not torch.equal(anchor[n], before[n]) for n in adapters)
    assert set(trainer.state()["adapters"]) == adapters


# ----------------------------------------------------------------------------- SFT


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_sft_short_run(pairsum_task, lora) -> None:
    """A short SFT run on the device under bf16 autocast: finite loss, the weights change (only
    the adapters with LoRA) and, fully fine-tuned, the loss of a fixed batch falls."""
    from core.models import TinySpec, apply_lora, build_tiny_model
    from core.sft import build_examples, collate, response_loss, train_sft
    from core.synth.programmatic import synthesize

    model, tok = build_tiny_model(TinySpec(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), seed=0)
    cfg = SFTConfig(max_steps=30, warmup_steps=2, batch_size=16, micro_batch_size=8, lr=1e-2, log_every=10,
                    bf16_autocast=True, lora=LoraConfig(enabled=lora, r=4))
    if lora:
        model = apply_lora(model, cfg.lora)
    model.to(DEVICE)
    assert _on_device(model)
    traces = list(synthesize(pairsum_task.problems("train", 64), "t1", 0.8, 0.1, seed=0))
    examples = build_examples(traces, pairsum_task, tok, max_seq_len=400)[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = collate(examples[:32], tok.pad_token_id, DEVICE)
    with torch.no_grad():
        loss0 = float(response_loss(model, batch)[0])
    records: list[dict] = []
    last = train_sft(model, tok, examples, cfg, log=records.append, progress=False)
    assert [r["step"] for r in records] == [10, 20, 30]
    assert all(math.isfinite(r["loss/sft"]) and math.isfinite(r["optim/grad_norm"]) for r in records)
    assert last["optim/grad_norm"] > 0
    after = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    if lora:
        assert changed and all("lora_" in n for n in changed)
    else:
        assert len(changed) > len(before) // 2
        with torch.no_grad():
            assert float(response_loss(model, batch)[0]) < loss0


# ----------------------------------------------------------------------------- budgeted sampling


@pytest.fixture(scope="module")
def peaked_samplers(tiny_model_dir):
    """(on the device, on the CPU): the tiny model with a 20x sharper head, fp32, eager."""
    from core.sampling.hf import HFSampler

    cpu_model, tok = _load(tiny_model_dir, device="cpu")
    _peaked(cpu_model)
    return HFSampler(copy.deepcopy(cpu_model).to(DEVICE), tok), HFSampler(cpu_model, tok)


def test_budget_truncation_and_forced_answers(peaked_samplers, pairsum_task) -> None:
    """Generic path on the device: each forced answer continues from exactly the first B
    generated ids + the cue (never more than B), exactly the responses B cuts are forced, and
    the device's greedy answers equal the CPU's for the same inputs."""
    from core.budget import generate_sweep, reasoning_length, truncated_at

    dev, cpu = peaked_samplers
    tok = dev.tokenizer
    problems = pairsum_task.problems("heldout", BUDGET.num_problems)
    rec = RecordingSampler(dev)
    sweep = generate_sweep(rec, pairsum_task, problems, BUDGET)
    prompts, _ = rec.calls[0]
    assert all(c.num_tokens <= max(BUDGET.budgets) for g in sweep.groups for c in g)
    forced = [b for b in BUDGET.budgets if sweep.answers[b]]
    assert forced and len(rec.calls) == 1 + len(forced)
    for budget, (inputs, params) in zip(forced, rec.calls[1:], strict=True):
        keys = list(sweep.answers[budget])
        assert params.temperature == 0 and params.max_new_tokens == BUDGET.answer_max_tokens
        for (i, j), ids in zip(keys, inputs, strict=True):
            head = list(sweep.groups[i][j].token_ids[:budget])
            assert len(head) == budget  # truncation never exceeds (nor falls short of) the budget
            assert ids == prompts[i] + head + list(sweep.cue.after(tok, head))
        cut = {(i, j) for i, g in enumerate(sweep.groups) for j, c in enumerate(g)
               if truncated_at(reasoning_length(c, sweep.cue.core, tok.eos_token_id), budget)}
        assert set(keys) == cut
        answers = [sweep.answers[budget][k] for k in keys]
        assert all(1 <= a.num_tokens <= BUDGET.answer_max_tokens for a in answers)
        on_cpu = cpu.generate(inputs, params, seed=0)
        assert [a.token_ids for a in answers] == [g[0].token_ids for g in on_cpu]


@pytest.mark.parametrize("decoder", HF_DECODERS)
@pytest.mark.parametrize("stop", [("ok", "yes"), ()], ids=["stop-strings", "eos-only"])
def test_budget_kv_cache_forks_match_regenerating(peaked_samplers, pairsum_task, stop, decoder) -> None:
    """The fast path (forced answers forked from the device's KV cache) answers as fresh passes
    over prompt + truncated ids + cue do, leaves the main samples unchanged, and its curve
    never counts more than budget + cue + answer tokens for a truncated response."""
    from core.budget import generate_sweep, sweep_curve

    dev, _ = peaked_samplers
    cfg = replace(BUDGET, sampling=_decoder(replace(BUDGET.sampling, stop=stop), decoder))
    problems = pairsum_task.problems("heldout", cfg.num_problems)
    forked = generate_sweep(dev, pairsum_task, problems, cfg)
    plain = generate_sweep(dev, pairsum_task, problems, cfg, fork=False)
    assert forked.groups == plain.groups
    assert any(plain.answers[b] for b in cfg.budgets)
    for b in cfg.budgets:
        assert forked.answers[b].keys() == plain.answers[b].keys()
        for key, ans in plain.answers[b].items():
            assert forked.answers[b][key].token_ids == ans.token_ids, (b, key)
    points, rows, _ = sweep_curve(pairsum_task, problems, forked, cfg, "tiny", dev.tokenizer)
    cue = max(len(forked.cue.ids), len(forked.cue.ids_newline))
    assert all(r["tokens_used"] <= r["budget"] + cue + cfg.answer_max_tokens for r in rows if r["truncated"])
    fracs = [p.truncated_frac for p in points]
    assert fracs == sorted(fracs, reverse=True) and fracs[0] > 0
