"""The transformers backend: a batched KV-cache decode loop with per-call seeds.

Why not `model.generate`: this loop (a) draws from a private `torch.Generator`, so a call's
output depends only on its seed and inputs, never on global RNG state; (b) drops finished rows
from the batch, KV cache too (a cache whose drops copy its buffers keeps a few until they are
more than its `drop_slack` share of the batch), which matters for RL, where a group's responses
differ a lot in length; (c) reports finish reasons and exact token ids. Models the direct
decoder covers (`core.sampling.hf.decoder.supports`: plain Qwen2 / Llama) decode through it
unless `sampling.hf_decoder` is 'transformers'; budgeted sampling forks forced answers from the
KV cache (`core.sampling.hf.forks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from core.config import SamplingConfig
from core.sampling.draws import RowDraws
from core.sampling.hf.decoder import Decoder, DecoderCache, supports
from core.sampling.hf.forks import generate_forked
from core.sampling.hf.state import DecodeHook, DecodeState, left_pad
from core.sampling.protocol import AnswerEnd, ForkPlan, RowsDone, derive_seed
from core.sampling.text import decode_text, settle, token_texts, tokens_containing, trim_to_text
from core.types import Completion


def sample_next(logits: torch.Tensor, params: SamplingConfig, u: torch.Tensor) -> torch.Tensor:
    """Next token per row. logits: [B, V] float, u: [B, 1] float64 uniforms in [0, 1) (one per
    row, `core.sampling.draws.RowDraws`) -> [B] long. temperature 0 means greedy (u unused).

    The draw inverts each row's CDF at its uniform number (a float64 cumulative sum, so that
    tokens keep their probabilities over a large vocabulary): on CPU much faster than
    `torch.multinomial`, which draws V exponentials per row (docs/perf_log.md), and on every
    device a row's token depends on its own number only, whatever else is in the batch."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.min_p > 0:
        keep = probs >= params.min_p * probs.max(dim=-1, keepdim=True).values
        probs = probs * keep
    if params.top_p < 1:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        cum = sorted_p.cumsum(dim=-1)
        drop_sorted = cum - sorted_p > params.top_p * cum[:, -1:]
        probs = probs.scatter(-1, idx, sorted_p.masked_fill(drop_sorted, 0.0))
    return _inverse_cdf(probs, u)


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor, chunk: int = 1 << 24) -> torch.Tensor:
    """One draw per row of the (unnormalised) distributions `probs` [B, V] -> [B] long: the
    first token whose cumulative mass exceeds u * total, u [B, 1] uniform in [0, 1). A token of
    zero probability is never drawn (its interval is empty; the clamp covers u * total rounding
    up to the total). Rows go in groups of about `chunk` values, which bounds the float64 copy."""
    u = u.to(device=probs.device, dtype=torch.float64)
    step = max(1, chunk // max(probs.shape[-1], 1))
    picks = []
    for s in range(0, len(probs), step):
        cdf = probs[s : s + step].double().cumsum(dim=-1)
        picks.append(torch.searchsorted(cdf, u[s : s + step] * cdf[:, -1:], right=True).squeeze(-1))
    pick = picks[0] if len(picks) == 1 else torch.cat(picks)
    if bool((pick == probs.shape[-1]).any()):  # about 2^-53 per draw
        last = probs.shape[-1] - 1 - (probs.flip(-1) > 0).int().argmax(dim=-1)  # last token with mass
        pick = torch.minimum(pick, last)
    return pick


class HFSampler:
    """Sampler over a transformers causal LM (shares the trainer's weights: no sync needed)."""

    can_fork = True

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self._stop_tables: dict[tuple[str, ...], torch.Tensor] = {}
        self._texts: list[str] | None = None

    def sync_weights(self, model: Any) -> None:
        self.model = model

    def generate_forked(
        self, prompt_ids: list[list[int]], params: SamplingConfig, seed: int, n: int,
        budgets: Sequence[int], plan: ForkPlan, answer_params: SamplingConfig, answer_seed: int,
        progress: bool = False, until: AnswerEnd | None = None, on_rows: RowsDone | None = None,
        prompt_offset: int = 0,
    ) -> tuple[list[list[Completion]], dict[int, dict[tuple[int, int], Completion]]]:
        """`Sampler.generate_forked`: see `core.sampling.hf.forks`."""
        return generate_forked(self, prompt_ids, params, seed, n, budgets, plan, answer_params,
                               answer_seed, progress, until, on_rows, prompt_offset)

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        params: SamplingConfig,
        seed: int,
        n: int = 1,
        progress: bool = False,
        until: AnswerEnd | None = None,
        prompt_offset: int = 0,
    ) -> list[list[Completion]]:
        """`Sampler.generate`; with `until`, a response also ends where its answer is settled
        (`core.sampling.text.settle`: early, and cut there)."""
        rows = [(i, j) for i in range(len(prompt_ids)) for j in range(n)]
        out: list[list[Completion | None]] = [[None] * n for _ in prompt_ids]
        chunks = range(0, len(rows), params.batch_size)
        bar = tqdm(chunks, desc="sampling", unit="batch", disable=not progress, leave=False)
        for start in bar:
            chunk = rows[start : start + params.batch_size]
            logprobs: list[list[float]] = [[] for _ in chunk]
            draws = RowDraws([derive_seed(seed, prompt_offset + i, j) for i, j in chunk], self.device)
            ids = self._decode([prompt_ids[i] for i, _ in chunk], params, draws, logprobs_out=logprobs,
                               until=until)
            for (i, j), gen, lp in zip(chunk, ids, logprobs):
                out[i][j] = self._completion(gen, params, i, j, lp, until)
        return [[c for c in group if c is not None] for group in out]

    def _completion(self, gen: list[int], params: SamplingConfig, i: int, j: int,
                    logprobs: list[float] | None = None, until: AnswerEnd | None = None) -> Completion:
        finish = "length"
        if self.eos_id in gen:
            gen = gen[: gen.index(self.eos_id) + 1]
            finish = "stop"
        text = decode_text(self.tokenizer, gen)
        for stop in params.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[: cut + len(stop)], "stop"
                gen = trim_to_text(self.tokenizer, gen, text)
        lp = tuple(logprobs[: len(gen)]) if logprobs is not None else None
        out = Completion(text, tuple(gen), finish, prompt_index=i, sample_index=j, token_logprobs=lp)
        return out if until is None else settle(self.tokenizer, out, until)

    @torch.no_grad()
    def _decode(
        self, prompts: list[Sequence[int]], params: SamplingConfig, draws: RowDraws,
        hook: DecodeHook | None = None, start: DecodeState | None = None,
        logprobs_out: list[list[float]] | None = None, until: AnswerEnd | None = None,
    ) -> list[list[int]]:
        """Token ids generated for each prompt (up to and including EOS when it comes).

        `hook(state)` is called before each forward pass and once after the loop, when
        `state.generated[r]` holds t tokens of which the last is not yet in the KV cache
        (`state.step_ids`); budgeted sampling forks forced answers from there. `start`
        continues from such a state (with fresh `generated` lists) instead of `prompts`.
        `logprobs_out[r]`, when given, receives log pi(token) at temperature 1 of each token of row r.
        `until`: a row also ends once `until(its text)` says its answer is settled."""
        was_training = self.model.training
        self.model.eval()
        st = start if start is not None else self._start(prompts, params)
        cache, mask, step_ids, step_pos = st.cache, st.mask, st.step_ids, st.step_pos
        live, generated = st.live, st.generated  # live: original row of each batch row
        # finished rows still in the batch (a cache that is slow to drop rows waits for a few)
        finished: torch.Tensor | None = None
        slack = getattr(cache, "drop_slack", 0.0)
        texts = ["" for _ in generated] if until is not None else []  # per row, for `until`

        def drop(done: torch.Tensor) -> None:
            nonlocal live, mask, step_ids, step_pos, finished
            keep = (~done).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            live, mask, step_ids, step_pos = live[keep], mask[keep], step_ids[keep], step_pos[keep]
            finished = None

        for t in range(params.max_new_tokens):
            if hook is not None and t > 0:  # finished rows stay: the batch is that of a run without hook
                hook(DecodeState(t, cache, mask, step_ids, step_pos, live, generated, finished))
            if t == 0 and start is None:
                logits = self._prefill(step_ids, mask, step_pos, cache)
            else:
                logits = self._forward(step_ids, mask, step_pos, cache)
            nxt = sample_next(logits, params, draws.uniform(live, t))
            rows, toks = live, nxt
            if finished is not None:
                rows, toks = live[~finished], nxt[~finished]
            if logprobs_out is not None:  # untempered, as the trainer scores tokens: saves it a forward pass
                lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
                for r, x in zip(rows.tolist(), (lp if finished is None else lp[~finished]).tolist()):
                    logprobs_out[r].append(x)
            for r, tok in zip(rows.tolist(), toks.tolist()):
                generated[r].append(tok)
            done = nxt == self.eos_id
            step_pos = step_pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            step_ids = nxt.unsqueeze(-1)
            if params.stop:
                done = done | self._hit_stop(live, generated, params.stop, nxt)
            if until is not None:
                done = done | self._settled(live, generated, texts, nxt, until, finished)
            if finished is not None:
                done = done | finished
            if done.all():
                break
            if done.any():  # drop finished rows, KV cache included (or wait for more of them)
                if int(done.sum()) > slack * len(done):
                    drop(done)
                else:
                    finished = done
        else:  # the token limit: rows still live have generated max_new_tokens tokens
            if hook is not None:
                hook(DecodeState(params.max_new_tokens, cache, mask, step_ids, step_pos, live, generated, finished))
        self.model.train(was_training)
        return generated

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> torch.Tensor:
        """Last-position logits [R, V] of `ids` [R, q] after what `cache` holds (which gains them)."""
        if isinstance(cache, DecoderCache):
            return cache.decoder.forward(cache, ids, pos, mask)
        return self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                          past_key_values=cache, use_cache=True).logits[:, -1, :]

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> torch.Tensor:
        """Last-position logits [R, V] of the left-padded prompts `ids` [R, W], filling `cache`.

        Rows that repeat a prompt (n samples per prompt) are run once and their KV cache and
        logits copied: with K samples per prompt the prefill costs 1/K of the rows."""
        uniq, inverse = torch.unique(torch.cat([ids, mask], dim=1), dim=0, return_inverse=True)
        if len(uniq) == len(ids):
            return self._forward(ids, mask, pos, cache)
        first = torch.full((len(uniq),), len(ids), dtype=torch.long, device=ids.device)
        first = first.scatter_reduce(0, inverse, torch.arange(len(ids), device=ids.device), "amin")
        logits = self._forward(ids[first], mask[first], pos[first], cache)
        cache.batch_select_indices(inverse)
        return logits[inverse]

    def _start(self, prompts: list[Sequence[int]], params: SamplingConfig) -> DecodeState:
        """The state before the first forward pass: left-padded prompts, empty cache (the direct
        decoder's when it covers the model, see `core.sampling.hf.decoder`)."""
        from transformers import DynamicCache

        ids, mask = left_pad(prompts, self.pad_id, self.device)
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        live = torch.arange(len(prompts), device=ids.device)
        if params.hf_decoder == "auto" and supports(self.model):
            cache: Any = Decoder(self.model).cache(ids.shape[1] + params.max_new_tokens)
        else:
            cache = DynamicCache()
        return DecodeState(0, cache, mask, ids, position, live, [[] for _ in prompts])

    def _hit_stop(self, live: torch.Tensor, generated: list[list[int]], stops: tuple[str, ...],
                  nxt: torch.Tensor) -> torch.Tensor:
        """Rows whose text now contains a stop string (`nxt`: the token each just appended).

        A stop that is one ASCII character other than a space (the answer's newline, say) lies
        inside one token's text, so a table of the tokens that contain one decides it for all
        rows at once. Otherwise each row's tail is decoded."""
        if all(len(s) == 1 and s.isascii() and s != " " for s in stops):
            table = self._stop_table(stops, nxt.device)
            return table[nxt.clamp(max=len(table) - 1)] & (nxt < len(table))
        hits = []
        for r in live.tolist():
            tail = decode_text(self.tokenizer, generated[r][-16:])
            hits.append(any(s in tail for s in stops))
        return torch.tensor(hits, device=live.device)

    def _settled(self, live: torch.Tensor, generated: list[list[int]], texts: list[str],
                 nxt: torch.Tensor, until: AnswerEnd, finished: torch.Tensor | None) -> torch.Tensor:
        """Rows whose answer `until` finds settled, now that each appended `nxt`.

        Each row's text grows by its token's own text (one table look-up, not a decode of the
        row); when that says settled, the row's exact decoding must agree (tokens whose texts
        do not simply concatenate, as partial UTF-8 bytes, never end a row early)."""
        table = self._token_texts()
        hits = []
        ended = finished.tolist() if finished is not None else [False] * len(live)
        for r, tok, gone in zip(live.tolist(), nxt.tolist(), ended):
            if gone:  # ended before, still in the batch: no new token
                hits.append(True)
                continue
            texts[r] += table[tok] if tok < len(table) else ""
            hits.append(until(texts[r]) is not None
                        and until(decode_text(self.tokenizer, generated[r])) is not None)
        return torch.tensor(hits, dtype=torch.bool, device=live.device)

    def _token_texts(self) -> list[str]:
        """Each token id's text alone (decoded once per sampler: stop tables and `until`)."""
        if self._texts is None:
            self._texts = token_texts(self.tokenizer)
        return self._texts

    def _stop_table(self, stops: tuple[str, ...], device: torch.device | str) -> torch.Tensor:
        """[V] bool: whether token id v decodes (alone) to text containing a stop string."""
        if stops not in self._stop_tables:
            hits = tokens_containing(self.tokenizer, stops, self._token_texts())
            self._stop_tables[stops] = torch.tensor(hits, dtype=torch.bool, device=device)
        return self._stop_tables[stops]
