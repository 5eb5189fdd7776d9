"""Which run folder holds each sub-run of a reproduce run, and running one sub-run there."""

from __future__ import annotations

from typing import Any

from core.config import ReproduceJob
from core.experiments.reproduce.claims import MIN_EFFECT, RULE, claims
from core.experiments.reproduce.plan import Plan, SubRun, rl_variants
from core.overrides import apply_overrides, to_dict
from core.store import Run, StoreError, atomic_write_json, new_run, read_json


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


def prepare(sub: SubRun, ledger: Ledger) -> tuple[Any, Run, bool]:
    """(config with its inputs' folders filled in, run folder, resumed?) of a sub-run whose
    inputs have finished: what running it (as its `python -m lab` command would) needs."""
    cfg = apply_overrides(sub.job, {k: str(ledger.run(dep).path) for k, dep in sub.needs.items()})  # type: ignore[union-attr]
    run, resumed = ledger.open(sub, cfg)
    return cfg, run, resumed


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
    rl = {v: [folder(f"rl-{v}-{s}") for s in seeds] for v in names}
    budget = [folder(f"budget-{s}") for s in seeds]
    curves = [b.curves() for b in budget]
    training = {v: [r.metrics() for r in runs] for v, runs in rl.items()}
    return {"claims": claims(job, rl, budget), "rule": RULE, "min_effect": MIN_EFFECT, "seeds": list(seeds),
            "partial": list(seeds) != list(job.reproduce.seeds),
            "subruns": {k: str(ledger.runs_dir / rid) for k, rid in ledger.ids.items()},
            "aliases": p.alias, "_curves": curves, "_training": training}
