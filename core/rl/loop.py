"""The T1 RL story, top to bottom, over a run folder:

    for each step:  sample -> reward -> select -> advantages -> update -> anchor   (Trainer.step)
                    sync the sampler's weights -> log metrics and rollouts
                    every eval_every steps (and at the end): held-out evaluation
                    every save_every steps (and at the end): a resumable checkpoint

Simplified from the paper, on purpose and configurable: K=8 samples per prompt instead of 64,
16 prompts per step instead of 32, a 128-token limit instead of 10k, learning rate scaled to a
1M-parameter model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from core.config import EvalConfig
from core.dist import full_state, is_sharded
from core.evaluate import evaluate
from core.models import save_policy
from core.rl.trainer import Trainer
from core.store import Run, StoreError, heldout_name
from core.tasks import Task
from core.tensor_state import load_tree, save_tree
from core.types import Problem, Say


@dataclass(frozen=True)
class HeldOut:
    """What the held-out evaluations score: the evaluation task (it checks the answers) and its
    problems. The task may differ from the training task (train on MATH train, measure on MATH500)."""

    task: Task
    problems: Sequence[Problem]


def train(trainer: Trainer, run: Run, heldout: HeldOut, eval_cfg: EvalConfig, init: str,
          say: Say, progress: bool = True) -> dict:
    """Run the remaining steps into `run`; returns the last held-out evaluation. `init` is the
    policy the run started from (recorded in each checkpoint's resume state)."""
    c = trainer.cfg
    last_eval: dict = {}
    bar = tqdm(range(trainer.step_idx, c.steps), desc="rl", unit="step", disable=not progress,
               initial=trainer.step_idx, total=c.steps)
    for _ in bar:
        try:
            metrics, rows = trainer.step()
        except FloatingPointError as e:  # nothing is saved from bad weights: the last checkpoint stands
            last = run.latest_checkpoint()
            raise FloatingPointError(f"{e}; the last good checkpoint is {last or 'none (no step was saved yet)'}") from None
        t_sync = time.perf_counter()
        # the vLLM engine holds a copy of the weights; hf shares them (or decodes a sharded policy's replica)
        trainer.sampler.sync_weights(trainer.sampling_policy())
        metrics["time/sync_weights_s"] = time.perf_counter() - t_sync
        run.log_metrics(metrics)
        run.append_samples(metrics["step"], rows)
        say(step_line(metrics))
        bar.set_postfix(reward=f"{metrics['reward/mean']:.2f}", len=f"{metrics['rollout/len_mean']:.0f}")
        s = trainer.step_idx
        if (c.eval_every and s % c.eval_every == 0) or s == c.steps:
            last_eval = {"step": s, **heldout_eval(trainer, heldout, eval_cfg, run, s)}
            run.log_metrics(last_eval)
            say(f"step {s}: held-out accuracy {last_eval['eval/acc']:.1%}, mean length "
                f"{last_eval['eval/len_mean']:.0f}, truncated {last_eval['eval/truncated_frac']:.1%}")
        if (c.save_every and s % c.save_every == 0) or s == c.steps:
            save_checkpoint(trainer, run, init)
    return last_eval


def heldout_eval(trainer: Trainer, heldout: HeldOut, cfg: EvalConfig, run: Run, step: int) -> dict:
    """The policy's held-out figures (the eval section: seed, samples, temperature, limits);
    the per-sample rows go to eval/heldout_step_N.jsonl (paired comparisons of runs read them)."""
    summary, rows = evaluate(trainer.sampler, heldout.task, list(heldout.problems), cfg, dist=trainer.dist)
    run.write_eval(heldout_name(step), rows)
    return summary


def save_checkpoint(trainer: Trainer, run: Run, init: str) -> None:
    """checkpoints/step_N: the policy in HF format (merged when LoRA, so any loader reads it;
    the adapters beside it), the resume state, then the COMPLETE marker. Rank 0 writes it: the
    weights and the trainer state are whole there (gathered from every rank when sharded)."""
    weights = full_state(trainer.policy) if is_sharded(trainer.policy) else None
    state = trainer.state()
    if not trainer.dist.main:
        return
    path = run.begin_checkpoint(run.checkpoint_dir(trainer.step_idx))
    save_policy(trainer.policy, trainer.tok, path, weights)
    if trainer.cfg.lora.enabled:
        trainer.policy.save_pretrained(path / "adapter")
    save_tree({**state, "init": init}, run.trainer_state_path(path))
    run.mark_checkpoint_complete(path)


def load_resume_state(run: Run, checkpoint: Path) -> dict:
    """The resume state saved in `checkpoint` (safetensors + JSON: loading runs no code);
    StoreError for a missing or unreadable one, and for a pickled state of an earlier version,
    which is never unpickled."""
    if run.pickled_state_only(checkpoint):
        raise StoreError(f"{checkpoint}: its resume state is a pickle (written by an earlier version of the "
                         "lab), which can run code when loaded: not loaded; start a new run from this "
                         "checkpoint instead (rl.init=<checkpoint folder>)")
    return load_tree(run.trainer_state_path(checkpoint))


def step_line(m: dict) -> str:
    """The human log line of one RL step, from the same dict that goes to metrics.jsonl."""
    seconds = sum(v for k, v in m.items() if k.startswith("time/"))
    return (f"step {m['step']}: reward {m['reward/mean']:+.2f}, acc {m['rollout/acc']:.0%}, "
            f"groups solved {m['rollout/group_pass_frac']:.0%}, len {m['rollout/len_mean']:.0f}/"
            f"{m['rollout/len_max']}, truncated {m['rollout/truncated_frac']:.0%}, penalties "
            f"{m['penalty/overlong']}/{m['penalty/repetitive']}/{m['penalty/garbled']}, "
            f"entropy {m['loss/entropy']:.3f}, kl {m['kl/anchor']:.3f}, grad {m['optim/grad_norm']:.2f}, "
            f"lr {m['optim/lr']:.1e}, {seconds:.1f}s ({m['perf/sampled_tokens_per_s']:.0f} tok/s)")
