"""The public T1 SFT data (`THUDM/T1` on the Hugging Face hub) as lab trace rows.

The lab could not read the data set's card when this was written (no network), so the row
format is an assumption, handled broadly: each record holds a conversation, either as a
`messages` / `conversations` list of {"role", "content"} (or ShareGPT {"from", "value"}) turns,
or as a prompt column ("prompt", "question", "problem", "query", "instruction" [+ "input"]) and
a response column ("response", "output", "completion", "answer", "solution"). The first user
turn is the question, the last assistant turn the trace. The gold answer is an "answer" /
"gold" / "final_answer" column when it is short, else the last \\boxed{} of the trace.

Rows come out as the synth traces `lab sft` trains on: {"problem_id", "question", "answer",
"response", "style", "teacher", "source"}. Torch-free.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from core import hub
from core.answers import extract_boxed
from core.tasks.base import TaskError

HUB_ID = "THUDM/T1"
_LIST_COLUMNS = ("messages", "conversations", "conversation", "dialog")
_PROMPT_COLUMNS = ("prompt", "question", "problem", "query", "instruction")
_RESPONSE_COLUMNS = ("response", "output", "completion", "answer", "solution")
_GOLD_COLUMNS = ("gold", "final_answer", "answer", "ground_truth")
_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                 "system": "system", "bot": "assistant", "model": "assistant"}
_SHORT_ANSWER_CHARS = 100  # a longer "answer" column is a worked solution, not a gold answer


def _turns(record: dict[str, Any]) -> list[tuple[str, str]] | None:
    """(role, text) turns of a conversation column, None if the record has none."""
    for col in _LIST_COLUMNS:
        value = record.get(col)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                continue
        if isinstance(value, list) and value:
            turns = []
            for t in value:
                if not isinstance(t, dict):
                    return None
                role = str(t.get("role", t.get("from", ""))).lower()
                text = t.get("content", t.get("value", ""))
                turns.append((_ROLE_ALIASES.get(role, role), str(text or "")))
            return turns
    return None


def _first(record: dict[str, Any], columns: Iterable[str]) -> tuple[str | None, str]:
    for col in columns:
        value = record.get(col)
        if isinstance(value, str) and value.strip():
            return col, value
    return None, ""


def record_to_trace(record: dict[str, Any], index: int, where: str, source: str) -> dict:
    """One public-data record -> one trace row; TaskError names the record when it is unusable."""
    turns = _turns(record)
    if turns is not None:
        question = next((t for r, t in turns if r == "user"), "")
        response = next((t for r, t in reversed(turns) if r == "assistant"), "")
        response_col = None
    else:
        _, question = _first(record, _PROMPT_COLUMNS)
        if question and isinstance(record.get("input"), str) and record["input"].strip():
            question = f"{question}\n\n{record['input']}"
        response_col, response = _first(record, [c for c in _RESPONSE_COLUMNS])
    if not question.strip() or not response.strip():
        cols = ", ".join(sorted(record)) or "none"
        raise TaskError(f"{where}: no question and response found (columns: {cols}); expected a "
                        f"{'/'.join(_LIST_COLUMNS[:2])} list or prompt/response columns")
    gold = ""
    for col in _GOLD_COLUMNS:
        value = record.get(col)
        if col != response_col and value is not None and len(str(value)) <= _SHORT_ANSWER_CHARS:
            gold = str(value).strip()
            break
    gold = gold or (extract_boxed(response) or "")
    pid = next((str(record[k]) for k in ("id", "idx", "problem_id") if record.get(k) is not None),
               f"t1-{index}")
    return {"problem_id": pid, "question": question.strip(), "answer": gold,
            "response": response.strip(), "style": "t1", "teacher": source, "source": source}


def _read_local(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        yield from pd.read_parquet(path).to_dict(orient="records")
        return
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        yield from (data if isinstance(data, list) else [data])
        return
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskError(f"{path}:{lineno}: malformed JSON: {e}") from None


def _read_hub(hub_id: str, split: str) -> Iterator[dict[str, Any]]:
    """Rows from the hub; offline or unreachable fails at once with a one-line TaskError."""
    hint = "download it where there is a network and pass the local .jsonl/.parquet file"
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    if not hub.hub_reachable():
        raise TaskError(f"could not reach the Hugging Face hub to load {hub_id!r}; {hint}")
    import datasets

    try:
        rows = datasets.load_dataset(hub_id, split=split)
    except Exception as e:  # noqa: BLE001 - offline cache misses, 404s, network errors alike
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TaskError(f"could not load {hub_id!r} from the hub ({first}); {hint}") from None
    yield from (dict(r) for r in rows)


def load_public_traces(source: str = HUB_ID, limit: int | None = None,
                       split: str = "train") -> list[dict]:
    """Trace rows from `source`: a hub id (THUDM/T1) or a local .jsonl / .json / .parquet."""
    path = Path(source)
    if path.suffix.lower() in (".jsonl", ".json", ".parquet") or path.exists():
        if not path.is_file():
            raise TaskError(f"SFT data file not found: {path}")
        records: Iterable[dict[str, Any]] = _read_local(path)
    else:
        records = _read_hub(source, split)
    out = []
    for i, rec in enumerate(records):
        if limit is not None and len(out) >= limit:
            break
        if not isinstance(rec, dict):
            raise TaskError(f"{source} record {i}: expected an object")
        out.append(record_to_trace(rec, i, f"{source} record {i}", source))
    if not out:
        raise TaskError(f"{source} has no records")
    return out
