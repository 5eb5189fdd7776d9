"""Run folders on disk: the only module that knows their layout. Stdlib only (no torch).

Layout of ``runs/<run_id>/``::

    config.json              run id, stage, created_at, git sha, package versions, pid, host, config
    metrics.jsonl            one JSON object per line ("reward/mean", "step", "wall_time", ...)
    samples/step_000100.jsonl  rollouts of one RL step, one per line
    synth/traces.jsonl       synthesized SFT traces, one per line
    synth/rejected.jsonl     problems the teacher filters dropped or that failed (status, error)
    curves/<name>.json       inference-budget curves, rewritten atomically
    checkpoints/step_<N>/    HF weights and the resume state (trainer_state.json + .safetensors,
                             written by other code); complete once it holds COMPLETE
    checkpoints/final/
    eval/<name>.jsonl        per-problem evaluation rows (an RL run's held-out ones:
                             eval/heldout_step_000030.jsonl, step 0 the starting policy)
    trackers.json            the experiment trackers' own run ids (W&B, MLflow), for --resume
    trackers/<tracker>/      what a tracker keeps in the run folder (TensorBoard events, W&B offline runs)
    summary.json             written last; its existence means the run completed

Writers are crash-safe: JSON files are replaced atomically, JSONL files are appended with one
``write`` per call followed by ``fsync``. Float NaN/inf become ``null`` so files stay valid JSON.
Readers skip a torn last line (a crash mid-append) silently.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

TRACKED_PACKAGES = ("torch", "transformers", "peft", "vllm", "datasets", "math_verify", "streamlit")
COMPLETE_MARKER = "COMPLETE"
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_STEP_DIR_RE = re.compile(r"step_(\d+)")
_SAMPLES_FILE_RE = re.compile(r"step_(\d+)\.jsonl")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_mode()


def set_file_modes(folder: Path) -> None:
    """Give every file under `folder` the mode the store writes with (writers that go through
    a temporary file, as safetensors' does, leave 0600)."""
    for path in Path(folder).rglob("*"):
        if path.is_file():
            path.chmod(_FILE_MODE)


class StoreError(ValueError):
    """A run folder or one of its files is missing, malformed or misused."""


# ---------------------------------------------------------------------------------------------
# Low-level file helpers
# ---------------------------------------------------------------------------------------------


def _sanitize(obj: Any) -> Any:
    """Copy of `obj` with float NaN/inf replaced by None (recursing into dicts, lists, tuples)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return obj


def _dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of `obj` (NaN/inf -> null); TypeError if something is not serializable."""
    return json.dumps(_sanitize(obj), ensure_ascii=False, allow_nan=False, indent=indent)


def _fsync_dir(path: Path) -> None:
    """Best-effort fsync of a directory so a rename inside it is durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically: temp file in the same dir, fsync, os.replace.

    Parent directories are created. Readers see either the old or the new content, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; a run's files all get one mode (the umask's)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically (NaN/inf -> null).

    `obj` is serialized before anything touches the disk, so a TypeError (unserializable value)
    leaves the old file unchanged and no temp file behind.
    """
    atomic_write_text(path, _dumps(obj, indent=2) + "\n")


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Append `rows` to `path`, one JSON object per line, in a single write + flush + fsync.

    All rows are serialized first (NaN/inf -> null), so a failure writes nothing. Parent dirs
    are created. If the file ends in a torn line (an earlier crash mid-write), a newline is put
    before the new rows so they stay parseable; the fragment then reads as a malformed line.
    """
    path = Path(path)
    lines = []
    for row in rows:
        if not isinstance(row, dict):
            raise StoreError(f"{path}: JSONL rows must be dicts, got {type(row).__name__}")
        lines.append(_dumps(row) + "\n")
    if not lines:
        return
    data = "".join(lines).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_jsonl(path: Path, lines: Iterable[bytes], strict: bool) -> Iterator[dict]:
    """Parse raw JSONL `lines` of `path`; see `iter_jsonl` for the handling of bad lines."""
    for lineno, raw in enumerate(lines, start=1):
        complete = raw.endswith(b"\n")
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            if not isinstance(row, dict):
                raise TypeError(f"expected a JSON object, got {type(row).__name__}")
        except (ValueError, TypeError) as e:  # incl. JSONDecodeError, UnicodeDecodeError
            if not complete:
                return  # torn last line: a crash mid-append
            msg = f"{path}:{lineno}: malformed JSON line: {e}"
            if strict:
                raise StoreError(msg) from None
            log.warning("skipping %s", msg)
            continue
        yield row


def iter_jsonl(path: Path, *, strict: bool = False) -> Iterator[dict]:
    """Yield the JSON objects of `path`, one per non-blank line. Missing file -> nothing.

    A torn last line (no trailing newline and not parseable) is skipped silently. Any other
    malformed line (bad JSON, bad UTF-8, not an object) raises StoreError naming the file and
    line number when `strict`, else it is skipped with a logged warning.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            yield from _parse_jsonl(path, f, strict)
    except FileNotFoundError:
        return


def read_jsonl(path: Path, *, strict: bool = False) -> list[dict]:
    """All JSON objects of `path` as a list; see `iter_jsonl` for the handling of bad lines."""
    return list(iter_jsonl(path, strict=strict))


def read_json(path: Path, default: Any = None) -> Any:
    """Parsed JSON of `path`; `default` if the file is missing; StoreError if it is malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except ValueError as e:
        raise StoreError(f"{path}: malformed JSON: {e}") from None


# ---------------------------------------------------------------------------------------------
# Environment capture
# ---------------------------------------------------------------------------------------------


HELDOUT_PREFIX = "heldout_step_"


def heldout_name(step: int) -> str:
    """eval/<name>.jsonl of an RL run's held-out evaluation at `step`."""
    return f"{HELDOUT_PREFIX}{_check_step(step):06d}"


def _utc_now() -> str:
    """Current time as ISO-8601 UTC with fixed-width microseconds (sorts lexicographically)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _git_sha(timeout_s: float = 5.0) -> str | None:
    """`git rev-parse HEAD` in the cwd, or None on any failure."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def _package_versions() -> dict[str, str | None]:
    """Installed versions of the tracked packages (read from metadata, never imported)."""
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _check_name(kind: str, name: str) -> str:
    """`name` if it is a safe file/folder name ([A-Za-z0-9_.-]+, not all dots), else StoreError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or not name.strip("."):
        raise StoreError(f"invalid {kind} {name!r}: use only letters, digits, '_', '.', '-'")
    return name


def _check_step(step: int) -> int:
    """`step` if it is a non-negative int, else StoreError."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise StoreError(f"invalid step {step!r}: expected a non-negative int")
    return step


def _pid_alive(pid: int) -> bool:
    """Whether a process with `pid` exists on this machine (PermissionError counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------


class RunListener(Protocol):
    """Told what a run writes, after it is written (core.trackers mirrors it to experiment
    trackers). A listener must not raise: the run folder is the source of truth."""

    def metrics(self, record: dict) -> None: ...
    def samples(self, step: int, rows: list[dict]) -> None: ...
    def curve(self, name: str, curve: dict) -> None: ...
    def summary(self, summary: dict) -> None: ...


@dataclass
class Run:
    """Handle on one run folder. Writers append or replace files atomically; readers are
    torch-free and tolerate a run that is still being written (or crashed mid-write).
    `listener`, when set, is told each metrics line, samples, curve and summary once written."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.listener: RunListener | None = None

    @property
    def id(self) -> str:
        """The run id (the folder name)."""
        return self.path.name

    @property
    def stage(self) -> str | None:
        """The command that made the run (synth, sft, rl, eval, budget, demo, reproduce); None
        while config.json cannot be read."""
        try:
            return self.config().get("stage")
        except StoreError:
            return None

    def job_config(self) -> dict:
        """The resolved config the run was made with (config.json's "config"), {} if none."""
        cfg = self.config().get("config")
        return cfg if isinstance(cfg, dict) else {}

    def setting(self, dotted: str, default: Any = None) -> Any:
        """One value of the run's config by dotted key ("rl.steps", "task.name")."""
        node: Any = self.job_config()
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def started_from(self, runs_dir: Path | str = "runs") -> str | None:
        """The model an RL run started from, found from here (`resolve_checkpoint`): the `init`
        its step-0 metrics record, else its rl.init setting; None when neither says."""
        init = next((m["init"] for m in self.metrics() if m.get("step") == 0 and m.get("init")), None)
        init = init or self.setting("rl.init", "")
        return resolve_checkpoint(str(init), runs_dir) if init else None

    def final_checkpoint(self) -> Path | None:
        """The model the run stands for: checkpoints/final when complete (SFT), else its latest
        complete step_<N> checkpoint (RL), else None."""
        final = self.checkpoint_dir("final")
        if (final / COMPLETE_MARKER).is_file() or (final / "config.json").is_file():
            return final
        return self.latest_checkpoint()

    # -- paths ---------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """config.json."""
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        """metrics.jsonl."""
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        """summary.json (exists only once the run completed)."""
        return self.path / "summary.json"

    @property
    def traces_path(self) -> Path:
        """synth/traces.jsonl."""
        return self.path / "synth" / "traces.jsonl"

    @property
    def rejected_path(self) -> Path:
        """synth/rejected.jsonl."""
        return self.path / "synth" / "rejected.jsonl"

    @property
    def samples_dir(self) -> Path:
        """samples/."""
        return self.path / "samples"

    @property
    def curves_dir(self) -> Path:
        """curves/."""
        return self.path / "curves"

    @property
    def checkpoints_dir(self) -> Path:
        """checkpoints/."""
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        """eval/."""
        return self.path / "eval"

    def samples_path(self, step: int) -> Path:
        """samples/step_<6-digit step>.jsonl."""
        return self.samples_dir / f"step_{_check_step(step):06d}.jsonl"

    def curve_path(self, name: str) -> Path:
        """curves/<name>.json; `name` must match [A-Za-z0-9_.-]+."""
        return self.curves_dir / f"{_check_name('curve name', name)}.json"

    def eval_path(self, name: str) -> Path:
        """eval/<name>.jsonl; `name` must match [A-Za-z0-9_.-]+."""
        return self.eval_dir / f"{_check_name('eval name', name)}.jsonl"

    def checkpoint_dir(self, step: int | str) -> Path:
        """checkpoints/step_<N> for an int (or digit string) step, checkpoints/final for "final".

        The directory is not created; the caller saves weights into it and then calls
        `mark_checkpoint_complete`.
        """
        if step == "final":
            return self.checkpoints_dir / "final"
        if isinstance(step, str) and step.isdigit():
            step = int(step)
        if isinstance(step, str):
            raise StoreError(f"invalid checkpoint {step!r}: expected a step or 'final'")
        return self.checkpoints_dir / f"step_{_check_step(step)}"

    def artifact_path(self, filename: str) -> Path:
        """A file for people at the top of the run folder (an HTML chart, a report)."""
        if "/" in filename or not _NAME_RE.fullmatch(filename):
            raise StoreError(f"invalid artifact name {filename!r}")
        return self.path / filename

    @property
    def trackers_path(self) -> Path:
        """trackers.json: the experiment trackers' run ids ({"wandb": id, ...}) for --resume."""
        return self.path / "trackers.json"

    def tracker_dir(self, tracker: str) -> Path:
        """trackers/<tracker>/: files a tracker keeps in the run folder (made on demand)."""
        return self.path / "trackers" / _check_name("tracker", tracker)

    def trainer_state_path(self, checkpoint: Path) -> Path:
        """The resume state (optimizer, scheduler, RNG, data position, anchor) of a checkpoint:
        a stem, written as trainer_state.json + trainer_state.safetensors (core.tensor_state)."""
        return Path(checkpoint) / "trainer_state"

    def pickled_state_only(self, checkpoint: Path) -> bool:
        """Whether the checkpoint's resume state is only the pickle earlier versions wrote
        (trainer_state.pt), which the lab never loads: a pickle can run code."""
        checkpoint = Path(checkpoint)
        return (checkpoint / "trainer_state.pt").exists() and not (checkpoint / "trainer_state.json").exists()

    def repair_jsonl(self, path: Path) -> int:
        """Rewrite a JSONL file of the run without its malformed lines (a torn last line after a
        crash); returns how many were dropped. Atomic: a crash meanwhile keeps the old file."""
        path = Path(path)
        if not path.exists():
            return 0
        good = read_jsonl(path)  # the tolerant reader: a torn or malformed line is left out
        dropped = sum(1 for line in path.read_bytes().splitlines() if line.strip()) - len(good)
        if dropped:
            atomic_write_text(path, "".join(_dumps(r) + "\n" for r in good))
        return dropped

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, dir) of every complete step_<N> checkpoint, sorted by step."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for child in self.checkpoints_dir.iterdir():
            m = _STEP_DIR_RE.fullmatch(child.name)
            if m and child.is_dir() and (child / COMPLETE_MARKER).is_file():
                found.append((int(m.group(1)), child))
        return sorted(found)

    def latest_checkpoint(self) -> Path | None:
        """The complete step_<N> checkpoint with the largest N, or None."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def begin_checkpoint(self, path: Path) -> Path:
        """Make `path` ready to be (re)written: its COMPLETE marker goes first, so a crash while
        the files are replaced never leaves a marked checkpoint with half of them."""
        path = Path(path)
        (path / COMPLETE_MARKER).unlink(missing_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def set_aside_checkpoints_after(self, step: int) -> list[Path]:
        """Rename the complete checkpoints of steps after `step` to step_<N>.unused-<time> (a run
        resumed from an earlier one, because those could not be loaded, rewrites its future);
        returns the new names. Nothing is deleted."""
        moved = []
        for s, path in self.checkpoints():
            if s > step:
                target = path.with_name(f"{path.name}.unused-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}")
                path.rename(target)
                moved.append(target)
        return moved

    def mark_checkpoint_complete(self, path: Path) -> None:
        """Write `path`/COMPLETE once every weight file is saved (crash mid-save -> not resumed)."""
        path = Path(path)
        if not path.is_dir():
            raise StoreError(f"checkpoint dir not found: {path}")
        atomic_write_text(path / COMPLETE_MARKER, _utc_now() + "\n")

    # -- writers -------------------------------------------------------------------------------

    def write_config(self, stage: str, config: dict) -> None:
        """Write config.json: ids, environment (git sha, package versions, pid, host, ranks), config.

        Rewriting (e.g. on resume) keeps the original created_at and records the current pid.
        """
        old = read_json(self.config_path, default={})
        created_at = old.get("created_at") if isinstance(old, dict) else None
        atomic_write_json(
            self.config_path,
            {
                "run_id": self.id,
                "stage": stage,
                "created_at": created_at or _utc_now(),
                "git_sha": _git_sha(),
                "packages": _package_versions(),
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "ranks": int(os.environ.get("WORLD_SIZE", "1")),  # torchrun's processes (times depend on them)
                "config": config,
            },
        )

    def log_metrics(self, record: dict) -> None:
        """Append one metrics line; adds "wall_time" (unix seconds) if absent."""
        row = dict(record)
        row.setdefault("wall_time", time.time())
        append_jsonl(self.metrics_path, [row])
        if self.listener is not None:
            self.listener.metrics(row)

    def rewind(self, step: int) -> None:
        """Forget what was logged after `step` (resuming from that step's checkpoint).

        Metrics lines with a larger "step" are dropped (atomic rewrite) and samples files of
        later steps deleted, so a resumed run's history reads as one uninterrupted run.
        """
        rows = [r for r in self.metrics() if not isinstance(r.get("step"), int) or r["step"] <= step]
        atomic_write_text(self.metrics_path, "".join(_dumps(r) + "\n" for r in rows))
        for s in self.sample_steps():
            if s > step:
                self.samples_path(s).unlink(missing_ok=True)
        for s in self.heldout_steps():
            if s > step:
                self.eval_path(heldout_name(s)).unlink(missing_ok=True)

    def append_samples(self, step: int, rows: list[dict]) -> None:
        """Append rollouts of RL step `step` to samples/step_<step>.jsonl."""
        append_jsonl(self.samples_path(step), rows)
        if self.listener is not None:
            self.listener.samples(step, rows)

    def append_traces(self, rows: list[dict]) -> None:
        """Append synthesized SFT traces to synth/traces.jsonl."""
        append_jsonl(self.traces_path, rows)

    def append_rejected(self, rows: list[dict]) -> None:
        """Append teacher rows that were filtered out or failed to synth/rejected.jsonl."""
        append_jsonl(self.rejected_path, rows)

    def rejected(self) -> list[dict]:
        """Rows of synth/rejected.jsonl."""
        return read_jsonl(self.rejected_path)

    def append_eval(self, name: str, rows: list[dict]) -> None:
        """Append per-problem evaluation rows to eval/<name>.jsonl."""
        append_jsonl(self.eval_path(name), rows)

    def reset_eval(self, name: str) -> None:
        """Drop eval/<name>.jsonl (rows an interrupted attempt left, before they are redone)."""
        self.eval_path(name).unlink(missing_ok=True)

    def write_eval(self, name: str, rows: list[dict]) -> None:
        """Replace eval/<name>.jsonl with `rows` atomically (all of one evaluation at once)."""
        atomic_write_text(self.eval_path(name), "".join(_dumps(r) + "\n" for r in rows))

    def heldout_steps(self) -> list[int]:
        """Steps with held-out evaluation rows of an RL run (eval/heldout_step_N.jsonl), sorted."""
        found = (p.stem.removeprefix(HELDOUT_PREFIX) for p in self.eval_dir.glob(f"{HELDOUT_PREFIX}*.jsonl"))
        return sorted(int(s) for s in found if s.isdigit())

    def heldout_rows(self, step: int) -> list[dict]:
        """Held-out evaluation rows of RL step `step` (0: the starting policy); [] if missing."""
        return self.eval_rows(heldout_name(step))

    def write_curve(self, name: str, curve: dict) -> None:
        """Replace curves/<name>.json atomically with `curve`."""
        atomic_write_json(self.curve_path(name), curve)
        if self.listener is not None:
            self.listener.curve(name, curve)

    def write_summary(self, summary: dict) -> None:
        """Write summary.json atomically (adds "finished_at" if absent); marks the run complete."""
        row = dict(summary)
        row.setdefault("finished_at", _utc_now())
        atomic_write_json(self.summary_path, row)
        if self.listener is not None:
            self.listener.summary(row)

    # -- readers -------------------------------------------------------------------------------

    def config(self) -> dict:
        """Contents of config.json, {} if missing."""
        cfg = read_json(self.config_path, default={})
        if not isinstance(cfg, dict):
            raise StoreError(f"{self.config_path}: expected a JSON object")
        return cfg

    def metrics(self) -> list[dict]:
        """All metrics lines."""
        return read_jsonl(self.metrics_path)

    def samples(self, step: int) -> list[dict]:
        """Rollouts of RL step `step` ([] if none)."""
        return read_jsonl(self.samples_path(step))

    def sample_steps(self) -> list[int]:
        """Steps that have a samples file, sorted."""
        if not self.samples_dir.is_dir():
            return []
        steps = []
        for child in self.samples_dir.iterdir():
            m = _SAMPLES_FILE_RE.fullmatch(child.name)
            if m and child.is_file():
                steps.append(int(m.group(1)))
        return sorted(steps)

    def traces(self) -> list[dict]:
        """Synthesized SFT traces."""
        return read_jsonl(self.traces_path)

    def curves(self, skipped: list[str] | None = None) -> dict[str, dict]:
        """name -> curve for every curves/<name>.json, sorted by name. A file that is not a JSON
        object is left out (one bad file hides only itself), its reason appended to `skipped`."""
        if not self.curves_dir.is_dir():
            return {}
        out = {}
        for child in sorted(self.curves_dir.glob("*.json")):
            if not (child.is_file() and _NAME_RE.fullmatch(child.stem)):
                continue
            try:
                curve = read_json(child, default={})
            except StoreError as e:
                curve = str(e)
            if isinstance(curve, dict):
                out[child.stem] = curve
            elif skipped is not None:
                skipped.append(curve if isinstance(curve, str) else f"{child}: expected a JSON object")
        return out

    def eval_rows(self, name: str) -> list[dict]:
        """Rows of eval/<name>.jsonl ([] if missing)."""
        return read_jsonl(self.eval_path(name))

    def summary(self) -> dict | None:
        """Contents of summary.json, None while the run has not completed."""
        return read_json(self.summary_path, default=None)

    def status(self) -> str:
        """Run state: "complete", "running", "crashed" or "unknown".

        "complete" if summary.json exists; else "running" if the config's pid is alive on this
        host; else "crashed". "unknown" if there is no readable config.json.
        """
        if self.summary_path.exists():
            return "complete"
        if not self.config_path.exists():
            return "unknown"
        try:
            cfg = self.config()
        except StoreError:
            return "unknown"
        pid = cfg.get("pid")
        same_host = cfg.get("hostname") == socket.gethostname()
        if same_host and isinstance(pid, int) and not isinstance(pid, bool) and _pid_alive(pid):
            return "running"
        return "crashed"


# ---------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------


class FollowerRun(Run):
    """A run folder that another process writes: rank 0 of a torchrun job, while this rank
    runs the same story. It reads like a Run; its writers do nothing (rank 0 writes what every
    rank gathered), and starting a checkpoint is an error: only rank 0 saves."""

    def write_config(self, stage: str, config: dict) -> None:
        pass

    def log_metrics(self, record: dict) -> None:
        pass

    def rewind(self, step: int) -> None:
        pass

    def append_samples(self, step: int, rows: list[dict]) -> None:
        pass

    def append_traces(self, rows: list[dict]) -> None:
        pass

    def append_rejected(self, rows: list[dict]) -> None:
        pass

    def append_eval(self, name: str, rows: list[dict]) -> None:
        pass

    def reset_eval(self, name: str) -> None:
        pass

    def write_eval(self, name: str, rows: list[dict]) -> None:
        pass

    def write_curve(self, name: str, curve: dict) -> None:
        pass

    def write_summary(self, summary: dict) -> None:
        pass

    def set_aside_checkpoints_after(self, step: int) -> list[Path]:
        return []

    def repair_jsonl(self, path: Path) -> int:
        return 0

    def begin_checkpoint(self, path: Path) -> Path:
        raise StoreError(f"{path}: only rank 0 writes checkpoints")

    def mark_checkpoint_complete(self, path: Path) -> None:
        raise StoreError(f"{path}: only rank 0 writes checkpoints")


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a directory holding a config.json."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def new_run(runs_dir: Path | str, stage: str, config: dict, run_id: str | None = None) -> Run:
    """Create runs_dir/<run_id>/ and write its config.json.

    `run_id` defaults to "<stage>-<YYYYmmdd-HHMMSS UTC>-<4 hex>". An existing empty folder is
    reused; a non-empty one is refused with StoreError.
    """
    if run_id is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_id = f"{stage}-{stamp}-{secrets.token_hex(2)}"
    _check_name("run id", run_id)
    path = Path(runs_dir) / run_id
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise StoreError(f"run folder already exists and is not empty: {path}")
    path.mkdir(parents=True, exist_ok=True)
    run = Run(path)
    run.write_config(stage, config)
    return run


def _candidates(path: Path | str, runs_dir: Path | str) -> list[Path]:
    """Where a path recorded in a run folder (or typed by a user) may be, most direct first:
    as given (absolute, or from the working directory), under `runs_dir`, and from its run id on:
    for "runs/sft-x/checkpoints/final" or "/elsewhere/runs/sft-x/...", `runs_dir`/sft-x/...
    once sft-x is a run there. So stored paths resolve from any working directory and after the
    runs folder moved."""
    p, root = Path(path), Path(runs_dir)
    out = [p]
    if not p.is_absolute():
        out.append(root / p)
    parts = p.parts
    for i, part in enumerate(parts):
        if part not in ("/", "..", ".") and is_run_dir(root / part):
            out.append(root.joinpath(*parts[i:]))
    return out


def resolve_path(path: Path | str, runs_dir: Path | str = "runs") -> Path | None:
    """The existing file or folder a stored or typed path names (see `_candidates`), or None."""
    return next((c for c in _candidates(path, runs_dir) if c.exists()), None)


def open_run(path_or_id: Path | str, runs_dir: Path | str = "runs") -> Run:
    """The run at a folder path, or with that id under `runs_dir`; StoreError if neither exists.

    A folder holding config.json is preferred over a bare folder of the same name.
    """
    candidates = _candidates(path_or_id, runs_dir)
    for check in (is_run_dir, Path.is_dir):
        for candidate in candidates:
            if check(candidate):
                return Run(candidate)
    raise StoreError(f"run not found: {path_or_id} (also looked in {runs_dir})")


def resolve_checkpoint(name: str, runs_dir: Path | str = "runs") -> str:
    """A model name as the loaders want it: a run (folder or id) stands for its final checkpoint
    (`Run.final_checkpoint`), a stored or typed path for the folder it names from here; anything
    else (a hub id) is returned as it is."""
    for candidate in _candidates(name, runs_dir):
        if is_run_dir(candidate) and (candidate / "checkpoints").is_dir():
            final = Run(candidate).final_checkpoint()
            if final is not None:
                return str(final)
    found = resolve_path(name, runs_dir)
    return str(found) if found is not None else name


def run_of(path: Path | str, runs_dir: Path | str = "runs") -> Run | None:
    """The run under `runs_dir` whose folder holds `path` (a checkpoint, a traces file), or None."""
    found = resolve_path(path, runs_dir)
    if found is None:
        return None
    found = found.resolve()
    return next((r for r in list_runs(runs_dir) if r.path.resolve() in (found, *found.parents)), None)


def find_runs(runs_dir: Path | str, stage: str | None = None, status: str | None = None,
              match: dict[str, Any] | None = None, with_checkpoint: bool = False) -> list[Run]:
    """Runs under `runs_dir`, newest first, of `stage`, in `status` ("complete", ...), whose
    config has every dotted key of `match` at that value, and (`with_checkpoint`) that hold a
    model (`Run.final_checkpoint`)."""
    out = []
    for run in list_runs(runs_dir):
        if stage is not None and run.stage != stage:
            continue
        if status is not None and run.status() != status:
            continue
        if match and any(run.setting(k, _MISSING) != v for k, v in match.items()):
            continue
        if with_checkpoint and run.final_checkpoint() is None:
            continue
        out.append(run)
    return out


_MISSING = object()


def list_runs(runs_dir: Path | str) -> list[Run]:
    """Runs (folders with config.json) under `runs_dir`, newest first by created_at, then name.

    A missing `runs_dir` gives [].
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    keyed = []
    for child in runs_dir.iterdir():
        if not is_run_dir(child):
            continue
        run = Run(child)
        try:
            created = str(run.config().get("created_at") or "")
        except StoreError:
            created = ""
        keyed.append(((created, child.name), run))
    keyed.sort(key=lambda kr: kr[0], reverse=True)
    return [run for _, run in keyed]
