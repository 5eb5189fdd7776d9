"""A teacher behind an OpenAI-compatible HTTP endpoint (vLLM serve, SGLang, TGI, OpenAI, ...).

Standard library only (urllib), torch-free. Each (prompt, sample) is one request with n = 1 and
its own seed derived from (call seed, prompt, sample): per-sample token counts come back exact
in `usage`, a failed sample is retried alone, and the same call seed asks the server for the
same samples (whether it honours `seed` is up to the server). Requests run in a thread pool.

A request that times out, cannot connect, or gets HTTP 429 / 5xx is retried `retries` times
with exponential back-off; anything else (HTTP 4xx, a malformed body) fails at once. Every
failure surfaces as a `TeacherError` that says which endpoint failed and how, so the pipeline
can record it against one problem and go on.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from core.config import SamplingConfig
from core.sampling.protocol import AnswerEnd, derive_seed
from core.sampling.text import settle
from core.types import Completion

APIS = ("chat", "completions")
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class TeacherError(RuntimeError):
    """A teacher call failed. `kind`: "timeout", "connection", "http" or "bad_response"."""

    def __init__(self, message: str, kind: str = "http"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class HTTPCompletion(Completion):
    """A Completion from a server: `token_ids` are filled only when a tokenizer was given;
    `usage_tokens` is the server's count of generated tokens."""

    usage_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return self.usage_tokens or len(self.token_ids)


def is_http_spec(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def parse_spec(spec: str) -> tuple[str, str]:
    """"http://host:8000/v1#model-name" -> (base URL, model name; "" = ask the server)."""
    base, _, model = spec.partition("#")
    return base.rstrip("/"), model


class HTTPSampler:
    """Completions from an OpenAI-compatible server.

    `complete(prompts, ...)` takes user-message contents (chat API) or raw prompt text
    (completions API). `generate(prompt_ids, ...)` is the lab's Sampler protocol: the ids are
    decoded with `tokenizer` (required then) and sent to /completions as already-templated text.
    """

    can_fork = False

    def __init__(self, base_url: str, model: str = "", api: str = "chat", api_key: str | None = None,
                 timeout_s: float = 300.0, retries: int = 2, backoff_s: float = 1.0,
                 concurrency: int = 8, tokenizer: Any | None = None):
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self.tokenizer = tokenizer

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> HTTPSampler:
        base, model = parse_spec(spec)
        return cls(base, model, **kwargs)

    @property
    def name(self) -> str:
        return f"{self.model or '?'}@{self.base_url}"

    def sync_weights(self, model: Any) -> None:
        """Nothing to do: the server owns its weights."""

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` by the local tokenizer, None without one."""
        if self.tokenizer is None:
            return None
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- sampling ------------------------------------------------------------------------

    def complete(self, prompts: Sequence[str], params: SamplingConfig, seed: int, n: int = 1,
                 api: str | None = None, prompt_offset: int = 0) -> list[list[Completion]]:
        """result[i][j]: sample j of prompt i, seeded as prompt prompt_offset + i. Raises
        TeacherError if any request fails."""
        self._ensure_model()
        jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]

        def one(job: tuple[int, int]) -> Completion:
            i, j = job
            return self._sample(prompts[i], params, derive_seed(seed, prompt_offset + i, j), api or self.api, i, j)

        if len(jobs) == 1 or self.concurrency == 1:
            done = [one(job) for job in jobs]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
                futures = [pool.submit(one, job) for job in jobs]
                try:
                    done = [f.result() for f in futures]
                except BaseException:  # the problem has failed: do not send what is queued
                    for f in futures:
                        f.cancel()
                    raise
        out: list[list[Completion]] = [[] for _ in prompts]
        for c in done:
            out[c.prompt_index].append(c)
        return out

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingConfig, seed: int,
                 n: int = 1, progress: bool = False, until: AnswerEnd | None = None,
                 prompt_offset: int = 0) -> list[list[Completion]]:
        """`Sampler.generate` over /completions (`until`: each completion cut after it came;
        `prompt_offset`: as in the other backends, prompt i's requests are seeded as prompt
        prompt_offset + i)."""
        if self.tokenizer is None:
            raise TeacherError(f"{self.name}: generate() from token ids needs a tokenizer", "bad_response")
        texts = [self.tokenizer.decode(list(ids)) for ids in prompt_ids]
        out = self.complete(texts, params, seed, n, api="completions", prompt_offset=prompt_offset)
        return out if until is None else [[settle(self.tokenizer, c, until) for c in g] for g in out]

    def _sample(self, prompt: str, params: SamplingConfig, seed: int, api: str, i: int,
                j: int) -> Completion:
        body: dict[str, Any] = {
            "model": self.model, "n": 1, "temperature": params.temperature, "top_p": params.top_p,
            "max_tokens": params.max_new_tokens, "seed": seed % (2**31),
        }
        if params.min_p > 0:
            body["min_p"] = params.min_p  # vLLM/SGLang extension; OpenAI would reject it
        if params.stop:
            body["stop"] = list(params.stop)
        if api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        reply = self._post(f"/{'chat/completions' if api == 'chat' else 'completions'}", body)
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] if api == "chat" else choice["text"]
            usage = int((reply.get("usage") or {}).get("completion_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError):
            raise TeacherError(f"{self.name}: unexpected response {str(reply)[:200]}", "bad_response") from None
        text = text or ""
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if self.tokenizer else ()
        return HTTPCompletion(text, ids, finish, prompt_index=i, sample_index=j, usage_tokens=usage)

    # -- transport -----------------------------------------------------------------------

    def _ensure_model(self) -> None:
        """Ask the server for its model name when the spec gave none (GET /models)."""
        if self.model:
            return
        reply = self._request("GET", "/models", None)
        try:
            self.model = str(reply["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise TeacherError(f"{self.base_url}/models lists no model; name one as URL#MODEL",
                               "bad_response") from None

    def _post(self, path: str, body: dict) -> dict:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict | None) -> dict:
        """One JSON request with retries on timeouts, connection errors, 429 and 5xx."""
        url = self.base_url + path
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        last: TeacherError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:200].decode("utf-8", "replace")
                last = TeacherError(f"{url}: HTTP {e.code} {detail}".strip(), "http")
                if e.code not in _RETRY_STATUS:
                    raise last from None
                continue
            except TimeoutError:
                last = TeacherError(f"{url}: no answer within {self.timeout_s:g} s", "timeout")
                continue
            except urllib.error.URLError as e:
                kind = "timeout" if isinstance(e.reason, TimeoutError) else "connection"
                last = TeacherError(f"{url}: {e.reason}", kind)
                continue
            except (ConnectionError, OSError) as e:
                last = TeacherError(f"{url}: {type(e).__name__}: {e}", "connection")
                continue
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                raise TeacherError(f"{url}: response is not JSON: {raw[:200]!r}", "bad_response") from None
        assert last is not None
        tries = self.retries + 1
        raise TeacherError(f"{last} (after {tries} tr{'y' if tries == 1 else 'ies'})", last.kind)


def api_key_from_env(var: str) -> str | None:
    """The API key in environment variable `var` (never logged or stored in the run)."""
    return os.environ.get(var) or None
