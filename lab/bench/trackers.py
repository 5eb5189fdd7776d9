"""Cost of experiment trackers on an RL run: none, a tracker that raises on every call, TensorBoard.

    python -m lab.bench.trackers [--model PATH|RUN] [--steps 8] [--repeats 3]

Runs `lab rl` (the embedded default's settings, `--steps` steps, no held-out evaluation
between) in one process, interleaved `--repeats` times: with no tracker (the unit), with a
tracker whose every call raises ConnectionError (a dead network: the run must neither stop
nor slow down), and with TensorBoard writing its event files. Prints the wall seconds of each
and the median ratio to the unit; last stdout line JSON.
Model: --model, else the newest SFT run's final checkpoint under --runs-dir, else a randomly
initialised embedded model saved to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from lab.bench import pick_model


class _Raising:
    """A tracker whose every call raises, as one behind a dead network does."""

    name = "tensorboard"

    def __init__(self, run: object, cfg: object) -> None:
        pass

    def __getattr__(self, what: str):  # type: ignore[no-untyped-def]
        def fail(*args: object, **kwargs: object) -> None:
            raise ConnectionError("tracker unreachable")
        return fail


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from core import trackers
    from core.commands import run_command
    from core.models import build_tiny_model, save_policy

    tmp = Path(tempfile.mkdtemp(prefix="bench-trackers-"))
    model = pick_model(args.model, args.runs_dir)
    if model is None:
        model = str(save_policy(*build_tiny_model(), tmp / "random"))
    base = {"rl.init": model, "rl.steps": args.steps, "rl.eval_every": 0, "rl.save_every": 0,
            "eval.num_problems": 20}
    real = trackers.CLIENTS["tensorboard"]

    def one(arm: str) -> float:
        over = dict(base)
        if arm != "none":
            over["log.report_to"] = "tensorboard"
        trackers.CLIENTS["tensorboard"] = _Raising if arm == "raising" else real
        t0 = time.perf_counter()
        run_command("rl", over, tmp / arm, say=lambda s: None, progress=False)
        return time.perf_counter() - t0

    arms = ("none", "raising", "tensorboard")
    print(f"model {model}; {args.steps} RL steps per run; {args.repeats} interleaved repeats")
    one("none")  # warm-up
    times: dict[str, list[float]] = {a: [] for a in arms}
    for k in range(args.repeats):
        for a in arms:
            times[a].append(one(a))
        print(f"repeat {k}: " + ", ".join(f"{a} {times[a][-1]:.2f} s" for a in arms))
    trackers.CLIENTS["tensorboard"] = real
    ratio = {a: statistics.median(t / u for t, u in zip(times[a], times["none"])) for a in arms[1:]}
    print(f"median: no tracker {statistics.median(times['none']):.2f} s; raising tracker {ratio['raising']:.3f}x; "
          f"tensorboard {ratio['tensorboard']:.3f}x")
    print(json.dumps({"none_s": statistics.median(times["none"]), "raising_ratio": ratio["raising"],
                      "tensorboard_ratio": ratio["tensorboard"], "steps": args.steps, "model": model}))


if __name__ == "__main__":
    main()
