"""Per-token log-probs of a response, stored compactly in its rollout row. Torch-free.

A rollout row may hold `"tokens": {"n", "lp", "len"}`: for the first `n` generated tokens (at
most `MAX_TOKENS`), `lp` their log pi(token | prefix) quantised to steps of 1/`LP_SCALE` nat
(0 .. -255/LP_SCALE, lower clipped) and `len` the characters each token adds to the row's
`response` (0 for a byte-level token that only starts a character: the character goes to the
token that ends it); each a zlib-compressed byte string in base64. `len` is None when the
tokens could not be aligned with the text. The dashboard colours each token by its log-prob
(low-confidence spans are where self-verification and reflection happen).
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Sequence

MAX_TOKENS = 4096  # tokens kept per response: a long response costs at most this much
LP_SCALE = 10  # quantisation steps per nat: 0.1 nat, down to -25.5


def _pack(values: Sequence[int]) -> str:
    return base64.b64encode(zlib.compress(bytes(values), 6)).decode("ascii")


def _unpack(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text.encode("ascii")))


def encode_strip(logprobs: Sequence[float], lengths: Sequence[int] | None) -> dict:
    """The row's "tokens" entry for these per-token log-probs and character lengths."""
    n = min(len(logprobs), MAX_TOKENS)
    levels = [255 if not math.isfinite(lp) else min(255, max(0, round(-lp * LP_SCALE))) for lp in logprobs[:n]]
    lens = None
    if lengths is not None and len(lengths) >= n and all(0 <= k <= 255 for k in lengths[:n]):
        lens = _pack(lengths[:n])
    return {"n": n, "lp": _pack(levels), "len": lens}


def decode_strip(entry: object, text: str) -> list[tuple[str, float]] | None:
    """[(piece of `text`, log-prob)] of a row's "tokens" entry, None when it has none or cannot
    be read (a malformed entry hides only the strip). Text past the stored tokens is not in it."""
    if not isinstance(entry, dict) or not isinstance(entry.get("lp"), str) or not isinstance(entry.get("len"), str):
        return None
    try:
        levels, lens = _unpack(entry["lp"]), _unpack(entry["len"])
    except (ValueError, zlib.error):
        return None
    if len(levels) != len(lens) or sum(lens) > len(text):
        return None
    out, at = [], 0
    for level, k in zip(levels, lens):
        out.append((text[at : at + k], -level / LP_SCALE))
        at += k
    return out
