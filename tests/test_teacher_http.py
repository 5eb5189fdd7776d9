"""The HTTP teacher against a minimal OpenAI-compatible server started on 127.0.0.1 by the test:
retries, a 500 and a timeout mid-run recorded per problem without losing finished results, a
rerun that asks only for the rest, and `lab synth --resume` after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.config import SamplingConfig
from core.stages.synth import RunSink
from core.store import new_run, open_run, read_jsonl
from core.synth.teacher.http import HTTPSampler, TeacherError
from core.synth.teacher.pipeline import run_teacher
from core.tasks.math import MathTask
from core.types import Problem
from tests.conftest import ROOT
from tests.test_teacher import DATA, ListSink, cfg, prompt_kind, scripted_reply

# rule(prompt, kind, nth request for this prompt) -> None (answer), an HTTP status, or seconds to stall
Rule = Callable[[str, str, int], "int | float | None"]


class ScriptedServer:
    """/v1/models, /v1/chat/completions and /v1/completions with scripted_reply's texts."""

    def __init__(self, answers: dict[str, list[str]], rule: Rule | None = None):
        self.answers = answers
        self.rule = rule or (lambda prompt, kind, nth: None)
        self.requests: list[tuple[str, str]] = []  # (kind, prompt)
        self.auth: set[str] = set()
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.attempt_count: Counter[str] = Counter()
        self.delay_s = 0.0
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "scripted-72b"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.auth.add(self.headers.get("Authorization", ""))
                chat = self.path.endswith("/chat/completions")
                prompt = body["messages"][-1]["content"] if chat else body["prompt"]
                status, text = server.answer(prompt)
                if status != 200:
                    self._send(status, {"error": {"message": "scripted failure"}})
                    return
                choice = {"index": 0, "finish_reason": "stop"}
                choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
                try:
                    self._send(200, {"choices": [choice], "model": body["model"],
                                     "usage": {"completion_tokens": len(text.split())}})
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, prompt: str) -> tuple[int, str]:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            return self._answer(prompt)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, prompt: str) -> tuple[int, str]:
        kind = prompt_kind(prompt)
        with self.lock:
            self.requests.append((kind, prompt))
            nth = self.seen[prompt]
            self.seen[prompt] += 1
        action = self.rule(prompt, kind, nth)
        if isinstance(action, int):
            return action, ""
        if isinstance(action, float):
            time.sleep(action)
        with self.lock:
            key = prompt.split("\n\nPlease reason")[0]
            k = self.attempt_count[key]
            self.attempt_count[key] += kind == "attempt"
        return 200, scripted_reply(prompt, self.answers, k)

    def asked(self, question: str, kind: str = "attempt") -> int:
        return sum(1 for k, p in self.requests if k == kind and question in p)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def four_problems() -> tuple[list[Problem], dict[str, list[str]]]:
    problems = [Problem(f"p{i}", f"Problem number {i}: what is {i} + 5?", str(i + 5)) for i in range(4)]
    answers = {p.question: ["0", "1", p.answer, "2"] for p in problems}
    return problems, answers


@pytest.fixture(scope="module")
def task() -> MathTask:
    return MathTask(str(DATA / "math500_20.jsonl"), heldout_only=False)


def test_http_teacher_500_and_timeout_mid_run_keep_finished_results(task, tmp_path, monkeypatch) -> None:
    problems, answers = four_problems()

    def rule(prompt: str, kind: str, nth: int) -> int | float | None:
        if kind == "attempt" and problems[0].question in prompt and nth == 0:
            return 503  # transient: the retry succeeds
        if problems[1].question in prompt:
            return 500  # always: problem p1 fails after its retries
        if kind == "critique" and problems[2].question in prompt:
            return 2.0  # longer than the client's timeout
        return None

    server = ScriptedServer(answers, rule)
    monkeypatch.setenv("T1LAB_TEST_KEY", "sk-test")
    teacher = HTTPSampler(server.url, api_key=os.environ["T1LAB_TEST_KEY"], timeout_s=0.5,
                          retries=1, backoff_s=0.01, concurrency=2)
    run = new_run(tmp_path, "synth", {})
    try:
        out = run_teacher(problems, task, [teacher], teacher, cfg(), RunSink(run), progress=False)
        assert teacher.model == "scripted-72b"  # asked the server (no #MODEL in the URL)
        assert server.auth == {"Bearer sk-test"}
        assert (out["synth/kept"], out["synth/error"]) == (2, 2)
        kept = read_jsonl(run.traces_path)
        assert [r["problem_id"] for r in kept] == ["p0", "p3"]  # p0 was written before p1 failed
        assert kept[0]["teacher"] == "scripted-72b@" + server.url
        assert kept[0]["response_tokens"] == len(kept[0]["response"].split())  # usage counts
        errors = {r["problem_id"]: r for r in RunSink(run).rejected()}
        assert "HTTP 500" in errors["p1"]["error"] and "after 2 tries" in errors["p1"]["error"]
        assert errors["p2"]["error_kind"] == "timeout" and "within 0.5 s" in errors["p2"]["error"]
        # rerun against a healthy server: only the two failed problems are asked again
        server.rule = lambda prompt, kind, nth: None
        before = Counter(k for k, _ in server.requests)
        out = run_teacher(problems, task, [teacher], teacher, cfg(), RunSink(run), progress=False)
        assert out["synth/kept"] == 4 and out["synth/error"] == 0 and out["synth/resumed"] == 2
        later = server.requests[sum(before.values()):]
        assert {p.id for p in problems if any(p.question in q for k, q in later if k == "attempt")} \
            == {"p1", "p2"}
    finally:
        server.close()


def test_parallel_problems_keep_the_server_busy(task) -> None:
    problems, answers = four_problems()
    server = ScriptedServer(answers)
    server.delay_s = 0.05
    teacher = HTTPSampler(server.url, "m", concurrency=1)  # one request per call at a time
    sink = ListSink()
    try:
        out = run_teacher(problems, task, [teacher], teacher, cfg(parallel_problems=4), sink,
                          progress=False)
    finally:
        server.close()
    assert out["synth/kept"] == 4 and sorted(r["problem_id"] for r in sink.rows()) == ["p0", "p1", "p2", "p3"]
    assert server.max_in_flight > 1  # problems overlapped although each call sent one at a time


def test_http_sampler_protocol_and_errors() -> None:
    server = ScriptedServer({"Q": ["1"]}, lambda prompt, kind, nth: 404 if "missing" in prompt else None)
    try:
        class WordTokenizer:
            def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
                return {"input_ids": [len(w) for w in text.split()]}

            def decode(self, ids: list[int]) -> str:
                return "Q\n\nPlease reason step by step" if ids == [1] else "missing"

        sampler = HTTPSampler(server.url + "/", "m", tokenizer=WordTokenizer(), retries=3, backoff_s=0.01)
        groups = sampler.generate([[1]], SamplingConfig(max_new_tokens=8), seed=3, n=2)
        assert [c.sample_index for c in groups[0]] == [0, 1] and groups[0][0].text.endswith("\\boxed{1}.")
        assert groups[0][0].token_ids and groups[0][0].num_tokens == len(groups[0][0].text.split())
        with pytest.raises(TeacherError, match="HTTP 404") as e:  # a 4xx is not retried
            sampler.generate([[2]], SamplingConfig(), seed=0)
        assert e.value.kind == "http" and server.seen["missing"] == 1
    finally:
        server.close()
    with pytest.raises(TeacherError) as e:  # nothing listens any more
        HTTPSampler(server.url, "m", retries=0, timeout_s=1).complete(["Q"], SamplingConfig(), 0)
    assert e.value.kind == "connection"


@pytest.mark.slow
def test_cli_synth_killed_then_resumed_finishes_the_rest(tmp_path) -> None:
    """`lab synth` with an HTTP teacher is SIGKILLed while problem 3 waits for its attempts;
    `lab synth --resume` then asks only for problems 3 and 4."""
    problems = MathTask(str(DATA / "math500_20.jsonl")).problems("heldout", 5)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"problem": f"Train {i}: {p.question}", "answer": p.answer}) + "\n"
                            for i, p in enumerate(problems)))
    questions = [f"Train {i}: {p.question}" for i, p in enumerate(problems)]
    answers = {q: ["0", "1", "2", "3"] for q in questions}
    release = threading.Event()
    server = ScriptedServer(answers, lambda prompt, kind, nth: 0.0 if questions[2] not in prompt
                            or release.wait(30) else None)
    args = [sys.executable, "-m", "lab", "synth", "-q", "--runs-dir", str(tmp_path), f"task.name={data}",
            f"teacher.models={server.url}#scripted", "teacher.num_attempts=4", "teacher.concurrency=1"]
    run_dir = tmp_path / "killed"
    try:
        proc = subprocess.Popen([*args, "--run-id", "killed"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 120
        while not server.asked(questions[2]) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert server.asked(questions[2]), proc.stderr.read().decode()[-2000:] if proc.poll() else "timeout"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        release.set()
        done = RunSink(open_run(run_dir)).rows()
        assert sorted(r["problem_id"] for r in done) == ["0", "1"]
        before = len(server.requests)
        resumed = subprocess.run([sys.executable, "-m", "lab", "synth", "-q", "--runs-dir", str(tmp_path),
                                  "--resume", "killed"], cwd=ROOT, capture_output=True, text=True,
                                 timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        out = json.loads(resumed.stdout.strip().splitlines()[-1])
        later = [p for k, p in server.requests[before:] if k == "attempt"]
        assert {i for i, q in enumerate(questions) if any(q in p for p in later)} == {2, 3, 4}
        assert out["synth/resumed"] == 2 and out["synth/problems"] == 5
        assert sum(out[f"synth/{s}"] for s in ("kept", "too_easy", "too_hard", "unverified",
                                                "too_long", "duplicate", "error")) == 5
    finally:
        release.set()
        server.close()
