"""`python -m lab sft`: synthesize (unless sft.data is given) -> train -> save -> evaluate."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from core.config import EvalConfig, SFTJob, SynthJob
from core.dist import full_state, is_sharded, shard_model
from core.models import apply_lora, count_parameters, load_model, save_policy
from core.sft import build_examples, dropped_warning, trace_problem, train_sft
from core.stages import synth
from core.stages.common import (
    Context,
    Say,
    check_backends,
    check_model,
    check_task,
    newest_loadable,
    same_start,
)
from core.stages.eval import evaluate_model
from core.store import Run, StoreError, open_run, read_jsonl, resolve_path
from core.tasks import GENERATED, Task, TaskError, eval_task_config, make_task, task_problems
from core.tasks.decontam import eval_set_of, question_key
from core.tensor_state import load_tree, save_tree


def preflight(job: SFTJob, runs_dir: Path | str) -> None:
    check_backends(job.eval.sampling)
    if job.sft.data:  # read whole: an empty, non-UTF-8 or malformed file fails here, not after the folder
        traces, where = load_traces(job.sft.data, runs_dir)
        for i, trace in enumerate(traces, 1):
            trace_problem(trace, f"{where}: trace {i}")
    elif job.task.name not in GENERATED:
        raise TaskError(f"lab sft on task.name={job.task.name} needs traces: sft.data=<synth run or .jsonl> (make "
                        "them with `lab synth teacher.models=...` or teacher.dataset=THUDM/T1); the programmatic "
                        "teacher only knows the embedded tasks")
    if job.model.name != "embedded":
        check_model(job.model.name, runs_dir)
    check_task(eval_task_config(job.task, job.eval.task), job.eval.split, job.eval.num_problems)


def run(job: SFTJob, run: Run, ctx: Context) -> dict:
    """synthesize (unless sft.data is given) -> train (checkpoints every sft.save_every steps)
    -> save -> evaluate. With --resume: synthesis skips what is done, training goes on from the
    newest checkpoint that loads (exactly as if it had not stopped), or from the start."""
    t0, say = time.time(), ctx.say
    task = make_task(job.task)
    ev_cfg = eval_task_config(job.task, job.eval.task)
    ev_task = task if ev_cfg == job.task else make_task(ev_cfg)
    if job.sft.data:
        traces, where = load_traces(job.sft.data, ctx.runs_dir)
        say(f"loaded {len(traces)} traces from {where}")
        synth_out: dict = {}
        if job.task.decontaminate and job.task.name not in GENERATED:
            traces, synth_out = decontaminated(traces, ev_task, job.eval, say)
    else:  # rank 0 synthesizes into the run folder; the other ranks read what it wrote
        synth_out = ctx.dist.broadcast(synth.run(SynthJob(job.task, job.synth), run, ctx) if ctx.dist.main else None)
        traces = run.traces()
    resumed = resume_point(job, run, ctx) if ctx.resume else None
    same_start(ctx.dist, resumed[0] if resumed else None)
    if resumed is None:
        if ctx.resume:
            run.rewind(-1)
        model, tok = fresh_model(job)
        state = None
    else:
        ckpt, state, model, tok = resumed
        run.rewind(state["step"])
        for moved in run.set_aside_checkpoints_after(state["step"]):
            say(f"set aside {moved.name}: the run goes on from an earlier checkpoint")
        say(f"resumed from {ckpt} at step {state['step']}")
    examples, dropped = build_examples(traces, task, tok, job.sft.max_seq_len)
    n_params = count_parameters(model)
    if job.model.fsdp and ctx.dist.joined:
        model = shard_model(model, job.sft.bf16_autocast)
    say(f"training {job.model.name} ({n_params / 1e6:.2f}M parameters) on {len(examples)} traces "
        f"({dropped} longer than {job.sft.max_seq_len} tokens dropped) for {job.sft.max_steps} steps")
    warning = dropped_warning(len(traces), dropped, job.sft.max_seq_len)
    if warning:
        say(warning)

    def save(step: int | str, resume_state: dict | None = None) -> None:
        """checkpoints/step_N (with the resume state) or checkpoints/final (without)."""
        weights = full_state(model) if is_sharded(model) else None  # every rank gathers, rank 0 gets it
        if not ctx.dist.main:  # the weights and the optimizer are whole on rank 0: it saves
            return
        path = run.begin_checkpoint(run.checkpoint_dir(step))
        save_policy(model, tok, path, weights)
        if resume_state is not None:
            adapters = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad} if job.sft.lora.enabled else {}
            save_tree({**resume_state, "adapters": adapters}, run.trainer_state_path(path))
        run.mark_checkpoint_complete(path)

    train_t0 = time.time()
    last = train_sft(model, tok, examples, job.sft, log=run.log_metrics, progress=ctx.progress, state=state,
                     save=save, dist=ctx.dist)
    train_s = time.time() - train_t0
    final = run.checkpoint_dir("final")
    save("final")
    say(f"saved the model to {final} (final loss {last['loss/sft']:.3f}, {train_s:.0f} s)")
    if is_sharded(model):  # sampling runs apart on each rank: every rank evaluates the whole saved model
        ctx.dist.barrier()
        model, tok = load_model(replace(job.model, name=str(final)), job.sft.seed)
    summary = evaluate_model(model, tok, ev_task, job.eval, run, "heldout", say, ctx.progress, ctx.dist)
    synth_out = {("synth/time_s" if k == "time_s" else k): v for k, v in synth_out.items()}
    out = {**synth_out, "sft/loss": last["loss/sft"], "sft/train_s": train_s,
           "checkpoint": str(final), **summary, "eval/task": ev_task.name, "time_s": time.time() - t0}
    run.log_metrics({"step": last["step"], **summary})
    return out


def decontaminated(traces: list[dict], ev_task: Task, cfg: EvalConfig, say: Say) -> tuple[list[dict], dict]:
    """The traces whose question matches no known evaluation problem nor one of the run's own
    evaluation set, and the count dropped per set."""
    own = {question_key(p.question): ev_task.name for p in task_problems(ev_task, cfg.split, cfg.num_problems)}
    where = [eval_set_of(str(t.get("question", "")), own) for t in traces]
    dropped = Counter(w for w in where if w)
    if dropped:
        say(f"decontamination: dropped {sum(dropped.values())} traces whose question is an evaluation problem "
            f"({', '.join(f'{k} {v}' for k, v in dropped.items())})")
    kept = [t for t, w in zip(traces, where) if w is None]
    if not kept:
        raise TaskError("every SFT trace's question is an evaluation problem: nothing left to train on")
    return kept, {"data/decontaminated": sum(dropped.values())}


def fresh_model(job: SFTJob) -> tuple[Any, Any]:
    """The model SFT starts from (with fresh LoRA adapters when sft.lora is on)."""
    model, tok = load_model(job.model, job.sft.seed, train=True, task=job.task.name)
    if job.sft.lora.enabled:
        model = apply_lora(model, job.sft.lora)
    return model, tok


def resume_point(job: SFTJob, run: Run, ctx: Context) -> tuple[Path, dict, Any, Any] | None:
    """(checkpoint, resume state, model, tokenizer) of the newest step checkpoint that loads,
    or None before the first. Full fine-tuning loads the checkpoint's weights; LoRA rebuilds the
    start model and puts the saved adapters back."""
    def load(ckpt: Path) -> tuple[dict, Any, Any]:
        state = load_tree(run.trainer_state_path(ckpt))
        if not job.sft.lora.enabled:
            return state, *load_model(replace(job.model, name=str(ckpt)), job.sft.seed, train=True)
        model, tok = fresh_model(job)
        live = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in state["adapters"].items():
                live[name].copy_(tensor)
        return state, model, tok

    found = newest_loadable(run, load, ctx.say)
    return None if found is None else (found[0], *found[1])


def traces_file(source: str, runs_dir: Path | str) -> Path:
    """The traces file named by `source`: a .jsonl path, or a synth run (folder or id)."""
    if Path(source).suffix == ".jsonl":
        path = resolve_path(source, runs_dir)
        if path is None:
            raise TaskError(f"SFT data file not found: {source}")
        return path
    try:
        return open_run(source, runs_dir).traces_path
    except StoreError:
        raise TaskError(f"SFT data not found: {source} (a synth run folder or a .jsonl file)") from None


def load_traces(source: str, runs_dir: Path | str) -> tuple[list[dict], str]:
    """Traces from a synth run (folder or id) or a .jsonl file; errors name file and line."""
    file = traces_file(source, runs_dir)
    try:
        traces = read_jsonl(file, strict=True)
    except StoreError as e:
        raise TaskError(str(e)) from None
    if not traces:
        raise TaskError(f"the SFT data set {file} is empty")
    return traces, str(file)
