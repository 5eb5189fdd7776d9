"""Benchmarks of the lab against reference implementations."""

from __future__ import annotations


def pick_model(name: str | None, runs_dir: str) -> str | None:
    """The model folder of `name` (a folder or run), else of the newest SFT run; None if none."""
    from core.stages.common import latest_sft_checkpoint
    from core.store import resolve_checkpoint
    from core.tasks import TaskError

    if name is not None:
        return resolve_checkpoint(name, runs_dir)
    try:
        return latest_sft_checkpoint(runs_dir)
    except TaskError:
        return None
