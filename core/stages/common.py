"""What every stage shares: the context a stage runs in and the checks its preflight makes.

A stage is one command's story (`run`) and the check of the inputs it names (`preflight`),
which runs before any run folder is made, so bad input fails fast and leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.config import ConfigError, SamplingConfig, TaskConfig
from core.dist import SINGLE, Dist, check_world
from core.models import EMBEDDED, ModelLoadError, check_reachable, check_weights, resolve_source
from core.overrides import non_defaults, to_dict
from core.sampling import VLLM_MISSING
from core.store import (
    FollowerRun,
    Run,
    StoreError,
    find_runs,
    is_run_dir,
    new_run,
    resolve_checkpoint,
    resolve_path,
)
from core.tasks import GENERATED, TaskError, make_task, task_problems, train_pool
from core.tasks.math import refuse_training_on
from core.trackers import check_installed, mirrored
from core.types import Say


@dataclass(frozen=True)
class Context:
    """How a stage runs: where its log lines go, progress bars, the runs folder that run names
    resolve in, whether it continues a run (`--resume`), and this process's rank under torchrun
    (`core.dist`; rank 0 speaks and writes, the others get a silent `say` and no bars)."""

    say: Say = print
    progress: bool = True
    runs_dir: Path | str = "runs"
    resume: bool = False
    dist: Dist = SINGLE

    def for_rank(self) -> Context:
        """This context as this rank runs it: unchanged on rank 0, silent on the others."""
        return self if self.dist.main else replace(self, say=_silent, progress=False)


def _silent(line: str) -> None:
    """What ranks other than 0 do with a log line."""


def check_backends(*samplings: SamplingConfig) -> None:
    """A vllm backend needs vllm installed (checked without importing it)."""
    if any(s.backend == "vllm" for s in samplings) and importlib.util.find_spec("vllm") is None:
        raise ConfigError(VLLM_MISSING)


def check_model(name: str, runs_dir: Path | str) -> str:
    """The model `name` stands for (a run, checkpoint folder or hub id), checked to exist and,
    for a local folder, that its weights files are whole."""
    source = resolve_source(resolve_checkpoint(name, runs_dir))
    if Path(source).exists():
        check_weights(source)
    else:
        check_reachable(source)
    return source


def check_task(cfg: TaskConfig, split: str | None = None, limit: int = 0) -> None:
    """The task loads (a math data set: its file or hub id) and, given a split, has the
    problems asked for (`limit`, 0 = all of a finite data set; "train": what RL draws from,
    refused for an evaluation set)."""
    if cfg.name in GENERATED and split is None:
        return
    if split == "train" and not cfg.eval_only:
        refuse_training_on(cfg.name)
    task = make_task(cfg)
    if split == "train":
        train_pool(task)
    elif split is not None:
        task_problems(task, split, limit)


def trained_on(model: str, runs_dir: Path | str) -> str | None:
    """The task.name of the lab run a model comes from (a run, or a checkpoint inside one), or
    None for anything else (a hub id, a folder made elsewhere)."""
    path = resolve_path(model, runs_dir)
    if path is None:
        return None
    for folder in (path, *path.resolve().parents):  # a checkpoint folder holds a config.json too
        if is_run_dir(folder) and (task := Run(folder).setting("task.name")):
            return str(task)
    return None


def check_same_task(model: str, cfg: TaskConfig, runs_dir: Path | str, option: str) -> None:
    """A model the lab trained on an embedded task, used on another task (or a model of another
    task used on an embedded one): refused, since its tokenizer, prompts and answers are that
    task's. The usual slip: `lab rl rl.init=<minimath SFT run>` without `--preset minimath`."""
    trained = trained_on(model, runs_dir)
    if trained and trained != cfg.name and (trained in GENERATED or cfg.name in GENERATED):
        raise TaskError(f"{option}={model} was trained on task {trained}, but task.name={cfg.name}: "
                        f"pass task.name={trained} (or the preset that made it, e.g. --preset {trained})")


def require_trained(model_name: str, command: str) -> None:
    if model_name == EMBEDDED:
        raise TaskError(f"lab {command} needs a trained model: model.name=<run folder or checkpoint or hub id>")


def latest_sft_checkpoint(runs_dir: Path | str) -> str:
    """The final checkpoint of the newest complete SFT run (where RL starts by default)."""
    runs = find_runs(runs_dir, stage="sft", status="complete", with_checkpoint=True)
    if not runs:
        raise TaskError(f"no complete SFT run in {runs_dir}: run `python -m lab sft` first or set rl.init")
    return str(runs[0].final_checkpoint())


def launch(command: str, job: Any, preflight: Callable[[Any, Path | str], None],
           story: Callable[[Any, Run, Context], dict], ctx: Context,
           run_id: str | None = None) -> tuple[Run, dict]:
    """What every command does with its built config: say what differs from the defaults,
    check its inputs, make the run folder, run the story, write summary.json (= complete).
    Under torchrun every rank checks the inputs and runs the story; rank 0 makes and writes the
    run folder, the others hold a handle on it that drops writes (`core.store.FollowerRun`)."""
    ctx = ctx.for_rank()
    changed = non_defaults(job)
    ctx.say(f"{command}: " + (", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"))
    check_world(job, ctx.dist)
    check_installed(getattr(job, "log", None))
    preflight(job, ctx.runs_dir)
    run = rank_run(ctx.dist, lambda: new_run(ctx.runs_dir, command, to_dict(job), run_id=run_id))
    ctx.say(f"run folder {run.path}" + (f" ({ctx.dist.world} ranks)" if ctx.dist.active else ""))
    with mirrored(run, getattr(job, "log", None) if ctx.dist.main else None, to_dict(job), ctx.say):
        out = story(job, run, ctx)
        run.write_summary(out)
    return run, out


def rank_run(dist: Dist, make: Callable[[], Run]) -> Run:
    """The run folder `make` makes on rank 0; on the other ranks a FollowerRun on the same path."""
    made = make() if dist.main else None
    path = dist.broadcast(str(made.path) if made is not None else None)
    return made if made is not None else FollowerRun(Path(path))


def same_start(dist: Dist, checkpoint: Path | None) -> None:
    """Every rank resumes from the same checkpoint (or none), checked before rank 0 rewinds the
    run to it: StoreError otherwise (a checkpoint one rank could read and another not)."""
    seen = dist.gather(str(checkpoint) if checkpoint else None)
    if len(set(seen)) > 1:
        raise StoreError(f"the ranks would resume from different checkpoints ({', '.join(map(str, seen))}); "
                         "nothing was changed")


def newest_loadable(run: Run, load: Callable[[Path], Any], say: Say) -> tuple[Path, Any] | None:
    """(checkpoint, what `load` made of it) for the run's newest complete checkpoint that loads;
    a damaged one is said and the one before tried. None when the run has no checkpoint yet;
    StoreError, with nothing changed, when it has some and none loads."""
    found = run.checkpoints()
    for _, ckpt in reversed(found):
        try:
            return ckpt, load(ckpt)
        except (StoreError, ModelLoadError, KeyError) as e:
            say(f"cannot resume from {ckpt.name}: {e}; trying the checkpoint before it")
    if found:
        raise StoreError(f"none of the checkpoints of {run.path} can be resumed from (see above); nothing was changed")
    return None
