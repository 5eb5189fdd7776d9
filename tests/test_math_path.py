"""The math path end to end at toy size, as `lab/bench/gpu_checks.sh` runs it at Qwen2.5-0.5B's
size on a GPU: a random model with the embedded math tokenizer -> SFT on minimath traces -> T1 RL
-> budget sweep, answers scored by math-verify. Slow (a minute on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.store import find_runs, read_jsonl
from tests.conftest import ROOT


@pytest.mark.slow
def test_math_path_end_to_end_toy(tmp_path) -> None:
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "lab.bench.math_path", "--device", "cpu", "--arch", "toy",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    for phase in ("sft", "rl", "budget"):
        assert figures[f"{phase}_s"] > 0 and figures[f"{phase}_tokens_per_s"] > 0, phase
    assert len(figures["rl_step_s"]) == 2
    (sft,), (rl,), (budget,) = (find_runs(out, stage=s, status="complete") for s in ("sft", "rl", "budget"))
    assert sft.setting("task.name") == rl.setting("task.name") == budget.setting("task.name") == "minimath"
    assert json.loads((sft.path / "checkpoints" / "final" / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    # rollouts were scored by math-verify (a status per verdict), with T1's reward parts
    rows = [r for f in sorted((rl.path / "samples").glob("*.jsonl")) for r in read_jsonl(f)]
    assert rows and all("reward" in r and "correct" in r for r in rows)
    heldout = read_jsonl(sft.path / "eval" / "heldout.jsonl")
    assert heldout and {r["status"] for r in heldout} <= {"ok", "no_answer", "parse_error", "timeout"}
    curves = sorted((budget.path / "curves").glob("*.json"))
    assert [c.stem for c in curves] == ["step_00000", "step_00002"]
    points = json.loads(curves[-1].read_text())["points"]
    assert [p["budget_tokens"] for p in points][:3] == [8, 16, 48]
