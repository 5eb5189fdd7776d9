"""Response views beyond the text: the per-token log-prob strip, the groups that give RLOO no
signal (every advantage 0), and math traces as markdown with their LaTeX rendered. Pure functions over rollout rows (core.rl.metrics.rollout_rows); no torch."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from core.report.views import step_label
from core.strip import decode_strip
from core.types import Trace

# log-probs at or above this are drawn plain; below it the background deepens down to FLOOR
PLAIN_LP = -0.1
FLOOR_LP = -6.0


def strip_pieces(row: Mapping[str, Any]) -> list[tuple[str, float]] | None:
    """[(token text, log-prob)] of a rollout row that stored them, else None."""
    return decode_strip(row.get("tokens"), str(row.get("response") or ""))


def strip_html(pieces: Sequence[tuple[str, float]], rest: str = "") -> str:
    """HTML of a response with each token's background by its log-prob (white: confident, deep
    orange: improbable under the policy) and its log-prob and probability on hover; `rest`, text
    past the stored tokens, plain."""
    spans = []
    for text, lp in pieces:
        depth = 0.0 if lp >= PLAIN_LP else min(1.0, (PLAIN_LP - lp) / (PLAIN_LP - FLOOR_LP))
        body = html.escape(text).replace("\n", "<br>")
        spans.append(f'<span class="tok" title="log p {lp:.2f} (p {math.exp(lp):.2f})" '
                     f'style="background:rgba(255,120,0,{0.85 * depth:.2f})">{body}</span>')
    tail = html.escape(rest).replace("\n", "<br>")
    return ('<div class="token-strip" style="font-family:monospace;font-size:.85em;line-height:1.6">'
            + "".join(spans) + tail + "</div>")


def no_signal_prompts(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Prompts whose kept samples all have advantage 0: RLOO gives them no signal (all rewards
    equal and none penalised, or dropped by dynamic filtering). Rows without an advantage (not
    kept) do not count."""
    signal: dict[str, bool] = {}
    for r in rows:
        a = r.get("advantage")
        pid = str(r.get("problem_id"))
        signal.setdefault(pid, False)
        if isinstance(a, int | float) and abs(a) >= 1e-8:
            signal[pid] = True
    return {pid for pid, has in signal.items() if not has}


# Streamlit colour of each step's label (the HTML view's colours, by name)
_STEP_COLOUR = {"attempt ok": "green", "attempt failed": "red", "check yes": "blue", "check no": "orange",
                "check": "blue", "reflection": "violet", "wait": "violet", "answer": "rainbow", "text": "gray"}
_MATH = re.compile(r"(\$\$.+?\$\$|\$[^$\n]+?\$|\\\(.+?\\\)|\\\[.+?\\\]|\\boxed\{(?:[^{}]|\{[^{}]*\})*\})", re.S)
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~:-])")


def markdown_keeping_math(text: str) -> str:
    """`text` as Streamlit markdown that renders its LaTeX ($...$, $$...$$, \\(...\\), \\[...\\],
    and a \\boxed{...} written outside them),
    with markdown's own marks escaped outside the math (a "*" or "_" in prose stays a character)."""
    parts = _MATH.split(text)
    out = []
    for k, part in enumerate(parts):
        if k % 2:  # math, as KaTeX reads it; \( \) and \[ \] become $ and $$
            if part.startswith("\\("):
                part = f"${part[2:-2]}$"
            elif part.startswith("\\["):
                part = f"$${part[2:-2]}$$"
            elif part.startswith("\\boxed"):  # a box outside $: the final answer line
                part = f"${part}$"
            out.append(part)
        else:
            out.append(_MD_SPECIAL.sub(r"\\\1", part).replace("\n", "  \n"))
    return "".join(out)


def trace_markdown(trace: Trace) -> list[str]:
    """One markdown line per step of a math trace: its coloured label, then its text with the
    LaTeX rendered (the dashboard's Traces page for math tasks)."""
    return [f":{_STEP_COLOUR.get(step_label(s), 'gray')}[**{step_label(s)}**] {markdown_keeping_math(s.text)}"
            for s in trace.steps]
