"""Throughput and robustness of the math-verify pool (`core.answers.VerifierPool`).

    python -m lab.bench.scorer [--workers 2] [--timeout 2.0] [--repeats 1]

1. Throughput: the 500 MATH500 gold answers (lab/bench/data/math500_answers.json), each
   verified against itself (must be correct) and against a perturbed answer (first integer
   + 1; must be wrong), in one pool call: verifications per second, accuracy of both halves.
2. Adversarial inputs, one call each: a 100k-character string, a power tower, 500 nested
   braces, malformed LaTeX. Each must return within timeout + 1 s (a timeout verdict or a
   plain answer); then the pool must still verify a gold against itself.
Last stdout line: JSON with `verifications_per_s`, `timeouts`, `max_item_s`.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from core.answers import VerifierPool

DATA = Path(__file__).parent / "data" / "math500_answers.json"
# Answers with no digit to bump get a hand-picked wrong answer.
NON_NUMERIC_WRONG = {"p - q": "p + q", "\\text{Evelyn}": "\\text{Bob}", "\\pi": "2\\pi"}
ADVERSARIAL = {
    "100k characters": "1+" * 50_000,
    "power tower 9^{9^{9^{9}}}": "9^{9^{9^{9}}}",
    "500 nested braces": "{" * 500 + "1" + "}" * 500,
    "malformed LaTeX": "\\frac{1}{\\sqrt{2}\\left(\\begin{matrix}1&2\\\\ \\end{pmatrix}}}",
    "huge factorial": "100000!",
}


def perturb(gold: str) -> str:
    """A truly different answer: the first integer in `gold` plus one."""
    if gold in NON_NUMERIC_WRONG:
        return NON_NUMERIC_WRONG[gold]
    bumped = re.sub(r"\d+", lambda m: str(int(m.group()) + 1), gold, count=1)
    return bumped if bumped != gold else gold + "+1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=2.0, help="hard per-item timeout, seconds")
    p.add_argument("--repeats", type=int, default=1, help="passes over the 1000 pairs")
    args = p.parse_args()
    golds: list[str] = json.loads(DATA.read_text())["answers"]
    with VerifierPool(num_workers=args.workers, timeout_s=args.timeout) as pool:
        pool.verify(golds[:2], golds[:2])  # start the workers outside the timing
        pairs_g = (golds + golds) * args.repeats
        pairs_p = (golds + [perturb(g) for g in golds]) * args.repeats
        t0 = time.perf_counter()
        verdicts = pool.verify(pairs_g, pairs_p)
        elapsed = time.perf_counter() - t0
        n = len(golds)
        right = sum(v.correct for v in verdicts[:n]) / n
        wrong_rejected = sum(not v.correct for v in verdicts[n : 2 * n]) / n
        rate = len(verdicts) / elapsed
        print(f"{len(verdicts)} verifications in {elapsed:.2f} s: {rate:.0f}/s with {args.workers} workers; "
              f"golds vs themselves correct {right:.1%}, vs perturbed rejected {wrong_rejected:.1%}")
        timeouts, max_item = 0, 0.0
        for name, bad in ADVERSARIAL.items():
            for gold, pred in ((golds[0], bad), (bad, golds[0])):
                t1 = time.perf_counter()
                [v] = pool.verify([gold], [pred])
                took = time.perf_counter() - t1
                max_item = max(max_item, took)
                timeouts += v.status == "timeout"
                ok = "within" if took <= args.timeout + 1 else "OVER"
                print(f"  {name:28s} as {'prediction' if pred is bad else 'gold':10s}: {v.status:11s} "
                      f"{took:5.2f} s ({ok} timeout + 1 s)")
        [after] = pool.verify([golds[1]], [golds[1]])
        print(f"pool after adversarial inputs: {'works' if after.correct else 'BROKEN'}; stats {pool.stats}")
    print(json.dumps({"verifications_per_s": rate, "timeouts": timeouts, "max_item_s": max_item,
                      "gold_self_acc": right, "perturbed_rejected": wrong_rejected,
                      "pool_ok_after": after.correct, "workers": args.workers, "timeout_s": args.timeout}))


if __name__ == "__main__":
    main()
