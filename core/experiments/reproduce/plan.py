"""The plan of `lab reproduce`: every sub-run, in order, as a job config.

Sub-runs live under <reproduce run>/runs/<key> (a seed s sets sft.seed and rl.seed):

    synth-t1, synth-plain          traces, shared by every seed (synth.style=plain mirrors
                                   lab/presets/plain_cot.yaml)
    per seed s:
      sft-t1-s, sft-plain-s        SFT on each kind of trace
      rl-base-s                    T1 RL from sft-t1-s: claims 1, 2, 3 (T1 side), 5 (on), 7
      rl-plain-s                   the same RL from sft-plain-s: claim 3 (plain side)
      rl-k<small>-s, rl-k<large>-s K of reproduce.k_small / k_large at the same prompts: claim 4
      rl-k<large>-matched-s        K = k_large on prompts x k_small / k_large (same rollouts): claim 4
      rl-nopenalty-s               the three -1 penalties off: claim 5
      rl-ema-beta-s, rl-frozen-s   EMA anchor (reproduce.anchor_rate) and frozen reference, both at
                                   beta = reproduce.anchor_beta for reproduce.anchor_steps: claim 6
      budget-s                     budget curves of rl-base-s at budget.checkpoints: claim 2
A variant equal to another sub-run (e.g. rl.num_generations == k_large) reuses it. Each sub-run
carries an estimate of its seconds on an idle 2-core machine (`estimate_s`), which orders
nothing but feeds the progress ETA; how the preset's sizes were chosen: docs/perf_log.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from core.config import BudgetJob, ConfigError, ReproduceJob, RLJob, SFTJob, SynthJob
from core.overrides import apply_overrides, to_dict, validate


@dataclass(frozen=True)
class SubRun:
    """One run of the plan: `needs` maps a config key to the sub-run whose folder fills it."""

    key: str
    stage: str  # synth | sft | rl | budget
    job: Any
    needs: dict[str, str] = field(default_factory=dict)
    cost_s: float = 0.0
    seed: int | None = None  # None: shared by every seed


@dataclass
class Plan:
    subs: list[SubRun]
    alias: dict[str, str]  # a variant key -> the equal sub-run that serves it

    def key(self, name: str) -> str:
        return self.alias.get(name, name)


def estimate_s(stage: str, job: Any) -> float:
    """Uncontended seconds on 2 CPU cores for the embedded model, from per-step costs measured
    there (SFT at batch 32, RL at 16 prompts x K=8, a 500-problem evaluation)."""
    if stage == "synth":
        return 2 + 3e-4 * job.synth.num_problems
    if stage == "sft":
        per_step = 0.16 if job.synth.style == "t1" else 0.04  # plain traces are ~4x shorter
        return 6 + per_step * job.sft.max_steps * job.sft.batch_size / 32 + 0.006 * job.eval.num_problems
    if stage == "rl":
        r = job.rl
        evals = 2 + ((r.steps - 1) // r.eval_every if r.eval_every else 0)
        return 5 + r.steps * 2.5 * r.prompts_per_step * r.num_generations / 128 + evals * 0.006 * job.eval.num_problems
    b = job.budget
    ckpts = 4 if b.checkpoints == "all" else len(b.checkpoints.split(","))
    return ckpts * (3 + 0.05 * b.num_problems * b.num_samples)


def rl_variants(job: ReproduceJob) -> dict[str, dict[str, Any]]:
    """RL variant name -> overrides of the base T1 recipe."""
    k = job.reproduce
    longer = {"rl.steps": k.anchor_steps, "rl.save_every": max(k.anchor_steps // 10, 1)} if k.anchor_steps else {}
    return {"base": {}, f"k{k.k_small}": {"rl.num_generations": k.k_small},
            f"k{k.k_large}": {"rl.num_generations": k.k_large},
            f"k{k.k_large}-matched": {"rl.num_generations": k.k_large,
                                      "rl.prompts_per_step": job.rl.prompts_per_step * k.k_small // k.k_large},
            "nopenalty": {"rl.penalize_overlong": False, "rl.penalize_repetition": False,
                          "rl.penalize_garbled": False},
            "ema-beta": {"rl.anchor": "ema", "rl.beta": k.anchor_beta, "rl.anchor_rate": k.anchor_rate, **longer},
            "frozen": {"rl.anchor": "frozen", "rl.beta": k.anchor_beta, **longer}}


def plan(job: ReproduceJob) -> Plan:
    """Every sub-run in order (seed by seed, so a partial run covers every claim)."""
    p = Plan([], {})
    for style in ("t1", "plain"):
        sj = SynthJob(job.task, replace(job.synth, style=style))
        _add(p, SubRun(f"synth-{style}", "synth", sj, cost_s=estimate_s("synth", sj)))
    for s in job.reproduce.seeds:
        for style in ("t1", "plain"):
            sft = SFTJob(job.task, job.model, replace(job.synth, style=style), replace(job.sft, seed=s), job.eval)
            _add(p, SubRun(f"sft-{style}-{s}", "sft", sft, {"sft.data": f"synth-{style}"}, estimate_s("sft", sft), s))
        base = RLJob(job.task, job.model, replace(job.rl, seed=s), job.eval)
        for name, over in rl_variants(job).items():
            try:
                rl = validate(apply_overrides(base, over))
            except ConfigError as e:
                raise ConfigError(f"the {name} RL variant ({_overrides(over)}): {e}") from None
            _add(p, SubRun(f"rl-{name}-{s}", "rl", rl, {"rl.init": f"sft-t1-{s}"}, estimate_s("rl", rl), s))
        _add(p, SubRun(f"rl-plain-{s}", "rl", base, {"rl.init": f"sft-plain-{s}"}, estimate_s("rl", base), s))
        bj = BudgetJob(job.task, job.model, job.budget)
        _add(p, SubRun(f"budget-{s}", "budget", bj, {"model.name": f"rl-base-{s}"}, estimate_s("budget", bj), s))
    return p


def _overrides(over: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in over.items()) or "the base recipe"


def _add(p: Plan, sub: SubRun) -> None:
    for other in p.subs:
        if (other.stage, other.needs, to_dict(other.job)) == (sub.stage, sub.needs, to_dict(sub.job)):
            p.alias[sub.key] = other.key
            return
    p.subs.append(sub)
