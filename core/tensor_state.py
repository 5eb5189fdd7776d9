"""Resume state on disk without pickle: tensors in a safetensors file, everything else in JSON.

A nested state (dicts, lists, tuples, tensors, numbers, strings, None: an optimizer's state
dict, RNG states, the anchor) is written as `<stem>.safetensors` (every tensor, under a key that
the JSON names) and `<stem>.json` (the structure). Loading either file runs no code, so a run
folder from anywhere can be resumed safely. Tuples and dicts with non-string keys (an
optimizer's parameter indices) are tagged in the JSON so they come back as they were.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.store import StoreError, atomic_write_text, set_file_modes

FORMAT = "t1lab-state/1"


def save_tree(tree: Any, stem: Path) -> None:
    """Write `tree` as stem.safetensors + stem.json (the JSON last: it is what a reader opens)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(tree, tensors)
    tmp = stem.with_name(stem.name + ".safetensors.tmp")
    # a copy of each tensor: safetensors refuses views and tensors that share memory (tied weights)
    save_file({k: t.detach().to("cpu", copy=True).contiguous() for k, t in tensors.items()}, str(tmp))
    tmp.replace(stem.with_name(stem.name + ".safetensors"))
    text = json.dumps({"format": FORMAT, "tree": skeleton}, allow_nan=True)
    atomic_write_text(stem.with_name(stem.name + ".json"), text)
    set_file_modes(stem.parent)


def load_tree(stem: Path) -> Any:
    """The tree `save_tree` wrote; StoreError (one line) when a file is missing or malformed."""
    meta, data = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
        tensors = load_file(str(data))
    except FileNotFoundError as e:
        raise StoreError(f"resume state missing: {e.filename}") from None
    except (ValueError, SafetensorError, OSError) as e:
        raise StoreError(f"resume state in {stem.parent} is unreadable: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StoreError(f"{meta}: not a resume state of this lab (format {FORMAT} expected)")
    try:
        return _decode(doc["tree"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"{meta}: malformed resume state ({type(e).__name__}: {e})") from None


def _encode(x: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(x, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = x
        return {"__tensor__": key}
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in x]}
    if isinstance(x, list):
        return [_encode(v, tensors) for v in x]
    if isinstance(x, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in x):
            return {k: _encode(v, tensors) for k, v in x.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in x.items()]}
    if isinstance(x, float) and not math.isfinite(x):
        return {"__float__": repr(x)}
    if x is None or isinstance(x, bool | int | float | str):
        return x
    raise TypeError(f"cannot store a {type(x).__name__} in a resume state")


def _decode(x: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(x, list):
        return [_decode(v, tensors) for v in x]
    if isinstance(x, dict):
        if "__tensor__" in x:
            return tensors[x["__tensor__"]]
        if "__tuple__" in x:
            return tuple(_decode(v, tensors) for v in x["__tuple__"])
        if "__items__" in x:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in x["__items__"]}
        if "__float__" in x:
            return float(x["__float__"])
        return {k: _decode(v, tensors) for k, v in x.items()}
    return x
