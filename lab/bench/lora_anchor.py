"""How far the LoRA EMA anchor is from an EMA of the effective weights.

    python -m lab.bench.lora_anchor [--steps 30] [--rate 0.9] [--r 16] [--lr 2e-2] [--model PATH]

With LoRA the anchor averages the adapter matrices A and B apart (`core.rl.anchor`): its weight
delta is scale * EMA(B) @ EMA(A), while an EMA of the effective weights would hold
EMA(scale * B @ A). The two differ by the covariance of B and A over the averaging window.
This runs `--steps` RL steps of the trainer with LoRA on the embedded pairsum task (the newest
SFT run under --runs-dir, `--model`, or the randomly initialised embedded model), keeps the
exact EMA of every adapted module's effective delta beside the trainer's anchor, and prints
per step:
  * `delta_rel_err`: || anchor delta - exact EMA delta || / || exact EMA delta || over all modules;
  * `kl_exact`: mean per-response KL (k1, nats) of the policy to a model holding the exact EMA weights;
  * `kl_anchor`: the same against the lab's anchor (what the penalty uses);
  * `kl_gap`: |kl_anchor - kl_exact|: the error the approximation adds to the KL the penalty sees.
Last line: JSON with the means over the steps. No timing; figures go to docs/perf_log.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics

import torch

from core.config import LoraConfig, RLConfig, SamplingConfig, TaskConfig
from core.rl import algos
from core.rl.anchor import lora_effective_deltas
from core.rl.batch import logprobs_no_grad, pack
from core.tasks import make_task
from lab.bench import pick_model


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rate", type=float, default=0.9, help="EMA rate of the anchor (lab default 0.99)")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-2)
    args = p.parse_args(argv)

    from core.models import apply_lora, build_tiny_model, load_policy
    from core.rl.trainer import Trainer
    from core.sampling.hf import HFSampler

    path = pick_model(args.model, args.runs_dir)
    if path is None:
        base, tok = build_tiny_model()
        label = "random embedded model"
    else:
        base, tok = load_policy(path, dtype=torch.float32, device="cpu", attn_implementation="eager")
        label = path
    lora = LoraConfig(enabled=True, r=args.r)
    cfg = RLConfig(steps=args.steps, prompts_per_step=8, num_generations=4, micro_batch_size=32, lr=args.lr, warmup_steps=1,
                   anchor="ema", anchor_rate=args.rate, eval_every=0, lora=lora,
                   sampling=SamplingConfig(temperature=1.2, max_new_tokens=64))
    cfg.validate()
    task = make_task(TaskConfig(name="pairsum"))
    policy = apply_lora(base, lora)
    trainer = Trainer(policy, tok, HFSampler(policy, tok), task, task.problems("train", 512), cfg)
    scale = lora.alpha / lora.r
    exact = {k: v.clone() for k, v in lora_effective_deltas(dict(trainer.anchor.adapters), scale).items()}
    print(f"model: {label}; LoRA r={args.r}; anchor EMA rate {args.rate}; lr {args.lr}; {args.steps} steps")
    rows = []
    for _ in range(args.steps):
        metrics, _ = trainer.step()
        live = lora_effective_deltas({n: p.detach() for n, p in trainer.policy.named_parameters() if "lora_" in n}, scale)
        for k, d in live.items():  # the exact EMA of the effective deltas, by the anchor's own rule
            exact[k].mul_(args.rate).add_(d, alpha=1 - args.rate)
        approx = lora_effective_deltas(dict(trainer.anchor.adapters), scale)
        num = sum(float((approx[k] - exact[k]).pow(2).sum()) for k in exact) ** 0.5
        den = sum(float(exact[k].pow(2).sum()) for k in exact) ** 0.5
        kl_exact, kl_anchor, kl_gap = kls(trainer, tok, exact, scale)
        rows.append({"step": metrics["step"], "delta_rel_err": num / max(den, 1e-12),
                     "kl_exact": kl_exact, "kl_anchor": kl_anchor, "kl_gap": kl_gap})
        print(json.dumps(rows[-1]))
    keys = ("delta_rel_err", "kl_exact", "kl_anchor", "kl_gap")
    print(json.dumps({"model": label, "steps": args.steps, "rate": args.rate, "r": args.r, "lr": args.lr,
                      **{f"mean_{k}": statistics.fmean(r[k] for r in rows) for k in keys}}))


def kls(trainer, tok, exact: dict[str, torch.Tensor], scale: float) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Mean per-response KL (k1) of the policy to the exact-EMA model and to the lab's anchor,
    and the gap between them, on fresh samples of the policy for 8 training prompts."""
    task = trainer.task
    problems = task.problems("train", 8)
    prompts = [tok(task.render_prompt(q, tok), add_special_tokens=False)["input_ids"] for q in problems]
    groups = trainer.sampler.generate(prompts, trainer.cfg.sampling, seed=7, n=2)
    flat = [(prompts[i], c) for i, g in enumerate(groups) for c in g]
    batch = pack([p for p, _ in flat], [c.token_ids for _, c in flat], tok.pad_token_id, "cpu")
    passes = batch.passes(64)
    policy = trainer.policy
    logp = logprobs_no_grad(policy, batch, 0, False, passes)
    anchor = trainer.anchor.logprobs(policy, batch, passes, False)
    dense = copy.deepcopy(policy)
    with torch.no_grad():  # adapters zeroed, the exact EMA delta added to each adapted base weight
        for name, module in dense.named_modules():
            if name in exact:
                module.base_layer.weight.add_(exact[name].to(module.base_layer.weight.dtype))
                for lora_b in module.lora_B.values():
                    lora_b.weight.zero_()
    ref = logprobs_no_grad(dense, batch, 0, False, passes)

    def kl(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(algos.sequence_sum(algos.kl_per_token(a, b, "k1"), batch.mask).mean())

    exact_kl, anchor_kl = kl(logp, ref), kl(logp, anchor)
    return exact_kl, anchor_kl, abs(anchor_kl - exact_kl)


if __name__ == "__main__":
    main()
