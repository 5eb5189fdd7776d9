"""The stories behind `python -m lab <command>`: synth, sft, rl, eval.

Each job takes its resolved config, a Run (the store) and a `say` callback for the human
log, and returns the headline figures. The command line only parses and prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.config import (
    BudgetJob,
    EvalConfig,
    EvalJob,
    ModelConfig,
    ReproduceJob,
    RLJob,
    SFTJob,
    SynthJob,
    TaskConfig,
)
from core.store import Run, StoreError, is_run_dir, open_run, read_jsonl
from core.tasks.base import Task, TaskError

Say = Callable[[str], None]


def make_task(cfg: TaskConfig) -> Task:
    """The embedded task or a math data set (short name, hub id or .jsonl path)."""
    if cfg.name == "pairsum":
        from core.tasks.pairsum import PairSumSpec, PairSumTask

        spec = PairSumSpec(cfg.num_count, cfg.max_value, cfg.heldout_frac, cfg.sorted_numbers)
        return PairSumTask(spec, seed=cfg.seed)
    from core.tasks.math import MathTask

    return MathTask(cfg.name)


def task_problems(task: Task, split: str, limit: int) -> list:
    problems = task.problems(split, limit or None)
    if not problems:
        raise TaskError(f"task {task.name!r} has no {split} problems")
    return problems


def setup_torch(cfg: ModelConfig, train: bool = False) -> tuple[str, Any]:
    """(device, dtype of the weights) for a model config; sets CPU threads. With `train`, 'auto'
    keeps fp32 weights (training computes in bf16 autocast where it is on): AdamW steps and the
    EMA anchor's 1% moves on bf16 weights would mostly round away."""
    import torch

    from core.models import pick_device

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    bf16_ok = device == "cuda" and torch.cuda.is_bf16_supported() and not train
    dtype = torch.bfloat16 if cfg.dtype == "bf16" or (cfg.dtype == "auto" and bf16_ok) else torch.float32
    return device, dtype


def load_model(cfg: ModelConfig, seed: int, train: bool = False) -> tuple[Any, Any]:
    """A fresh embedded model (when name == 'embedded') or a saved one (folder or hub id);
    `train`: for SFT or RL (see `setup_torch`)."""
    from core.models import EMBEDDED, TinySpec, build_tiny_model, load_policy

    device, dtype = setup_torch(cfg, train)
    if cfg.name == EMBEDDED:
        spec = TinySpec(cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size)
        model, tok = build_tiny_model(spec, seed=seed)
        return model.to(device=device, dtype=dtype), tok
    attn = cfg.attn_implementation
    if attn == "auto":
        attn = "eager" if device == "cpu" else "sdpa"
    return load_policy(cfg.name, dtype=dtype, device=device, attn_implementation=attn)


def run_synth(job: SynthJob, run: Run, say: Say, progress: bool = True) -> dict:
    """Write T1-shaped (or plain) traces for the task's training problems: the programmatic
    teacher (embedded task), LLM teachers (teacher.models) or public data (teacher.dataset).
    A rerun on the same run (--resume) skips problems that already have a trace."""
    from tqdm.auto import tqdm

    from core.synth import synthesize

    if job.teacher.models or job.teacher.dataset:
        from core.teacher.job import run_teacher_synth

        return run_teacher_synth(job, run, say, progress)
    if job.task.name != "pairsum":
        raise TaskError("the programmatic teacher only knows the embedded task (task.name=pairsum); "
                        "for a math task name LLM teachers: teacher.models=MODEL_OR_URL[,...]")
    t0 = time.time()
    task = make_task(job.task)
    problems = task_problems(task, "train", job.synth.num_problems)
    s = job.synth
    say(f"synthesizing {len(problems)} {s.style} traces (guided_prob={s.guided_prob}, slip_prob={s.slip_prob})")
    done = {t.get("problem_id") for t in run.traces()}
    batch: list[dict] = []
    failed = slips = 0
    for trace in tqdm(synthesize(problems, s.style, s.guided_prob, s.slip_prob, s.seed),
                      total=len(problems), desc="synth", unit="trace", disable=not progress):
        if trace["problem_id"] in done:
            continue
        batch.append(trace)
        failed += trace["num_failed"] > 0
        slips += trace["num_slips"]
        if len(batch) >= 2000:
            run.append_traces(batch)
            batch = []
    run.append_traces(batch)
    out = {"synth/num_traces": len(problems), "synth/with_failed_attempt_frac": failed / len(problems),
           "synth/slips": slips, "time_s": time.time() - t0}
    say(f"wrote {len(problems)} traces to {run.traces_path} ({out['synth/with_failed_attempt_frac']:.0%} "
        "contain a failed attempt)")
    return out


def traces_file(source: str, runs_dir: str | Path) -> Path:
    """The traces file named by `source`: a .jsonl path, or a synth run (folder or id)."""
    path = Path(source)
    if path.suffix == ".jsonl":
        if not path.exists():
            raise TaskError(f"SFT data file not found: {path}")
        return path
    try:
        return open_run(source, runs_dir).traces_path
    except StoreError:
        raise TaskError(f"SFT data not found: {source} (a synth run folder or a .jsonl file)") from None


def load_traces(source: str, runs_dir: str | Path) -> tuple[list[dict], str]:
    """Traces from a synth run (folder or id) or a .jsonl file; errors name file and line."""
    file = traces_file(source, runs_dir)
    try:
        traces = read_jsonl(file, strict=True)
    except StoreError as e:
        raise TaskError(str(e)) from None
    if not traces:
        raise TaskError(f"the SFT data set {file} is empty")
    return traces, str(file)


def run_eval_model(model: Any, tokenizer: Any, task: Task, cfg: EvalConfig, run: Run,
                   name: str, say: Say, progress: bool = True) -> dict:
    """Evaluate a loaded model on `cfg.split`; per-sample rows go to eval/<name>.jsonl."""
    from core.evaluate import evaluate
    from core.sampling import make_sampler

    problems = task_problems(task, cfg.split, cfg.num_problems)
    s = cfg.sampling
    say(f"evaluating on {len(problems)} {cfg.split} problems x {cfg.num_samples} sample(s), "
        f"temperature {s.temperature}, max_new_tokens {s.max_new_tokens}, seed {cfg.seed}")
    sampler = make_sampler(s.backend, model, tokenizer, s)
    t0 = time.time()
    summary, rows = evaluate(sampler, task, problems, cfg, progress=progress)
    run.append_eval(name, rows)
    summary["eval/time_s"] = time.time() - t0
    say(f"accuracy {summary['eval/acc']:.1%} [{summary['eval/acc_ci_low']:.1%}, "
        f"{summary['eval/acc_ci_high']:.1%}], failed-then-fixed {summary['eval/corrected_frac']:.1%}, "
        f"mean length {summary['eval/len_mean']:.0f} tokens, truncated {summary['eval/truncated_frac']:.1%}")
    return summary


def run_sft(job: SFTJob, run: Run, say: Say, runs_dir: str | Path = "runs", progress: bool = True) -> dict:
    """synthesize (unless sft.data is given) -> train -> save -> evaluate on held-out."""
    from core.models import count_parameters, save_policy
    from core.sft import apply_lora, build_examples, train_sft

    t0 = time.time()
    task = make_task(job.task)
    if job.sft.data:
        traces, where = load_traces(job.sft.data, runs_dir)
        say(f"loaded {len(traces)} traces from {where}")
        synth_out: dict = {}
    else:
        synth_out = run_synth(SynthJob(job.task, job.synth), run, say, progress)
        traces = run.traces()
    model, tok = load_model(job.model, job.sft.seed, train=True)
    if job.sft.lora:
        model = apply_lora(model, job.sft)
    examples, dropped = build_examples(traces, task, tok, job.sft.max_seq_len)
    n_params = count_parameters(model)
    say(f"training {job.model.name} ({n_params / 1e6:.2f}M parameters) on {len(examples)} traces "
        f"({dropped} longer than {job.sft.max_seq_len} tokens dropped) for {job.sft.max_steps} steps")
    train_t0 = time.time()
    last = train_sft(model, tok, examples, job.sft, log=run.log_metrics, progress=progress)
    train_s = time.time() - train_t0
    final = run.checkpoint_dir("final")
    save_policy(model, tok, final)
    run.mark_checkpoint_complete(final)
    say(f"saved the model to {final} (final loss {last['loss/sft']:.3f}, {train_s:.0f} s)")
    summary = run_eval_model(model, tok, task, job.eval, run, "heldout", say, progress)
    synth_out = {("synth/time_s" if k == "time_s" else k): v for k, v in synth_out.items()}
    out = {**synth_out, "sft/loss": last["loss/sft"], "sft/train_s": train_s,
           "checkpoint": str(final), **summary, "time_s": time.time() - t0}
    run.log_metrics({"step": last["step"], **summary})
    return out


def resolve_model_path(name: str, runs_dir: str | Path = "runs") -> str:
    """A run folder or id stands for its final checkpoint; anything else is passed through."""
    for candidate in (Path(name), Path(runs_dir) / name):
        if is_run_dir(candidate):
            final = open_run(candidate).checkpoint_dir("final")
            if final.exists():
                return str(final)
    return name


def run_eval(job: EvalJob, run: Run, say: Say, progress: bool = True, runs_dir: str | Path = "runs") -> dict:
    """`lab eval`: load model.name (folder, run, or hub id) and evaluate it."""
    from dataclasses import replace

    _require_trained(job)
    t0 = time.time()
    task = make_task(job.task)
    model_cfg = replace(job.model, name=resolve_model_path(job.model.name, runs_dir))
    model, tok = load_model(model_cfg, seed=0)
    say(f"loaded {model_cfg.name}")
    summary = run_eval_model(model, tok, task, job.eval, run, job.eval.split, say, progress)
    return {**summary, "model": model_cfg.name, "time_s": time.time() - t0}


def latest_sft_checkpoint(runs_dir: str | Path) -> str:
    """The final checkpoint of the newest complete SFT run."""
    from core.store import list_runs

    for run in list_runs(runs_dir):
        final = run.checkpoint_dir("final")
        if run.config().get("stage") == "sft" and run.status() == "complete" and (final / "config.json").exists():
            return str(final)
    raise TaskError(f"no complete SFT run in {runs_dir}: run `python -m lab sft` first or set rl.init")


def step_line(m: dict) -> str:
    """The human log line of one RL step, from the same dict that goes to metrics.jsonl."""
    seconds = sum(v for k, v in m.items() if k.startswith("time/"))
    return (f"step {m['step']}: reward {m['reward/mean']:+.2f}, acc {m['rollout/acc']:.0%}, "
            f"groups solved {m['rollout/group_pass_frac']:.0%}, len {m['rollout/len_mean']:.0f}/"
            f"{m['rollout/len_max']}, truncated {m['rollout/truncated_frac']:.0%}, penalties "
            f"{m['penalty/overlong']}/{m['penalty/repetitive']}/{m['penalty/garbled']}, "
            f"entropy {m['loss/entropy']:.3f}, kl {m['kl/anchor']:.3f}, grad {m['optim/grad_norm']:.2f}, "
            f"lr {m['optim/lr']:.1e}, {seconds:.1f}s ({m['perf/sampled_tokens_per_s']:.0f} tok/s)")


def run_rl(job: RLJob, run: Run, say: Say, progress: bool = True, runs_dir: str | Path = "runs",
           resume: bool = False) -> dict:
    """The T1 recipe from an SFT policy; with `resume`, continue from the run's last checkpoint."""
    from dataclasses import replace

    import torch

    from core.models import save_policy
    from core.rl.loop import Trainer, heldout_eval, train
    from core.sampling import make_sampler

    t0 = time.time()
    task = make_task(job.task)
    ckpt = run.latest_checkpoint() if resume else None
    state = torch.load(run.trainer_state_path(ckpt), weights_only=False) if ckpt else None
    if state is None:
        init = resolve_model_path(job.rl.init, runs_dir) if job.rl.init else latest_sft_checkpoint(runs_dir)
    else:  # LoRA resumes from the base weights plus the saved adapters; full fine-tuning from the checkpoint
        init = state["init"] if job.rl.lora else str(ckpt)
    base = init if state is None else state.get("init", init)
    policy, tok = load_model(replace(job.model, name=init), seed=job.rl.seed, train=True)
    if job.rl.lora:
        from core.sft import apply_lora

        torch.manual_seed(job.rl.seed)  # LoRA's A matrices start random: same seed, same run
        policy = apply_lora(policy, job.rl)
    sampler = make_sampler(job.eval.sampling.backend, policy, tok, job.eval.sampling)
    train_set = task_problems(task, "train", 50_000 if job.task.name == "pairsum" else 0)
    heldout = task_problems(task, "heldout", job.rl.eval_problems)
    trainer = Trainer(policy, tok, sampler, task, train_set, job.rl)
    if state is not None:
        trainer.load_state(state)
        run.rewind(trainer.step_idx)
        say(f"resumed from {ckpt} at step {trainer.step_idx}")
    else:
        say(f"RL from {init}: {job.rl.prompts_per_step} prompts x {job.rl.num_generations} samples at "
            f"temperature {job.rl.temperature}, anchor {job.rl.anchor}, beta {job.rl.beta}")
        start = {"step": 0, "init": init, **heldout_eval(sampler, task, heldout, job.rl.max_new_tokens, 1234)}
        run.log_metrics(start)
        say(f"step 0: held-out accuracy {start['eval/acc']:.1%}")

    def on_step(metrics: dict, rows: list[dict]) -> None:
        t_sync = time.time()
        sampler.sync_weights(policy)  # the vLLM engine holds a copy of the weights; hf shares them
        metrics["time/sync_weights_s"] = time.time() - t_sync
        run.log_metrics(metrics)
        run.append_samples(metrics["step"], rows)
        say(step_line(metrics))

    def on_eval(summary: dict) -> None:
        run.log_metrics(summary)
        say(f"step {summary['step']}: held-out accuracy {summary['eval/acc']:.1%}, "
            f"mean length {summary['eval/len_mean']:.0f}, truncated {summary['eval/truncated_frac']:.1%}")

    def on_save() -> None:
        path = run.checkpoint_dir(trainer.step_idx)
        save_policy(policy, tok, path)  # merged when LoRA, so any loader reads it
        if job.rl.lora:
            policy.save_pretrained(path / "adapter")
        torch.save({**trainer.state(), "init": base}, run.trainer_state_path(path))
        run.mark_checkpoint_complete(path)

    try:
        final_eval = train(trainer, heldout, on_step, on_eval, on_save, progress)
    except FloatingPointError as e:  # nothing is saved from bad weights: the last checkpoint stands
        last = run.latest_checkpoint()
        raise FloatingPointError(f"{e}; the last good checkpoint is {last or 'none (no step was saved yet)'}") from None
    first = next((m for m in run.metrics() if m.get("step") == 0 and "eval/acc" in m), {})
    return {"eval/acc_start": first.get("eval/acc"), **final_eval,
            "eval/acc_gain": final_eval.get("eval/acc", 0) - (first.get("eval/acc") or 0),
            "checkpoint": str(run.latest_checkpoint()), "time_s": time.time() - t0}


def preflight(job: Any, runs_dir: str | Path = "runs") -> None:
    """Check the inputs a job names (data files, models, the SFT run to start RL from) before
    a run folder is made, so that bad input fails fast and leaves nothing behind."""
    from core.models import resolve_source

    _preflight_backends(job)
    if isinstance(job, SFTJob) and job.sft.data:
        traces_file(job.sft.data, runs_dir)
    model = getattr(job, "model", None)
    if model is not None and model.name != "embedded" and not isinstance(job, BudgetJob):
        resolve_source(resolve_model_path(model.name, runs_dir))
    if isinstance(job, EvalJob | BudgetJob):
        _require_trained(job)
    if isinstance(job, BudgetJob):
        from core.sweeps import checkpoints_to_sweep

        for ck in checkpoints_to_sweep(job.model.name, job.budget.checkpoints, runs_dir):
            resolve_source(ck.path)
        if job.budget.mode == "summarizer":
            resolve_source(resolve_model_path(job.budget.summarizer, runs_dir))
    if isinstance(job, RLJob):
        init = resolve_model_path(job.rl.init, runs_dir) if job.rl.init else latest_sft_checkpoint(runs_dir)
        resolve_source(init)
    if isinstance(job, SynthJob):
        _preflight_teachers(job, runs_dir)
    if isinstance(job, ReproduceJob):
        from core.reproduce import plan

        plan(job)  # validates every sub-run's config (the K and penalty variants too)
    if job.task.name != "pairsum":
        make_task(job.task)


def _preflight_backends(job: Any) -> None:
    """A vllm backend anywhere in the job needs vllm installed (checked without importing it)."""
    import importlib.util

    from core.config import ConfigError
    from core.sampling import VLLM_MISSING

    sections = [getattr(job, name, None) for name in ("eval", "budget", "teacher")]
    wants = any(getattr(getattr(sec, "sampling", None), "backend", "hf") == "vllm" for sec in sections)
    if wants and importlib.util.find_spec("vllm") is None:
        raise ConfigError(VLLM_MISSING)


def _preflight_teachers(job: SynthJob, runs_dir: str | Path) -> None:
    """Teacher models and a local public data file must exist before a synth run starts."""
    from core.models import resolve_source
    from core.teacher.http import is_http_spec

    if job.teacher.dataset and Path(job.teacher.dataset).suffix:
        from core.teacher.public import load_public_traces

        load_public_traces(job.teacher.dataset, limit=1)
    for spec in (*job.teacher.models, job.teacher.critic):
        if spec and not is_http_spec(spec):
            resolve_source(resolve_model_path(spec, runs_dir))


def _require_trained(job: EvalJob | BudgetJob) -> None:
    if job.model.name == "embedded":
        cmd = "eval" if isinstance(job, EvalJob) else "budget"
        raise TaskError(f"lab {cmd} needs a trained model: model.name=<run folder or checkpoint or hub id>")
