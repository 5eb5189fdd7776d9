"""`lab reproduce`: the verdict rule, the plan, resuming, and the report from run folders."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.config import ConfigError, ReproduceJob
from core.experiments.reproduce.ledger import Ledger, build_report, finished_seeds
from core.experiments.reproduce.paired import curve_slopes, paired_test, per_problem
from core.experiments.reproduce.plan import plan
from core.overrides import build, load_preset
from core.report.reproduce import write_report
from core.store import StoreError, new_run
from tests.conftest import ROOT

PRESETS = ROOT / "lab" / "presets"


def test_paired_test_verdicts_and_the_minimum_effect() -> None:
    rng = np.random.default_rng(0)
    big = rng.normal(0.1, 0.3, size=(3, 400))  # +0.1 per problem, well measured
    t = paired_test(big, min_effect=0.02)
    assert t["verdict"] == "reproduced" and t["ci"][0] > 0 and t["estimate"] == pytest.approx(big.mean())
    assert len(t["seeds"]) == 3 and all(s["p"] < 0.01 for s in t["seeds"])
    small = rng.normal(0.01, 0.05, size=(3, 400))  # clearly above zero, below the effect that matters
    s = paired_test(small, min_effect=0.02)
    assert s["ci"][0] > 0 and s["verdict"] == "not reproduced" and "minimum effect" in s["why"]
    assert paired_test(-big, min_effect=0.02)["verdict"] == "contradicted"
    noise = rng.normal(0.0, 0.5, size=(3, 400))
    assert paired_test(noise, min_effect=0.02)["verdict"] == "not reproduced"


def test_paired_test_rarely_passes_without_an_effect() -> None:
    """Two arms with the same accuracy (60%), 3 seeds x 300 problems: the old rule (every seed's
    mean > 0) passed 1 time in 8; the paired test with its interval must pass about 1 in 40 at
    most (one side of a 95% interval), before the minimum effect removes more."""
    rng = np.random.default_rng(1)
    sims, passed, sign_rule = 120, 0, 0
    for i in range(sims):
        a = (rng.random((3, 300)) < 0.6).astype(float)
        b = (rng.random((3, 300)) < 0.6).astype(float)
        t = paired_test(a - b, min_effect=0.0, seed=i)
        passed += t["ci"][0] > 0
        sign_rule += all(v > 0 for v in t["values"])
    assert passed / sims <= 0.06
    assert sign_rule / sims > 2 * passed / sims  # the rule it replaces: about 0.125


def test_curve_slopes_per_problem_average_to_the_mean_curve_slope() -> None:
    rows = [{"problem_id": f"p{i}", "budget": b, "correct": c}
            for i, accs in enumerate([(0, 0, 1), (0, 1, 1), (1, 1, 1)]) for b, c in zip((16, 32, 64), accs)]
    slopes = curve_slopes(rows)
    assert slopes["p2"] == pytest.approx(0.0) and slopes["p0"] == pytest.approx(0.5)
    mean_curve = [1 / 3, 2 / 3, 1.0]  # over budgets 16, 32, 64: 1/3 per doubling
    assert sum(slopes.values()) / 3 == pytest.approx((mean_curve[2] - mean_curve[0]) / 2)
    assert per_problem([{"problem_id": "a", "correct": True}, {"problem_id": "a", "correct": False}],
                       "correct") == {"a": 0.5}


def _job(**over: str) -> ReproduceJob:
    return build(ReproduceJob, load_preset(PRESETS / "reproduce.yaml"), over)


def test_plan_covers_every_claim_and_shares_equal_runs() -> None:
    p = plan(_job())
    keys = [s.key for s in p.subs]
    assert len(keys) == 2 + 3 * 11 and not p.alias
    for i, sub in enumerate(p.subs):  # a sub-run's inputs come earlier in the plan
        assert all(dep in keys[:i] for dep in sub.needs.values()), sub.key
    job = lambda key: p.subs[keys.index(key)].job.rl  # noqa: E731
    assert job("rl-k16-1").num_generations == 16 and job("rl-k16-1").prompts_per_step == 12
    assert (job("rl-k16-matched-1").num_generations, job("rl-k16-matched-1").prompts_per_step) == (16, 3)
    assert (job("rl-frozen-2").anchor, job("rl-frozen-2").beta, job("rl-frozen-2").steps) == ("frozen", 0.2, 90)
    assert job("rl-base-2").steps == 30 and job("rl-ema-beta-2").steps == 90
    assert (job("rl-ema-beta-2").anchor, job("rl-ema-beta-2").beta, job("rl-ema-beta-2").anchor_rate) == ("ema", 0.2, 0.9)
    assert p.subs[keys.index("rl-plain-0")].needs == {"rl.init": "sft-plain-0"}
    assert p.subs[keys.index("sft-t1-2")].job.sft.seed == 2
    shared = plan(_job(**{"rl.num_generations": "16"}))  # the base run already is K=16
    assert shared.key("rl-k16-0") == "rl-base-0" and len(shared.subs) == 2 + 3 * 10


def test_plan_names_the_key_that_breaks_a_variant() -> None:
    with pytest.raises(ConfigError, match="micro_batch_size"):
        plan(_job(**{"reproduce.k_small": "2", "reproduce.k_large": "8", "rl.micro_batch_size": "48"}))  # 12 x 2 < 48
    with pytest.raises(ConfigError, match="rl.prompts_per_step x k_small / k_large"):
        _job(**{"rl.prompts_per_step": "10", "rl.micro_batch_size": "8"}).check()  # 10 x 4 / 16 prompts: not whole
    for spec in ("last", "0.5,1", "0,0.5"):  # claim 2 needs the SFT model's curve and the last checkpoint's
        with pytest.raises(ConfigError, match="budget.checkpoints must be 'all' or fractions that include 0 and 1"):
            _job(**{"budget.checkpoints": spec})


ARMS = {  # variant -> accuracy at the start, at the end, held-out truncated fraction at the end
    "base": (0.50, 0.65, 0.05), "plain": (0.20, 0.30, 0.05), "k4": (0.50, 0.55, 0.05),
    "k16": (0.50, 0.66, 0.05), "k16-matched": (0.50, 0.56, 0.05), "nopenalty": (0.50, 0.50, 0.30),
    "ema-beta": (0.50, 0.60, 0.05), "frozen": (0.50, 0.62, 0.05),
}
N = 300


def _curve(step: int, slope: float) -> dict:
    pts = [{"checkpoint": f"c{step}", "budget_tokens": 2 ** k, "accuracy": 0.3 + slope * k, "ci_low": 0.0,
            "ci_high": 1.0, "truncated_frac": 0.5, "mean_tokens_used": 10.0, "n": 100} for k in (4, 5, 6)]
    return {"name": f"step_{step:05d}", "checkpoint": f"c{step}", "step": step, "points": pts}


def _heldout(rng: np.random.Generator, acc: float, trunc: float, length: float, refl: float) -> list[dict]:
    return [{"problem_id": f"p{i:03d}", "sample": 0, "correct": bool(rng.random() < acc),
             "num_tokens": int(length + rng.integers(-5, 6)), "num_reflections": int(rng.random() < refl) + 1,
             "finish_reason": "length" if rng.random() < trunc else "stop"} for i in range(N)]


def _budget_rows(rng: np.random.Generator, slope: float) -> list[dict]:
    return [{"problem_id": f"p{i:03d}", "sample": 0, "budget": 2 ** k, "correct": bool(rng.random() < 0.3 + slope * k)}
            for i in range(N) for k in (4, 5, 6)]


@pytest.fixture()
def finished(tmp_path: Path):
    """A reproduce run whose sub-run folders are all complete, written with the store: per-problem
    held-out rows drawn at each arm's accuracy (seeded), budget sweeps with steeper later curves."""
    job = _job()
    rep = new_run(tmp_path, "reproduce", {})
    ledger, p = Ledger(rep), plan(job)
    for n, sub in enumerate(p.subs):
        rng = np.random.default_rng(n)
        run, _ = ledger.open(sub, sub.job)
        if sub.stage == "rl":
            a, b, t = ARMS[sub.key.split("-", 1)[1].rsplit("-", 1)[0]]
            run.write_eval("heldout_step_000000", _heldout(rng, a, 0.05, 80, 0.2))
            run.write_eval("heldout_step_000030", _heldout(rng, b, t, 90, 0.6))
            for s in range(1, 31):
                run.log_metrics({"step": s, "reward/mean": 0.01 * s, "rollout/truncated_frac": t,
                                 "rollout/len_mean": 85.0, "kl/anchor": 0.1 * s})
        if sub.stage == "budget":
            for step, slope in [(0, 0.0), (9, 0.05), (18, 0.08), (30, 0.1)]:
                run.write_curve(f"step_{step:05d}", _curve(step, slope))
                run.write_eval(f"budget_step_{step:05d}", _budget_rows(rng, slope))
        run.write_summary({})
    return job, rep, p


def test_report_from_run_folders(finished) -> None:
    job, rep, p = finished
    report = build_report(job, p, Ledger(rep))
    write_report(rep, report)
    data = json.loads(rep.artifact_path("report.json").read_text())
    assert [c["id"] for c in data["claims"]] == [1, 2, 3, 4, 5, 6, 7]
    verdicts = {c["id"]: c["verdict"] for c in data["claims"]}
    # frozen drew 2 points above EMA at 300 problems x 3 seeds: within noise, not a contradiction
    assert verdicts == {1: "reproduced", 2: "reproduced", 3: "reproduced", 4: "reproduced", 5: "reproduced",
                        6: "not reproduced", 7: "reproduced"}
    c1, c4, c7 = data["claims"][0], data["claims"][3], data["claims"][6]
    assert c1["parts"][0]["estimate"] == pytest.approx(0.15, abs=0.04) and c1["parts"][0]["n_problems"] == N
    assert c4["parts"][1]["paper"] is False  # the compute-matched arm is reported, not decisive
    assert c7["parts"][0]["estimate"] == pytest.approx(10, abs=1.5) and c7["parts"][0]["unit"] == "tokens"
    assert data["min_effect"]["accuracy"] == 0.02 and all(p["min_effect"] > 0 for c in data["claims"] for p in c["parts"])
    assert len(data["subruns"]) == len(p.subs)
    page = rep.artifact_path("report.html").read_text()
    body = page[page.rfind("<body>"):]  # the table is in the page, not inside the inlined script
    parts = sum(len(c["parts"]) for c in data["claims"])
    assert "<table" in body and body.count("<tr>") == 1 + parts and '"$schema"' in page
    assert "minimum effect" in body and "per seed" in body


def test_report_names_runs_without_per_problem_rows(finished) -> None:
    job, rep, p = finished
    Ledger(rep).run("rl-base-1").eval_path("heldout_step_000000").unlink()
    with pytest.raises(StoreError, match="no held-out evaluation rows"):
        build_report(job, p, Ledger(rep))


def test_report_refuses_an_unfinished_sub_run_but_covers_finished_seeds(finished) -> None:
    job, rep, p = finished
    ledger = Ledger(rep)
    ledger.run("rl-frozen-1").summary_path.unlink()
    with pytest.raises(ValueError, match="rl-frozen-1 has not finished"):
        build_report(job, p, ledger)
    assert finished_seeds(job, p, ledger) == [0, 2]  # meanwhile a report covers the finished seeds
    partial = build_report(job, p, ledger, [0, 2])
    assert partial["partial"] and len(partial["claims"][0]["parts"][0]["seeds"]) == 2


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
    assert len(data["claims"]) == 7 and (run / "report.html").stat().st_size > 10_000
    assert set(out["reproduced"]) == {str(i) for i in range(1, 8)}
    assert all(math.isfinite(p["estimate"]) and p["n_problems"] > 0 for c in data["claims"] for p in c["parts"])
    again = lab("--resume", str(run))  # everything finished: only the report is rebuilt
    assert again["time_s"] < out["time_s"] / 3 and again["reproduced"] == out["reproduced"]
