"""Teachers: anything that turns prompt texts into completions.

A teacher is a local model (through the lab's samplers) or an OpenAI-compatible HTTP
endpoint. Both take prompts
as user-message contents; a local model with a chat template gets them inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from core.config import ModelConfig, SamplingConfig, TeacherConfig
from core.sampling import make_sampler
from core.sampling.text import encode_prompts
from core.store import resolve_checkpoint
from core.synth.teacher.http import HTTPSampler, api_key_from_env, is_http_spec
from core.types import Completion


class Teacher(Protocol):
    name: str

    def complete(self, prompts: Sequence[str], params: SamplingConfig, seed: int,
                 n: int = 1) -> list[list[Completion]]:
        """result[i][j]: sample j of prompt i (user-message contents in, text out)."""
        ...

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` in this teacher's tokenizer; None when it has none locally."""
        ...


def render_user_message(tokenizer: Any, content: str) -> str:
    """The prompt string a local model continues: its chat template if it has one, else the
    content and a newline (the same rule as MathTask.render_prompt)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    return content + "\n"


class LocalTeacher:
    """A local model as a teacher, sampled by the lab's own sampler (teacher.sampling.backend:
    transformers or vLLM), so seeds and finish reasons behave as everywhere else."""

    def __init__(self, name: str, model: Any, tokenizer: Any, backend: str = "hf",
                 sampling: SamplingConfig | None = None):
        self.name = name
        self.tokenizer = tokenizer
        self.sampler = make_sampler(backend, model, tokenizer, sampling)

    def complete(self, prompts: Sequence[str], params: SamplingConfig, seed: int,
                 n: int = 1) -> list[list[Completion]]:
        texts = [render_user_message(self.tokenizer, p) for p in prompts]
        return self.sampler.generate(encode_prompts(self.tokenizer, texts), params, seed, n)

    def count_tokens(self, text: str) -> int | None:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def open_teacher(spec: str, cfg: TeacherConfig, runs_dir: str = "runs") -> Teacher:
    """A teacher from a spec: http(s)://HOST/v1[#MODEL], or a model folder / run / hub id."""
    if is_http_spec(spec):
        return HTTPSampler.from_spec(
            spec, api=cfg.http_api, api_key=api_key_from_env(cfg.api_key_env),
            timeout_s=cfg.timeout_s, retries=cfg.retries, concurrency=cfg.concurrency,
        )
    from core.models import load_model  # torch: only when a local teacher is opened

    model, tok = load_model(ModelConfig(name=resolve_checkpoint(spec, runs_dir)), seed=0)
    return LocalTeacher(spec, model, tok, cfg.sampling.backend, cfg.sampling)


def open_teachers(cfg: TeacherConfig, runs_dir: str = "runs") -> tuple[list[Teacher], Teacher]:
    """(attempt teachers, critic); a spec named twice is opened once."""
    opened: dict[str, Teacher] = {}
    for spec in dict.fromkeys([*cfg.models, cfg.critic or cfg.models[0]]):
        opened[spec] = open_teacher(spec, cfg, runs_dir)
    return [opened[s] for s in cfg.models], opened[cfg.critic or cfg.models[0]]
