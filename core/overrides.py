"""Presets and `key=value` overrides of the config dataclasses (core.config). Torch-free.

Precedence: dataclass defaults < YAML preset (overrides only) < command-line `key=value`.
Keys are dotted (`sft.lr=1e-3`); an unqualified key (`lr=1e-3`) is accepted when exactly one
section has it. Unknown keys fail with the closest valid name; keys that were renamed say the
new name (configs saved under the old names still load). A list value is written either as
`16,32,64` or as `python -m lab config` prints it: `[16, 32, 64]`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Iterable
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from core.config import ConfigError

# old dotted key -> new one; section-relative, so "rl.lora" also covers a job whose rl section
# sits elsewhere (every job names its sections the same)
RENAMED = {
    "rl.temperature": "rl.sampling.temperature",
    "rl.max_new_tokens": "rl.sampling.max_new_tokens",
    "rl.eval_problems": "eval.num_problems",
    **{f"{s}.lora": f"{s}.lora.enabled" for s in ("sft", "rl")},
    **{f"{s}.lora_{k}": f"{s}.lora.{k}" for s in ("sft", "rl") for k in ("r", "alpha", "targets")},
}


def flat_fields(cls: type, prefix: str = "") -> dict[str, tuple[dataclasses.Field, Any]]:
    """Dotted name -> (leaf field, its resolved type), for every leaf of a nested config."""
    out: dict[str, tuple[dataclasses.Field, Any]] = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        t = hints[f.name]
        if is_dataclass(t):
            out.update(flat_fields(t, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (f, t)
    return out


def resolve_key(cls: type, key: str) -> str:
    """Full dotted key for `key`; accepts an unambiguous suffix such as `lr` for `sft.lr`."""
    names = flat_fields(cls)
    if key in names:
        return key
    if key in RENAMED:
        raise ConfigError(f"config key {key!r} was renamed: use {RENAMED[key]!r}")
    matches = [n for n in names if n.endswith("." + key)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"ambiguous config key {key!r}: say one of {', '.join(sorted(matches))}")
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.5)
    if not close:
        short = {n.split(".")[-1]: n for n in names}
        near = difflib.get_close_matches(key.split(".")[-1], list(short), n=1, cutoff=0.6)
        close = [short[near[0]]] if near else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown config key {key!r}{hint}")


def coerce(value: Any, typ: Any, key: str) -> Any:
    """Turn a YAML/CLI value into the field's type, or fail naming the key."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(value, args[0], key)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            s = str(value).lower()
            if s in ("true", "1", "yes", "on"):
                return True
            if s in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return str(value)
        if origin is tuple:
            if isinstance(value, str):
                value = _parse_list(value)
            elem = (typing.get_args(typ) or (str,))[0]
            return tuple(coerce(v, elem, key) for v in value)
    except (TypeError, ValueError):
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"config key {key!r} wants {name}, got {value!r}") from None
    return value


def _parse_list(text: str) -> list[Any]:
    """'16,32,64', '[16, 32, 64]' or a JSON list such as '["\\n", "Answer:"]' -> its items."""
    bare = text.strip()
    if not (bare.startswith("[") and bare.endswith("]")):
        return [v for v in text.split(",") if v]  # as written: a stop string may hold spaces
    try:
        items = json.loads(bare)
    except ValueError:  # [a, b] without JSON quotes
        return [v.strip() for v in bare[1:-1].split(",") if v.strip()]
    return items if isinstance(items, list) else [items]


def _set(cfg: Any, dotted: str, value: Any) -> Any:
    head, _, rest = dotted.partition(".")
    if not rest:
        return replace(cfg, **{head: value})
    return replace(cfg, **{head: _set(getattr(cfg, head), rest, value)})


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of `cfg` with dotted overrides applied (coerced to the field types)."""
    names = flat_fields(type(cfg))
    for key, value in overrides.items():
        full = resolve_key(type(cfg), key)
        cfg = _set(cfg, full, coerce(value, names[full][1], full))
    return cfg


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_preset(path: Path) -> dict[str, Any]:
    """A YAML preset as flat dotted overrides."""
    import yaml

    if not path.exists():
        raise ConfigError(f"preset not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of overrides")
    return flatten(data)


def preset_for(cls: type, preset: dict[str, Any], others: Iterable[type], owners: str) -> dict[str, Any]:
    """The keys of a preset written for several jobs (the demo's: sft, rl, budget ...) that
    `cls` has; keys of the `others`' sections are left to them, a section none of them has is an
    error naming `owners` (a typo must not pass unnoticed)."""
    own = {f.name for f in fields(cls)}
    known = own.union(*({f.name for f in fields(c)} for c in others))
    out = {}
    for key, value in preset.items():
        section = key.split(".")[0]
        if section in own or "." not in key:
            out[key] = value
        elif section not in known:
            close = difflib.get_close_matches(section, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"preset key {key!r} belongs to no {owners}{hint}")
    return out


def validate(cfg: Any) -> Any:
    """Run every section's validate(), then the job's own cross-section `check`; return cfg."""
    for f in fields(cfg):
        section = getattr(cfg, f.name)
        if hasattr(section, "validate"):
            section.validate()
    if hasattr(cfg, "check"):
        cfg.check()
    return cfg


def build(cls: type, preset: dict[str, Any] | None = None, cli: dict[str, Any] | None = None) -> Any:
    """Defaults < preset < command line, validated."""
    cfg = apply_overrides(cls(), preset or {})
    cfg = apply_overrides(cfg, cli or {})
    return validate(cfg)


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def non_defaults(cfg: Any) -> dict[str, Any]:
    """Flat dotted fields that differ from the defaults (printed at start)."""
    now, base = flatten(to_dict(cfg)), flatten(to_dict(type(cfg)()))
    return {k: v for k, v in now.items() if base.get(k) != v}


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config from its saved dict (e.g. a run's config.json), ignoring nothing; keys
    saved under an old name (RENAMED) are read under the new one."""
    flat = flatten(data)
    sections = {k for k in flat_fields(cls)}
    for old, new in RENAMED.items():
        if old in flat and new in sections and old not in sections:
            flat[new] = flat.pop(old)
    return apply_overrides(cls(), flat)


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every leaf, after a row (default None) for each section
    that has help of its own: the table `python -m lab config` prints."""
    base = flatten(to_dict(cls()))
    sections = _section_help(cls)
    rows: list[tuple[str, Any, str]] = []
    for key, (f, _) in flat_fields(cls).items():
        for section in [s for s in sections if key.startswith(s + ".")]:
            rows.append((section, None, sections.pop(section)))
        rows.append((key, base[key], f.metadata.get("help", "")))
    return rows


def _section_help(cls: type, prefix: str = "") -> dict[str, str]:
    """Dotted section name -> its help, for nested sections declared with help."""
    out: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            if f.metadata.get("help"):
                out[f"{prefix}{f.name}"] = f.metadata["help"]
            out.update(_section_help(hints[f.name], f"{prefix}{f.name}."))
    return out
