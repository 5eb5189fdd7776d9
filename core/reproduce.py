"""`python -m lab reproduce`: T1's claims on the embedded task, several seeds each, one command.

The plan, as sub-runs under <reproduce run>/runs/<key> (a seed s sets sft.seed and rl.seed):

    synth-t1, synth-plain          traces, shared by every seed (synth.style=plain mirrors
                                   lab/presets/plain_cot.yaml)
    per seed s:
      sft-t1-s, sft-plain-s        SFT on each kind of trace
      rl-base-s                    T1 RL from sft-t1-s: claims 1, 2, 3 (T1 side), 5 (on), 6 (EMA)
      rl-plain-s                   the same RL from sft-plain-s: claim 3 (plain side)
      rl-k<small>-s, rl-k<large>-s K of reproduce.k_small / k_large at the same prompts: claim 4
      rl-nopenalty-s               the three -1 penalties off: claim 5
      rl-frozen-s                  anchor=frozen at the same beta: claim 6
      budget-s                     budget curves of rl-base-s at budget.checkpoints: claim 2
A variant equal to another sub-run (e.g. rl.num_generations == k_large) reuses it.

Time split at lab/presets/reproduce.yaml (3 seeds, 29 sub-runs; uncontended 2-core estimates
from `estimate_s`, which the progress ETA also uses): synth 2 x ~15 s; SFT at the lab's default
size (1700 steps; shorter SFT did not learn the task) 3 x ~4.7 min T1 + 3 x ~1.3 min plain =
~18 min; RL 15 runs of 30 steps x 12 prompts = ~22 min (per seed: 4 runs at K=8 ~67 s each, K=4
~40 s, K=16 ~2 min); budget sweeps 3 x 4 checkpoints x 300 problems = ~4 min; total ~44 min,
leaving some headroom under 60 min. Measured: 51m24s for the whole plan with one core of the
2-core machine busy with other work much of the time (seeds 17m15s, 16m44s, 17m17s; each SFT
T1 run 6.4-6.9 min, the largest item). The preset sets
model.threads=1: with other jobs on the cores, two torch threads per process wait on each other
(SFT measured 7.7 s/step with 2 threads against 0.57 s/step with 1 at load ~10).

Verdict rule (fixed before any result, the same for every claim): each claim lists quantities
that T1 says are positive (a difference of two arms, paired by seed and by the held-out
problems). A claim reproduces when, for every listed quantity, the mean over seeds is > 0 AND
every seed's value is > 0. With 3 seeds that is a consistency rule, not a significance test (a
one-sided sign test gives p = 0.125); the 95% t-interval of the mean over seeds is shown beside it.
"Accuracy" is held-out pass@1 at temperature 1.0 at the rollout limit (the largest budget).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from core.config import (
    BudgetJob,
    ConfigError,
    ReproduceJob,
    RLJob,
    SFTJob,
    SynthJob,
    apply_overrides,
    to_dict,
    validate,
)
from core.store import Run, StoreError, atomic_write_json, new_run, read_json
from core.tasks.base import TaskError

Say = Callable[[str], None]
RULE = ("reproduced when every listed quantity has mean over seeds > 0 and is > 0 in every seed; "
        "interval: 95% t-interval of the mean over seeds")
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


# ----------------------------------------------------------------------------- the plan


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
    """Uncontended seconds on 2 CPU cores for the embedded model (measured: SFT 0.16 s/step at
    batch 32, RL 2.5 s/step at 16 prompts x K=8, 500-problem evaluation ~3 s)."""
    if stage == "synth":
        return 2 + 3e-4 * job.synth.num_problems
    if stage == "sft":
        per_step = 0.16 if job.synth.style == "t1" else 0.04  # plain traces are ~4x shorter
        return 6 + per_step * job.sft.max_steps * job.sft.batch_size / 32 + 0.006 * job.eval.num_problems
    if stage == "rl":
        r = job.rl
        evals = 2 + ((r.steps - 1) // r.eval_every if r.eval_every else 0)
        return 5 + r.steps * 2.5 * r.prompts_per_step * r.num_generations / 128 + evals * 0.006 * r.eval_problems
    b = job.budget
    ckpts = 4 if b.checkpoints == "all" else len(b.checkpoints.split(","))
    return ckpts * (3 + 0.05 * b.num_problems * b.num_samples)


def rl_variants(job: ReproduceJob) -> dict[str, dict[str, Any]]:
    """RL variant name -> overrides of the base T1 recipe."""
    k = job.reproduce
    return {"base": {}, f"k{k.k_small}": {"rl.num_generations": k.k_small},
            f"k{k.k_large}": {"rl.num_generations": k.k_large},
            "nopenalty": {"rl.penalize_overlong": False, "rl.penalize_repetition": False,
                          "rl.penalize_garbled": False},
            "frozen": {"rl.anchor": "frozen"}}


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


# ----------------------------------------------------------------------------- running it


class Ledger:
    """Which run folder holds each sub-run: subruns.json in the reproduce run (rewritten as
    sub-runs start), so --resume finds them again."""

    def __init__(self, run: Run) -> None:
        self.file = run.artifact_path("subruns.json")
        self.runs_dir = run.artifact_path("runs")
        self.ids: dict[str, str] = read_json(self.file, default={}) or {}

    def run(self, key: str) -> Run | None:
        rid = self.ids.get(key)
        return Run(self.runs_dir / rid) if rid and (self.runs_dir / rid).is_dir() else None

    def done(self, key: str) -> bool:
        r = self.run(key)
        return r is not None and r.status() == "complete"

    def open(self, sub: SubRun, cfg: Any) -> tuple[Run, bool]:
        """(run folder, resumed?): an unfinished synth run or an RL run with a checkpoint
        continues; anything else starts afresh in a new folder (the old one stays, crashed)."""
        old = self.run(sub.key)
        if old is not None and (sub.stage == "synth" or (sub.stage == "rl" and old.latest_checkpoint())):
            old.write_config(sub.stage, to_dict(cfg))
            return old, True
        rid, n = sub.key, 1
        while (self.runs_dir / rid).exists():
            n += 1
            rid = f"{sub.key}.{n}"
        run = new_run(self.runs_dir, sub.stage, to_dict(cfg), run_id=rid)
        self.ids[sub.key] = rid
        atomic_write_json(self.file, self.ids)
        return run, False


def execute(sub: SubRun, ledger: Ledger, say: Say, progress: bool) -> dict:
    """Run one sub-run in this process (as its `python -m lab` command would) and mark it complete."""
    from core.commands import story

    cfg = apply_overrides(sub.job, {k: str(ledger.run(dep).path) for k, dep in sub.needs.items()})  # type: ignore[union-attr]
    run, resumed = ledger.open(sub, cfg)
    runs_dir = ledger.runs_dir
    out = story(sub.stage, cfg, run, say, progress, runs_dir, resumed)
    run.write_summary(out)
    return out


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def run_reproduce(job: ReproduceJob, run: Run, say: Say, progress: bool = True) -> dict:
    """Run (or, on a rerun of the same folder, finish) every sub-run, then write the report."""
    if job.task.name != "pairsum":
        raise TaskError("lab reproduce runs on the embedded task (task.name=pairsum)")
    p, ledger = plan(job), Ledger(run)
    todo = [s for s in p.subs if not ledger.done(s.key)]
    if len(todo) < len(p.subs):
        say(f"{len(p.subs) - len(todo)} of {len(p.subs)} sub-runs already finished: skipped")
    t0, est_left = time.time(), sum(s.cost_s for s in todo)
    say(f"reproduce: {len(todo)} sub-runs to go, estimated {_clock(est_left)} on an idle 2-core machine")
    est_done = 0.0
    for i, sub in enumerate(todo, 1):
        rate = (time.time() - t0) / est_done if est_done > 60 else 1.0  # too little done to extrapolate
        say(f"[{i}/{len(todo)}] start {sub.key} ({sub.stage}), elapsed {_clock(time.time() - t0)}, "
            f"ETA {_clock(rate * est_left)}")
        out = execute(sub, ledger, (lambda m, k=sub.key: say(f"  {k}: {m}")) if progress else (lambda m: None),
                      progress)
        est_done, est_left = est_done + sub.cost_s, est_left - sub.cost_s
        rate = (time.time() - t0) / est_done if est_done > 60 else 1.0
        acc = f", held-out accuracy {out['eval/acc']:.1%}" if isinstance(out.get("eval/acc"), float) else ""
        say(f"[{i}/{len(todo)}] done {sub.key}{acc}, elapsed {_clock(time.time() - t0)}, "
            f"ETA {_clock(rate * est_left)}")
        seeds = finished_seeds(job, p, ledger)
        if i < len(todo) and sub.seed in seeds:  # a seed just completed: a partial report meanwhile
            write_report(run, build_report(job, p, ledger, seeds))
            say(f"partial report over seeds {seeds}: {run.artifact_path('report.html')}")
    report = build_report(job, p, ledger)
    write_report(run, report)
    say(f"report: {run.artifact_path('report.html')}")
    for c in report["claims"]:
        say(f"claim {c['id']} {c['claim']}: {'reproduced' if c['reproduced'] else 'NOT reproduced'} ({c['figure']})")
    return {"reproduced": {str(c["id"]): c["reproduced"] for c in report["claims"]},
            "report": str(run.artifact_path("report.html")), "time_s": time.time() - t0}


# ----------------------------------------------------------------------------- figures and verdicts


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


def claims(job: ReproduceJob, rl: dict[str, list[dict]], budget: list[list[dict]]) -> list[dict]:
    """The six comparisons from per-variant, per-seed figures (rl[variant][seed index])."""
    k = job.reproduce

    def diff(a: str, b: str, key: str, key_b: str | None = None) -> list[float]:
        return [x[key] - y[key_b or key] for x, y in zip(rl[a], rl[b])]

    def mean(variant: str, key: str) -> float:
        return statistics.fmean(x[key] for x in rl[variant])

    slopes = [[c["slope"] for c in seed] for seed in budget]
    by_ckpt = {c["checkpoint"]: statistics.fmean(s[i] for s in slopes) for i, c in enumerate(budget[0])}
    kl, ks = f"k{k.k_large}", f"k{k.k_small}"
    return [
        claim(1, "RL beats SFT (held-out accuracy at the largest budget)",
              {"RL final - SFT": diff("base", "base", "acc_final", "acc_start")},
              {"SFT acc": mean("base", "acc_start"), "RL acc": mean("base", "acc_final")}, "accuracy"),
        claim(2, "Accuracy rises with budget; later RL checkpoints have steeper curves",
              {"slope of the last RL checkpoint": [s[-1] for s in slopes],
               "slope last RL checkpoint - slope SFT": [s[-1] - s[0] for s in slopes]},
              {f"slope {name}": v for name, v in by_ckpt.items()}, "slope"),
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


def finished_seeds(job: ReproduceJob, p: Plan, ledger: Ledger) -> list[int]:
    """Seeds whose sub-runs (and the shared ones) have all finished."""
    return [s for s in job.reproduce.seeds
            if all(ledger.done(x.key) for x in p.subs if x.seed in (s, None))]


def build_report(job: ReproduceJob, p: Plan, ledger: Ledger, seeds: list[int] | None = None) -> dict:
    """Figures of the finished sub-runs of `seeds` (default: all) -> the claims, with the
    sub-run folders they came from."""
    def folder(key: str) -> Run:
        r = ledger.run(p.key(key))
        if r is None or r.status() != "complete":
            raise StoreError(f"sub-run {key} has not finished: rerun with --resume")
        return r

    seeds = job.reproduce.seeds if seeds is None else seeds
    names = [*rl_variants(job), "plain"]
    rl = {v: [rl_figures(folder(f"rl-{v}-{s}")) for s in seeds] for v in names}
    budget = [budget_figures(folder(f"budget-{s}")) for s in seeds]
    curves = [folder(f"budget-{s}").curves() for s in seeds]
    training = {v: [folder(f"rl-{v}-{s}").metrics() for s in seeds] for v in names}
    return {"claims": claims(job, rl, budget), "rule": RULE, "seeds": list(seeds),
            "partial": list(seeds) != list(job.reproduce.seeds), "rl": rl, "budget": budget,
            "subruns": {k: str(ledger.runs_dir / rid) for k, rid in ledger.ids.items()},
            "aliases": p.alias, "_curves": curves, "_training": training}


# ----------------------------------------------------------------------------- the report


def write_report(run: Run, report: dict) -> None:
    """report.json (every figure) and report.html (the table, then the charts) in the run folder."""
    import altair as alt

    from core.charts import budget_chart

    atomic_write_json(run.artifact_path("report.json"), {k: v for k, v in report.items() if not k.startswith("_")})
    charts = [c for c in (_claims_chart(report["claims"]), budget_chart(_mean_curves(report["_curves"]),
              "Accuracy against budget (mean over seeds; band: range over seeds)"),
              _training_chart(report["_training"])) if c is not None]
    chart = alt.vconcat(*charts).resolve_scale(color="independent") if charts else None
    run.artifact_path("report.html").write_text(_page("T1 Lab: reproducing T1's claims", _table(report), chart))


def _page(title: str, body_html: str, chart: Any) -> str:
    """A self-contained page: heading and table, then the chart (vega inlined, no network).
    The table goes after the LAST <body>: the inlined vega script itself contains "<body>"."""
    import html

    page = chart.to_html(inline=True) if chart is not None else "<html><head></head><body></body></html>"
    style = "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 12px;border-bottom:1px solid #ddd}</style>"
    head = f"<title>{html.escape(title)}</title><meta charset='utf-8'>{style}"
    cut = page.rfind("<body>") + len("<body>")
    return (page[:cut].replace("<head>", "<head>" + head, 1) + f"\n<h1>{html.escape(title)}</h1>\n{body_html}\n"
            + page[cut:])


def _table(report: dict) -> str:
    import html

    rows = []
    for c in report["claims"]:
        fmt = "{:+.1f} pts/doubling" if c["unit"] == "slope" else "{:.1f}%"
        ctx = ", ".join(f"{k} {fmt.format(100 * v)}" for k, v in c["context"].items())
        verdict = "<b style='color:#1a7f37'>yes</b>" if c["reproduced"] else "<b style='color:#cf222e'>no</b>"
        rows.append(f"<tr><td>{c['id']}. {html.escape(c['claim'])}</td><td>{html.escape(c['figure'])}"
                    f"<br><small>{html.escape(ctx)}</small></td><td>{verdict}</td></tr>")
    seeds = ", ".join(map(str, report["seeds"])) + (" (partial: the other seeds are still running)"
                                                    if report.get("partial") else "")
    return (f"<p>Embedded task, seeds {seeds}. Verdict rule, fixed before the runs: {html.escape(RULE)}. "
            "Accuracies are held-out pass@1 (temperature 1.0) at the rollout limit.</p>\n"
            "<table><tr><th>claim</th><th>our figure (mean, 95% interval, per seed)</th><th>reproduced</th></tr>"
            + "".join(rows) + "</table>")


def _claims_chart(cl: list[dict]) -> Any:
    """Each quantity's per-seed values (dots) and mean (tick) against zero."""
    import altair as alt

    rows = [{"quantity": f"{c['id']}. {p['quantity']}", "value": v, "kind": f"seed {i}"}
            for c in cl for p in c["parts"] for i, v in enumerate(p["values"])]
    rows += [{"quantity": f"{c['id']}. {p['quantity']}", "value": p["mean"], "kind": "mean"}
             for c in cl for p in c["parts"]]
    base = alt.Chart(alt.Data(values=rows))
    y = alt.Y("quantity:N", title=None, sort=None)
    dots = base.transform_filter("datum.kind != 'mean'").mark_circle(size=60, opacity=0.6).encode(
        x=alt.X("value:Q", title="difference (positive = as T1 claims)"), y=y, tooltip=["kind:N", "value:Q"])
    mean = base.transform_filter("datum.kind == 'mean'").mark_tick(thickness=3, size=18, color="black").encode(
        x="value:Q", y=y)
    zero = base.mark_rule(color="gray", strokeDash=[3, 3]).encode(x=alt.datum(0))
    return (zero + dots + mean).properties(title="Per-seed differences (dots) and their mean (tick)", width=520)


def _mean_curves(per_seed: list[dict[str, dict]]) -> list[dict]:
    """Curves averaged over seeds, matched by position in training order; ci = range over seeds."""
    ordered = [sorted(c.values(), key=lambda x: x.get("step") or 0) for c in per_seed]
    out = []
    for i, first in enumerate(ordered[0]):
        same = [o[i] for o in ordered if len(o) > i]
        points = []
        for j, p in enumerate(first.get("points") or []):
            accs = [c["points"][j]["accuracy"] for c in same if len(c.get("points") or []) > j]
            trunc = [c["points"][j]["truncated_frac"] for c in same if len(c.get("points") or []) > j]
            points.append({**p, "accuracy": statistics.fmean(accs), "ci_low": min(accs), "ci_high": max(accs),
                           "truncated_frac": statistics.fmean(trunc)})
        out.append({"checkpoint": first.get("checkpoint"), "step": first.get("step"), "points": points})
    return out


def _training_chart(training: dict[str, list[list[dict]]]) -> Any:
    """Mean over seeds, per RL step and variant: reward, truncated fraction, response length."""
    import altair as alt

    keys = ("reward/mean", "rollout/truncated_frac", "rollout/len_mean")
    rows = []
    for variant, seeds in training.items():
        steps: dict[int, list[dict]] = {}
        for metrics in seeds:
            for m in metrics:
                if "reward/mean" in m:
                    steps.setdefault(m["step"], []).append(m)
        for step, ms in sorted(steps.items()):
            rows += [{"variant": variant, "step": step, "metric": k, "value": statistics.fmean(x[k] for x in ms)}
                     for k in keys if all(k in x for x in ms)]
    if not rows:
        return None
    return alt.Chart(alt.Data(values=rows)).mark_line().encode(
        x="step:Q", y=alt.Y("value:Q", title=None), color="variant:N",
        tooltip=["variant:N", "step:Q", "value:Q"],
    ).properties(width=260, height=180).facet(column=alt.Column("metric:N", title=None)).resolve_scale(
        y="independent").properties(title="RL training, mean over seeds")
