"""Math benchmarks (MATH500, AIME24, AMC23, GSM8K) as a Task, from the hub or a local JSONL.

These are evaluation sets: `problems("heldout")` returns them and `problems("train")` refuses,
so a benchmark cannot leak into training by accident.

One record normaliser serves both sources, so a hub row and the same row read from a local
JSONL file give the same Problem: question from "problem" or "question"; answer from
"answer" (GSM8K: the text after "####", commas removed; a float such as AMC's 27.0 becomes
"27"); id from "id" / "idx" / "unique_id", else the row's index (0-based line index for files).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import hub
from core.answers import VerifierPool, extract_boxed, matching_brace, verify_answers
from core.tasks.base import TaskError, check_split
from core.tasks.decontam import eval_set_of, question_key
from core.types import Problem, Trace, TraceStep, Verdict


@dataclass(frozen=True)
class Fields:
    """Where a data set keeps its question and answer (the normaliser also falls back to the
    other common names, so local dumps with both "problem" and "question" work, and to the
    last \\boxed{} of a "solution" when there is no answer column, as in MATH train)."""

    question: str
    answer: str = "answer"


@dataclass(frozen=True)
class Source:
    """A named data set on the hub: where it is and whether it is for evaluation or training."""

    hub_id: str
    config: str | None
    split: str
    fields: Fields
    role: str  # "eval" (never trained on) or "train"


# short name -> source. The splits are the ones the data sets are published with: AIME 2024
# exists only as "train" on the hub, and math-ai/amc23 ships a single 40-row "test" split.
SOURCES: dict[str, Source] = {
    "math500": Source("HuggingFaceH4/MATH-500", None, "test", Fields("problem"), "eval"),
    "aime24": Source("HuggingFaceH4/aime_2024", None, "train", Fields("problem"), "eval"),
    "amc23": Source("math-ai/amc23", None, "test", Fields("question"), "eval"),
    "gsm8k": Source("openai/gsm8k", "main", "test", Fields("question"), "eval"),
    "omni_math500": Source("reliable-agents/Omni-MATH-500", None, "test", Fields("problem"), "eval"),
    # the 7,500-problem Hendrycks MATH train split (answers: the solution's last \boxed{})
    "math_train": Source("DigitalLearningGmbH/MATH-lighteval", "default", "train", Fields("problem"), "train"),
    "gsm8k_train": Source("openai/gsm8k", "main", "train", Fields("question"), "train"),
    "numina": Source("AI-MO/NuminaMath-CoT", None, "train", Fields("problem"), "train"),
}
BENCHMARKS = {k: v for k, v in SOURCES.items() if v.role == "eval"}
TRAINING_SOURCES = {k: v for k, v in SOURCES.items() if v.role == "train"}
# the evaluation set `lab sft` and `lab rl` measure a math training source on (eval.task='')
DEFAULT_EVAL = "math500"
# a local file or unknown hub id whose problems are at least this share of known evaluation
# problems is taken for an evaluation set (a copy of MATH500 passed as training data)
EVAL_LOOKALIKE_FRAC = 0.5

PROMPT_TEMPLATE = (
    "{question}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
)
ANSWER_CUE = "\n\nFinal answer: \\boxed{"

_HUB_ID_RE = re.compile(r"^[\w.-]+/[\w.-]+$")
_ID_FIELDS = ("id", "idx", "unique_id")
_META_FIELDS = ("subject", "level", "solution", "url", "year")
_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")
REFLECTION_RE = re.compile(
    r"\b(wait|alternatively|let me verify|let me check|hmm+|but|mistake)\b", re.IGNORECASE
)
_VERIFY_RE = re.compile(r"\b(verif\w*|check\w*|confirm\w*|substitut\w*|plug\w*)", re.IGNORECASE)


def normalise_answer(value: Any) -> str:
    """Gold answer as a string math-verify can read.

    GSM8K golds are worked solutions ending in "#### 1,234": keep "1234". AMC golds are floats
    (27.0): an integral float prints as "27". Everything else is stripped text.
    """
    if isinstance(value, bool):
        raise TypeError("a boolean is not an answer")
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if "####" in text:
        text = text.rsplit("####", 1)[1].replace(",", "")
    return text.strip()


def record_to_problem(
    record: dict[str, Any], index: int, where: str, fields: Fields | None = None
) -> Problem:
    """Map one raw record (a hub row or a JSONL line) to a Problem; `where` names it in errors."""
    preferred = [fields.question] if fields else []
    question_keys = tuple(dict.fromkeys([*preferred, "problem", "question"]))
    question = next((record[k] for k in question_keys if record.get(k) not in (None, "")), None)
    if question is None:
        raise TaskError(f"{where}: missing field {' or '.join(map(repr, question_keys))}")
    answer_key = fields.answer if fields else "answer"
    raw_answer = record.get(answer_key)
    answer = normalise_answer(raw_answer) if raw_answer is not None else ""
    if not answer and isinstance(record.get("solution"), str):
        answer = (extract_boxed(record["solution"]) or "").strip()  # MATH train, NuminaMath
    if not answer:
        raise TaskError(f"{where}: missing field {answer_key!r} (and no \\boxed{{}} answer in a 'solution' field)")
    pid = next((record[k] for k in _ID_FIELDS if record.get(k) is not None), index)
    meta = {k: record[k] for k in _META_FIELDS if record.get(k) is not None}
    if isinstance(raw_answer, str) and "####" in raw_answer:
        meta["solution"] = raw_answer  # GSM8K keeps its worked solution in "answer"
    return Problem(id=str(pid), question=str(question), answer=answer, meta=meta)


def load_jsonl(path: str | Path, limit: int | None = None) -> list[Problem]:
    """Problems from a local JSONL file; errors name the file and the 1-based line."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"benchmark file not found: {path}")
    problems: list[Problem] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TaskError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{path}:{lineno}: malformed JSON: {e}") from None
            if not isinstance(record, dict):
                raise TaskError(f"{path}:{lineno}: expected a JSON object")
            problems.append(record_to_problem(record, lineno - 1, f"{path}:{lineno}"))
    if not problems:
        raise TaskError(f"{path} has no problems")
    return problems


def load_parquet(path: str | Path, limit: int | None = None) -> list[Problem]:
    """Problems from a local Parquet file (question/answer columns, as `load_jsonl`); errors
    name the file and the 0-based row."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise TaskError(f"data file not found: {path}")
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise TaskError(f"{path}: not a readable Parquet file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    problems = [record_to_problem(r, i, f"{path} row {i}") for i, r in enumerate(rows[:limit] if limit else rows)]
    if not problems:
        raise TaskError(f"{path} has no problems")
    return problems


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "could not talk to the hub" across the HTTP stacks that
    huggingface_hub has used (requests, httpx); builtin ConnectionError/TimeoutError are
    OSError subclasses."""
    errors: list[type[BaseException]] = [OSError]
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    try:
        import requests

        errors.append(requests.RequestException)
    except ImportError:
        pass
    return tuple(errors)


def load_hub(
    hub_id: str, config: str | None, split: str, fields: Fields | None, limit: int | None,
    skip_unanswered: bool = False,
) -> tuple[list[Problem], int]:
    """(problems, rows skipped) from the Hugging Face hub via `datasets.load_dataset`. Any
    failure becomes a one-line TaskError (no traceback) that points at the local-JSONL
    alternative. `skip_unanswered`: rows without a readable answer (a NuminaMath solution with
    no \\boxed{}) are skipped and counted, not an error."""
    hint = "pass a local JSONL path instead (e.g. MathTask('data/math500.jsonl'))"
    unreachable = f"could not reach the Hugging Face hub to load {hub_id!r}; {hint}"
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")  # read when huggingface_hub is imported
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    if not hub.hub_reachable():
        raise TaskError(unreachable)
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    try:
        rows: Iterable[dict[str, Any]] = datasets.load_dataset(hub_id, config, split=split)
    except DatasetNotFoundError:
        raise TaskError(f"dataset {hub_id!r} not found on the Hugging Face hub; {hint}") from None
    except _network_errors() as e:
        raise TaskError(f"{unreachable} ({type(e).__name__})") from None
    except ValueError as e:  # e.g. an unknown split or config
        first_line = (str(e).splitlines() or [""])[0]
        raise TaskError(f"could not load {hub_id!r} split {split!r}: {first_line}") from None
    problems: list[Problem] = []
    skipped = 0
    for i, row in enumerate(rows):
        if limit is not None and len(problems) >= limit:
            break
        try:
            problems.append(record_to_problem(dict(row), i, f"{hub_id} ({split}) row {i}", fields))
        except TaskError:
            if not skip_unanswered:
                raise
            skipped += 1
    if not problems:
        raise TaskError(f"{hub_id} ({split}) has no problems")
    return problems, skipped


def _resolve(source: str) -> tuple[str, str]:
    """Classify `source` as ("named", short name), ("hub", id) or ("file", path)."""
    if source in SOURCES:
        return "named", source
    if os.path.exists(source) or source.endswith((".jsonl", ".parquet")):
        return "file", source
    if _HUB_ID_RE.match(source) and not source.startswith("."):
        return "hub", source
    raise TaskError(
        f"unknown math source {source!r}: use an evaluation set ({', '.join(BENCHMARKS)}), a training "
        f"set ({', '.join(TRAINING_SOURCES)}), a hub id ('owner/name') or a path to a .jsonl or .parquet file"
    )


def _last_number(text: str) -> str | None:
    """The last number in `text` with thousands separators removed (1,000 -> 1000)."""
    matches = _NUMBER_RE.findall(text)
    return matches[-1].replace(",", "") if matches else None


class MathTask:
    """A math data set as a Task. Answers are checked by math-verify in worker processes.

    `source` is a SOURCES short name, a hub id (a known one gets its config and split; an
    unknown one is loaded with no config and split "train"), or a local .jsonl / .parquet path.
    Data is loaded at construction, so a bad source fails before any sampling starts.

    Roles: an evaluation set (`role == "eval"`: the named benchmarks and their hub ids, a source
    marked `eval_only`, or a file most of whose problems are known evaluation problems) serves
    "heldout" only; "train" is refused, since training on it silently invalidates every number
    measured on it. A training set serves both splits: "train" without the problems that match
    a known evaluation problem (decontamination, counted in `decontaminated`), "heldout" whole.
    """

    def __init__(
        self,
        source: str,
        *,
        name: str | None = None,
        heldout_only: bool | None = None,
        eval_only: bool = False,
        decontaminate: bool = True,
        verifier: VerifierPool | None = None,
        limit: int | None = None,
    ):
        kind, ref = _resolve(source)
        self.skipped = 0  # hub rows without a readable answer
        self._extra_eval: dict[str, str] = {}
        known = SOURCES.get(ref if kind == "named" else _short_name(ref))
        if kind == "file":
            self._problems = load_parquet(ref, limit) if ref.endswith(".parquet") else load_jsonl(ref, limit)
            default_name = Path(ref).stem
        else:
            src = known or Source(ref, None, "train", Fields("problem"), "train")
            self._problems, self.skipped = load_hub(src.hub_id, src.config, src.split, src.fields, limit,
                                                    skip_unanswered=src.role == "train")
            default_name = (next(k for k, v in SOURCES.items() if v is known) if known
                            else ref.rsplit("/", 1)[-1].lower())
        self.name = name or default_name
        self.source = source
        self.decontaminate = decontaminate
        self.role_reason = ""
        if heldout_only is not None:  # an explicit choice (tests, the teacher's problem source)
            self.role = "eval" if heldout_only else "train"
        elif eval_only or (known is not None and known.role == "eval"):
            self.role = "eval"
        else:
            self.role = "train"
            hits = self._known_matches(self._problems) if decontaminate else {}
            if hits and sum(hits.values()) >= EVAL_LOOKALIKE_FRAC * len(self._problems):
                self.role = "eval"
                self.role_reason = (f": {sum(hits.values())} of its {len(self._problems)} problems are in "
                                    f"{', '.join(sorted(hits))}")
        self.heldout_only = self.role == "eval"
        self.decontaminated = 0
        self.decontaminated_from: dict[str, int] = {}
        self._verifier = verifier

    def exclude(self, problems: Sequence[Problem], name: str) -> None:
        """Add evaluation problems (the run's own evaluation set) to what decontamination drops."""
        self._extra_eval.update({question_key(p.question): name for p in problems})

    def _eval_set_of(self, problem: Problem) -> str | None:
        """The evaluation set a problem belongs to, if any."""
        return eval_set_of(problem.question, self._extra_eval)

    def _known_matches(self, problems: Sequence[Problem]) -> dict[str, int]:
        """{evaluation set: how many of `problems` are in it}."""
        return dict(Counter(w for p in problems if (w := self._eval_set_of(p))))

    def problems(self, split: str, limit: int | None = None) -> list[Problem]:
        """"heldout": the whole data set. "train": refused for an evaluation set; else the
        problems that match no known evaluation problem (when `decontaminate`)."""
        check_split(split)
        if split == "train" and self.heldout_only:
            raise TaskError(
                f"task.name={self.source} is an evaluation set{self.role_reason}: never train on it; train on "
                f"{', '.join(TRAINING_SOURCES)} or your own .jsonl/.parquet of training problems and evaluate "
                "with eval.task=" + (self.source if " " not in self.source else "...")
            )
        problems = self._problems
        if split == "train" and self.decontaminate:
            kept = [p for p in problems if self._eval_set_of(p) is None]
            dropped = self._known_matches(problems)
            self.decontaminated, self.decontaminated_from = sum(dropped.values()), dropped
            if not kept:
                raise TaskError(f"every problem of {self.source} matches an evaluation problem "
                                f"({', '.join(f'{k} {v}' for k, v in dropped.items())}): nothing left to train on")
            problems = kept
        return list(problems[:limit] if limit is not None else problems)

    def render_prompt(self, problem: Problem, tokenizer: Any | None = None) -> str:
        """The prompt the model continues: the chat template if the tokenizer has one (so
        instruct models see their own format), else the plain template and a newline."""
        content = PROMPT_TEMPLATE.format(question=problem.question)
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        return content + "\n"

    def extract_prediction(self, response: str) -> str | None:
        """The model's answer. After a forced-answer cue: what the cue's box holds, up to its
        closing brace, or all of it when the brace never came (a stop string of "}" drops it;
        `\\frac{2}{3` is then read as it is): never an earlier box of the reasoning. Else the
        last `\\boxed{}`, else the last number."""
        _, cue, tail = response.rpartition(ANSWER_CUE)
        if cue:
            end = matching_brace("{" + tail, 0)  # the cue opened the box
            forced = (tail if end is None else tail[: end - 1]).strip()
            return forced or None
        boxed = extract_boxed(response)
        if boxed is not None:
            return boxed
        return _last_number(response)

    def check(self, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
        """Verdicts for (problem, response) pairs, scored by math-verify with a hard timeout."""
        if len(problems) != len(responses):
            raise ValueError(f"{len(problems)} problems but {len(responses)} responses")
        golds = [p.answer for p in problems]
        preds = [self.extract_prediction(r) for r in responses]
        if self._verifier is not None:
            return self._verifier.verify(golds, preds)
        return verify_answers(golds, preds)

    def answer_cue(self) -> str:
        """Appended to a truncated response to force an answer. The continuation should be
        the answer and a closing "}" ("...\\boxed{" + "42}"); if the caller stops generation
        at "}" and the brace is dropped, `check` still reads "42" after the cue."""
        return ANSWER_CUE

    def answer_end(self, answer: str) -> int | None:
        """After the cue (which opens a box): settled at the "}" that closes the box."""
        return matching_brace("{" + answer, 0)  # the "{" shifts indices by one: just past the "}"

    def parse_trace(self, response: str) -> Trace:
        return parse_trace(response)


def parse_trace(response: str) -> Trace:
    """Free-text reasoning, line by line: answer (has \\boxed) > verify (a line that opens with
    a check word, or check words after the answer) > reflection (wait / but / hmm ...) > text.
    `ok` stays None: free text cannot be judged line by line."""
    steps: list[TraceStep] = []
    answered = False
    for line in (ln.strip() for ln in response.splitlines()):
        if not line:
            continue
        if "\\boxed" in line or "\\fbox" in line:
            kind, answered = "answer", True
        elif _VERIFY_RE.match(line) or (answered and _VERIFY_RE.search(line)):
            kind = "verify"
        elif REFLECTION_RE.search(line):
            kind = "reflection"
        else:
            kind = "text"
        steps.append(TraceStep(kind=kind, text=line))  # type: ignore[arg-type]
    return Trace(steps=tuple(steps))


def refuse_training_on(source: str) -> None:
    """TaskError for a named evaluation set (short name or its hub id), without loading it:
    the refusal needs no network."""
    short = source if source in SOURCES else _short_name(source)
    if short in BENCHMARKS:
        raise TaskError(
            f"task.name={source} is an evaluation set: never train on it; train on {', '.join(TRAINING_SOURCES)} "
            f"or your own .jsonl/.parquet of training problems and evaluate with eval.task={source}")


def _short_name(hub_id: str) -> str:
    """The SOURCES key for a known hub id ("" if unknown), so "openai/gsm8k" gets its config.
    A hub id with two splits in SOURCES (openai/gsm8k) resolves to its evaluation set."""
    return next((k for k, v in SOURCES.items() if v.hub_id.lower() == hub_id.lower()), "")
