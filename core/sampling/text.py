"""Token and text helpers the samplers share: prompt encoding, fast decoding, stop tables, and
cutting a completion where its answer is settled. Torch-free."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from core.sampling.protocol import AnswerEnd
from core.types import Completion


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Prompt strings -> token ids, without adding special tokens (templates already did).

    A fast (Rust) tokenizer gets them all in one call, faster than one call per prompt
    (docs/perf_log.md); other tokenizers are called once per prompt."""
    if prompts and getattr(tokenizer, "is_fast", False):
        return [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def decode_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """`tokenizer.decode(ids, skip_special_tokens=True)` for token ids that are Python ints.

    transformers' `decode` first converts its input element by element (`to_py_obj`: an
    isinstance check per id), which cost more than the decoding itself (docs/perf_log.md). Its
    `_decode`, which it then calls, does the rest; a tokenizer without one goes through
    `decode`."""
    inner = getattr(tokenizer, "_decode", None)
    if inner is None:
        return tokenizer.decode(list(ids), skip_special_tokens=True)
    return inner(list(ids), skip_special_tokens=True)


def token_texts(tokenizer: Any) -> list[str]:
    """Each token id's text alone (special tokens: empty), for the whole vocabulary."""
    return tokenizer.batch_decode([[t] for t in range(len(tokenizer))], skip_special_tokens=True)


SLOW_PIECES_MAX = 1024  # tokens up to which `piece_lengths` aligns tokens by decoding them in context


def piece_lengths(tokenizer: Any, ids: Sequence[int], text: str, texts: Sequence[str]) -> list[int] | None:
    """Characters of `text` each token of `ids` adds (`texts`: `token_texts(tokenizer)`), or None
    when the tokens do not spell `text`. Where the tokens' own texts do not add up to `text`
    (a decoder that puts spaces between tokens, a byte-level token that alone is a partial
    character), each token's share is what it adds to the decoding of the 3 tokens before it:
    a character split over bytes goes to the token that completes it."""
    pieces = [texts[i] if 0 <= i < len(texts) else "" for i in ids]
    lengths = [len(p) for p in pieces]
    if sum(lengths) == len(text) and "\ufffd" not in text:
        return lengths
    if pieces and sum(lengths) + len(pieces) - 1 == len(text) and " ".join(pieces) == text:
        return [lengths[0]] + [k + 1 for k in lengths[1:]]  # a decoder that puts a space between tokens
    if len(ids) > SLOW_PIECES_MAX:  # two decodes per token: not for long responses (no strip then)
        return None
    out, before = [], 0
    for k in range(len(ids)):
        a = max(0, k - 3)
        now = len(decode_text(tokenizer, ids[a : k + 1]))
        before = len(decode_text(tokenizer, ids[a:k])) if a else before
        out.append(max(0, now - before))
        before = now
    return out if sum(out) == len(text) else None


def tokens_containing(tokenizer: Any, stops: Sequence[str], texts: Sequence[str] | None = None) -> list[bool]:
    """Per token id of `tokenizer`: whether the token's text alone contains a stop string
    (`texts`: `token_texts(tokenizer)` when the caller has them)."""
    texts = token_texts(tokenizer) if texts is None else texts
    return [any(s in text for s in stops) for text in texts]


def trim_to_text(tokenizer: Any, gen: Sequence[int], text: str) -> list[int]:
    """The shortest prefix of `gen` whose decoding covers `text` (a prefix of gen's text)."""
    gen = list(gen)
    if len(gen) > 1 and len(decode_text(tokenizer, gen[:-1])) < len(text):
        return gen  # the usual case, a stop in the last token: one decode instead of one per token
    if len(gen) > 2 and len(decode_text(tokenizer, gen[:-2])) < len(text):
        return gen[:-1]  # an answer settled by the token after it (which gen[:-1] covers)
    for k in range(1, len(gen) + 1):
        if len(decode_text(tokenizer, gen[:k])) >= len(text):
            return gen[:k]
    return gen


def settle(tokenizer: Any, c: Completion, until: AnswerEnd) -> Completion:
    """`c` (an answer continuation) cut where `until` says its answer is settled, with the
    tokens that cover that text (and their log-probabilities); unchanged when it never is."""
    end = until(c.text)
    if end is None:
        return c
    if end >= len(c.text):
        return c if c.finish_reason == "stop" else replace(c, finish_reason="stop")
    text = c.text[:end]
    ids = trim_to_text(tokenizer, c.token_ids, text)
    lp = None if c.token_logprobs is None else c.token_logprobs[: len(ids)]
    return replace(c, text=text, token_ids=tuple(ids), finish_reason="stop", token_logprobs=lp)
