"""Budgeted sampling: truncation, forced answers from the exact truncated ids, curves, sweeps."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from core.budget import (
    Cue,
    Sweep,
    budget_rows,
    curve_point,
    find_subsequence,
    generate_sweep,
    reasoning_length,
    sweep_curve,
    truncated_at,
)
from core.config import BudgetConfig, BudgetJob, ConfigError, SamplingConfig
from core.evaluate import parallel_scaling, pass_at_k
from core.overrides import build
from core.types import Completion

EOS = 1


def _tok():
    from core.models import build_tokenizer

    return build_tokenizer()


def _completion(tok, text: str, finish: str = "stop", i: int = 0, j: int = 0) -> Completion:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if finish == "stop":
        ids = ids + [tok.eos_token_id]
    return Completion(text, tuple(ids), finish, prompt_index=i, sample_index=j)


def test_reasoning_length_and_truncation() -> None:
    tok = _tok()
    cue = Cue.build(tok, "answer")
    done = _completion(tok, "try 1 + 2 = 3 = 3 ok\nanswer 1 + 2")
    r = reasoning_length(done, cue.core, tok.eos_token_id)
    assert r == find_subsequence(done.token_ids, cue.core) and r is not None
    assert not truncated_at(r, r) and truncated_at(r, r - 1)
    no_answer = _completion(tok, "try 1 + 2 = 3 < 4 larger")
    assert reasoning_length(no_answer, cue.core, tok.eos_token_id) == len(no_answer.token_ids) - 1
    cut = _completion(tok, "try 1 + 2 = 3 < 4 larger\ntry", finish="length")
    assert reasoning_length(cut, cue.core, tok.eos_token_id) is None
    assert truncated_at(None, 10_000)


def test_cue_gets_a_newline_unless_the_prefix_ends_a_line() -> None:
    tok = _tok()
    cue = Cue.build(tok, "answer")
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    mid = tok("try 1 +", add_special_tokens=False)["input_ids"]
    assert cue.after(tok, mid) == tuple(nl) + cue.ids
    assert cue.after(tok, mid + nl) == cue.ids


def test_finished_before_budget_keeps_its_own_answer(pairsum_task) -> None:
    tok = _tok()
    p = pairsum_task.problems("heldout", 1)[0]
    a, b = p.meta["answer"] if "answer" in p.meta else _solve(p)
    short = _completion(tok, f"try {a} + {b} = {a + b} = {a + b} ok\nanswer {a} + {b}")
    sweep = Sweep([[short]], {16: {}, 64: {}}, Cue.build(tok, "answer"))
    for budget in (16, 64):
        [row] = budget_rows(pairsum_task, [p], sweep, budget, tok)
        assert row["correct"] and not row["truncated"] and row["tokens_used"] == short.num_tokens


def _solve(p) -> tuple[int, int]:
    nums, target = p.meta["numbers"], p.meta["target"]
    return next((x, y) for k, x in enumerate(nums) for y in nums[k + 1 :] if x + y == target)


class RecordingSampler:
    """Wraps a sampler and records every generate call's inputs (the generic path: no forks)."""

    can_fork = False

    def __init__(self, inner) -> None:
        self.inner, self.tokenizer, self.calls = inner, inner.tokenizer, []

    def generate(self, prompt_ids, params, seed, n=1, progress=False, until=None, prompt_offset=0):
        self.calls.append(([list(p) for p in prompt_ids], params))
        return self.inner.generate(prompt_ids, params, seed, n, progress, until=until, prompt_offset=prompt_offset)

    def sync_weights(self, model) -> None:  # pragma: no cover - protocol only
        pass


@pytest.fixture(scope="module")
def peaked_sampler(tiny_model_dir: Path):
    """The tiny random model with a 20x sharper head, so greedy answers have no near-ties
    (sampling at temperature 20 undoes the sharpening for the main samples)."""
    import torch

    from core.models import load_policy
    from core.sampling.hf import HFSampler

    model, tok = load_policy(str(tiny_model_dir))
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)
    return HFSampler(model, tok)


CFG = BudgetConfig(budgets=(4, 8, 16, 24), num_problems=12, num_samples=2, answer_max_tokens=6,
                   sampling=SamplingConfig(temperature=20.0, stop=("ok", "yes")))  # diverse despite the sharp head


def test_forced_answers_continue_from_the_exact_truncated_ids(peaked_sampler, pairsum_task) -> None:
    problems = pairsum_task.problems("heldout", CFG.num_problems)
    rec = RecordingSampler(peaked_sampler)
    sweep = generate_sweep(rec, pairsum_task, problems, CFG)
    tok = peaked_sampler.tokenizer
    prompts, _ = rec.calls[0]
    forced = [b for b in CFG.budgets if sweep.answers[b]]
    assert len(rec.calls) == 1 + len(forced)  # one generation, one forced pass per budget
    for budget, (inputs, params) in zip(forced, rec.calls[1:]):
        keys = list(sweep.answers[budget])
        assert params.temperature == 0 and params.max_new_tokens == CFG.answer_max_tokens
        for (i, j), ids in zip(keys, inputs):
            head = list(sweep.groups[i][j].token_ids[:budget])
            assert len(head) == budget  # truncation never exceeds the budget
            assert ids == prompts[i] + head + list(sweep.cue.after(tok, head))
        # exactly the responses whose reasoning the budget cuts are forced
        cut = {(i, j) for i, g in enumerate(sweep.groups) for j, c in enumerate(g)
               if truncated_at(reasoning_length(c, sweep.cue.core, tok.eos_token_id), budget)}
        assert set(keys) == cut


@pytest.mark.parametrize("stop", [("ok", "yes"), ()], ids=["stop-strings", "eos-only"])
def test_kv_cache_forks_match_regenerating_each_prefix(peaked_sampler, pairsum_task, stop) -> None:
    """The fork path answers exactly as a fresh pass over prompt + truncated ids + cue does, and
    leaves the main samples equal to a plain generation with the same seed. Without stop strings
    budget B is forked one step late, from a cache that holds exactly B tokens."""
    cfg = replace(CFG, sampling=replace(CFG.sampling, stop=stop))
    problems = pairsum_task.problems("heldout", cfg.num_problems)
    forked = generate_sweep(peaked_sampler, pairsum_task, problems, cfg)
    plain = generate_sweep(peaked_sampler, pairsum_task, problems, cfg, fork=False)
    assert forked.groups == plain.groups
    ended_early = sum(c.finish_reason == "stop" for g in plain.groups for c in g)
    assert 0 < ended_early < cfg.num_problems * cfg.num_samples  # both kinds of rows covered
    for b in cfg.budgets:
        assert forked.answers[b].keys() == plain.answers[b].keys()
        for key, ans in plain.answers[b].items():
            assert forked.answers[b][key].token_ids == ans.token_ids, (b, key)
            assert pairsum_task.answer_end(ans.text) in (None, len(ans.text))  # ends where settled


def test_curve_points_and_incremental_callback(peaked_sampler, pairsum_task) -> None:
    problems = pairsum_task.problems("heldout", CFG.num_problems)
    sweep = generate_sweep(peaked_sampler, pairsum_task, problems, CFG)
    seen = []
    points, rows, parallel = sweep_curve(pairsum_task, problems, sweep, CFG, "tiny",
                                         peaked_sampler.tokenizer, lambda pts, _: seen.append(len(pts)))
    assert seen == [1, 2, 3, 4]
    assert [p.budget_tokens for p in points] == list(CFG.budgets)
    assert all(p.n == CFG.num_problems * CFG.num_samples for p in points)
    assert all(r["tokens_used"] <= r["budget"] + 2 + CFG.answer_max_tokens for r in rows if r["truncated"])
    assert [p["k"] for p in parallel] == [1, 2]
    assert all(p.ci_low <= p.accuracy <= p.ci_high for p in points)
    # truncation can only fall as the budget grows
    fracs = [p.truncated_frac for p in points]
    assert fracs == sorted(fracs, reverse=True)


def test_unconstrained_continues_the_responses_still_going(peaked_sampler, pairsum_task) -> None:
    """No budget: a response that ended keeps its own text; one still going at the largest
    budget continues from its exact ids (up to the cap) and is scored as it ends, unforced."""
    from core.budget import unconstrained

    problems = pairsum_task.problems("heldout", CFG.num_problems)
    sweep = generate_sweep(peaked_sampler, pairsum_task, problems, CFG)
    rec = RecordingSampler(peaked_sampler)
    point, rows = unconstrained(rec, pairsum_task, problems, sweep, replace(CFG, unconstrained_tokens=40), "tiny")
    assert point.budget_tokens == 40 and point.n == len(rows) == CFG.num_problems * CFG.num_samples
    going = [(i, j) for i, g in enumerate(sweep.groups) for j, c in enumerate(g) if c.finish_reason == "length"]
    assert going and len(rec.calls) == 1
    inputs, params = rec.calls[0]
    assert params.max_new_tokens == 40 - max(CFG.budgets) and len(inputs) == len(going)
    assert all(ids[-max(CFG.budgets):] == list(sweep.groups[i][j].token_ids) for ids, (i, j) in zip(inputs, going))
    by_key = {(r["problem_id"], r["sample"]): r for r in rows}
    for i, g in enumerate(sweep.groups):
        for j, c in enumerate(g):
            r = by_key[(problems[i].id, j)]
            if (i, j) in going:
                assert max(CFG.budgets) < r["tokens_used"] <= 40 and r["response"].startswith(c.text[:10])
            else:
                assert r["response"] == c.text and r["tokens_used"] == c.num_tokens
    assert unconstrained(rec, pairsum_task, problems, sweep, replace(CFG, unconstrained_tokens=0), "t") is None


def test_curve_point_interval() -> None:
    rows = [{"correct": k < 3, "truncated": k < 5, "tokens_used": 10} for k in range(10)]
    p = curve_point("x", 8, rows)
    assert (p.accuracy, p.truncated_frac, p.mean_tokens_used, p.n) == (0.3, 0.5, 10.0, 10)
    assert 0.1 < p.ci_low < 0.3 < p.ci_high < 0.61


def test_parallel_scaling_against_brute_force() -> None:
    # 2 problems x 4 samples; problem a: answers 5,5,6,7 (5 correct); b: 1,2,2,None (2 correct)
    rows = [{"problem_id": "a", "predicted": x, "correct": x == "5", "tokens_used": 10} for x in "5567"]
    rows += [{"problem_id": "b", "predicted": x, "correct": x == "2", "tokens_used": 30}
             for x in ("1", "2", "2", None)]
    out = {p["k"]: p for p in parallel_scaling(rows, 4, "tokens_used", draws=2000)}
    assert out[1]["pass_at_k"] == pytest.approx(0.5)
    assert out[2]["pass_at_k"] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 2, 2)) / 2)
    assert out[4]["maj_acc"] == 1.0  # the majority of all four samples is right for both
    assert out[1]["maj_acc"] == pytest.approx(0.5, abs=0.05)
    assert out[2]["total_tokens"] == 40.0


@pytest.mark.parametrize("override, message", [
    ({"budget.budgets": "64,32"}, "ascending"),
    ({"budget.budgets": "0,8"}, "positive"),
    ({"budget.mode": "vote"}, "budget.mode"),
    ({"budget.mode": "summarizer"}, "needs budget.summarizer"),
    ({"budget.checkpoints": "0,2"}, "fractions"),
    ({"budget.budgets": "8,16", "budget.unconstrained_tokens": "16"}, "more than the largest budget"),
])
def test_bad_budget_config(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(BudgetJob, cli=override)


def test_budgets_parse_as_ints() -> None:
    cfg = build(BudgetJob, cli={"budget.budgets": "8,16,32"})
    assert cfg.budget.budgets == (8, 16, 32)


def test_summarizer_and_wait_extension_paths(peaked_sampler, pairsum_task) -> None:
    problems = pairsum_task.problems("heldout", 6)
    cfg = replace(CFG, num_problems=6, num_samples=1, mode="summarizer", summarizer="x", extend_wait=1)
    rec = RecordingSampler(peaked_sampler)
    sweep = generate_sweep(peaked_sampler, pairsum_task, problems, cfg, summarizer=rec)
    assert len(rec.calls) == len(cfg.budgets)
    assert all(c.num_tokens <= max(cfg.budgets) for g in sweep.groups for c in g)
    points, _, _ = sweep_curve(pairsum_task, problems, sweep, cfg, "s", peaked_sampler.tokenizer)
    assert len(points) == len(cfg.budgets)


def test_checkpoints_of_an_rl_run(tmp_path: Path) -> None:
    from core.stages.budget import checkpoints_to_sweep
    from core.store import new_run

    run = new_run(tmp_path, "rl", {"rl": {"init": "", "steps": 100}}, run_id="rl-x")
    run.log_metrics({"step": 0, "init": "/models/sft", "eval/acc": 0.5})
    for s in (25, 50, 75, 100):
        d = run.checkpoint_dir(s)
        d.mkdir(parents=True)
        run.mark_checkpoint_complete(d)
    every = checkpoints_to_sweep(str(run.path), "all", tmp_path)
    assert [c.step for c in every] == [0, 25, 50, 75, 100] and every[0].path == "/models/sft"
    assert [c.step for c in checkpoints_to_sweep("rl-x", "0,0.3,0.6,1", tmp_path)] == [0, 25, 50, 100]
    assert [c.name for c in checkpoints_to_sweep("rl-x", "last", tmp_path)] == ["step_00100"]


def test_lab_budget_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests.test_cli import lab, last_json

    proc = lab("budget", f"model.name={tiny_model_dir}", "budget.num_problems=6", "budget.budgets=4,8,16",
               "budget.num_samples=2", "-q", "--runs-dir", str(tmp_path), "--run-id", "b")
    assert proc.returncode == 0, proc.stderr
    out = last_json(proc)
    curve = json.loads((tmp_path / "b" / "curves" / "tiny.json").read_text())
    assert curve["complete"] and [p["budget_tokens"] for p in curve["points"]] == [4, 8, 16]
    assert [p["k"] for p in curve["parallel"]] == [1, 2]
    assert set(out["acc_at_max"]) == {"tiny"} and (tmp_path / "b" / "budget.html").exists()
    free = curve["unconstrained"]  # default: up to 4 x the largest budget
    assert free["budget_tokens"] == 64 and free["n"] == 12 and out["acc_unconstrained"]["tiny"] == free["accuracy"]
    rows = (tmp_path / "b" / "eval" / "budget_tiny.jsonl").read_text().splitlines()
    assert len(rows) == 6 * 2 * 3


def test_lab_budget_needs_a_trained_model(tmp_path: Path) -> None:
    from tests.test_cli import lab

    proc = lab("budget", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "needs a trained model" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_budget_on_a_math_task_scores_with_math_verify(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The math path end to end: math task prompts, forced answers, math-verify statuses.
    (The tiny model's word-level vocabulary cannot spell the boxed cue; a real model's can.)"""
    from tests.conftest import DATA
    from tests.test_cli import lab, last_json

    proc = lab("budget", f"model.name={tiny_model_dir}", f"task.name={DATA / 'math500_20.jsonl'}",
               "budget.num_problems=4", "budget.budgets=8,16", "-q", "--runs-dir", str(tmp_path), "--run-id", "m")
    out = last_json(proc)
    assert out["acc_at_max"] == {"tiny": 0.0}  # a random model
    rows = [json.loads(line) for line in (tmp_path / "m" / "eval" / "budget_tiny.jsonl").open()]
    assert len(rows) == 8 and any(r["truncated"] for r in rows)
    assert {r["status"] for r in rows} <= {"ok", "no_answer", "parse_error", "timeout"}


@pytest.mark.parametrize("task", ["pairsum", "minimath"])
def test_budget_sweep_benchmark_runs(tmp_path, capsys, task) -> None:
    """The benchmark end to end on a few problems (no SFT run: the random embedded model)."""
    import json

    import torch

    from lab.bench import budget_sweep

    threads = torch.get_num_threads()
    try:
        budget_sweep.main(["--problems", "3", "--repeats", "1", "--threads", "1", "--runs-dir", str(tmp_path),
                           "--task", task, "--budgets", "4,8,16"])
    finally:
        torch.set_num_threads(threads)  # the benchmark sets it for the process
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["model"] == "random embedded model" and out["problems"] == 3
    assert out["task"] == task and out["budgets"] == [4, 8, 16]
    assert out["ratio"] > 0 and out["naive_ratio"] > 0 and out["cpu_ratio"] > 0


def test_find_subsequence_matches_a_plain_scan() -> None:
    import random

    def plain(seq, sub):
        return next((i for i in range(len(seq) - len(sub) + 1) if tuple(seq[i : i + len(sub)]) == tuple(sub)), None) \
            if sub else None

    rng = random.Random(0)
    for _ in range(3000):
        seq = [rng.randrange(3) for _ in range(rng.randrange(12))]
        sub = tuple(rng.randrange(3) for _ in range(rng.randrange(4)))
        assert find_subsequence(seq, sub) == find_subsequence(tuple(seq), sub) == plain(seq, sub)


def test_forced_rows_say_where_the_cue_and_forced_answer_start(peaked_sampler, pairsum_task) -> None:
    """The dashboard splits a forced response into the reasoning cut at the budget and what the
    cue forced; `answer_start` is that split, None where nothing was forced."""
    from core.sampling.text import decode_text

    problems = pairsum_task.problems("heldout", CFG.num_problems)
    sweep = generate_sweep(peaked_sampler, pairsum_task, problems, CFG)
    tok = peaked_sampler.tokenizer
    for b in CFG.budgets:
        rows = budget_rows(pairsum_task, problems, sweep, b, tok)
        forced = [r for r in rows if r["truncated"]]
        assert forced and all(r["answer_start"] is None for r in rows if not r["truncated"])
        for r in forced:
            i = next(k for k, p in enumerate(problems) if p.id == r["problem_id"])
            head = decode_text(tok, list(sweep.groups[i][r["sample"]].token_ids[:b]))
            assert r["response"][: r["answer_start"]] == head
            assert r["response"][r["answer_start"] :].lstrip("\n").startswith(sweep.cue.text.strip())


def test_a_sweep_writes_its_curve_from_the_start_with_its_progress(tmp_path, tiny_model_dir, monkeypatch) -> None:
    """The dashboard lists a sweep from its start: the curve file exists before the first
    budget is scored, holding how many responses are generated so far."""
    from core.commands import run_command
    from core.store import Run

    seen: list[dict] = []
    real = Run.write_curve
    monkeypatch.setattr(Run, "write_curve", lambda self, name, curve: (seen.append(dict(curve)), real(self, name, curve)))
    run_command("budget", {"model.name": str(tiny_model_dir), "budget.num_problems": 6, "budget.num_samples": 2,
                           "budget.budgets": "4,8", "budget.unconstrained_tokens": 0, "budget.sampling.batch_size": 4},
                tmp_path, say=lambda s: None, progress=False)
    made = [c["generated"] for c in seen if "generated" in c]
    assert made == [[0, 12], [4, 12], [8, 12], [12, 12]]
    assert all(not c["points"] and not c["complete"] for c in seen[: len(made)])
    assert seen[-1]["complete"] and len(seen[-1]["points"]) == 2
