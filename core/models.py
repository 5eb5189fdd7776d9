"""Load and save policies in Hugging Face format; build the embedded tiny model; add LoRA.

Everything is saved with `save_pretrained`, so transformers, PEFT and vLLM all load the same
folder. Hub ids and local folders go through one function (`load_policy`); a model config goes
through `load_model` (the embedded model or a saved one, on the device and dtype it asks for).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from core.config import LoraConfig, ModelConfig
from core.hub import hub_reachable, offline_mode
from core.store import set_file_modes
from core.tasks import minimath
from core.tasks.pairsum import WORDS

EOS, PAD, UNK = "<eos>", "<pad>", "<unk>"
EMBEDDED = "embedded"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message is one line and says what to do."""


@dataclass(frozen=True)
class TinySpec:
    """Shape of the embedded Qwen2 model (about 0.9M parameters at the defaults)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 512
    max_number: int = 130  # every integer 0..max_number is one token


def build_tokenizer(max_number: int = 130) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one token per word, per number, per newline.

    Each word exists with and without a leading space, and the decoder fuses tokens, so
    decode(encode(text)) == text for any text made of these words.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    words = list(WORDS) + [str(n) for n in range(max_number + 1)]
    vocab = [PAD, EOS, UNK, "\n"] + words + [" " + w for w in words]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[^\s]+|\n| "), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


# Qwen2's pre-tokenizer: words with their leading space, every digit alone, runs of punctuation.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def build_bpe_tokenizer(corpus: list[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus`, pre-tokenized as Qwen2's is (one token
    per digit), so a number costs as many tokens as it has digits, as with real models."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        # braces stay tokens of their own, so no merge spans one ("{\\" of "\\boxed{\\frac"): a
        # forced-answer cue that ends in "\\boxed{" is then followed by exactly the tokens a
        # trace has there. Qwen2's own split (which AutoTokenizer reloads) gives the same ids,
        # as no learned merge crosses a brace.
        pre_tokenizers.Split(Regex(r"[{}]"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, unk_token=UNK,
                                   clean_up_tokenization_spaces=False, model_max_length=4096)


def embedded_tokenizer(task: str, max_number: int = 130) -> PreTrainedTokenizerFast:
    """The embedded model's tokenizer for a task: word-level for pairsum; byte-level BPE (what
    real models use, trained on the embedded math task's text) for every other task, since
    bytes cover any text."""
    if task != "pairsum":
        return build_bpe_tokenizer(minimath.tokenizer_corpus())
    return build_tokenizer(max_number)


def build_tiny_model(spec: TinySpec | None = None, seed: int = 0, task: str = "pairsum") -> tuple[Any, Any]:
    """A randomly initialised Qwen2 causal LM and its tokenizer (see `embedded_tokenizer`)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    spec = spec or TinySpec()
    tokenizer = embedded_tokenizer(task, spec.max_number)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=10000.0,
    )
    # Eager attention: at this size it beats SDPA on CPU (docs/perf_log.md).
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and " " not in name


def resolve_source(name_or_path: str) -> str:
    """A local folder (checked for config.json) or a hub id; anything else is an error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is not a model folder (no config.json inside)")
        return str(path)
    if _looks_like_hub_id(name_or_path):
        return name_or_path
    raise ModelLoadError(f"model folder not found: {name_or_path}")


def check_reachable(hub_id: str) -> None:
    """ModelLoadError when a hub model is neither in the local cache nor downloadable now (no
    network), so a run that would fail at its first load is refused before it starts."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        return
    if offline_mode() or not hub_reachable():
        raise ModelLoadError(f"cannot reach the Hugging Face hub to download {hub_id!r} (no network) and it "
                             "is not in the local cache; pass a local model folder instead")


def check_weights(folder: str) -> None:
    """ModelLoadError when a weights file of a local model folder is truncated or not
    safetensors (reads the headers only: cheap, before any run folder is made)."""
    from safetensors import safe_open

    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (OSError, SafetensorError) as e:
            raise ModelLoadError(f"could not load model {folder!r}: {file.name}: {str(e).splitlines()[0]}") from None


def load_tokenizer(source: str, **kwargs: Any) -> Any:
    """AutoTokenizer, except for word-level tokenizers (the embedded model's).

    transformers >= 5 maps every `qwen2` model to its byte-level Qwen2Tokenizer, which would
    split our one-token numbers into digits; a WordLevel tokenizer.json is loaded as it is.
    """
    tok_file = Path(source) / "tokenizer.json"
    if tok_file.exists():
        model_type = json.loads(tok_file.read_text()).get("model", {}).get("type")
        if model_type == "WordLevel":
            return PreTrainedTokenizerFast.from_pretrained(source, **kwargs)
    return AutoTokenizer.from_pretrained(source, **kwargs)


@contextlib.contextmanager
def _hf_bars_off(off: bool = True) -> Iterator[None]:
    """transformers' own progress bars off inside (its "Loading weights" and "Writing model
    shards" bars, at every checkpoint the lab writes or reads, are noise; -q must mean quiet)."""
    from transformers.utils import logging as hf_logging

    shown = off and hf_logging.is_progress_bar_enabled()
    if shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _load(source: str, dtype: torch.dtype, attn: str | None, **kwargs: Any) -> tuple[Any, Any]:
    tokenizer = load_tokenizer(source, **kwargs)
    if attn:
        kwargs["attn_implementation"] = attn
    with _hf_bars_off(Path(source).is_dir()):  # a hub model's bar stays: loading it takes a while
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    return model, tokenizer


def load_policy(
    name_or_path: str,
    dtype: torch.dtype | None = None,
    device: str | None = None,
    attn_implementation: str | None = None,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer (with its chat template) from a folder or hub id.

    Local folders and hub ids take the same path; a hub id is tried from the local cache
    first, then downloaded if the hub answers.
    """
    source = resolve_source(name_or_path)
    dtype = dtype or torch.float32
    try:
        if os.path.exists(source):
            model, tokenizer = _load(source, dtype, attn_implementation)
        else:
            try:
                model, tokenizer = _load(source, dtype, attn_implementation, local_files_only=True)
            except OSError:
                if offline_mode() or not hub_reachable():
                    raise ModelLoadError(
                        f"cannot reach the Hugging Face hub to download {source!r} (no network); "
                        "pass a local model folder instead"
                    ) from None
                model, tokenizer = _load(source, dtype, attn_implementation)
    except (OSError, SafetensorError) as e:  # a missing or truncated weights file, a bad config
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"could not load model {source!r}: {first}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device:
        model.to(device)
    return model, tokenizer


def save_policy(model: Any, tokenizer: Any, path: Path | str, state_dict: dict | None = None) -> Path:
    """Save in HF format (safetensors). A PEFT model is merged first so any loader reads it.
    `state_dict`: the weights to write instead of the model's own (a sharded model's, gathered)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    to_save = model
    if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        import copy

        to_save = copy.deepcopy(model).merge_and_unload()
    if state_dict is not None and getattr(model.config, "tie_word_embeddings", False):
        # a gathered state dict holds tied weights twice; the model's own save writes them once
        tied = getattr(model, "_tied_weights_keys", None) or {}
        state_dict = {k: v for k, v in state_dict.items() if k not in tied}
    with _hf_bars_off():
        if _distributed_rank() > 0:  # transformers writes weights on rank 0 only; a rank's own copy (its vLLM engine's)
            _write_weights(to_save, path, state_dict)
        else:
            to_save.save_pretrained(path, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(path)
    set_file_modes(path)
    return path


def _distributed_rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


def _write_weights(model: Any, path: Path, state_dict: dict | None) -> None:
    """What `save_pretrained` writes for a model of one safetensors file (config, generation
    config, weights with tied ones once), from any rank."""
    from safetensors.torch import save_file

    model.config.save_pretrained(path)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(path)
    tied = (getattr(model, "_tied_weights_keys", None) or {}) if getattr(model.config, "tie_word_embeddings", False) else {}
    weights = {k: v.detach().contiguous().clone() for k, v in (state_dict or model.state_dict()).items() if k not in tied}
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def pick_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def setup_torch(cfg: ModelConfig, train: bool = False) -> tuple[str, torch.dtype]:
    """(device, dtype of the weights) for a model config; sets CPU threads. With `train`, 'auto'
    keeps fp32 weights (training computes in bf16 autocast where it is on): AdamW steps and the
    EMA anchor's 1% moves on bf16 weights would mostly round away."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    bf16_ok = device == "cuda" and torch.cuda.is_bf16_supported() and not train
    dtype = torch.bfloat16 if cfg.dtype == "bf16" or (cfg.dtype == "auto" and bf16_ok) else torch.float32
    return device, dtype


def load_model(cfg: ModelConfig, seed: int, train: bool = False, task: str = "pairsum") -> tuple[Any, Any]:
    """A fresh embedded model (when name == 'embedded', initialised from `seed`) or a saved one
    (a folder or hub id: resolve run names first, `core.store.resolve_checkpoint`); `train`: for
    SFT or RL (see `setup_torch`); `task`: whose tokenizer a fresh embedded model gets."""
    device, dtype = setup_torch(cfg, train)
    if cfg.name == EMBEDDED:
        spec = TinySpec(cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size)
        model, tok = build_tiny_model(spec, seed=seed, task=task)
        return model.to(device=device, dtype=dtype), tok
    attn = cfg.attn_implementation
    if attn == "auto":
        attn = "eager" if device == "cpu" else "sdpa"
    return load_policy(cfg.name, dtype=dtype, device=device, attn_implementation=attn)


def apply_lora(model: Any, cfg: LoraConfig) -> Any:
    """The model wrapped with LoRA adapters (PEFT) on `cfg.targets`; only the adapters train."""
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model

    lora = PeftLora(r=cfg.r, lora_alpha=cfg.alpha, target_modules=cfg.target_modules(), lora_dropout=0.0)
    return get_peft_model(model, lora)
