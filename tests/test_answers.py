"""Tests for core.answers: boxed extraction and the math-verify worker pool."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from core.answers import VerifierPool, extract_boxed, verify_answers
from lab.bench.scorer import perturb

DATA = Path(__file__).parent / "data"
TIMEOUT_S = 1.0
GOLDS = [json.loads(line)["answer"] for line in (DATA / "math500_20.jsonl").open()]

@pytest.fixture(scope="module")
def pool():
    with VerifierPool(num_workers=2, timeout_s=TIMEOUT_S) as p:
        yield p


# ------------------------------------------------------------------------- extract_boxed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{a^{2}}{b_{1}}}", "\\frac{a^{2}}{b_{1}}"),
        ("\\fbox{7}", "7"),
        ("\\boxed {  3 }", "3"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not count
        ("\\boxed{5} and later \\boxed{12", "5"),  # last box unclosed: last closed one
        ("no box here", None),
        ("\\boxed{", None),
        ("\\boxed{}", ""),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_extract_boxed_deep_nesting_and_long_text() -> None:
    inner = "{" * 500 + "1" + "}" * 500
    assert extract_boxed("x \\boxed{" + inner + "} y") == inner
    assert extract_boxed("a" * 100_000 + "\\boxed{2}") == "2"
    assert extract_boxed("\\boxed{" + "{" * 500) is None


# ---------------------------------------------------------------------------- VerifierPool


def test_pool_starts_lazily() -> None:
    before = set(multiprocessing.active_children())
    p = VerifierPool(num_workers=2, timeout_s=TIMEOUT_S)
    assert set(multiprocessing.active_children()) == before
    p.close()


def test_golds_against_themselves_all_correct(pool: VerifierPool) -> None:
    verdicts = pool.verify(GOLDS, GOLDS)
    assert [v.status for v in verdicts] == ["ok"] * len(GOLDS)
    assert all(v.correct for v in verdicts)
    assert [v.predicted for v in verdicts] == GOLDS


def test_wrong_answers_all_incorrect(pool: VerifierPool) -> None:
    perturbed = [perturb(g) for g in GOLDS]
    assert all(p != g for p, g in zip(perturbed, GOLDS))
    rotated = GOLDS[1:] + GOLDS[:1]
    verdicts = pool.verify(GOLDS + GOLDS, perturbed + rotated)
    wrongly_accepted = [v.predicted for v in verdicts if v.correct]
    assert wrongly_accepted == []
    assert all(v.status == "ok" for v in verdicts)


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("27.0", "27"),
        ("27", "27.0"),
        ("\\frac{14}{3}", "14/3"),
        ("3\\sqrt{13}", "\\sqrt{117}"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
        ("18", "$18$"),
        ("1000", "1,000"),
    ],
)
def test_equivalent_forms(pool: VerifierPool, gold: str, pred: str) -> None:
    (verdict,) = pool.verify([gold], [pred])
    assert verdict.status == "ok" and verdict.correct, verdict


def test_no_answer_and_parse_error(pool: VerifierPool) -> None:
    verdicts = pool.verify(["5", "5", "5"], [None, "   ", "}"])
    assert [v.status for v in verdicts] == ["no_answer", "no_answer", "parse_error"]
    assert not any(v.correct for v in verdicts)


def test_length_mismatch(pool: VerifierPool) -> None:
    with pytest.raises(ValueError, match="2 golds but 1 predictions"):
        pool.verify(["1", "2"], ["1"])


@pytest.mark.parametrize(
    "bad",
    ["x" * 100_000, "9^{9^{9^{9}}}", "{" * 500 + "1" + "}" * 500, "\\frac{", "100000000!"],
    ids=["100k-chars", "power-tower", "500-nested-braces", "malformed-frac", "huge-factorial"],
)
def test_adversarial_inputs_are_bounded(pool: VerifierPool, bad: str) -> None:
    start = time.monotonic()
    (verdict,) = pool.verify(["5"], [bad])
    elapsed = time.monotonic() - start
    assert elapsed < TIMEOUT_S + 1.0, elapsed
    assert not verdict.correct
    assert verdict.status in ("timeout", "ok", "parse_error")
    # The pool still answers correctly afterwards.
    assert [v.correct for v in pool.verify(["\\frac{1}{2}", "3"], ["0.5", "4"])] == [True, False]


def test_adversarial_gold_and_mixed_batch(pool: VerifierPool) -> None:
    start = time.monotonic()
    verdicts = pool.verify(["9^{9^{9^{9}}}", "1", "2", "3"], ["5", "1", "2", "4"])
    assert time.monotonic() - start < TIMEOUT_S + 1.0 + 0.5
    assert verdicts[0].status == "timeout" and not verdicts[0].correct
    assert [v.correct for v in verdicts[1:]] == [True, True, False]


def test_stuck_worker_is_killed_and_replaced() -> None:
    """A worker that ignores its own alarm (here: SIGSTOPped) is killed by the parent's hard
    deadline; the item comes back as a timeout and a fresh worker takes over."""
    with VerifierPool(num_workers=1, timeout_s=TIMEOUT_S) as p:
        assert p.verify(["1"], ["1"])[0].correct
        stuck = p._workers[0].process
        os.kill(stuck.pid, signal.SIGSTOP)
        start = time.monotonic()
        (verdict,) = p.verify(["2"], ["2"])
        assert time.monotonic() - start < TIMEOUT_S + 1.0
        assert verdict.status == "timeout" and not verdict.correct
        assert not stuck.is_alive()
        assert p.stats["worker_restarts"] == 1 and p.stats["timeouts"] == 1
        assert [v.correct for v in p.verify(["2", "3"], ["2", "4"])] == [True, False]


def test_stats_and_close() -> None:
    p = VerifierPool(num_workers=1, timeout_s=TIMEOUT_S)
    p.verify(["1", "1"], ["1", None])
    procs = [w.process for w in p._workers]
    stats = p.stats
    assert stats["ok"] == 1 and stats["no_answer"] == 1
    assert {"ok", "timeouts", "parse_errors", "worker_restarts"} <= stats.keys()
    p.close()
    p.close()  # idempotent
    assert not any(proc.is_alive() for proc in procs)
    with pytest.raises(RuntimeError, match="closed"):
        p.verify(["1"], ["1"])


def test_verify_answers_convenience() -> None:
    verdicts = verify_answers(["\\frac{1}{2}", "7"], ["0.5", None], timeout_s=2.0, num_workers=1)
    assert [(v.correct, v.status) for v in verdicts] == [(True, "ok"), (False, "no_answer")]


def test_repeated_pairs_are_scored_once() -> None:
    from core.answers import VerifierPool

    with VerifierPool(num_workers=1, timeout_s=5.0) as pool:
        verdicts = pool.verify(["1/2"] * 4 + ["3"], ["\\frac{1}{2}"] * 3 + ["0.4", "3"])
        assert [v.correct for v in verdicts] == [True, True, True, False, True]
        assert pool.stats["ok"] == 3  # \\frac{1}{2} once, 0.4, 3
        again = pool.verify(["1/2", "3", "5"], ["\\frac{1}{2}", "3", "5"])  # two from the last call
        assert [v.correct for v in again] == [True, True, True] and pool.stats["ok"] == 4


def test_cache_is_bounded() -> None:
    from core.answers import VerifierPool

    with VerifierPool(num_workers=1, timeout_s=5.0, cache_size=2) as pool:
        pool.verify(["1", "2", "3"], ["1", "2", "3"])
        pool.verify(["1"], ["1"])  # evicted (only the last two kept): scored again
        assert pool.stats["ok"] == 4
        pool.verify(["3"], ["3"])
        assert pool.stats["ok"] == 4
