"""The demo's stages timed in one process, with the held-out figures they reach.

    python -m lab.bench.demo_time [--runs-dir DIR] [key=value ...]

Runs `python -m lab demo --no-serve` in this process (into a temporary runs folder unless
--runs-dir) and prints the seconds of each stage (synth, SFT, RL, budget sweep, and the
report), the total, and SFT's and RL's held-out accuracy, set against the targets: the whole
demo within 4 minutes on the 2-core machine, install excluded, at no lower accuracy than SFT
55% and RL 69%. `key=value` overrides go to the stages as the demo's preset does (for a quick
smoke run, e.g. sft.max_steps=5 rl.steps=2). Last stdout line: JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 240.0
TARGET_ACC = {"sft/acc": 0.55, "rl/acc": 0.69}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", type=Path, help="keep the runs here (default: a temporary folder)")
    p.add_argument("overrides", nargs="*", help="key=value settings for the demo's stages")
    args = p.parse_args(argv)

    from core.config import JOBS, ConfigError
    from core.experiments.demo import RL_OVERRIDES, run_demo, stage_presets
    from core.overrides import build
    from core.stages import Context
    from core.store import new_run
    from lab.cli import _parse_overrides

    try:
        preset = _parse_overrides(args.overrides)
        for stage, job in stage_presets(preset).items():  # a bad key or value: an error before any work
            build(JOBS[stage], job, {})
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.runs_dir or Path(tmp)
        t0 = time.perf_counter()
        run = new_run(runs_dir, "demo", {"rl_overrides": RL_OVERRIDES, "preset": preset})
        figures = run_demo(run, Context(lambda s: None, False, runs_dir), preset)
        run.write_summary(figures)
        total = time.perf_counter() - t0
    stages = {k: v for k, v in figures["time_s"].items() if v is not None}
    stages["report"] = max(total - sum(stages.values()), 0.0)
    for stage, seconds in stages.items():
        print(f"{stage:>8}: {seconds:7.1f} s")
    ok_time = total <= TARGET_S
    print(f"{'total':>8}: {total:7.1f} s (target <= {TARGET_S:.0f} s) {'ok' if ok_time else 'SLOWER than target'}")
    for key, floor in TARGET_ACC.items():
        value = figures.get(key)
        verdict = "ok" if value is not None and value >= floor else "BELOW target"
        print(f"{key}: {value if value is None else f'{value:.1%}'} (target >= {floor:.0%}) {verdict}")
    print(json.dumps({"total_s": total, "stages_s": stages, "sft_acc": figures.get("sft/acc"),
                      "rl_acc": figures.get("rl/acc"), "overrides": preset}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
