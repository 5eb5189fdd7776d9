"""What one RL step reports: phase timings, the metrics record, and one row per rollout."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.rewards import RewardParts
from core.sampling.text import piece_lengths
from core.strip import encode_strip
from core.types import Completion, Problem


@dataclass
class Rollouts:
    """One step's samples, grouped [G][N] as drawn, with everything later phases add.

    `kept[g][n]`: oversampling chose sample n of group g (exactly K per group);
    `used[g]`: group g enters the update (False when dynamic filtering dropped it).
    """

    problems: list[Problem]
    prompt_ids: list[list[int]]
    groups: list[list[Completion]]
    parts: list[list[RewardParts]] = field(default_factory=list)
    kept: list[list[bool]] = field(default_factory=list)
    used: list[bool] = field(default_factory=list)

    def kept_flat(self) -> list[tuple[int, Completion, RewardParts]]:
        """(group, completion, reward parts) of the kept samples: G*K rows, group-major."""
        return [(g, c, p) for g, (group, parts, flags) in enumerate(zip(self.groups, self.parts, self.kept))
                for c, p, k in zip(group, parts, flags) if k]


class PhaseTimer:
    """Wall seconds per named phase: `with timer("sample"): ...` -> seconds["time/sample_s"]."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self) -> None:
                self.t0 = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                timer.seconds[f"time/{name}_s"] = time.perf_counter() - self.t0

        return _Ctx()


def rollout_metrics(r: Rollouts) -> dict[str, float]:
    """Figures over every drawn sample, plus what oversampling and filtering kept."""
    parts = [p for group in r.parts for p in group]
    comps = [c for group in r.groups for c in group]
    n = len(parts)
    lengths = [c.num_tokens for c in comps]
    solved = [sum(p.correct for p in g) / len(g) for g in r.parts]
    return {
        "reward/mean": sum(p.reward for p in parts) / n,
        "rollout/acc": sum(p.correct and not p.penalised for p in parts) / n,
        "rollout/group_pass_frac": sum(s > 0 for s in solved) / len(solved),
        "rollout/group_all_solved_frac": sum(s == 1 for s in solved) / len(solved),
        "rollout/len_mean": sum(lengths) / n, "rollout/len_max": max(lengths), "rollout/tokens": sum(lengths),
        "rollout/truncated_frac": sum(c.finish_reason == "length" for c in comps) / n,
        "rollout/penalised_frac": sum(p.penalised for p in parts) / n,
        "penalty/overlong": sum(p.overlong for p in parts), "penalty/repetitive": sum(p.repetitive for p in parts),
        "penalty/garbled": sum(p.garbled for p in parts),
        "oversample/drawn": n, "oversample/kept": sum(sum(k) for k in r.kept),
        "oversample/dropped_groups": sum(not u for u in r.used),
    }


def no_signal_frac(adv: Sequence[float], groups: int) -> float:
    """Share of the groups whose kept samples all have advantage 0 (`adv`: per kept sample,
    group-major, the same number per group): RLOO gives them no signal (all rewards equal and
    none penalised, or a group dynamic filtering dropped)."""
    per = len(adv) // max(groups, 1)
    return sum(all(abs(a) < 1e-8 for a in adv[g * per : (g + 1) * per]) for g in range(groups)) / max(groups, 1)


def token_strip(c: Completion, tokenizer: Any, texts: Sequence[str] | None) -> dict | None:
    """The row's per-token log-probs (`core.strip`), when the sampler reported them."""
    if c.token_logprobs is None or tokenizer is None or texts is None:
        return None
    return encode_strip(c.token_logprobs, piece_lengths(tokenizer, c.token_ids, c.text, texts))


def rollout_rows(r: Rollouts, adv: Sequence[float], tokenizer: Any = None,
                 texts: Sequence[str] | None = None) -> list[dict]:
    """One row per drawn sample; `adv` holds the kept samples' advantages in kept_flat order
    (a row that was not kept has advantage None). With `tokenizer` and `texts` (each token id's
    text: `core.sampling.text.token_texts`), rows keep their per-token log-probs compactly."""
    rows, i = [], 0
    for g, (p, group, parts) in enumerate(zip(r.problems, r.groups, r.parts)):
        for c, part, kept in zip(group, parts, r.kept[g]):
            a = None
            if kept:
                a, i = adv[i], i + 1
            rows.append({"problem_id": p.id, "question": p.question, "sample": c.sample_index, "response": c.text,
                         "num_tokens": c.num_tokens, "finish_reason": c.finish_reason, "correct": part.correct,
                         "overlong": part.overlong, "repetitive": part.repetitive, "garbled": part.garbled,
                         "reward": part.reward, "advantage": a, "kept": kept, "used": kept and r.used[g],
                         "tokens": token_strip(c, tokenizer, texts)})
    return rows
