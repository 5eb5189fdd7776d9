"""Experiment trackers beside the run folder: TensorBoard, Weights & Biases, MLflow, trackio.

The run folder stays the source of truth. A `Mirror` is the run's listener (`Run.listener`):
whatever the run writes, once written, goes to the trackers named in `log.report_to`: every
metrics line (the same namespaced keys, at its "step"), the resolved config as the tracker
run's parameters (at the start), each finished budget curve (accuracy against budget, one
plot or table per checkpoint), the first `log.samples_per_step` rollouts of each RL step as a
table (text cut to `SAMPLE_CHARS`), and the summary's figures.

Each tracker's package is imported only when it is chosen; `check_installed` says, before any
run folder is made, which optional extra a chosen one needs. A tracker that raises (network,
disk, a bug) is said once, in one `warning:` line, and is turned off after `MAX_FAILURES`
failures in a row: the run goes on and its folder never loses a line because of a tracker.
The trackers are called from one worker thread, so a slow one (a network with long retries)
does not hold the run up either; at the end the run waits for them at most `FINISH_WAIT_S`.
Tracker run ids (W&B, MLflow) are kept in the run folder so that `--resume` continues the same
tracker run; TensorBoard's events and W&B's local files live under the run folder's trackers/.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from core.config import TRACKERS, ConfigError, LogConfig
from core.overrides import flatten
from core.store import Run, atomic_write_json, read_json
from core.types import Say

# the module each tracker imports and the extra that installs it
_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}
SAMPLE_CHARS = 2000  # a rollout's text in a tracker's table (the run folder keeps it whole)
MAX_FAILURES = 5  # failures in a row after which a tracker is left off for the rest of the run
QUEUE_MAX = 10_000  # records waiting for the trackers' thread before new ones are skipped
FINISH_WAIT_S = 60.0  # at the end of a run, how long the trackers may take to catch up
_SAMPLE_COLUMNS = ("problem_id", "sample", "reward", "correct", "num_tokens", "finish_reason", "question", "response")


def chosen(cfg: LogConfig | None) -> list[str]:
    """The trackers `cfg.report_to` names, normalised (lower case, in the order given)."""
    return [] if cfg is None else [n.strip().lower() for n in cfg.report_to if n.strip()]


def check_installed(cfg: LogConfig | None) -> None:
    """ConfigError naming the extra of the first chosen tracker whose package is missing
    (checked without importing it)."""
    for name in chosen(cfg):
        if importlib.util.find_spec(_MODULES[name]) is None:
            raise ConfigError(f"log.report_to={name}: the {_MODULES[name]} package is not installed; "
                              f"pip install -e '.[{name}]' (or drop {name} from log.report_to)")


def numeric(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics line, by key ("step" and "wall_time" are not metrics)."""
    return {k: float(v) for k, v in record.items()
            if k not in ("step", "wall_time") and isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v)}


def sample_table(rows: list[dict], limit: int) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of the first `limit` rollouts, text cut to SAMPLE_CHARS."""
    out = []
    for r in rows[:limit]:
        out.append([(str(r.get(c, ""))[:SAMPLE_CHARS] if c in ("question", "response", "finish_reason")
                     else r.get(c)) for c in _SAMPLE_COLUMNS])
    return list(_SAMPLE_COLUMNS), out


def _curve_points(curve: dict) -> list[dict]:
    return [p for p in curve.get("points", []) if isinstance(p, dict) and "budget_tokens" in p]


# -- the trackers: each is start / metrics / curve / samples / finish over one client ------------

class TensorBoard:
    """Event files under the run folder's trackers/tensorboard (`tensorboard --logdir runs`)."""

    name = "tensorboard"

    def __init__(self, run: Run, cfg: LogConfig) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.tracker_dir(self.name)), flush_secs=10)

    def start(self, params: dict, run_name: str, resume_id: str | None) -> str | None:
        text = "\n".join(f"    {k} = {v}" for k, v in params.items())  # indented: markdown code
        self.writer.add_text("config", text, 0)
        return None

    def metrics(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def curve(self, name: str, curve: dict) -> None:
        for p in _curve_points(curve):  # x = budget: one plot per checkpoint
            self.writer.add_scalar(f"budget/{name}/accuracy", p["accuracy"], p["budget_tokens"])
            self.writer.add_scalar(f"budget/{name}/truncated_frac", p["truncated_frac"], p["budget_tokens"])

    def samples(self, step: int, columns: list[str], rows: list[list[Any]]) -> None:
        head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
        body = "".join("| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in r) + " |\n"
                       for r in rows)
        self.writer.add_text("rollouts", head + body, step)

    def finish(self, ok: bool) -> None:
        self.writer.close()


class WandB:
    """A W&B run named after the run folder; its local files under trackers/wandb. Offline
    with WANDB_MODE=offline (then `wandb sync` uploads it later)."""

    name = "wandb"

    def __init__(self, run: Run, cfg: LogConfig) -> None:
        import wandb

        self.wandb, self.cfg, self.dir = wandb, cfg, run.tracker_dir(self.name)
        self.run: Any = None

    def start(self, params: dict, run_name: str, resume_id: str | None) -> str | None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # with no key W&B would stop at a login prompt (or fail without a terminal): offline
        mode = None if os.environ.get("WANDB_MODE") or _wandb_key() else "offline"
        self.run = self.wandb.init(project=self.cfg.project, name=run_name, dir=str(self.dir), config=params,
                                   id=resume_id, resume="allow" if resume_id else None, reinit="create_new",
                                   mode=mode, settings=self.wandb.Settings(quiet=True))
        return str(self.run.id)

    def metrics(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def curve(self, name: str, curve: dict) -> None:
        cols = ["budget_tokens", "accuracy", "ci_low", "ci_high", "truncated_frac", "mean_tokens_used"]
        table = self.wandb.Table(columns=cols, data=[[p[c] for c in cols] for p in _curve_points(curve)])
        plot = self.wandb.plot.line(table, "budget_tokens", "accuracy", title=f"accuracy vs budget: {name}")
        self.run.log({f"budget/{name}/table": table, f"budget/{name}/plot": plot})

    def samples(self, step: int, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({"rollouts": self.wandb.Table(columns=columns, data=rows)}, step=step)

    def finish(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


class MLflow:
    """An MLflow run in experiment `log.project` at `log.mlflow_uri` (MLflow's default when
    empty), through its client (no global active run)."""

    name = "mlflow"

    def __init__(self, run: Run, cfg: LogConfig) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(cfg.mlflow_uri or None)
        self.cfg = cfg
        self.run_id = ""

    def start(self, params: dict, run_name: str, resume_id: str | None) -> str | None:
        from mlflow.entities import Param

        if resume_id:
            self.run_id = resume_id
            self.client.update_run(resume_id, status="RUNNING")
            return resume_id
        exp = self.client.get_experiment_by_name(self.cfg.project)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.cfg.project)
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        return self.run_id

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        items = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def curve(self, name: str, curve: dict) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        points = _curve_points(curve)
        self.client.log_batch(self.run_id, metrics=[Metric(f"budget/{name}/accuracy", p["accuracy"], now, p["budget_tokens"])
                                                    for p in points])
        self.client.log_dict(self.run_id, curve, f"curves/{name}.json")

    def samples(self, step: int, columns: list[str], rows: list[list[Any]]) -> None:
        self.client.log_dict(self.run_id, {"columns": columns, "rows": rows}, f"rollouts/step_{step:06d}.json")

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


class Trackio:
    """A trackio run (local unless the environment points trackio at a Space)."""

    name = "trackio"

    def __init__(self, run: Run, cfg: LogConfig) -> None:
        import trackio

        self.trackio, self.cfg = trackio, cfg
        self.run: Any = None

    def start(self, params: dict, run_name: str, resume_id: str | None) -> str | None:
        self.run = self.trackio.init(project=self.cfg.project, name=run_name, config=params,
                                     resume="allow" if resume_id else "never", embed=False)
        return run_name

    def metrics(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def curve(self, name: str, curve: dict) -> None:
        cols = ["budget_tokens", "accuracy", "truncated_frac"]
        data = [[p[c] for c in cols] for p in _curve_points(curve)]
        self.run.log({f"budget/{name}": self.trackio.Table(columns=cols, data=data)})

    def samples(self, step: int, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({"rollouts": self.trackio.Table(columns=columns, data=rows)}, step=step)

    def finish(self, ok: bool) -> None:
        self.run.finish()


CLIENTS: dict[str, type] = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow, "trackio": Trackio}
assert tuple(CLIENTS) == TRACKERS


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- the mirror -----------------------------------------------------------------------------------

class Mirror:
    """The run's listener: hands what the run writes to a worker thread that sends it to each
    tracker, so that a slow or failing tracker never holds the run up; a failing one is said once.
    The tracker runs start in the caller's thread (their ids are kept for --resume)."""

    def __init__(self, trackers: list[Any], cfg: LogConfig, say: Say) -> None:
        self.trackers, self.cfg, self.say = trackers, cfg, say
        self.failures = {t.name: 0 for t in trackers}
        self.warned: set[str] = set()
        self.off: set[str] = set()
        self.step = 0
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_MAX)
        self._worker = threading.Thread(target=self._work, name="trackers", daemon=True)
        self._worker.start()

    def _each(self, what: str, call: Callable[[Any], Any]) -> dict[str, Any]:
        out = {}
        for t in self.trackers:
            if t.name in self.off:
                continue
            try:
                out[t.name] = call(t)
                self.failures[t.name] = 0
            except Exception as e:  # noqa: BLE001 - a tracker never stops the run
                self.failures[t.name] += 1
                if t.name not in self.warned:
                    self.warned.add(t.name)
                    self.say(f"warning: {t.name} failed ({what}: {type(e).__name__}: {str(e)[:200]}); the run goes "
                             f"on and its folder has everything; {t.name} is left off after {MAX_FAILURES} "
                             "failures in a row")
                if self.failures[t.name] >= MAX_FAILURES:
                    self.off.add(t.name)
        return out

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self._each(*item)

    def _post(self, what: str, call: Callable[[Any], Any]) -> None:
        try:
            self._queue.put_nowait((what, call))
        except queue.Full:  # the trackers lag far behind: the run goes on, they miss this
            self.dropped += 1
            if self.dropped == 1:
                self.say(f"warning: the trackers are {QUEUE_MAX} records behind; records are skipped until they "
                         "catch up (the run folder has everything)")

    def start(self, params: dict, run_name: str, resume_ids: Mapping[str, str]) -> dict[str, str]:
        got = self._each("start", lambda t: t.start(params, run_name, resume_ids.get(t.name)))
        self.off |= {t.name for t in self.trackers} - set(got)  # a tracker that did not start cannot log
        return {k: v for k, v in got.items() if v}

    def metrics(self, record: dict) -> None:
        if isinstance(record.get("step"), int) and not isinstance(record["step"], bool):
            self.step = record["step"]
        values, step = numeric(record), self.step
        if values:
            self._post("metrics", lambda t: t.metrics(values, step))

    def samples(self, step: int, rows: list[dict]) -> None:
        if self.cfg.samples_per_step > 0 and rows:
            columns, table = sample_table(rows, self.cfg.samples_per_step)
            self._post("samples", lambda t: t.samples(step, columns, table))

    def curve(self, name: str, curve: dict) -> None:
        if curve.get("complete"):  # a sweep rewrites its curve as each budget is scored: the last one
            self._post("curve", lambda t: t.curve(name, curve))

    def summary(self, summary: dict) -> None:
        values = {f"summary/{k}": v for k, v in numeric(summary).items() if not k.endswith("time_s")}
        step = self.step
        if values:
            self._post("summary", lambda t: t.metrics(values, step))

    def finish(self, ok: bool) -> None:
        """Send what is queued, close the tracker runs; waits at most FINISH_WAIT_S (5 s after a
        failure or Ctrl-C)."""
        self._queue.put(("finish", lambda t: t.finish(ok)))
        self._queue.put(None)
        wait = FINISH_WAIT_S if ok else 5.0  # a run that failed or was stopped does not wait long
        self._worker.join(wait)
        if self._worker.is_alive():
            self.say(f"warning: the trackers had not caught up {wait:.0f} s after the run ended; "
                     f"about {self._queue.qsize()} records were not sent (the run folder has everything)")


@contextmanager
def mirrored(run: Run, cfg: LogConfig | None, config: dict, say: Say) -> Iterator[Mirror | None]:
    """While the block runs, `run` is mirrored to the trackers `cfg` names (none: nothing happens).
    A resumed run continues the tracker runs whose ids its folder kept."""
    names = chosen(cfg)
    if not names or cfg is None:
        yield None
        return
    trackers = []
    for name in names:
        try:
            trackers.append(CLIENTS[name](run, cfg))
        except Exception as e:  # noqa: BLE001 - e.g. an import that fails past find_spec
            say(f"warning: {name} could not start ({type(e).__name__}: {str(e)[:200]}); the run goes on without it")
    mirror = Mirror(trackers, cfg, say)
    kept = read_json(run.trackers_path, default={}) or {}
    ids = mirror.start({k: _param(v) for k, v in flatten(config).items()}, run.id, kept)
    if ids and ids != kept:
        atomic_write_json(run.trackers_path, {**kept, **ids})
    if trackers:
        say(f"mirroring to {', '.join(t.name for t in trackers if t.name not in mirror.off) or 'no tracker'}")
    run.listener = mirror
    ok = False
    try:
        yield mirror
        ok = True
    finally:
        run.listener = None
        mirror.finish(ok)


def _param(v: Any) -> Any:
    """A parameter value as trackers take it: scalars as they are, the rest as JSON text."""
    return v if isinstance(v, str | int | float | bool) or v is None else json.dumps(v)


def _wandb_key() -> bool:
    """Whether W&B has an API key (the environment or `wandb login`'s ~/.netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False
