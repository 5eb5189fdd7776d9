"""Figures of finished sub-runs -> T1's six claims, each with its verdict.

Verdict rule (fixed before any result, the same for every claim): each claim lists quantities
that T1 says are positive (a difference of two arms, paired by seed and by the held-out
problems). A claim reproduces when, for every listed quantity, the mean over seeds is > 0 AND
every seed's value is > 0. With 3 seeds that is a consistency rule, not a significance test (a
one-sided sign test gives p = 0.125); the 95% t-interval of the mean over seeds is shown beside it.
"Accuracy" is held-out pass@1 at the eval section's temperature at the rollout limit (the
largest budget).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from core.config import ReproduceJob
from core.store import Run, StoreError

RULE = ("reproduced when every listed quantity has mean over seeds > 0 and is > 0 in every seed; "
        "interval: 95% t-interval of the mean over seeds")
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def rl_figures(run: Run) -> dict[str, float]:
    """Held-out accuracy at the start (the SFT policy) and the end of an RL run, and the mean
    truncated fraction of rollouts over the second half of its steps (where training shows)."""
    ms = run.metrics()
    evals = sorted((m for m in ms if "eval/acc" in m), key=lambda m: m["step"])
    steps = [m for m in ms if "rollout/truncated_frac" in m]
    late = steps[len(steps) // 2:] or steps
    if not evals or not late:
        raise StoreError(f"{run.path}: no held-out evaluation or RL step in metrics.jsonl")
    return {"acc_start": evals[0]["eval/acc"], "acc_final": evals[-1]["eval/acc"],
            "truncated_frac": statistics.fmean(m["rollout/truncated_frac"] for m in late)}


def curve_slope(curve: dict) -> float:
    """Least-squares slope of accuracy against log2(budget): accuracy gained per doubling."""
    pts = curve.get("points") or []
    xs = [math.log2(p["budget_tokens"]) for p in pts]
    ys = [p["accuracy"] for p in pts]
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def budget_figures(run: Run) -> list[dict]:
    """Per swept checkpoint, in training order: step, label, slope, accuracy at the largest budget."""
    curves = sorted(run.curves().values(), key=lambda c: c.get("step") or 0)
    return [{"step": c.get("step") or 0, "checkpoint": c.get("checkpoint"), "slope": curve_slope(c),
             "acc_at_max": (c.get("points") or [{}])[-1].get("accuracy")} for c in curves]


def summarize(values: list[float]) -> dict[str, Any]:
    """Mean over seeds, its 95% t-interval (None with one seed) and the verdict of the rule."""
    mean = statistics.fmean(values)
    ci = None
    if len(values) > 1:
        half = _T95.get(len(values) - 1, 2.0) * statistics.stdev(values) / math.sqrt(len(values))
        ci = [mean - half, mean + half]
    return {"values": values, "mean": mean, "ci": ci, "passed": mean > 0 and all(v > 0 for v in values)}


def claim(cid: int, text: str, parts: dict[str, list[float]], context: dict[str, float], unit: str) -> dict:
    """A claim from its quantities (name -> per-seed values); reproduced iff every part passes."""
    ps = [{"quantity": name, **summarize(vals)} for name, vals in parts.items()]
    return {"id": cid, "claim": text, "rule": RULE, "unit": unit, "parts": ps, "context": context,
            "reproduced": all(p["passed"] for p in ps), "figure": "; ".join(_fmt(p, unit) for p in ps)}


def _fmt(part: dict, unit: str) -> str:
    scale, suffix = 100, {"accuracy": " pts", "slope": " pts/doubling", "fraction": " pts of rollouts"}[unit]
    ci = part["ci"]
    interval = f" [{ci[0] * scale:+.1f}, {ci[1] * scale:+.1f}]" if ci else ""
    seeds = ", ".join(f"{v * scale:+.1f}" for v in part["values"])
    return f"{part['quantity']}: {part['mean'] * scale:+.1f}{suffix}{interval} (seeds {seeds})"


def rl_beats_sft(base: list[dict]) -> dict:
    """Claim 1 from the T1 RL run's figures, one dict per seed (`rl_figures`)."""
    return claim(1, "RL beats SFT (held-out accuracy at the largest budget)",
                 {"RL final - SFT": [x["acc_final"] - x["acc_start"] for x in base]},
                 {"SFT acc": statistics.fmean(x["acc_start"] for x in base),
                  "RL acc": statistics.fmean(x["acc_final"] for x in base)}, "accuracy")


def steeper_curves(budget: list[list[dict]]) -> dict:
    """Claim 2 from the budget sweep of the T1 RL run, one list of checkpoints per seed
    (`budget_figures`: the SFT model first, the last RL checkpoint last)."""
    slopes = [[c["slope"] for c in seed] for seed in budget]
    by_ckpt = {c["checkpoint"]: statistics.fmean(s[i] for s in slopes) for i, c in enumerate(budget[0])}
    return claim(2, "Accuracy rises with budget; later RL checkpoints have steeper curves",
                 {"slope of the last RL checkpoint": [s[-1] for s in slopes],
                  "slope last RL checkpoint - slope SFT": [s[-1] - s[0] for s in slopes]},
                 {f"slope {name}": v for name, v in by_ckpt.items()}, "slope")


def claims(job: ReproduceJob, rl: dict[str, list[dict]], budget: list[list[dict]]) -> list[dict]:
    """The six comparisons from per-variant, per-seed figures (rl[variant][seed index])."""
    k = job.reproduce

    def diff(a: str, b: str, key: str, key_b: str | None = None) -> list[float]:
        return [x[key] - y[key_b or key] for x, y in zip(rl[a], rl[b])]

    def mean(variant: str, key: str) -> float:
        return statistics.fmean(x[key] for x in rl[variant])

    kl, ks = f"k{k.k_large}", f"k{k.k_small}"
    return [
        rl_beats_sft(rl["base"]),
        steeper_curves(budget),
        claim(3, "T1 traces beat plain CoT SFT data (largest budget; after SFT and after RL)",
              {"T1 - plain, SFT": diff("base", "plain", "acc_start"),
               "T1 - plain, after RL": diff("base", "plain", "acc_final")},
              {"T1 SFT": mean("base", "acc_start"), "plain SFT": mean("plain", "acc_start"),
               "T1 RL": mean("base", "acc_final"), "plain RL": mean("plain", "acc_final")}, "accuracy"),
        claim(4, f"Oversampling: K={k.k_large} beats K={k.k_small} at the same prompts per step",
              {f"K={k.k_large} - K={k.k_small}": diff(kl, ks, "acc_final")},
              {f"K={k.k_large} acc": mean(kl, "acc_final"), f"K={k.k_small} acc": mean(ks, "acc_final")},
              "accuracy"),
        claim(5, "Penalties curb truncated / over-long rollouts during RL",
              {"truncated fraction, penalties off - on": diff("nopenalty", "base", "truncated_frac")},
              {"truncated on": mean("base", "truncated_frac"), "truncated off": mean("nopenalty", "truncated_frac"),
               "acc on": mean("base", "acc_final"), "acc off": mean("nopenalty", "acc_final")}, "fraction"),
        claim(6, "A dynamic (EMA) anchor beats a frozen reference at the same beta",
              {"EMA - frozen": diff("base", "frozen", "acc_final")},
              {"EMA acc": mean("base", "acc_final"), "frozen acc": mean("frozen", "acc_final")}, "accuracy"),
    ]
