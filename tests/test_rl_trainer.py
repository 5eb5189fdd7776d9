"""The Trainer in process on a tiny model: sampler log-probs, oversampling rows, LoRA, NaN stop."""

from __future__ import annotations

import json
import math

import pytest
import torch

from core.config import LoraConfig, RLConfig, SamplingConfig
from core.rl import algos
from core.rl.batch import logprobs_no_grad, pack, place_logprobs

SMALL = dict(steps=4, prompts_per_step=3, num_generations=4, micro_batch_size=12,
             sampling=SamplingConfig(temperature=1.2, max_new_tokens=12), lr=1e-2, warmup_steps=1, eval_every=0, seed=0)


def make_trainer(model_dir, pairsum_task, lora: bool = False, lora_r: int = 16, **overrides):
    from core.models import apply_lora, load_policy
    from core.rl.trainer import Trainer
    from core.sampling.hf import HFSampler

    cfg = RLConfig(**{**SMALL, "lora": LoraConfig(enabled=lora, r=lora_r), **overrides})
    cfg.validate()
    policy, tok = load_policy(str(model_dir), dtype=torch.float32, device="cpu", attn_implementation="eager")
    if lora:
        policy = apply_lora(policy, cfg.lora)
    train = pairsum_task.problems("train", 64)
    return Trainer(policy, tok, HFSampler(policy, tok), pairsum_task, train, cfg)


def test_sampler_logprobs_match_a_full_forward(tiny_model_dir, pairsum_task) -> None:
    """The decoding loop's log-probs of the sampled tokens are the untempered ones the trainer
    would compute in a separate pass (left-padded KV-cache decode vs right-padded full forward)."""
    from core.models import load_policy
    from core.sampling.hf import HFSampler

    policy, tok = load_policy(str(tiny_model_dir), dtype=torch.float32, device="cpu", attn_implementation="eager")
    prompts = [tok(pairsum_task.render_prompt(p, tok), add_special_tokens=False)["input_ids"]
               for p in pairsum_task.problems("train", 3)]
    groups = HFSampler(policy, tok).generate(prompts, SamplingConfig(temperature=1.2, max_new_tokens=16), seed=3, n=3)
    flat = [(prompts[i], c) for i, g in enumerate(groups) for c in g]
    assert all(c.token_logprobs is not None and len(c.token_logprobs) == c.num_tokens for _, c in flat)
    batch = pack([p for p, _ in flat], [c.token_ids for _, c in flat], tok.pad_token_id, "cpu")
    reported = place_logprobs([p for p, _ in flat], [c.token_logprobs for _, c in flat], batch)
    recomputed = logprobs_no_grad(policy, batch, micro=len(flat)) * batch.mask
    assert torch.allclose(reported, recomputed, atol=1e-4)
    assert (reported[batch.mask > 0] < 0).all()


def test_kl_to_an_identical_anchor_is_zero_whatever_the_update_precision(tiny_model_dir, pairsum_task) -> None:
    """Step 1 with a frozen anchor: pi == pi_ref. The anchor pass matches the fp32 sampler's
    precision even when the update runs under bf16 autocast (a bf16 anchor pass would add a
    spurious KL from rounding alone)."""
    for bf16 in (False, True):
        trainer = make_trainer(tiny_model_dir, pairsum_task, anchor="frozen", bf16_autocast=bf16)
        assert abs(trainer.step()[0]["kl/anchor"]) < 1e-3


def test_oversampling_keeps_k_of_n_and_marks_rows(tiny_model_dir, pairsum_task) -> None:
    trainer = make_trainer(tiny_model_dir, pairsum_task, num_samples_drawn=6, oversample_rule="random",
                           drop_equal_groups=True)
    metrics, rows = trainer.step()
    assert metrics["oversample/drawn"] == 18 and metrics["oversample/kept"] == 12
    assert len(rows) == 18 and sum(r["kept"] for r in rows) == 12
    for g in range(3):
        group = rows[g * 6 : (g + 1) * 6]
        assert sum(r["kept"] for r in group) == 4
        kept_rewards = {r["reward"] for r in group if r["kept"]}
        assert all(r["used"] == (len(kept_rewards) > 1) for r in group if r["kept"])
    assert all(r["advantage"] is None and not r["used"] for r in rows if not r["kept"])
    assert metrics["oversample/dropped_groups"] == sum(
        len({r["reward"] for r in rows[g * 6 : (g + 1) * 6] if r["kept"]}) == 1 for g in range(3))


def test_dropped_groups_leave_the_loss(tiny_model_dir, pairsum_task) -> None:
    """Dynamic filtering: a dropped group adds nothing to the update, not even through the
    entropy bonus; with every group dropped the weights do not move at all (AdamW's momentum
    and weight decay included: no optimizer step)."""
    trainer = make_trainer(tiny_model_dir, pairsum_task, entropy_coef=0.1, drop_equal_groups=True)
    select = trainer.select

    def drop_all(r) -> None:  # noqa: ANN001
        select(r)
        r.used = [False] * len(r.groups)

    trainer.select = drop_all
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    metrics, rows = trainer.step()
    assert metrics["oversample/dropped_groups"] == 3 and not any(r["used"] for r in rows)
    assert all(torch.equal(p, before[n]) for n, p in trainer.policy.named_parameters())
    assert metrics["optim/grad_norm"] == 0.0


def test_ppo_ratio_starts_at_one_under_bf16(tiny_model_dir, pairsum_task) -> None:
    """With the clip on, pi_old is taken in the training forward's precision: the first epoch's
    ratio is 1 (the fp32 sampler's log-probs against a bf16 forward were off by ~1e-2)."""
    trainer = make_trainer(tiny_model_dir, pairsum_task, clip=True, ppo_epochs=2, bf16_autocast=True)
    metrics, _ = trainer.step()
    assert metrics["ppo/first_log_ratio_max"] < 1e-5
    on_policy, _ = make_trainer(tiny_model_dir, pairsum_task, bf16_autocast=True).step()
    assert "ppo/first_log_ratio_max" not in on_policy


def test_penalty_as_reward_or_as_advantage(tiny_model_dir, pairsum_task) -> None:
    """The two readings of T1's -1: as the reward (advantage -1 minus the valid others'
    baseline) or as the advantage itself. 6 new tokens: most responses are cut, some are not."""
    def rows(mode: str) -> list[dict]:
        sampling = SamplingConfig(temperature=1.2, max_new_tokens=6)
        return make_trainer(tiny_model_dir, pairsum_task, penalty_as=mode, sampling=sampling, beta=0.0).step()[1]

    def bad(r: dict) -> bool:
        return r["overlong"] or r["repetitive"] or r["garbled"]

    as_reward, as_advantage = rows("reward"), rows("advantage")
    penalised = [i for i, r in enumerate(as_reward) if bad(r)]
    assert penalised and [bad(r) for r in as_advantage] == [bad(r) for r in as_reward]
    assert all(as_advantage[i]["advantage"] == -1.0 for i in penalised)
    for g in range(3):  # as the reward: -1 minus the mean reward of the group's valid samples
        group = as_reward[g * 4 : (g + 1) * 4]
        valid = [r["reward"] for r in group if not bad(r)]
        for r in group:
            if bad(r):
                assert r["advantage"] == pytest.approx(-1.0 - (sum(valid) / len(valid) if valid else 0.0))


def test_lora_two_steps_train_adapters_only(tiny_model_dir, pairsum_task) -> None:
    trainer = make_trainer(tiny_model_dir, pairsum_task, lora=True, lora_r=4, lr=5e-2, anchor_rate=0.5)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    adapters = {n for n in before if "lora_" in n}
    assert adapters and set(trainer.anchor.state_dict()) == adapters  # the anchor holds adapters only
    for _ in range(2):
        trainer.step()
    after = dict(trainer.policy.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in adapters)
    assert all(torch.equal(before[n], after[n]) for n in before if n not in adapters)
    anchor = trainer.anchor.state_dict()
    moved = [n for n in adapters if not torch.equal(anchor[n], before[n])]
    assert moved and all(not torch.equal(anchor[n], after[n].detach()) for n in moved)  # an EMA between
    assert set(trainer.state()["adapters"]) == adapters


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny_model_dir, monkeypatch,
                                                                  capsys) -> None:
    from safetensors.torch import load_file

    from lab.cli import main

    real, calls = algos.policy_loss, []

    def nan_at_step_3(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss  # one micro-batch per step

    monkeypatch.setattr(algos, "policy_loss", nan_at_step_3)
    code = main(["rl", "-q", "--runs-dir", str(tmp_path), "--run-id", "nan", f"rl.init={tiny_model_dir}",
                 "rl.steps=4", "rl.prompts_per_step=2", "rl.num_generations=2", "rl.sampling.max_new_tokens=8",
                 "rl.micro_batch_size=4", "eval.num_problems=4", "eval.sampling.max_new_tokens=8", "rl.eval_every=0", "rl.save_every=1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 2 and len(err) == 1  # one line (besides the loaders' progress bars)
    assert "RL step 3: the loss is nan" in err[0] and "last good checkpoint" in err[0] and "step_2" in err[0]
    ckpts = tmp_path / "nan" / "checkpoints"
    assert (ckpts / "step_2" / "COMPLETE").exists() and not (ckpts / "step_3").exists()
    weights = load_file(str(ckpts / "step_2" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    logged = [json.loads(x)["step"] for x in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) == 2


@pytest.mark.parametrize("bad, message", [
    ({"num_generations": 1}, "num_generations must be >= 2"),
    ({"anchor": "none"}, "beta > 0 needs an anchor"),
    ({"micro_batch_size": 5}, "must divide"),
    ({"num_samples_drawn": 3}, "num_samples_drawn (3) must be 0 or >="),
    ({"oversample_rule": "best"}, "oversample_rule"),
    ({"ppo_epochs": 2}, "ppo_epochs > 1 needs rl.clip"),
    ({"anchor": "reset", "reset_every": 0}, "rl.anchor=reset needs rl.reset_every >= 1"),
    ({"clip": True, "ppo_epochs": 0}, "rl.ppo_epochs must be >= 1"),
    ({"penalty_as": "advantages"}, "rl.penalty_as must be 'reward' or 'advantage'"),
])
def test_bad_settings_are_refused_by_validation(bad, message) -> None:
    from core.config import ConfigError

    with pytest.raises(ConfigError) as e:
        RLConfig(**{**SMALL, **bad}).validate()
    assert message in str(e.value)


def test_ablation_switches_from_the_command_line() -> None:
    from core.config import RLJob
    from core.overrides import build
    from lab.cli import _parse_overrides

    job = build(RLJob, {}, _parse_overrides([
        "rl.num_generations=16", "rl.micro_batch_size=32", "rl.sampling.temperature=0.9", "rl.penalize_overlong=false",
        "rl.penalize_repetition=false", "rl.penalize_garbled=false", "rl.anchor=frozen", "rl.entropy_coef=0",
        "rl.num_samples_drawn=24", "rl.oversample_rule=random", "rl.lora.enabled=true", "rl.lora.r=8"]))
    rl = job.rl
    assert (rl.num_generations, rl.sampling.temperature, rl.anchor, rl.entropy_coef) == (16, 0.9, "frozen", 0.0)
    assert not (rl.penalize_overlong or rl.penalize_repetition or rl.penalize_garbled)
    assert (rl.num_samples_drawn, rl.oversample_rule, rl.lora.enabled, rl.lora.r) == (24, "random", True, 8)
    for mode in ("ema", "reset", "frozen"):
        assert build(RLJob, {}, _parse_overrides([f"rl.anchor={mode}"])).rl.anchor == mode
    off = build(RLJob, {}, _parse_overrides(["rl.anchor=none", "rl.beta=0"])).rl
    assert (off.anchor, off.beta) == ("none", 0.0)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_passes_split_the_batch_without_changing_the_gradient(tiny_model_dir, pairsum_task) -> None:
    """Rows are length-sorted into passes capped by rows and tokens; every row is in exactly one,
    and the accumulated gradient (and the anchor's log-probs) equal those of one pass."""
    trainer = make_trainer(tiny_model_dir, pairsum_task, bf16_autocast=False)
    r = trainer.sample()
    trainer.reward(r)
    trainer.select(r)
    kept = r.kept_flat()
    prompts = [r.prompt_ids[g] for g, _, _ in kept]
    batch = pack(prompts, [c.token_ids for _, c, _ in kept], trainer.tok.pad_token_id, "cpu")
    one = batch.passes(len(batch))
    split = batch.passes(5, max_tokens=60)
    widths = batch.widths()
    assert len(split) > 2 and sorted(torch.cat(split).tolist()) == list(range(len(batch)))
    assert all(len(p) <= 5 and (len(p) == 1 or len(p) * int(widths[p].max()) <= 60) for p in split)
    assert torch.equal(torch.cat(split), torch.sort(widths, stable=True).indices)  # shortest first

    old, ref = trainer.logprobs(prompts, [c for _, c, _ in kept], batch, one)
    _, ref_split = trainer.logprobs(prompts, [c for _, c, _ in kept], batch, split)
    assert torch.allclose(ref, ref_split, atol=1e-5)
    adv, _ = trainer.advantages(r, batch, old, ref)
    grads = []
    trainer.opt.step = lambda: grads.append([p.grad.clone() for p in trainer.policy.parameters()])
    for passes in (one, split):
        trainer.update(batch, old, adv, passes)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads, strict=True))


@pytest.mark.slow
def test_rl_step_benchmark_interleaves_the_trainers(capsys) -> None:
    """`python -m lab.bench.rl_step` at toy size (needs TRL, the `bench` extra): each trainer
    times its own steps (the warm-ups left out), and the last line is the JSON the issue asks for."""
    pytest.importorskip("trl")
    from lab.bench import rl_step

    out = rl_step.main(["--steps", "2", "--prompts", "2", "--k", "2", "--max-new-tokens", "8", "--random-init",
                       "--trl-pass-rows", "0"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == out and last["ratio"] == pytest.approx(last["ours_samples_per_s"] / last["trl_samples_per_s"], rel=0.01)
    assert last["ours_samples_per_s"] > 0 and last["trl_samples_per_s"] > 0 and last["steps"] == 2


@pytest.mark.slow
def test_rl_step_benchmark_on_a_random_toy_qwen(capsys) -> None:
    """`--arch toy`: a random Qwen2 of the toy shapes with the embedded math tokenizer, on the
    minimath task. Its LM head has more rows than the tokenizer has ids, so both trainers sample
    ids that decode to nothing; both still run their steps, and the JSON names the arch and the
    sampler and carries ours' weight-sync time (about 0 with the hf sampler, which copies nothing;
    TRL's only with vLLM)."""
    pytest.importorskip("trl")
    from lab.bench import TOY, rl_step

    out = rl_step.main(["--arch", "toy", "--steps", "2", "--prompts", "2", "--k", "2", "--max-new-tokens", "6",
                        "--trl-pass-rows", "0"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == out and (last["arch"], last["sampler"], last["steps"]) == ("toy", "hf", 2)
    assert last["vocab_size"] == TOY["vocab_size"] > last["tokenizer_size"]
    assert last["ours_samples_per_s"] > 0 and last["trl_samples_per_s"] > 0
    assert 0 < last["ours_mean_len"] <= 6 and 0 < last["trl_mean_len"] <= 6
    assert 0 <= last["ours_sync_weights_s"] < 0.01 and "trl_sync_weights_s" not in last


@pytest.mark.parametrize("argv, message", [
    (["--random-init", "--arch", "toy"], "contradicts --arch toy"),
    (["--model", "runs/x", "--arch", "toy"], "pass one of them"),
    (["--prompts", "3", "--k", "2", "--trl-pass-rows", "4"], "must divide prompts x k = 6"),
    (["--arch", "toy", "--sampler", "vllm"], "needs --device cuda"),
])
def test_rl_step_benchmark_refuses_bad_options_in_one_line(argv, message) -> None:
    from lab.bench import rl_step

    with pytest.raises(SystemExit) as e:
        rl_step.main(argv)
    assert str(e.value).startswith("error: ") and message in str(e.value) and "\n" not in str(e.value)


def test_lora_anchor_bench_measures_the_approximation(tmp_path, capsys) -> None:
    """`lab.bench.lora_anchor` smoke: figures come out finite, and the anchor's delta equals
    the exact EMA before any step (B = 0: both deltas are 0) but not after two."""
    from lab.bench.lora_anchor import main

    main(["--steps", "2", "--runs-dir", str(tmp_path), "--rate", "0.5", "--lr", "5e-2"])
    lines = capsys.readouterr().out.strip().splitlines()
    steps, last = [json.loads(x) for x in lines[1:-1]], json.loads(lines[-1])
    assert [s["step"] for s in steps] == [1, 2] and steps[-1]["delta_rel_err"] > 0
    assert all(math.isfinite(v) for v in last.values() if isinstance(v, float))


def test_lora_effective_deltas_pairs_a_and_b() -> None:
    from core.rl.anchor import lora_effective_deltas

    a, b = torch.randn(4, 8), torch.randn(6, 4)
    out = lora_effective_deltas({"m.q.lora_A.default.weight": a, "m.q.lora_B.default.weight": b,
                                 "m.k.lora_A.default.weight": a}, scale=2.0)
    assert set(out) == {"m.q"} and torch.allclose(out["m.q"], 2.0 * b @ a)


def test_rollout_metrics_count_penalised_samples_and_groups_without_signal() -> None:
    """The share of penalised samples is logged per step, and that of groups whose advantages
    are all 0 (RLOO learns nothing from them; an all-penalised group still has -1s)."""
    from core.rewards import RewardParts
    from core.rl.metrics import Rollouts, no_signal_frac, rollout_metrics
    from core.types import Completion, Problem

    def part(correct: bool, overlong: bool = False) -> RewardParts:
        return RewardParts(correct, overlong, False, False, -1.0 if overlong else float(correct))

    groups = [[part(True), part(True)], [part(True), part(False)], [part(False, True), part(False, True)],
              [part(False), part(False, True)]]
    r = Rollouts([Problem(str(i), "q", "1") for i in range(4)], [[1]] * 4,
                 [[Completion("x", (1,), "stop")] * 2 for _ in groups], groups, [[True, True]] * 4, [True] * 4)
    assert rollout_metrics(r)["rollout/penalised_frac"] == 3 / 8
    assert no_signal_frac([0.0, 0.0, 0.5, -0.5, -1.0, -1.0, 0.0, 0.0], 4) == 0.5  # groups 0 and 3
