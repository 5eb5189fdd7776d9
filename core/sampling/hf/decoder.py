"""A direct forward pass for decoding Qwen2 / Llama-style models, over preallocated KV buffers.

In the transformers forward of a decode step (one token per row), `DynamicCache` appends with
`torch.cat`, which copies every layer's whole cache into fresh memory, and each layer goes
through several Python-level modules, masks and hooks: on a small model that is much of the
step. This module runs the same arithmetic with plain torch ops on the model's own parameters:

* the q/k/v projections fused into one matrix product (a copy of those weights per `Decoder`;
  gate/up are not fused: no faster on the embedded model, and the copy would be 2/3 of a large
  model's weights);
* keys and values written in place into buffers; the attention reads views of the filled part
  (the matrix products take strided views), or on the CPU the whole buffers (below);
* the rotary tables computed once per step for all layers;
* on the CPU, buffers that grow in steps of 32 positions (or a quarter) and a decode step whose
  attention reads them whole (unfilled positions zeroed and masked) once the filled part is at
  least 40% of them: torch multiplies a batch of contiguous matrices much faster there than
  views of wider ones. Drops and growth copy into the cache's spare memory, not fresh pages.
  Elsewhere (GPUs, where this was not measured) the buffers have the whole room from the start
  and are read as views.

It covers the architectures whose decoder layer is exactly: RMSNorm -> attention with rotary
embeddings (default rope, optional q/k/v bias, grouped KV heads, no sliding window) -> residual
-> RMSNorm -> SiLU-gated MLP -> residual; `supports()` says whether a model is one. Anything else
(other architectures, rope scaling, PEFT adapters, quantised weights) goes through transformers.
A test compares the logits with transformers' for prompts of different lengths.
`python -m lab.bench.decoder` compares it with the model's own forward; its figures, and those
of each choice above, are in docs/perf_log.md.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_TYPES = ("qwen2", "llama")
# passes feeding more tokens than this per row (prefills) attend through SDPA, which builds no
# [R, H, q, m] score tensor; shorter ones (decode steps, the forks' answer cues) through two
# matrix products over the cache (its views, or on the CPU its whole buffers)
_SDPA_MIN_QUERIES = 8
# the matrix products of a decode step read the whole buffers (positions past the filled ones
# are zero and masked out) once the filled part is at least this share of them: on the CPU,
# torch's batched product is slower over R x H matrices that are views of wider buffers than
# over the same batch laid out contiguously; a contiguous read costs the positions it does not
# need, so below about this share the views are faster (docs/perf_log.md)
_FULL_READ_SHARE = 0.4


def supports(model: Any) -> bool:
    """Whether `Decoder` computes exactly what `model`'s own forward does."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in _TYPES:
        return False
    if type(model).__name__ not in ("Qwen2ForCausalLM", "LlamaForCausalLM"):
        return False  # e.g. a PEFT wrapper: its adapters change the projections
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        return False
    if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "hidden_act", "silu") != "silu":
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return False
    if rope.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0)) != 1.0:
        return False
    if getattr(cfg, "mlp_bias", False) or getattr(cfg, "quantization_config", None) is not None:
        return False
    layers = model.model.layers
    return all(type(layer.mlp).__name__.endswith("MLP") and hasattr(layer.self_attn, "q_proj")
               for layer in layers)


class Decoder:
    """The fused weights of `model` (see `supports`) and its forward pass over a `DecoderCache`.

    Build one per generation: the fused q/k/v matrix is a copy, taken when it is built (the
    other weights are the model's own tensors)."""

    def __init__(self, model: Any) -> None:
        if not supports(model):
            raise ValueError(f"{type(model).__name__} is not a model this decoder covers")
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5
        rotary = model.model.rotary_emb
        self.inv_freq = rotary.inv_freq.float()
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        self.layers = []
        with torch.no_grad():
            for layer in model.model.layers:
                att, mlp = layer.self_attn, layer.mlp
                qkv_b = None
                if att.q_proj.bias is not None:
                    qkv_b = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias])
                self.layers.append({
                    "in_norm": layer.input_layernorm.weight.detach(),
                    "post_norm": layer.post_attention_layernorm.weight.detach(),
                    "qkv": torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]),
                    "qkv_b": qkv_b, "o": att.o_proj.weight.detach(),
                    "o_b": None if att.o_proj.bias is None else att.o_proj.bias.detach(),
                    "gate": mlp.gate_proj.weight.detach(), "up": mlp.up_proj.weight.detach(),
                    "down": mlp.down_proj.weight.detach(),
                })
        self.embed = model.model.embed_tokens.weight.detach()
        self.final_norm = model.model.norm.weight.detach()
        self.lm_head = model.lm_head.weight.detach()

    def cache(self, capacity: int) -> DecoderCache:
        """An empty cache for up to `capacity` positions (its rows: those of the first pass). On
        the CPU its buffers start small and grow in steps towards that (see `DecoderCache`);
        elsewhere they have the whole room from the start."""
        if self.embed.device.type == "cpu":
            return DecoderCache(self, 0, limit=capacity)
        return DecoderCache(self, capacity)

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * h.to(x.dtype)

    def forward(self, cache: DecoderCache, ids: torch.Tensor, pos: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Logits [R, V] at the last of the q new positions, whose keys and values are written
        after the cache's n filled positions. ids, pos: [R, q]; mask: [R, n + q], 1 where a
        position may be attended to (0: padding), as transformers' `attention_mask`."""
        r, q = ids.shape
        n, m = cache.n, cache.n + q
        cache.reserve(m)
        hd, hkv, rep = self.head_dim, self.kv_heads, self.heads // self.kv_heads
        x = F.embedding(ids, self.embed)
        freqs = pos.unsqueeze(-1).to(torch.float32) * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scale).to(x.dtype).unsqueeze(1)  # [R, 1, q, D]
        sin = (emb.sin() * self.rope_scale).to(x.dtype).unsqueeze(1)
        low = torch.finfo(x.dtype).min  # finite, as transformers: a padding query stays finite
        sdpa = q > _SDPA_MIN_QUERIES
        # on the CPU only (caches that grow in steps), where it was measured
        full = not sdpa and cache.limit > 0 and m >= _FULL_READ_SHARE * cache.capacity
        if full:
            cache.clear_unfilled(r)
        if not sdpa:  # a decode step or a short fed cue: an additive mask [R, 1, 1, q, span]
            span = cache.capacity if full else m  # positions read: the whole buffers or the filled part
            bias = torch.full((r, span), low, dtype=x.dtype, device=x.device)
            bias[:, :m].masked_fill_(mask != 0, 0.0)
            bias = bias[:, None, None, None, :]
            if q > 1:
                bias = bias.masked_fill(torch.ones((q, span), dtype=torch.bool, device=ids.device).triu(n + 1), low)
        else:  # a prefill: SDPA (no [R, H, q, m] scores), causal; every query sees at least
            # itself, so a padding query attends to something and stays finite
            causal = torch.ones((q, m), dtype=torch.bool, device=ids.device).tril(n)
            own = torch.zeros((q, m), dtype=torch.bool, device=ids.device)
            own[:, n:] = torch.eye(q, dtype=torch.bool, device=ids.device)
            allowed = ((mask != 0)[:, None, None, :] & causal) | own  # [R, 1, q, m]
        half = hd // 2
        last = len(self.layers) - 1
        for li, w in enumerate(self.layers):
            h = self._rms(x, w["in_norm"])
            qkv = F.linear(h, w["qkv"], w["qkv_b"])
            qs = qkv[..., : self.heads * hd].view(r, q, self.heads, hd).transpose(1, 2)
            ks = qkv[..., self.heads * hd : (self.heads + hkv) * hd].view(r, q, hkv, hd).transpose(1, 2)
            vs = qkv[..., (self.heads + hkv) * hd :].view(r, q, hkv, hd).transpose(1, 2)
            qs = qs * cos + torch.cat((-qs[..., half:], qs[..., :half]), dim=-1) * sin
            ks = ks * cos + torch.cat((-ks[..., half:], ks[..., :half]), dim=-1) * sin
            keys, values = cache.write(li, ks, vs)  # [R, Hkv, m, D] each
            if li == last and q > 1:
                # only the last position's output is read (its logits); the others' keys and
                # values are in the cache, so the rest of this layer runs for it alone
                qs, x, q = qs[:, :, -1:], x[:, -1:], 1
                if sdpa:
                    allowed = allowed[:, :, -1:]
                else:
                    bias = bias[:, :, :, -1:]
            if not sdpa:
                if full:
                    keys, values = cache.keys[li], cache.values[li]  # [R, Hkv, capacity, D]
                scores = torch.matmul(qs.reshape(r, hkv, rep * q, hd), keys.transpose(-1, -2)) * self.scale
                scores = scores.view(r, hkv, rep, q, span) + bias
                probs = torch.softmax(scores.float(), dim=-1).to(x.dtype).view(r, hkv, rep * q, span)
                att = torch.matmul(probs, values).view(r, self.heads, q, hd)
            else:
                if rep > 1:
                    keys, values = keys.repeat_interleave(rep, dim=1), values.repeat_interleave(rep, dim=1)
                att = F.scaled_dot_product_attention(qs, keys, values, attn_mask=allowed, scale=self.scale)
            x = x + F.linear(att.transpose(1, 2).reshape(r, q, self.heads * hd), w["o"], w["o_b"])
            h = self._rms(x, w["post_norm"])
            x = x + F.linear(F.silu(F.linear(h, w["gate"])) * F.linear(h, w["up"]), w["down"])
        cache.n = m
        return F.linear(self._rms(x[:, -1], self.final_norm), self.lm_head)


class DecoderCache:
    """Keys and values of R rows in buffers of `capacity` positions, n of them filled (the same
    n for every row: prompts are left-padded). Per layer: keys and values [R, Hkv, capacity, D].

    Used by the transformers sampler's decode loop in place of a transformers cache: it drops
    rows with `batch_select_indices`, and `select` copies rows out for forked continuations.
    """

    # dropping rows copies the filled part of the buffers, so the decode loop keeps finished rows
    # in the batch until they are more than this share of it
    drop_slack = 0.25
    # a cache with a `limit` (the decoder's on the CPU) keeps its buffers at most this many
    # positions, or a quarter, beyond the filled part: a decode step then reads them whole (see
    # `_FULL_READ_SHARE`) over few unfilled positions. Growing copies the filled part, as does
    # dropping rows, which also shrinks the room back.
    grow_step = 32

    def __init__(self, decoder: Decoder, capacity: int, buffers: list[torch.Tensor] | None = None,
                 limit: int = 0) -> None:
        self.decoder = decoder
        self.capacity, self.n = capacity, 0
        self.limit = limit  # 0: the buffers have all their room from the start (double when full)
        self._spare: list[torch.Tensor] = []  # with a limit: memory for the next copy (see _replace)
        self.clean = False  # whether the positions past the filled ones hold zeros (see clear_unfilled)
        self.keys: list[torch.Tensor] = [] if buffers is None else buffers[0::2]
        self.values: list[torch.Tensor] = [] if buffers is None else buffers[1::2]

    def _allocate(self, rows: int, capacity: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        d = self.decoder
        shape = (rows, d.kv_heads, capacity, d.head_dim)
        dtype, device = d.embed.dtype, d.embed.device
        return ([torch.empty(shape, dtype=dtype, device=device) for _ in d.layers],
                [torch.empty(shape, dtype=dtype, device=device) for _ in d.layers])

    def write(self, layer: int, ks: torch.Tensor, vs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store [R, Hkv, q, D] keys and values after the n filled positions; the views of the
        filled part including them."""
        n, m = self.n, self.n + ks.shape[2]
        if not self.keys:  # the first write sets the number of rows
            self.keys, self.values = self._allocate(ks.shape[0], self.capacity)
        self.keys[layer][:, :, n:m].copy_(ks)
        self.values[layer][:, :, n:m].copy_(vs)
        return self.keys[layer][:, :, :m], self.values[layer][:, :, :m]

    def clear_unfilled(self, rows: int) -> None:
        """Zero the positions past the filled ones, once, so a pass may read the whole buffers:
        there a masked position's probability is exactly 0, and 0 times a zero value adds
        nothing (memory left over from elsewhere may hold NaN or inf, which it would not)."""
        if not self.keys:
            self.keys, self.values = self._allocate(rows, self.capacity)
        if not self.clean:
            for buf in self.keys + self.values:
                buf[:, :, self.n :].zero_()
            self.clean = True

    def _fit(self, m: int) -> int:
        """The capacity for m filled positions: up to `grow_step` (or m / 4) more, within the limit."""
        if m > self.limit:  # past what the cache was made for: double
            self.limit = max(m, 2 * self.limit)
        return min(self.limit, m + max(self.grow_step, m // 4))

    def reserve(self, m: int) -> None:
        """Room for m positions (grown when short)."""
        if m > self.capacity:
            self.grow(self._fit(m) if self.limit else max(m, 2 * self.capacity))

    def grow(self, capacity: int) -> None:
        """Room for `capacity` positions (a copy of the filled part)."""
        if self.keys:
            rows = torch.arange(len(self.keys[0]), device=self.keys[0].device)
            self._replace(self.select(rows, capacity - self.n, self._spare if self.limit else None))
        self.capacity, self.clean = capacity, False

    def _replace(self, new: DecoderCache) -> None:
        """Take `new`'s buffers (which live in the spare memory); the old ones become the spare.
        A cache that grows in steps copies into memory it already has: a fresh buffer of tens
        of MB costs page faults on every drop (docs/perf_log.md). Elsewhere the old buffers are
        freed."""
        old = self.keys + self.values
        self.keys, self.values, self.capacity, self.clean = new.keys, new.values, new.capacity, False
        if self.limit:
            self._spare = [b.view(-1) for b in old]

    def get_seq_length(self) -> int:
        return self.n

    def batch_select_indices(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` (indices, repeats allowed): a copy of their filled part."""
        room = (self._fit(self.n) if self.limit else self.capacity) - self.n
        self._replace(self.select(rows, room, self._spare if self.limit else None))

    def select(self, rows: torch.Tensor, room: int, arena: list[torch.Tensor] | None = None,
               limit: int = 0, spare: list[torch.Tensor] | None = None) -> DecoderCache:
        """A new cache of rows `rows`, their n filled positions and room for `room` more; this
        cache is unchanged. With `arena` (flat buffers reused from call to call, grown as
        needed) the new cache lives in them: drop it before the next call with the same arena.
        Fresh memory costs page faults on every call. `limit`: when this cache grows in steps
        (on the CPU), the positions the new one may grow to that way (0: double when full);
        `spare`, flat buffers (another arena) the new one's first drop or growth copies into."""
        d, n = self.decoder, self.n
        capacity = n + room
        shape = (len(rows), d.kv_heads, capacity, d.head_dim)
        buffers = None
        if arena is not None:
            numel = len(rows) * d.kv_heads * d.head_dim * capacity
            ref = self.keys[0]
            while len(arena) < 2 * len(self.keys):
                arena.append(ref.new_empty(0))
            for j, buf in enumerate(arena):
                if buf.numel() < numel or buf.dtype != ref.dtype or buf.device != ref.device:
                    arena[j] = ref.new_empty(numel)
            buffers = [arena[j][:numel].view(shape) for j in range(2 * len(self.keys))]
        out = DecoderCache(d, capacity, buffers, limit=limit if self.limit else 0)
        if out.limit and spare is not None:
            out._spare = spare
        if buffers is None:
            out.keys, out.values = out._allocate(len(rows), capacity)
        for src, dst in zip(self.keys + self.values, out.keys + out.values):
            torch.index_select(src[:, :, :n], 0, rows, out=dst[:, :, :n])
        out.n = n
        return out
