"""Budgeted sampling: accuracy against the number of reasoning tokens (inference scaling).

Each sample is generated **once**, up to the largest budget. For every budget B its reasoning
is cut after B tokens and the final answer obtained in one of two ways:

* ``forced`` (s1-style, the cheap variant): the same model continues after an answer cue
  appended to exactly the truncated token ids (never re-tokenised text). The transformers
  backend forks these answers from its KV cache while it samples (`core.sampling.hf.forks`);
  other backends get one short generation per budget over prompt + B tokens + cue, which a
  prefix-caching engine (vLLM) serves from the shared prefix.
* ``summarizer`` (the paper's way): another model reads the problem and the cut reasoning and
  writes the answer (its own tokenizer, so this path decodes and re-encodes text).

Either answer ends at the answer stop (a newline) or, with the task's own cue, where the task
finds the answer settled (`Task.answer_end`: "a + b" and a delimiter, the box's closing brace),
whichever comes first: the transformers backend stops decoding there, other backends are cut.

The reasoning of a response is everything before its own answer cue. A response whose
reasoning fits in B tokens keeps its own answer at B (not truncated). Optional s1 extension:
a response that ended before the largest budget gets the wait cue appended and continues.

Beside the curve, `unconstrained` measures the same model with no budget: the responses still
going at the largest budget continue (up to `budget.unconstrained_tokens`) and every response
is scored as it ended, no answer forced. It is not part of the sweep's cost.

Simplified from the paper: one sample per problem by default (the paper averages AIME over
32), budgets in tens of tokens on the embedded task instead of 1k..16k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from core.config import BudgetConfig, SamplingConfig
from core.dist import SINGLE, Dist
from core.evaluate import accuracy_interval, parallel_scaling
from core.sampling.protocol import AnswerEnd, RowsDone, Sampler, derive_seed
from core.sampling.text import decode_text, encode_prompts
from core.tasks.base import Task
from core.types import Completion, CurvePoint, Problem

# (prompt index, sample index) -> the answer continuation after the cue
Answers = dict[tuple[int, int], Completion]


@dataclass(frozen=True)
class Cue:
    """The answer cue as token ids; `core` is what marks a response's own answer."""

    text: str
    ids: tuple[int, ...]  # appended after a truncated prefix ending in a newline
    ids_newline: tuple[int, ...]  # appended after one that does not
    core: tuple[int, ...]  # searched for in responses: the cue without leading newlines
    _ends_line: dict[int, bool] = field(default_factory=dict, compare=False, repr=False)  # token -> text ends in \n

    @classmethod
    def build(cls, tokenizer: Any, text: str) -> Cue:
        def enc(s: str) -> tuple[int, ...]:
            return tuple(tokenizer(s, add_special_tokens=False)["input_ids"])

        nl = text if text.startswith("\n") else "\n" + text
        return cls(text, enc(text), enc(nl), enc(text.lstrip("\n")))

    def after(self, tokenizer: Any, prefix: Sequence[int]) -> tuple[int, ...]:
        """The cue ids to append to `prefix` (a newline first unless it already ends a line)."""
        if not prefix or self.text.startswith("\n"):
            return self.ids
        t = prefix[-1]
        if t not in self._ends_line:
            self._ends_line[t] = tokenizer.decode([t], skip_special_tokens=False).endswith("\n")
        return self.ids if self._ends_line[t] else self.ids_newline


def find_subsequence(seq: Sequence[int], sub: Sequence[int]) -> int | None:
    """Index of the first occurrence of `sub` in `seq`, or None."""
    n = len(sub)
    if n == 0:
        return None
    first, tail = sub[0], tuple(sub[1:])
    i = -1
    while True:
        try:
            i = seq.index(first, i + 1, len(seq) - n + 1)  # in C: a scan per candidate, not per index
        except ValueError:
            return None
        if tuple(seq[i + 1 : i + n]) == tail:
            return i


def reasoning_length(c: Completion, cue_core: Sequence[int], eos_id: int | None) -> int | None:
    """Tokens of reasoning in a response: up to its own answer cue; for a response that ended
    without one, all of it (EOS excluded); None if it was cut by the token limit first."""
    at = find_subsequence(c.token_ids, cue_core)
    if at is not None:
        return at
    if c.finish_reason != "stop":
        return None
    ids = c.token_ids
    return len(ids) - 1 if ids and ids[-1] == eos_id else len(ids)


def truncated_at(reasoning: int | None, budget: int) -> bool:
    """Whether a budget cuts the reasoning (so the answer has to be forced)."""
    return reasoning is None or reasoning > budget


@dataclass
class Sweep:
    """One generation and the forced answers for every budget."""

    groups: list[list[Completion]]  # [problem][sample], generated up to the largest budget
    answers: dict[int, Answers]  # budget -> forced answers of the responses it cuts
    cue: Cue


def merge_sweeps(parts: Sequence[Sweep]) -> Sweep:
    """The sweep of all problems from the sweeps of consecutive blocks of them (ranks, in order)."""
    groups: list[list[Completion]] = []
    answers: dict[int, Answers] = {}
    for part in parts:
        for b, got in part.answers.items():
            answers.setdefault(b, {}).update({(i + len(groups), j): a for (i, j), a in got.items()})
        groups += part.groups
    return Sweep(groups, answers, parts[0].cue)


def _answer_params(cfg: BudgetConfig) -> SamplingConfig:
    return SamplingConfig(temperature=cfg.answer_temperature, max_new_tokens=cfg.answer_max_tokens,
                          batch_size=cfg.sampling.batch_size, stop=cfg.answer_stop)


def generate_sweep(sampler: Sampler, task: Task, problems: Sequence[Problem], cfg: BudgetConfig,
                   progress: bool = False, summarizer: Sampler | None = None,
                   fork: bool = True, on_rows: RowsDone | None = None, dist: Dist = SINGLE) -> Sweep:
    """Generate once up to the largest budget and get an answer for every cut response.

    `fork=False` turns off the transformers backend's KV-cache forks (for comparisons);
    `on_rows(done, total)` hears the generation's progress (this rank's) where the backend forks.
    Under torchrun (`dist`) each rank generates its block of the problems (with forks, their
    forced answers too) and of every later list of continuations; every rank gets the whole
    sweep, the one a single process makes (draws are keyed by each row's place in the whole)."""
    tok = sampler.tokenizer
    cue = Cue.build(tok, cfg.answer_cue or task.answer_cue())
    mine = dist.shard(len(problems))
    prompts = encode_prompts(tok, [task.render_prompt(p, tok) for p in problems])
    params = replace(cfg.sampling, max_new_tokens=max(cfg.budgets))
    seed = derive_seed(cfg.seed, "budget")
    answer_seed = derive_seed(cfg.seed, "budget", "answer")
    eos = getattr(tok, "eos_token_id", None)
    until = answer_end(task, cue)
    if fork and cfg.mode == "forced" and cfg.extend_wait == 0 and sampler.can_fork:
        def plan(generated: list[int], budget: int) -> Sequence[int] | None:
            at = find_subsequence(generated, cue.core)  # its own answer: reasoning of `at` tokens
            return None if at is not None and at <= budget else cue.after(tok, generated[:budget])

        groups, answers = sampler.generate_forked(
            prompts[mine.start : mine.stop], params, seed, cfg.num_samples, cfg.budgets, plan, _answer_params(cfg),
            answer_seed, progress, until, on_rows, mine.start)
        # a fork taken before the response's next token was known may turn out unneeded
        for b, got in answers.items():
            answers[b] = {(i, j): a for (i, j), a in got.items()
                          if truncated_at(reasoning_length(groups[i][j], cue.core, eos), b)}
        return merge_sweeps(dist.gather(Sweep(groups, answers, cue)))
    groups = generate_sharded(sampler, prompts, params, seed, dist, cfg.num_samples, progress=progress)
    for r in range(cfg.extend_wait):
        groups = extend_with_wait(sampler, task, prompts, groups, cue, params, cfg, derive_seed(seed, "wait", r), dist)
    answers: dict[int, Answers] = {}
    for b in cfg.budgets:
        cut = [(i, j) for i, g in enumerate(groups) for j, c in enumerate(g)
               if truncated_at(reasoning_length(c, cue.core, eos), b)]
        if cfg.mode == "forced":
            answers[b] = _force(sampler, prompts, groups, cut, b, cue, _answer_params(cfg), answer_seed, until, dist)
        else:
            assert summarizer is not None, "mode=summarizer needs a summarizer sampler"
            answers[b] = _summarize(summarizer, tok, task, problems, groups, cut, b, cue.text, cfg, answer_seed,
                                    until, dist)
    return Sweep(groups, answers, cue)


def answer_end(task: Task, cue: Cue) -> AnswerEnd | None:
    """The task's rule for where a forced answer is settled (`Task.answer_end`), when the cue
    is the task's own: a rule written for its cue would misread the answer after another one."""
    end = getattr(task, "answer_end", None)
    return end if end is not None and cue.text == task.answer_cue() else None


def generate_sharded(sampler: Sampler, inputs: Sequence[Sequence[int]], params: SamplingConfig, seed: int,
                     dist: Dist, n: int = 1, until: AnswerEnd | None = None,
                     progress: bool = False) -> list[list[Completion]]:
    """`sampler.generate` over `inputs`, each rank its block of them, every rank getting all
    groups: what one process's call gives (a row's draws are keyed by its place in `inputs`)."""
    mine = dist.shard(len(inputs))
    out = sampler.generate([inputs[i] for i in mine], params, seed=seed, n=n, progress=progress and dist.main,
                           until=until, prompt_offset=mine.start)
    return [g for part in dist.gather(out) for g in part]


def _answers(sampler: Sampler, inputs: list[list[int]], params: SamplingConfig, seed: int,
             until: AnswerEnd | None, dist: Dist = SINGLE) -> list[Completion]:
    """One answer continuation per input, cut where `until` finds it settled (the transformers
    backend also stops there; other backends generate to the stop string and are cut after)."""
    return [g[0] for g in generate_sharded(sampler, inputs, params, seed, dist, until=until)]


def _force(sampler: Sampler, prompts: list[list[int]], groups: list[list[Completion]],
           cut: list[tuple[int, int]], budget: int, cue: Cue, params: SamplingConfig,
           seed: int, until: AnswerEnd | None = None, dist: Dist = SINGLE) -> Answers:
    """Forced answers over prompt + first `budget` tokens + cue, as token ids."""
    tok = sampler.tokenizer
    inputs = []
    for i, j in cut:
        head = list(groups[i][j].token_ids[:budget])
        inputs.append(list(prompts[i]) + head + list(cue.after(tok, head)))
    if not inputs:
        return {}
    return dict(zip(cut, _answers(sampler, inputs, params, derive_seed(seed, budget), until, dist)))


def _summarize(summarizer: Sampler, policy_tok: Any, task: Task, problems: Sequence[Problem],
               groups: list[list[Completion]], cut: list[tuple[int, int]], budget: int,
               cue_text: str, cfg: BudgetConfig, seed: int, until: AnswerEnd | None = None,
               dist: Dist = SINGLE) -> Answers:
    """The summarizer reads problem + cut reasoning (as text) and continues after the cue."""
    if not cut:
        return {}
    stok = summarizer.tokenizer
    texts = []
    for i, j in cut:
        head = policy_tok.decode(list(groups[i][j].token_ids[:budget]), skip_special_tokens=True)
        sep = "" if head.endswith("\n") or cue_text.startswith("\n") else "\n"
        texts.append(task.render_prompt(problems[i], stok) + head + sep + cue_text)
    out = _answers(summarizer, encode_prompts(stok, texts), _answer_params(cfg), derive_seed(seed, budget), until,
                   dist)
    return dict(zip(cut, out))


def extend_with_wait(sampler: Sampler, task: Task, prompts: list[list[int]],
                     groups: list[list[Completion]], cue: Cue, params: SamplingConfig,
                     cfg: BudgetConfig, seed: int, dist: Dist = SINGLE) -> list[list[Completion]]:
    """s1 extension: a response that ended before the token limit loses its answer, gets the
    wait cue, and continues within the remaining tokens. Others are kept as they are."""
    tok = sampler.tokenizer
    wait = cfg.wait_text or getattr(task, "wait_cue", lambda: "\nWait,")()
    eos = getattr(tok, "eos_token_id", None)
    todo, inputs, heads = [], [], []
    for i, g in enumerate(groups):
        for j, c in enumerate(g):
            r = reasoning_length(c, cue.core, eos)
            if r is None:
                continue
            head = list(c.token_ids[:r])
            head += list(Cue.build(tok, wait).after(tok, head))
            if len(head) < params.max_new_tokens:
                todo.append((i, j))
                inputs.append(list(prompts[i]) + head)
                heads.append(head)
    out = [list(g) for g in groups]
    # one call with the largest remainder; each row is then cut to its own token limit
    if not todo:
        return out
    longest = params.max_new_tokens - min(len(h) for h in heads)
    conts = generate_sharded(sampler, inputs, replace(params, max_new_tokens=longest), seed, dist)
    for (i, j), head, g in zip(todo, heads, conts):
        room = params.max_new_tokens - len(head)
        cont = g[0]
        finish = "stop" if cont.finish_reason == "stop" and len(cont.token_ids) <= room else "length"
        full = tuple(head + list(cont.token_ids[:room]))
        out[i][j] = Completion(decode_text(tok, full), full, finish,
                               prompt_index=i, sample_index=j)
    return out


def budget_rows(task: Task, problems: Sequence[Problem], sweep: Sweep, budget: int,
                tokenizer: Any) -> list[dict]:
    """Per-sample rows at one budget: the text judged, correct, truncated, tokens used."""
    eos = getattr(tokenizer, "eos_token_id", None)
    keys, texts, used, cut_flags, starts = [], [], [], [], []
    for i, g in enumerate(sweep.groups):
        for j, c in enumerate(g):
            ans = sweep.answers.get(budget, {}).get((i, j))
            cut = truncated_at(reasoning_length(c, sweep.cue.core, eos), budget)
            start = None
            if cut and ans is not None:
                head = list(c.token_ids[:budget])
                cue_ids = sweep.cue.after(tokenizer, head)
                ids = head + list(cue_ids) + list(ans.token_ids)
                texts.append(decode_text(tokenizer, ids))
                used.append(len(ids))
                reasoning = decode_text(tokenizer, head)
                start = len(reasoning) if texts[-1].startswith(reasoning) else None
            else:
                texts.append(c.text)
                used.append(c.num_tokens)
            keys.append((i, j))
            cut_flags.append(cut)
            starts.append(start)
    verdicts = task.check([problems[i] for i, _ in keys], texts)
    # answer_start: where the cue and the forced answer begin in `response` (None: not forced)
    return [{"problem_id": problems[i].id, "sample": j, "budget": budget, "truncated": cut,
             "tokens_used": n, "correct": v.correct, "predicted": v.predicted, "gold": problems[i].answer,
             "status": v.status, "response": text, "answer_start": start}
            for (i, j), cut, n, v, text, start in zip(keys, cut_flags, used, verdicts, texts, starts)]


def unconstrained_cap(cfg: BudgetConfig) -> int:
    """Tokens the unconstrained responses may reach (0: not measured)."""
    return 4 * max(cfg.budgets) if cfg.unconstrained_tokens == -1 else cfg.unconstrained_tokens


def unconstrained(sampler: Sampler, task: Task, problems: Sequence[Problem], sweep: Sweep,
                  cfg: BudgetConfig, label: str, dist: Dist = SINGLE) -> tuple[CurvePoint, list[dict]] | None:
    """Accuracy of the same model with no budget: the sweep's responses that were still going
    at the largest budget continue up to `unconstrained_cap(cfg)` tokens; every response is
    scored as it ended (no forced answer). None when switched off."""
    cap, top = unconstrained_cap(cfg), max(cfg.budgets)
    if cap <= top:
        return None
    tok = sampler.tokenizer
    going = [(i, j) for i, g in enumerate(sweep.groups) for j, c in enumerate(g) if c.finish_reason == "length"]
    ends: dict[tuple[int, int], tuple[list[int], str]] = {}
    if going:
        prompts = encode_prompts(tok, [task.render_prompt(problems[i], tok) for i, _ in going])
        inputs = [list(p) + list(sweep.groups[i][j].token_ids) for p, (i, j) in zip(prompts, going)]
        params = replace(cfg.sampling, max_new_tokens=cap - top)
        more = generate_sharded(sampler, inputs, params, derive_seed(cfg.seed, "budget", "unconstrained"), dist)
        for (i, j), g in zip(going, more):
            ends[(i, j)] = (list(sweep.groups[i][j].token_ids) + list(g[0].token_ids), g[0].finish_reason)
    keys, texts, used, cut = [], [], [], []
    for i, g in enumerate(sweep.groups):
        for j, c in enumerate(g):
            ids, finish = ends.get((i, j), (list(c.token_ids), c.finish_reason))
            keys.append((i, j))
            texts.append(decode_text(tok, ids) if (i, j) in ends else c.text)
            used.append(len(ids))
            cut.append(finish == "length")
    verdicts = task.check([problems[i] for i, _ in keys], texts)
    rows = [{"problem_id": problems[i].id, "sample": j, "budget": cap, "truncated": t, "tokens_used": n,
             "correct": v.correct, "predicted": v.predicted, "status": v.status, "response": text}
            for (i, j), t, n, v, text in zip(keys, cut, used, verdicts, texts)]
    return curve_point(label, cap, rows), rows


def curve_point(label: str, budget: int, rows: Sequence[dict]) -> CurvePoint:
    """Accuracy with a 95% interval (Wilson; clustered by problem with several samples each),
    truncated fraction and mean tokens at one budget."""
    n = len(rows)
    k = sum(r["correct"] for r in rows)
    lo, hi = accuracy_interval(rows)
    return CurvePoint(label, budget, k / max(n, 1), lo, hi,
                      sum(r["truncated"] for r in rows) / max(n, 1),
                      sum(r["tokens_used"] for r in rows) / max(n, 1), n)


def sweep_curve(task: Task, problems: Sequence[Problem], sweep: Sweep, cfg: BudgetConfig,
                label: str, tokenizer: Any,
                on_point: Callable[[list[CurvePoint], list[dict]], None] | None = None,
                ) -> tuple[list[CurvePoint], list[dict], list[dict]]:
    """Score every budget in ascending order, calling `on_point` after each one.

    Returns (points, rows of every budget, parallel-scaling points)."""
    points: list[CurvePoint] = []
    all_rows: list[dict] = []
    rows: list[dict] = []
    for b in cfg.budgets:
        rows = budget_rows(task, problems, sweep, b, tokenizer)
        all_rows += rows
        points.append(curve_point(label, b, rows))
        if on_point is not None:
            on_point(points, rows)
    parallel = parallel_scaling(rows, cfg.num_samples, "tokens_used", cfg.seed) if cfg.num_samples > 1 else []
    return points, all_rows, parallel
