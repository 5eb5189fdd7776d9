"""Forced answers forked from the KV cache while the transformers backend samples.

Budgeted sampling needs, for every budget B, the answer the model gives when its reasoning is
cut after B tokens. Re-running the model over prompt + B tokens for each budget costs a
prefill per budget, a large share of a whole generation each. Instead, once the KV cache holds exactly B generated tokens (one step after the B-th
was sampled, so the fork feeds only the cue), the rows that still need an answer are copied
out of it into a cache with room for the answer (`core.sampling.hf.kv_cache.select_rows`: the
direct decoder's cache or a `GrowingCache`), the answer cue is fed after the truncated prefix,
and a short answer is decoded; the main rows go on untouched (their random stream is not used
by the forks, and rows that ended but still wait in the batch are skipped, not dropped, so they
equal a plain `generate` with the same seed).

Tried and dropped (figures in docs/perf_log.md): running the forks as extra rows of the main
batch (no passes of their own): fork rows finish every few steps, and each drop or append
copies the whole main cache, which cost as much as the passes it saved. And running a fork over
the main cache's own buffers instead of a copy of its rows (writing past the filled positions,
which the main pass overwrites): the live rows not forked are computed along, and the fork's
first drop copies anyway; no gain out of the noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from core.config import SamplingConfig
from core.sampling.draws import RowDraws
from core.sampling.hf.kv_cache import select_rows
from core.sampling.hf.state import DecodeState, left_pad
from core.sampling.protocol import AnswerEnd, ForkPlan, RowsDone, derive_seed
from core.types import Completion

if TYPE_CHECKING:
    from core.sampling.hf.sampler import HFSampler

# positions for the answer in a fork's first KV buffers (more are added when an answer runs on)
FORK_ROOM = 8
# budget -> (prompt index, sample index) -> the forced answer (cue excluded)
Forks = dict[int, dict[tuple[int, int], Completion]]


def _fork_state(st: DecodeState, rows: list[int], cues: list[Sequence[int]], pad_id: int,
                answer_tokens: int, pending: bool, arena: list[torch.Tensor] | None = None,
                spare: list[torch.Tensor] | None = None) -> DecodeState:
    """The state that feeds, for live row rows[k], cues[k]: after the pending token when
    `pending`, or instead of it (the fork then continues from the tokens already in the cache,
    one fewer than `st.t`).

    Cues of different lengths are left-padded with masked-out tokens (position ids skip
    them), so one batch serves them all."""
    dev = st.mask.device
    idx = torch.tensor(rows, dtype=torch.long, device=dev)
    cue_ids, cue_mask = left_pad(cues, pad_id, dev)
    pos0 = st.step_pos.index_select(0, idx)  # the pending token's position
    mask = st.mask.index_select(0, idx)
    if pending:
        step_ids = torch.cat([st.step_ids.index_select(0, idx), cue_ids], dim=1)
        step_pos = torch.cat([pos0, pos0 + cue_mask.cumsum(dim=1)], dim=1)
    else:
        step_ids, step_pos, mask = cue_ids, pos0 - 1 + cue_mask.cumsum(dim=1), mask[:, :-1]
    mask = torch.cat([mask, cue_mask], dim=1)
    live = torch.arange(len(rows), device=dev)
    # room for the few tokens most answers take; a cache that grows in steps (the direct
    # decoder's on the CPU) reads fewer unfilled positions, and grows for longer answers
    fed, n = step_ids.shape[1], st.cache.get_seq_length()
    cache = select_rows(st.cache, idx, room=fed + min(answer_tokens, FORK_ROOM), arena=arena,
                        limit=n + fed + answer_tokens, spare=spare)
    return DecodeState(0, cache, mask, step_ids, step_pos, live, [[] for _ in rows])


def generate_forked(
    sampler: HFSampler,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingConfig,
    seed: int,
    n: int,
    fork_at: Sequence[int],
    plan: ForkPlan,
    answer_params: SamplingConfig,
    answer_seed: int,
    progress: bool = False,
    until: AnswerEnd | None = None,
    on_rows: RowsDone | None = None,
    prompt_offset: int = 0,
) -> tuple[list[list[Completion]], Forks]:
    """Sample like `sampler.generate` and fork forced answers at each budget in `fork_at`.

    At budget B (tokens generated), every row still being decoded is offered to `plan` (with
    its tokens so far: B, or B + 1 when forked one step late); when it returns cue ids, the
    answer after prompt + first B tokens + cue is decoded with `answer_params` (draws keyed by
    `answer_seed`, the row and B), ending early where `until` finds it settled. Rows that ended before B are never
    forked.
    `on_rows(done, total)` is told after each batch of rows.
    Returns (completions grouped per prompt as `generate` does, forced answers per budget)."""
    from tqdm.auto import tqdm

    rows = [(i, j) for i in range(len(prompt_ids)) for j in range(n)]
    out: list[list[Completion | None]] = [[None] * n for _ in prompt_ids]
    forks: Forks = {b: {} for b in fork_at}
    budgets, top = set(fork_at), params.max_new_tokens
    lookahead = not params.stop
    # the forks' KV buffers, reused: one fork is decoded at a time; and the memory its cache
    # copies the rows that go on into when most have ended (fresh memory costs page faults)
    arena: list[torch.Tensor] = []
    spare: list[torch.Tensor] = []

    def _due(t: int) -> list[tuple[int, bool]]:
        """(budget, pending?) of the forks due when `t` tokens are generated. Budget B is forked
        one step late, when the cache holds exactly its B tokens (so the fork feeds only the cue),
        except at the token limit. Not with stop strings: a row that stops on token B + 1 still
        needs its answer at B but is gone by then."""
        if not lookahead:
            return [(t, True)] if t in budgets else []
        due = [(t - 1, False)] if t - 1 in budgets and t > 1 else []
        return due + ([(t, True)] if t == top and t in budgets else [])

    def fork(st: DecodeState, chunk: list[tuple[int, int]], budget: int, pending: bool) -> None:
        ks, cues = [], []
        ended = st.finished.tolist() if st.finished is not None else [False] * len(st.live)
        for k, r in enumerate(st.live.tolist()):
            if ended[k]:
                continue
            cue = plan(st.generated[r], budget)
            if cue is not None:
                assert len(cue) > 0, "a fork plan returns at least one cue token"
                ks.append(k)
                cues.append(cue)
        if not ks:
            return
        state = _fork_state(st, ks, cues, sampler.pad_id, answer_params.max_new_tokens, pending, arena, spare)
        where = [chunk[int(st.live[k])] for k in ks]
        draws = RowDraws([derive_seed(answer_seed, prompt_offset + i, j, budget) for i, j in where], sampler.device)
        answers = sampler._decode([], answer_params, draws, start=state, until=until)
        for (i, j), ans in zip(where, answers):
            forks[budget][(i, j)] = sampler._completion(ans, answer_params, i, j, until=until)

    chunks = range(0, len(rows), params.batch_size)
    for start in tqdm(chunks, desc="sampling", unit="batch", disable=not progress, leave=False):
        chunk = rows[start : start + params.batch_size]

        def hook(st: DecodeState, chunk: list[tuple[int, int]] = chunk) -> None:
            for budget, pending in _due(st.t):
                fork(st, chunk, budget, pending)

        logprobs: list[list[float]] = [[] for _ in chunk]
        draws = RowDraws([derive_seed(seed, prompt_offset + i, j) for i, j in chunk], sampler.device)
        ids = sampler._decode([prompt_ids[i] for i, _ in chunk], params, draws, hook=hook,
                              logprobs_out=logprobs)
        for (i, j), gen, lp in zip(chunk, ids, logprobs):
            out[i][j] = sampler._completion(gen, params, i, j, lp)
        if on_rows is not None:
            on_rows(start + len(chunk), len(rows))
    return [[c for c in group if c is not None] for group in out], forks
