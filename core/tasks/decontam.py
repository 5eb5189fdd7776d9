"""Decontamination: training problems whose normalised text matches a known evaluation problem.

The known evaluation problems ship with the lab as hashes of their normalised text
(`data/eval_problems.json`: MATH500, AIME24, AMC23 and the GSM8K test set), so the check needs
no network; a run adds the problems of its own evaluation set (for example Omni-MATH-500 loaded
from the hub) at run time.

Normalisation: lower case; whitespace, `$` and LaTeX spacing / sizing commands (`\\left`,
`\\right`, `\\,`, `\\!`, `\\displaystyle` ...) removed. So a copy that differs only in spacing or
in `$` delimiters still matches; a reworded problem does not (this is an exact-match filter, as
most open RL recipes use, not an n-gram one).

Regenerate the shipped index from the benchmark JSONL files:
    python -m core.tasks.decontam math500.jsonl aime24.jsonl amc23.jsonl gsm8k_test.jsonl
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

INDEX = Path(__file__).parent / "data" / "eval_problems.json"
_LATEX_NOISE = re.compile(r"\\(?:left|right|displaystyle|textstyle|[,!;:]|quad|qquad)(?![a-z])")
_SPACE = re.compile(r"[\s$~]+")


def normalise(text: str) -> str:
    return _SPACE.sub("", _LATEX_NOISE.sub("", text.lower()))


def question_key(text: str) -> str:
    """A short hash of the normalised question."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:16]


@cache
def known_eval_keys() -> dict[str, str]:
    """question key -> the evaluation set it belongs to, from the shipped index."""
    data = json.loads(INDEX.read_text())
    return {key: name for name, keys in data.items() for key in keys}


def eval_set_of(question: str, extra: dict[str, str] | None = None) -> str | None:
    """The evaluation set a question belongs to (`extra`: more question keys -> set name, the
    run's own evaluation set), or None."""
    key = question_key(question)
    return (extra or {}).get(key) or known_eval_keys().get(key)


def build_index(files: Iterable[str]) -> dict[str, list[str]]:
    """{set name (file stem): sorted keys} from benchmark JSONL files ("problem" or "question")."""
    out: dict[str, list[str]] = {}
    for file in files:
        keys = set()
        for line in Path(file).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                keys.add(question_key(str(row.get("problem") or row.get("question"))))
        out[Path(file).stem] = sorted(keys)
    return out


if __name__ == "__main__":
    INDEX.write_text(json.dumps(build_index(sys.argv[1:]), indent=0) + "\n")
    print(f"wrote {INDEX}")
