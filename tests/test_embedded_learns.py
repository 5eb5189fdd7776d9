"""The embedded default learns for real (the foundation's acceptance line), on this CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_default_sft_reaches_half_and_corrects_itself(tmp_path) -> None:
    """`python -m lab sft` with defaults: >= 50% held-out accuracy at temperature 1.0 and
    >= 30% of responses with a failed attempt that is then fixed."""
    proc = subprocess.run([sys.executable, "-m", "lab", "sft", "-q", "--runs-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["eval/n"] == 500
    assert out["eval/acc"] >= 0.5, out
    assert out["eval/corrected_frac"] >= 0.3, out
