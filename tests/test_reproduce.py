"""`lab reproduce`: the verdict rule, the plan, resuming, and the report from run folders."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, ReproduceJob
from core.experiments.reproduce.claims import curve_slope, summarize
from core.experiments.reproduce.ledger import Ledger, build_report, finished_seeds
from core.experiments.reproduce.plan import plan
from core.overrides import build, load_preset
from core.report.reproduce import write_report
from core.store import new_run
from tests.conftest import ROOT

PRESETS = ROOT / "lab" / "presets"


def test_rule_needs_every_seed_positive_not_just_the_mean() -> None:
    assert summarize([0.1, 0.2, 0.3])["passed"]
    assert not summarize([0.3, 0.3, -0.01])["passed"]  # mean > 0, one seed against: not reproduced
    assert not summarize([0.0, 0.0, 0.0])["passed"]
    s = summarize([0.1, 0.2, 0.3])  # sd 0.1, t(2) = 4.303: half width 4.303 * 0.1 / sqrt(3)
    assert s["mean"] == pytest.approx(0.2)
    assert s["ci"] == pytest.approx([0.2 - 0.248434, 0.2 + 0.248434], abs=1e-5)
    assert summarize([0.4])["ci"] is None and summarize([0.4])["passed"]


def test_slope_is_accuracy_per_doubling_of_budget() -> None:
    pts = [{"budget_tokens": b, "accuracy": a} for b, a in [(16, 0.1), (32, 0.2), (64, 0.3)]]
    assert curve_slope({"points": pts}) == pytest.approx(0.1)
    flat = [{"budget_tokens": b, "accuracy": 0.5} for b in (16, 48, 128)]
    assert curve_slope({"points": flat}) == pytest.approx(0.0)


def _job(**over: str) -> ReproduceJob:
    return build(ReproduceJob, load_preset(PRESETS / "reproduce.yaml"), over)


def test_plan_covers_every_claim_and_shares_equal_runs() -> None:
    p = plan(_job())
    keys = [s.key for s in p.subs]
    assert len(keys) == 2 + 3 * 9 and not p.alias
    for i, sub in enumerate(p.subs):  # a sub-run's inputs come earlier in the plan
        assert all(dep in keys[:i] for dep in sub.needs.values()), sub.key
    assert p.subs[keys.index("rl-k16-1")].job.rl.num_generations == 16
    assert p.subs[keys.index("rl-frozen-2")].job.rl.anchor == "frozen"
    assert p.subs[keys.index("rl-plain-0")].needs == {"rl.init": "sft-plain-0"}
    assert p.subs[keys.index("sft-t1-2")].job.sft.seed == 2
    shared = plan(_job(**{"rl.num_generations": "16"}))  # the base run already is K=16
    assert shared.key("rl-k16-0") == "rl-base-0" and len(shared.subs) == 2 + 3 * 8


def test_plan_names_the_key_that_breaks_a_variant() -> None:
    with pytest.raises(ConfigError, match="micro_batch_size"):
        plan(_job(**{"reproduce.k_small": "2", "rl.micro_batch_size": "48"}))  # 12 x 2 = 24 < 48


def _rl_metrics(acc_start: float, acc_final: float, trunc: float) -> list[dict]:
    rows = [{"step": 0, "eval/acc": acc_start}]
    rows += [{"step": s, "reward/mean": 0.1 * s, "rollout/truncated_frac": 0.9 if s <= 2 else trunc,
              "rollout/len_mean": 50.0} for s in range(1, 5)]
    return rows + [{"step": 4, "eval/acc": acc_final}]


def _curve(step: int, slope: float) -> dict:
    pts = [{"checkpoint": f"c{step}", "budget_tokens": 2 ** k, "accuracy": 0.3 + slope * k, "ci_low": 0.0,
            "ci_high": 1.0, "truncated_frac": 0.5, "mean_tokens_used": 10.0, "n": 100} for k in (4, 5, 6)]
    return {"name": f"step_{step:05d}", "checkpoint": f"c{step}", "step": step, "points": pts}


FIGURES = {  # variant -> (acc_start, acc_final, truncated fraction late in training), per seed via `d`
    "base": (0.50, 0.60, 0.10), "plain": (0.20, 0.30, 0.10), "k4": (0.50, 0.55, 0.10),
    "k16": (0.50, 0.65, 0.10), "nopenalty": (0.50, 0.58, 0.40), "frozen": (0.50, 0.62, 0.10),
}


@pytest.fixture()
def finished(tmp_path: Path):
    """A reproduce run whose sub-run folders are all complete, written with the store."""
    job = _job()
    rep = new_run(tmp_path, "reproduce", {})
    ledger, p = Ledger(rep), plan(job)
    for sub in p.subs:
        run, _ = ledger.open(sub, sub.job)
        seed = 0 if sub.stage == "synth" else int(sub.key.rsplit("-", 1)[1])
        d = 0.01 * seed
        if sub.stage == "rl":
            a, b, t = FIGURES[sub.key.split("-")[1]]
            for row in _rl_metrics(a + d, b + d, t):
                run.log_metrics(row)
        if sub.stage == "budget":
            for step, slope in [(0, 0.0), (9, 0.05), (18, 0.08), (30, 0.1 + d)]:
                run.write_curve(f"step_{step:05d}", _curve(step, slope))
        run.write_summary({})
    return job, rep, p


def test_report_from_run_folders(finished) -> None:
    job, rep, p = finished
    report = build_report(job, p, Ledger(rep))
    write_report(rep, report)
    data = json.loads(rep.artifact_path("report.json").read_text())
    assert [c["id"] for c in data["claims"]] == [1, 2, 3, 4, 5, 6]
    verdicts = {c["id"]: c["reproduced"] for c in data["claims"]}
    assert verdicts == {1: True, 2: True, 3: True, 4: True, 5: True, 6: False}  # frozen beat EMA here
    c1, c5 = data["claims"][0], data["claims"][4]
    assert c1["parts"][0]["values"] == pytest.approx([0.1, 0.1, 0.1])
    assert c5["parts"][0]["mean"] == pytest.approx(0.3)  # second half of the steps only
    assert data["claims"][1]["parts"][1]["values"] == pytest.approx([0.1, 0.11, 0.12])
    assert all(c["rule"] for c in data["claims"]) and len(data["subruns"]) == len(p.subs)
    page = rep.artifact_path("report.html").read_text()
    body = page[page.rfind("<body>"):]  # the table is in the page, not inside the inlined script
    assert "<table" in body and body.count("<tr>") == 7 and '"$schema"' in page


def test_report_refuses_an_unfinished_sub_run_but_covers_finished_seeds(finished) -> None:
    job, rep, p = finished
    ledger = Ledger(rep)
    ledger.run("rl-frozen-1").summary_path.unlink()
    with pytest.raises(ValueError, match="rl-frozen-1 has not finished"):
        build_report(job, p, ledger)
    assert finished_seeds(job, p, ledger) == [0, 2]  # meanwhile a report covers the finished seeds
    partial = build_report(job, p, ledger, [0, 2])
    assert partial["partial"] and partial["claims"][0]["parts"][0]["values"] == pytest.approx([0.1, 0.1])


def test_resume_skips_finished_continues_rl_restarts_the_rest(tmp_path: Path) -> None:
    p = plan(_job())
    subs = {s.key: s for s in p.subs}
    rep = new_run(tmp_path, "reproduce", {})
    ledger = Ledger(rep)
    done, _ = ledger.open(subs["sft-t1-0"], subs["sft-t1-0"].job)
    done.write_summary({})
    ledger.open(subs["sft-plain-0"], subs["sft-plain-0"].job)  # crashed before the end
    rl, _ = ledger.open(subs["rl-base-0"], subs["rl-base-0"].job)
    ckpt = rl.checkpoint_dir(3)
    ckpt.mkdir(parents=True)
    rl.mark_checkpoint_complete(ckpt)

    again = Ledger(rep)  # a rerun reads the ledger from disk
    assert again.done("sft-t1-0") and not again.done("sft-plain-0")
    fresh, resumed = again.open(subs["sft-plain-0"], subs["sft-plain-0"].job)
    assert not resumed and fresh.id == "sft-plain-0.2"
    cont, resumed = again.open(subs["rl-base-0"], subs["rl-base-0"].job)
    assert resumed and cont.path == rl.path
    assert Ledger(rep).run("sft-plain-0").id == "sft-plain-0.2"


@pytest.mark.slow
def test_reproduce_smoke_end_to_end_and_resume(tmp_path: Path) -> None:
    def lab(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "lab", "reproduce", "-q", "--runs-dir", str(tmp_path), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    out = lab("--preset", "reproduce_smoke")
    run = Path(out["run_dir"])
    data = json.loads((run / "report.json").read_text())
    assert len(data["claims"]) == 6 and (run / "report.html").stat().st_size > 10_000
    assert set(out["reproduced"]) == {"1", "2", "3", "4", "5", "6"}
    assert all(math.isfinite(p["mean"]) for c in data["claims"] for p in c["parts"])
    again = lab("--resume", str(run))  # everything finished: only the report is rebuilt
    assert again["time_s"] < out["time_s"] / 3 and again["reproduced"] == out["reproduced"]
