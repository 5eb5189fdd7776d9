"""`python -m lab rl`: the T1 recipe from an SFT policy; with --resume, from the run's last
checkpoint. Setup here (policy, sampler, data, resume), the steps in `core.rl.loop.train`."""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from core.config import ConfigError, RLJob
from core.dist import shard_model
from core.models import EMBEDDED, apply_lora, load_model
from core.rl.loop import HeldOut, heldout_eval, load_resume_state, train
from core.rl.trainer import Trainer
from core.sampling import make_sampler
from core.stages.common import (
    Context,
    check_backends,
    check_model,
    check_same_task,
    check_task,
    latest_sft_checkpoint,
    newest_loadable,
    same_start,
)
from core.store import Run, resolve_checkpoint
from core.tasks import Task, eval_task_config, make_task, task_problems, train_pool
from core.tasks.math import MathTask


def preflight(job: RLJob, runs_dir: Path | str) -> None:
    check_backends(job.rl.sampling, job.eval.sampling)
    init = start_policy(job, runs_dir)
    check_model(init, runs_dir)
    check_same_task(init, job.task, runs_dir, "rl.init")
    check_task(job.task, "train")  # an evaluation set is refused here, before any run folder
    check_task(eval_task_config(job.task, job.eval.task), job.eval.split, job.eval.num_problems)


def start_policy(job: RLJob, runs_dir: Path | str) -> str:
    """rl.init (a run, checkpoint or hub id), else model.name when it names one (`lab rl
    model.name=runs/<sft run>` reads as naturally), else the newest complete SFT run's model."""
    named = job.model.name if job.model.name != EMBEDDED else ""
    if job.rl.init and named and job.rl.init != named:
        raise ConfigError(f"rl.init={job.rl.init} and model.name={named} both name the policy RL starts from: set one")
    start = job.rl.init or named
    return resolve_checkpoint(start, runs_dir) if start else latest_sft_checkpoint(runs_dir)


def run(job: RLJob, run: Run, ctx: Context) -> dict:
    t0, say = time.time(), ctx.say
    task, heldout = tasks_of(job)
    train_set = train_pool(task)
    if decontaminated := getattr(task, "decontaminated", 0):
        say(f"decontamination: dropped {decontaminated} training problems of {job.task.name} that match evaluation "
            f"problems ({', '.join(f'{k} {v}' for k, v in task.decontaminated_from.items())}); {len(train_set)} left")
    resumed = resume_point(job, run, ctx) if ctx.resume else None
    same_start(ctx.dist, resumed[0] if resumed else None)
    if resumed is None:
        if ctx.resume:  # killed before its first checkpoint: what it logged is dropped, it starts over
            run.rewind(-1)
            say(f"{run.path} has no checkpoint to resume from: starting over in it (its partial rows dropped)")
        init = start_policy(job, ctx.runs_dir)
        policy, tok = policy_from(job, init)
    else:
        ckpt, state, policy, tok = resumed
        init = state["init"]
    replica = None
    if job.model.fsdp and ctx.dist.joined:  # the sampler decodes a whole copy; training shards the policy
        replica = copy.deepcopy(policy)
        policy = shard_model(policy, job.rl.bf16_autocast)
    sampler = make_sampler(job.rl.sampling.backend, replica or policy, tok, job.rl.sampling)
    trainer = Trainer(policy, tok, sampler, task, train_set, job.rl, ctx.dist, replica)
    if resumed is not None:
        trainer.load_state(state)
        run.rewind(trainer.step_idx)
        for moved in run.set_aside_checkpoints_after(trainer.step_idx):
            say(f"set aside {moved.name}: the run goes on from an earlier checkpoint")
        say(f"resumed from {ckpt} at step {trainer.step_idx}")
    else:
        r = job.rl
        say(f"RL from {init}: {r.prompts_per_step} prompts x {r.num_generations} samples at "
            f"temperature {r.sampling.temperature}, anchor {r.anchor}, beta {r.beta}")
        start = {"step": 0, "init": init, **heldout_eval(trainer, heldout, job.eval, run, 0)}
        run.log_metrics(start)
        say(f"step 0: held-out accuracy {start['eval/acc']:.1%}")
    final_eval = train(trainer, run, heldout, job.eval, init, say, ctx.progress)
    first = next((m for m in run.metrics() if m.get("step") == 0 and "eval/acc" in m), {})
    return {"eval/acc_start": first.get("eval/acc"), **final_eval, "eval/task": heldout.task.name,
            "data/train_problems": len(train_set), "data/decontaminated": decontaminated,
            "eval/acc_gain": final_eval.get("eval/acc", 0) - (first.get("eval/acc") or 0),
            "checkpoint": str(run.latest_checkpoint()), "time_s": time.time() - t0}


def tasks_of(job: RLJob) -> tuple[Task, HeldOut]:
    """The training task and what the held-out evaluations score (eval.task, or the default for
    the training task); the evaluation problems join decontamination's list."""
    task = make_task(job.task)
    ev_cfg = eval_task_config(job.task, job.eval.task)
    ev_task = task if ev_cfg == job.task else make_task(ev_cfg)
    heldout = HeldOut(ev_task, task_problems(ev_task, job.eval.split, job.eval.num_problems))
    if ev_task is not task and isinstance(task, MathTask):
        task.exclude(heldout.problems, ev_task.name)
    return task, heldout


def policy_from(job: RLJob, name: str) -> tuple[Any, Any]:
    """The policy (with fresh LoRA adapters when rl.lora is on) and its tokenizer."""
    policy, tok = load_model(replace(job.model, name=name), seed=job.rl.seed, train=True)
    if job.rl.lora.enabled:
        torch.manual_seed(job.rl.seed)  # LoRA's A matrices start random: same seed, same run
        policy = apply_lora(policy, job.rl.lora)
    return policy, tok


def resume_point(job: RLJob, run: Run, ctx: Context) -> tuple[Path, dict, Any, Any] | None:
    """(checkpoint, resume state, policy, tokenizer) of the newest checkpoint that loads, or None
    before the first. LoRA resumes from the base weights plus the saved adapters; full
    fine-tuning from the checkpoint's weights."""
    def load(ckpt: Path) -> tuple[dict, Any, Any]:
        state = load_resume_state(run, ckpt)
        base = resolve_checkpoint(str(state["init"]), ctx.runs_dir)
        return state, *policy_from(job, base if job.rl.lora.enabled else str(ckpt))

    found = newest_loadable(run, load, ctx.say)
    return None if found is None else (found[0], *found[1])
