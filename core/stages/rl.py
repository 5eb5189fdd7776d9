"""`python -m lab rl`: the T1 recipe from an SFT policy; with --resume, from the run's last
checkpoint. Setup here (policy, sampler, data, resume), the steps in `core.rl.loop.train`."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from core.config import RLJob
from core.models import apply_lora, load_model
from core.rl.loop import heldout_eval, load_resume_state, train
from core.rl.trainer import Trainer
from core.sampling import make_sampler
from core.stages.common import (
    Context,
    check_backends,
    check_model,
    check_task,
    latest_sft_checkpoint,
)
from core.store import Run, resolve_checkpoint
from core.tasks import make_task, task_problems


def preflight(job: RLJob, runs_dir: Path | str) -> None:
    check_backends(job.rl.sampling, job.eval.sampling)
    check_model(start_policy(job, runs_dir), runs_dir)
    check_task(job.task)


def start_policy(job: RLJob, runs_dir: Path | str) -> str:
    """rl.init (a run, checkpoint or hub id), or the newest complete SFT run's model."""
    return resolve_checkpoint(job.rl.init, runs_dir) if job.rl.init else latest_sft_checkpoint(runs_dir)


def run(job: RLJob, run: Run, ctx: Context) -> dict:
    t0, say = time.time(), ctx.say
    task = make_task(job.task)
    resumed = load_resume_state(run) if ctx.resume else None
    if resumed is None:
        init = start_policy(job, ctx.runs_dir)
        load_from = init
    else:  # LoRA resumes from the base weights plus the saved adapters; full fine-tuning from the checkpoint
        ckpt, state = resumed
        init = state["init"]
        load_from = resolve_checkpoint(init, ctx.runs_dir) if job.rl.lora.enabled else ckpt
    policy, tok = load_model(replace(job.model, name=load_from), seed=job.rl.seed, train=True)
    if job.rl.lora.enabled:
        torch.manual_seed(job.rl.seed)  # LoRA's A matrices start random: same seed, same run
        policy = apply_lora(policy, job.rl.lora)
    sampler = make_sampler(job.rl.sampling.backend, policy, tok, job.rl.sampling)
    train_set = task_problems(task, "train", 50_000 if job.task.name == "pairsum" else 0)
    heldout = task_problems(task, job.eval.split, job.eval.num_problems)
    trainer = Trainer(policy, tok, sampler, task, train_set, job.rl)
    if resumed is not None:
        trainer.load_state(resumed[1])
        run.rewind(trainer.step_idx)
        say(f"resumed from {resumed[0]} at step {trainer.step_idx}")
    else:
        r = job.rl
        say(f"RL from {init}: {r.prompts_per_step} prompts x {r.num_generations} samples at "
            f"temperature {r.sampling.temperature}, anchor {r.anchor}, beta {r.beta}")
        start = {"step": 0, "init": init, **heldout_eval(trainer, heldout, job.eval)}
        run.log_metrics(start)
        say(f"step 0: held-out accuracy {start['eval/acc']:.1%}")
    final_eval = train(trainer, run, heldout, job.eval, init, say, ctx.progress)
    first = next((m for m in run.metrics() if m.get("step") == 0 and "eval/acc" in m), {})
    return {"eval/acc_start": first.get("eval/acc"), **final_eval,
            "eval/acc_gain": final_eval.get("eval/acc", 0) - (first.get("eval/acc") or 0),
            "checkpoint": str(run.latest_checkpoint()), "time_s": time.time() - t0}
