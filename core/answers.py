"""Answer extraction and math-verify scoring in a pool of worker processes.

Why processes: math-verify (sympy underneath) can run for minutes or forever on adversarial
answers (`9^{9^{9^{9}}}` is evaluated inside GMP, where no Python signal can interrupt it).
math-verify's own timeout uses `signal.alarm`, which only works on a process's main thread
and fails (or is silently disabled) elsewhere. So every worker runs verification on its own
main thread with a soft `setitimer` alarm, and the parent enforces a hard wall-clock deadline
per item: a worker that overruns it is killed and replaced. The parent may have torch loaded
and threads running, so workers are started with "spawn" (never fork). As with any spawned
multiprocessing worker, a script that verifies at import time must guard its top-level code
with `if __name__ == "__main__":` (the child re-imports the main module).

No torch import here; math-verify itself is imported only inside the workers.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from typing import Any, Self

from core.types import Verdict

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Hard deadline = soft deadline + this grace: the soft alarm usually wins and saves a restart.
_HARD_GRACE_S = 0.3
# Spawning a worker costs an interpreter start plus the sympy import (about a second).
_START_TIMEOUT_S = 120.0
_KILL_WAIT_S = 0.5


def extract_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` (or `\\fbox{...}`), brace-balanced.

    Braces are counted with backslash escapes skipped (`\\{` is a literal brace in LaTeX). If
    the last box is unclosed (a response truncated mid-answer), the last closed one before it
    is returned; None when there is no closed box at all. The scan is linear in the text.
    """
    for match in reversed(list(_BOX_RE.finditer(text))):
        end = matching_brace(text, match.end() - 1)
        if end is not None:
            return text[match.end() : end].strip()
    return None


def matching_brace(text: str, open_at: int) -> int | None:
    """Index of the `}` closing the `{` at `open_at`, or None if it never closes."""
    depth = 0
    i = open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character, so `\{` and `\}` do not count
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _wrap(answer: str) -> str:
    """Present a bare answer the way math-verify's extractor expects: inside `\\boxed{}`.

    A bare `0.5` or `27.0` is found by math-verify too, but wrapping makes LaTeX answers
    (`\\frac{1}{2}`, `\\text{Evelyn}`) and plain ones go through the same extraction path.
    """
    s = answer.strip()
    if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
        s = s.strip("$").strip()
    if _BOX_RE.match(s):
        return s
    return "\\boxed{" + s + "}"


# ----------------------------------------------------------------------------- worker side


class _SoftTimeout(BaseException):
    """Raised by the worker's alarm. BaseException, so math-verify's `except Exception`
    blocks cannot swallow it and turn a timeout into a parse error."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _SoftTimeout()


def _score(gold: str, pred: str) -> tuple[bool, str]:
    """(correct, status) for one pair; runs in a worker. math-verify's own alarms are off:
    the worker's item-level alarm and the parent's hard deadline replace them."""
    from math_verify import parse, verify

    gold_parsed = parse(_wrap(gold), parsing_timeout=None)  # type: ignore[arg-type]
    if not gold_parsed:
        return False, "parse_error"
    pred_parsed = parse(_wrap(pred), parsing_timeout=None)  # type: ignore[arg-type]
    if not pred_parsed:
        return False, "parse_error"
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)), "ok"


def _score_with_alarm(gold: str, pred: str, budget_s: float) -> tuple[bool, str]:
    """`_score` under a soft alarm. Catches Python-level slowness without killing the worker;
    C-level hangs (big-integer arithmetic) are left to the parent's hard deadline."""
    signal.setitimer(signal.ITIMER_REAL, budget_s)
    try:
        return _score(gold, pred)
    except _SoftTimeout:
        return False, "timeout"
    except Exception:  # noqa: BLE001 - any failure inside sympy is a parse failure here
        return False, "parse_error"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _worker_main(conn: Connection) -> None:
    """Worker loop: import and warm up math-verify, say "ready", then score items until told
    to stop. Runs on the main thread of a spawned process, so signal-based alarms work."""
    import logging

    import math_verify  # noqa: F401 - import now, so the first item's clock excludes it

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGALRM, _on_alarm)
    # Ctrl-C reaches the whole process group; the parent handles it and replaces busy workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _score_with_alarm("\\frac{1}{2}", "0.5", _START_TIMEOUT_S)  # pays lazy imports and caches
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        job, gold, pred, budget_s = msg
        try:
            result = _score_with_alarm(gold, pred, budget_s)
        except _SoftTimeout:  # the alarm fired during the clean-up itself
            result = (False, "timeout")
        conn.send((job, result))


# ----------------------------------------------------------------------------- parent side


@dataclass
class _Worker:
    process: Any
    conn: Connection
    started: float
    ready: bool = False
    job: int | None = None
    deadline: float = 0.0


def _stop_worker(worker: _Worker, graceful: bool) -> None:
    """Stop one worker: ask an idle one to exit, otherwise SIGKILL it. A stuck worker holds
    nothing worth cleaning up, and SIGKILL also ends a stopped or signal-blocking process,
    which keeps the time from a hard deadline to a returned Verdict small."""
    proc = worker.process
    if graceful and worker.job is None and proc.is_alive():
        try:
            worker.conn.send(None)
        except (OSError, ValueError):
            pass
        proc.join(_KILL_WAIT_S)
    if proc.is_alive():
        proc.kill()
        proc.join(_KILL_WAIT_S)
    worker.conn.close()


def _stop_workers(workers: list[_Worker]) -> None:
    """Finalizer (explicit close or interpreter exit); must not reference the pool itself."""
    for worker in workers:
        _stop_worker(worker, graceful=True)
    workers.clear()


class VerifierPool:
    """A fixed-size pool of math-verify worker processes with a hard per-item timeout.

    Workers start lazily on the first `verify` call. Thread-safe in the simple sense: calls
    are serialised by a lock. An item that exceeds `timeout_s` comes back as a "timeout"
    Verdict within about `timeout_s + 0.5` s; its worker is killed and a replacement starts
    in the background (it is waited for only when there is more work).
    """

    def __init__(self, num_workers: int = 2, timeout_s: float = 5.0, cache_size: int = 65536):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self._ctx = get_context("spawn")
        self._workers: list[_Worker] = []
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers)
        # (gold, prediction) -> verdict of an earlier call; math-verify is deterministic, so a
        # definitive verdict ("ok", "parse_error") is reused; a timeout is tried again.
        self._cache: OrderedDict[tuple[str, str], Verdict] = OrderedDict()
        self._cache_size = cache_size

    @property
    def stats(self) -> dict[str, int]:
        """Counts since creation: ok / no_answer / parse_errors / timeouts / crashes /
        worker_restarts (a restart follows every hard timeout and every crash)."""
        keys = ("ok", "no_answer", "parse_errors", "timeouts", "crashes", "worker_restarts")
        return {k: self._counts[k] for k in keys}

    def verify(self, golds: Sequence[str], predictions: Sequence[str | None]) -> list[Verdict]:
        """One Verdict per (gold, prediction) pair, in order. Predictions are extracted
        answers (e.g. the content of `\\boxed{}`); None or blank means "no_answer". A pair
        that repeats one earlier in the call, or one of the last `cache_size` pairs scored, is
        scored once (a budget sweep asks the same question for every budget a response fits
        in; RL and evaluation see the same few answers to a problem again and again)."""
        if len(golds) != len(predictions):
            raise ValueError(f"{len(golds)} golds but {len(predictions)} predictions")
        with self._lock:
            if self._closed:
                raise RuntimeError("VerifierPool is closed")
            results: list[Verdict | None] = [None] * len(golds)
            pending: deque[int] = deque()
            first: dict[tuple[str, str], int] = {}
            repeats: list[tuple[int, int]] = []
            for i, pred in enumerate(predictions):
                if pred is None or not str(pred).strip():
                    results[i] = Verdict(False, pred, "no_answer")
                    self._counts["no_answer"] += 1
                elif (hit := self._cache.get(key := (str(golds[i]), str(pred)))) is not None:
                    results[i] = hit
                    self._cache.move_to_end(key)
                elif (seen := first.setdefault(key, i)) != i:
                    repeats.append((i, seen))
                else:
                    pending.append(i)
            scored = list(pending)
            if pending:
                self._ensure_workers()
                try:
                    self._run(pending, golds, predictions, results)
                except BaseException:
                    # e.g. KeyboardInterrupt: a busy worker's late answer must not be read as
                    # the answer to an item of the next call, so busy workers are replaced.
                    for worker in [w for w in self._workers if w.job is not None]:
                        self._replace(worker)
                    raise
            for i, seen in repeats:
                results[i] = results[seen]
            for i in scored:
                verdict = results[i]
                if verdict is not None and verdict.status in ("ok", "parse_error") and self._cache_size:
                    self._cache[(str(golds[i]), str(predictions[i]))] = verdict
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
            return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop all workers. Idempotent; also runs at interpreter exit via the finalizer."""
        with self._lock:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main, args=(child_conn,), daemon=True, name="math-verify-worker"
        )
        proc.start()
        child_conn.close()
        return _Worker(proc, parent_conn, started=time.monotonic())

    def _ensure_workers(self) -> None:
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())

    def _replace(self, worker: _Worker) -> None:
        """Kill `worker` and put a freshly spawned one in its slot."""
        _stop_worker(worker, graceful=False)
        self._workers[self._workers.index(worker)] = self._spawn()
        self._counts["worker_restarts"] += 1

    def _run(
        self,
        pending: deque[int],
        golds: Sequence[str],
        preds: Sequence[str | None],
        results: list[Verdict | None],
    ) -> None:
        """Event loop: hand items to idle workers, collect answers, enforce deadlines."""
        while pending or any(w.job is not None for w in self._workers):
            self._dispatch(pending, golds, preds)
            for worker in self._wait_ready(bool(pending)):
                self._receive(worker, pending, preds, results)
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.job is not None and now >= worker.deadline:
                    job = worker.job
                    self._record(results, job, Verdict(False, preds[job], "timeout"))
                    self._replace(worker)
                elif not worker.ready and now - worker.started > _START_TIMEOUT_S:
                    raise RuntimeError(f"math-verify worker did not start in {_START_TIMEOUT_S}s")

    def _dispatch(self, pending: deque[int], golds: Sequence[str], preds: Sequence[Any]) -> None:
        for worker in self._workers:
            if not pending:
                return
            if worker.ready and worker.job is None:
                job = pending.popleft()
                msg = (job, str(golds[job]), str(preds[job]), self.timeout_s)
                try:
                    worker.conn.send(msg)
                except (OSError, ValueError):  # died while idle: replace, retry the item
                    pending.appendleft(job)
                    self._counts["crashes"] += 1
                    self._replace(worker)
                    continue
                worker.job = job
                worker.deadline = time.monotonic() + self.timeout_s + _HARD_GRACE_S

    def _wait_ready(self, want_starting: bool) -> list[_Worker]:
        """Block until a busy (or, if there is work left, a starting) worker has something to
        say, or until the earliest deadline."""
        watched = [w for w in self._workers if w.job is not None or (want_starting and not w.ready)]
        if not watched:
            return []
        deadlines = [
            w.deadline if w.job is not None else w.started + _START_TIMEOUT_S for w in watched
        ]
        timeout = max(0.0, min(deadlines) - time.monotonic())
        ready_conns = set(wait([w.conn for w in watched], timeout))
        return [w for w in watched if w.conn in ready_conns]

    def _receive(
        self,
        worker: _Worker,
        pending: deque[int],
        preds: Sequence[str | None],
        results: list[Verdict | None],
    ) -> None:
        """Read one message from `worker`; a closed pipe means the worker died."""
        try:
            msg = worker.conn.recv()
        except (EOFError, OSError):
            if not worker.ready:
                worker.process.join(_KILL_WAIT_S)
                raise RuntimeError(
                    f"math-verify worker died while starting (exit code {worker.process.exitcode})"
                    "; workers are spawned, so a script that verifies at import time must guard"
                    " its top-level code with `if __name__ == '__main__':`"
                ) from None
            job = worker.job
            self._counts["crashes"] += 1
            if job is not None:  # e.g. a segfault or recursion blow-up inside sympy
                self._record(results, job, Verdict(False, preds[job], "parse_error"))
            self._replace(worker)
            return
        if msg[0] == "ready":
            worker.ready = True
            return
        job, (correct, status) = msg
        worker.job = None
        self._record(results, job, Verdict(bool(correct), preds[job], status))

    def _record(self, results: list[Verdict | None], job: int, verdict: Verdict) -> None:
        results[job] = verdict
        key = {"ok": "ok", "timeout": "timeouts", "parse_error": "parse_errors"}[verdict.status]
        self._counts[key] += 1


_DEFAULT_POOL: VerifierPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool(timeout_s: float = 5.0, num_workers: int = 2) -> VerifierPool:
    """The module-level pool, created lazily and re-created if the settings change."""
    global _DEFAULT_POOL
    with _DEFAULT_LOCK:
        pool = _DEFAULT_POOL
        wanted = (float(timeout_s), num_workers)
        if pool is None or pool._closed or (pool.timeout_s, pool.num_workers) != wanted:
            if pool is not None:
                pool.close()
            pool = _DEFAULT_POOL = VerifierPool(num_workers=num_workers, timeout_s=timeout_s)
        return pool


def verify_answers(
    golds: Sequence[str],
    predictions: Sequence[str | None],
    timeout_s: float = 5.0,
    num_workers: int = 2,
) -> list[Verdict]:
    """Convenience: `VerifierPool.verify` on the shared module-level pool."""
    return default_pool(timeout_s, num_workers).verify(golds, predictions)
