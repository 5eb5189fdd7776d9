"""core.report.views: the data shaping behind the dashboard pages, on hand-made rows."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from core.report import views as d
from core.synth.programmatic import synthesize_trace
from core.tasks import reflection_words, trace_parser
from core.tasks.math import MathTask
from core.tasks.pairsum import PairSumTask


def _row(**kw) -> dict:
    base = {"problem_id": "p1", "question": "numbers 1 2 3 target 5", "sample": 0,
            "response": "answer 2 + 3", "num_tokens": 4, "finish_reason": "stop", "correct": True,
            "overlong": False, "repetitive": False, "garbled": False, "reward": 1.0,
            "advantage": 0.5, "used": True}
    return {**base, **kw}


def test_config_diff_lists_changed_added_and_removed_keys_only() -> None:
    a = {"stage": "sft", "run_id": "x", "pid": 1, "config": {"sft": {"lr": 1e-3, "steps": 10},
                                                            "task": {"name": "pairsum"}}}
    b = {"stage": "rl", "run_id": "y", "pid": 2, "config": {"sft": {"lr": 2e-3, "steps": 10},
                                                            "rl": {"beta": 0.01}}}
    diff = d.config_diff(a, b)
    assert diff == [
        {"key": "rl.beta", "a": None, "b": 0.01},
        {"key": "sft.lr", "a": 1e-3, "b": 2e-3},
        {"key": "stage", "a": "sft", "b": "rl"},
        {"key": "task.name", "a": "pairsum", "b": None},
    ]
    assert d.config_diff(a, a) == []


def test_run_row_takes_headline_figures_from_summary() -> None:
    cfg = {"stage": "sft", "created_at": "2026-11-25T19:01:50.123456+00:00",
           "config": {"task": {"name": "pairsum"}, "model": {"name": "embedded"}}}
    row = d.run_row("sft-1", cfg, {"eval/acc": 0.6, "other": 1}, "complete")
    assert row["started"] == "2026-11-25 19:01:50"
    assert (row["stage"], row["task"], row["eval/acc"], row["sft/loss"]) == ("sft", "pairsum", 0.6, None)
    assert "other" not in row
    assert d.run_row("r", {}, None, "unknown")["eval/acc"] is None


def test_metrics_long_skips_lines_without_step_and_missing_keys() -> None:
    rows = [{"step": 1, "reward/mean": 0.1, "loss/entropy": 2.0, "wall_time": 9.0},
            {"step": 2, "reward/mean": 0.3, "flag": True},
            {"step": 2, "eval/acc": 0.5},
            {"reward/mean": 99.0}]
    assert d.metric_keys(rows) == ["eval/acc", "loss/entropy", "reward/mean"]
    assert d.metric_groups(d.metric_keys(rows)) == {"eval": ["eval/acc"], "loss": ["loss/entropy"],
                                                     "reward": ["reward/mean"]}
    frame = d.metrics_long({"a": rows, "b": rows[:1]}, ["reward/mean", "eval/acc"])
    got = sorted(map(tuple, frame[["run", "step", "metric", "value"]].values.tolist()))
    assert got == [("a", 1, "reward/mean", 0.1), ("a", 2, "eval/acc", 0.5),
                   ("a", 2, "reward/mean", 0.3), ("b", 1, "reward/mean", 0.1)]
    assert d.metrics_long({}, ["x"]).empty


def test_sample_tags_and_filters() -> None:
    rows = [_row(sample=0),
            _row(sample=1, correct=False, finish_reason="length", overlong=True, reward=-1.0),
            _row(sample=2, correct=False, response="try 1 + 2 = 3 < 5 larger"),
            _row(sample=3, kept=False)]
    assert d.sample_tags(rows[1]) == ["wrong", "penalised", "truncated"]
    assert d.sample_tags(rows[3]) == ["correct", "dropped"]
    assert d.is_kept(rows[0]) and not d.is_kept(rows[3])
    assert [r["sample"] for r in d.filter_samples(rows, ["truncated"])] == [1]
    assert [r["sample"] for r in d.filter_samples(rows, ["penalised", "dropped"])] == [1, 3]
    assert [r["sample"] for r in d.filter_samples(rows, (), "LARGER")] == [2]
    assert [r["sample"] for r in d.filter_samples(rows, ["wrong"], "larger")] == [2]
    assert len(d.filter_samples(rows)) == 4


def test_prompt_table_and_samples_by_prompt() -> None:
    rows = [_row(problem_id="b", sample=1, correct=False, reward=-1.0), _row(problem_id="a"),
            _row(problem_id="b", sample=0)]
    table = d.prompt_table(rows)
    assert [t["problem_id"] for t in table] == ["b", "a"]
    assert table[0] | {"question": ""} == {"problem_id": "b", "question": "", "n": 2, "correct": 1,
                                           "reward_mean": 0.0}
    assert [r["sample"] for r in d.prompt_samples(rows, "b")] == [0, 1]
    over = d.step_overview(rows + [_row(kept=False, finish_reason="length")])
    assert over == {"samples": 4, "acc": 0.75, "reward_mean": 0.5, "truncated_frac": 0.25,
                    "kept_frac": 0.75}


def test_pairsum_trace_features_on_a_teacher_trace() -> None:
    task = PairSumTask()
    problem = task.problems("train", 1)[0]
    row = synthesize_trace(problem, random.Random(3), "t1", guided_prob=0.0, slip_prob=0.0)
    feats = d.trace_features(row, "pairsum")  # teacher rows carry no verdict: correct
    assert feats["attempts"] == row["num_attempts"]
    assert feats["failed_attempts"] == row["num_failed"]
    assert feats["verified"]
    assert feats["failed_then_fixed"] == (row["num_failed"] > 0)
    assert feats["reflection_words"] == row["num_failed"]  # one larger/smaller per failed try


def test_failed_then_fixed_needs_a_failure_and_a_right_answer() -> None:
    text = "try 1 + 2 = 3 < 5 larger\ntry 2 + 3 = 5 = 5 ok\ncheck 3 + 2 = 5 yes\nanswer 2 + 3"
    assert d.trace_features(_row(response=text), "pairsum")["failed_then_fixed"]
    assert not d.trace_features(_row(response=text, correct=False), "pairsum")["failed_then_fixed"]
    straight = "try 2 + 3 = 5 = 5 ok\nanswer 2 + 3"
    assert not d.trace_features(_row(response=straight), "pairsum")["failed_then_fixed"]


def test_math_responses_are_parsed_by_the_tasks_own_parser() -> None:
    """Regression: the dashboard split free text with its own regexes while evaluation used
    MathTask.parse_trace, so "failed, then fixed" and eval/corrected_frac could disagree."""
    text = "2x = 6 so x = 3.\nWait, let me check: 2*3 = 6.\nSo \\boxed{3}\nVerify: 2*3 = 6."
    trace = trace_parser("math500")(text)
    assert trace == MathTask.__dict__["parse_trace"](None, text)  # the task's method, no data needed
    assert [s.kind for s in trace.steps] == ["text", "reflection", "answer", "verify"]
    feats = d.trace_features(_row(response=text), "math500")
    assert feats["reflections"] == 1 and feats["verified"] and not feats["failed_then_fixed"]
    assert feats["reflection_words"] == reflection_words(text, "math500") == 2  # "Wait", "let me check"
    assert trace_parser("math500")("").steps == ()


def test_trace_step_stats_per_step_shares() -> None:
    fixed = "try 1 + 2 = 3 < 5 larger\ntry 2 + 3 = 5 = 5 ok\nanswer 2 + 3"
    straight = "try 2 + 3 = 5 = 5 ok\ncheck 3 + 2 = 5 yes\nanswer 2 + 3"
    stats = d.trace_step_stats({2: [_row(response=fixed), _row(response=straight)],
                                1: [_row(response=straight)], 3: []}, "pairsum")
    table = {(r.step, r.stat): r.value for r in stats.itertuples()}
    assert table[(2, "failed_then_fixed_frac")] == 0.5
    assert table[(2, "reflection_frac")] == 0.5
    assert table[(2, "verified_frac")] == 0.5
    assert table[(1, "failed_then_fixed_frac")] == 0.0
    assert sorted(set(stats.step)) == [1, 2]


def test_filter_traces_by_structure_and_text() -> None:
    fixed = _row(response="try 1 + 2 = 3 < 5 larger\ntry 2 + 3 = 5 = 5 ok\nanswer 2 + 3")
    wrong = _row(response="try 1 + 2 = 3 < 5 larger\nanswer 1 + 2", correct=False)
    rows = [fixed, wrong]
    assert d.filter_traces(rows, "pairsum", "failed_then_fixed") == [fixed]
    assert d.filter_traces(rows, "pairsum", "wrong") == [wrong]
    assert d.filter_traces(rows, "pairsum", "reflection") == rows
    assert d.filter_traces(rows, "pairsum", "all", "ANSWER 1") == [wrong]


def test_trace_html_labels_and_escapes() -> None:
    trace = PairSumTask().parse_trace(
        "try 1 + 2 = 3 < 5 larger\ntry 2 + 3 = 5 = 5 ok\ncheck 3 + 2 = 6 no\nwait\nanswer 2 + 3")
    labels = [d.step_label(s) for s in trace.steps]
    assert labels == ["attempt failed", "reflection", "attempt ok", "check no", "wait", "answer"]
    html = d.trace_html(trace_parser("math500")("if a <b> then \\boxed{1}"))
    assert "&lt;b&gt;" in html and "<b>" not in html
    free = trace_parser("math500")("x = 3.\nVerify: 2*3 = 6.")  # a free-text check is shown as one
    assert [d.step_label(s) for s in free.steps] == ["text", "check"]


def test_minimath_rollouts_show_their_trials() -> None:
    """The embedded math task's rows are parsed by its own parser: trials are attempts."""
    text = ("We need $3x = 38 - 2 = 36$.\nTry $x = 10$: $3 \\cdot 10 = 30 < 36$, too small.\n"
            "Try $x = 12$: $3 \\cdot 12 = 36$, correct.\nCheck: $3 \\cdot 12 + 2 = 36 + 2 = 38$. Yes.\n\n"
            "Final answer: \\boxed{12}")
    labels = [d.step_label(s) for s in trace_parser("minimath")(text).steps]
    assert labels == ["text", "attempt failed", "reflection", "attempt ok", "check yes", "answer"]
    assert d.trace_features(_row(response=text), "minimath")["failed_then_fixed"]


def _curve(checkpoint: str, mode: str, budgets: list[int], done: int, parallel: list[dict]) -> dict:
    pts = [{"checkpoint": checkpoint, "budget_tokens": b, "accuracy": 0.1 * i, "ci_low": 0.0,
            "ci_high": 0.2, "truncated_frac": 0.5, "mean_tokens_used": b / 2, "n": 10}
           for i, b in enumerate(budgets[:done])]
    return {"checkpoint": checkpoint, "mode": mode, "budgets": budgets, "complete": done == len(budgets),
            "points": pts[::-1], "parallel": parallel}


def test_curve_frames_progress_and_liveness() -> None:
    par = [{"k": 2, "total_tokens": 128.0, "maj_acc": 0.4, "pass_at_k": 0.6}]
    curves = {"a": _curve("final", "forced", [16, 32, 64], 3, par),
              "b": _curve("step 5", "forced", [16, 32, 64], 1, [])}
    points = d.curve_points(curves)
    assert list(points.series) == ["final", "final", "final", "step 5"]
    assert list(points.budget_tokens) == [16, 32, 64, 16]  # sorted although written backwards
    assert d.curve_progress(curves["b"]) == (1, 3)
    assert d.curves_live(curves) and not d.curves_live({"a": curves["a"]})
    assert d.curves_live({"x": {"points": []}})  # no complete flag yet: still being written
    par_frame = d.parallel_points(curves)
    assert sorted(zip(par_frame.metric, par_frame.value)) == [("maj@k", 0.4), ("pass@k", 0.6)]
    both = d.curve_points({**curves, "c": _curve("final", "summarizer", [16], 1, [])})
    assert {"final (forced)", "final (summarizer)", "step 5 (forced)"} == set(both.series)
    assert d.curve_points({}).empty and d.parallel_points({}).empty


@pytest.mark.parametrize(("n", "k", "want"), [(5, 3, [0, 2, 4]), (3, 5, [0, 1, 2]), (4, 1, [3]),
                                              (0, 3, []), (10, 0, [])])
def test_spread_keeps_ends(n: int, k: int, want: list[int]) -> None:
    assert d.spread(list(range(n)), k) == want


def test_smooth_long_is_a_debiased_ema_per_run_and_metric() -> None:
    from core.report.views import smooth_long

    frame = pd.DataFrame({"run": ["a"] * 3 + ["b"], "step": [1, 2, 3, 1], "metric": ["m"] * 4,
                          "value": [0.0, 1.0, 1.0, 5.0]})
    out = smooth_long(frame, 0.5)
    a = list(out[out.run == "a"].value)
    assert a[0] == 0.0  # debiased: the first point is the first value
    assert a[1] == pytest.approx((0.5 * 0 + 1) / 1.5)  # weights 0.5, 1 over values 0, 1
    assert a[2] == pytest.approx((0.25 * 0 + 0.5 * 1 + 1) / 1.75)
    assert list(out[out.run == "b"].value) == [5.0]  # another run is smoothed on its own
    assert list(smooth_long(frame, 0).value) == [0.0, 1.0, 1.0, 5.0]
    with pytest.raises(ValueError, match="smoothing weight"):
        smooth_long(frame, 1.0)


def test_step_time_long_takes_the_phases_of_step_lines() -> None:
    from core.report.views import step_time_long

    rows = [{"step": 1, "time/sample_s": 2.0, "time/update_s": 1.0, "eval/time_s": 9.0, "wall_time": 5.0},
            {"step": 2, "time/sample_s": 3.0, "time/anchor_s": None}, {"time/sample_s": 1.0}]
    frame = step_time_long(rows)
    assert frame.values.tolist() == [[1, "sample", 2.0], [1, "update", 1.0], [2, "sample", 3.0]]


def test_logged_trace_stats_stand_in_for_parsing_the_rollouts() -> None:
    """The RL loop logs the per-step structure ("trace/..."): the Traces chart reads them, and
    parses the rollouts only for runs that lack them at some step."""
    task = PairSumTask()
    p = task.problems("train", 1)[0]
    rows = [_row(response=synthesize_trace(p, random.Random(s), "t1", 0.9, 0.1)["response"], correct=s % 2 == 0)
            for s in range(6)]
    parsed = d.trace_step_stats({3: rows}, "pairsum")
    from core.tasks import trace_stats

    logged = {"step": 3, **trace_stats([d.trace_features(r, "pairsum") for r in rows])}
    frame = d.logged_trace_stats([{"step": 1, "reward/mean": 0.0}, logged], [3])
    assert frame is not None and frame.values.tolist() == parsed.values.tolist()
    assert d.logged_trace_stats([logged], [1, 3]) is None  # step 1 lacks them
