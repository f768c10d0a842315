"""The next-action model: a small causal self-attention network over a user's window.

nanoGPT-shaped and SASRec-sized. Each event is the sum of embeddings of its
item, category, action, time-gap bucket and hashed search-query features; a
stack of pre-LayerNorm blocks with causal self-attention (rotary positions, so
only distances between events matter and left padding changes nothing) reads
the window; four heads read every position:

- next action: 5-way logits, in the order of ``streams.contracts.ACTIONS``;
- next item: a probability for every catalogue item (reserved indices left
  out). What comes next depends on what the user does next: an add-to-cart is
  nearly always the item just viewed, a purchase an item in the cart, a click
  a neighbour of recent items. So the head is a small mixture of softmaxes,
  one per kind of item event (view, add to cart, purchase), each the dot
  product of its own query with the item embeddings the input uses (tied),
  weighted by the probability of that kind. A mixture also lifts the rank
  limit a single d=64 softmax puts on the item distribution. Each slot also
  has a pointer into the window (copy attention) and a gate between copying
  and generating: nearly half of next items were already in the window (the
  cart, items seen earlier in the visit, consumables bought again), and a
  pointer names them exactly where a dot product can only approximate;
- purchase within the horizon: one logit;
- time to the next event: the median of log(1 + seconds), trained with L1.

Inputs are left-padded int64 tensors; padding is where ``actions == 0``.
:class:`Predictor` wraps the model into the ONNX interface of the bundle: it
reads the last position, takes softmax and top-k over the catalogue. Serving
needs the final hidden state of the newest event only, so the Predictor runs
the last block for that one position (``last_only``).

Attention is windowed (``attention_window`` events, itself included, in
every block) and the pointer's keys embed each event alone, so what
the network computes for an event never changes once later events arrive.
:class:`StepPredictor`, the bundle's second graph, uses that: given the keys
and values of a user's earlier events (returned with the prediction for the
last of them) it runs the blocks for the user's new events alone, a fraction
of the work of whole windows, with the same predictions.
``forward`` is tensor code only, so it exports to ONNX as written.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch spelling
from torch import nn

from streams.encoding import FIRST_TOKEN, EncodingSpec

# Mixture component of each next action (browse, search, click, add_to_cart, purchase):
# viewing (browse or click), adding to the cart, buying. A search has no item (-1).
ITEM_SLOT: tuple[int, ...] = (0, -1, 0, 1, 2)


@dataclass
class ModelConfig:
    """Shape of the model; saved with the weights in every checkpoint."""

    n_items: int  # item vocabulary size, reserved indices included
    n_categories: int
    n_actions: int = 5  # action classes; inputs use 0 for padding and 1..5 for actions
    gap_buckets: int = 32
    query_buckets: int = 4096
    query_slots: int = 4
    max_len: int = 50
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 2
    dropout: float = 0.1
    rope_base: float = 10_000.0
    item_slots: int = 3  # kinds of item event in the next-item mixture (see ITEM_SLOT)
    # Each event's attention reads itself and at most this many - 1 events before it, in
    # every block (0: every earlier event). The newest event's prediction then depends on
    # the last n_layers * (attention_window - 1) + 1 events only, and an event's keys and
    # values never change once computed: serving keeps them per user and runs the
    # network for the newest event alone (see StepPredictor). for_encoding's default is
    # the longest window whose reach fits in max_len (25 for 2 blocks and max_len 50).
    attention_window: int = 0

    @classmethod
    def for_encoding(cls, spec: EncodingSpec, n_items: int, n_categories: int,
                     **overrides: object) -> ModelConfig:
        """A config whose embedding tables fit an encoding spec and its vocabularies."""
        if overrides.get("attention_window") is None:
            layers = int(overrides.get("n_layers", cls.n_layers))  # type: ignore[call-overload]
            overrides["attention_window"] = (spec.max_len - 1) // layers + 1
        return cls(n_items=n_items, n_categories=n_categories, n_actions=len(spec.actions),
                   gap_buckets=spec.gap_buckets, query_buckets=spec.query_buckets,
                   query_slots=spec.query_slots, max_len=spec.max_len,
                   **overrides)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """Plain data for checkpoints and manifests."""
        return asdict(self)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: rotate feature pairs by a position-dependent angle."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (B, H, T, D/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attended(NamedTuple):
    """An attention layer's (or a block's) output and the keys and values it computed."""

    out: torch.Tensor  # (B, Q, C)
    keys: torch.Tensor  # (B, H, T, D), not rotated
    values: torch.Tensor  # (B, H, T, D)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention, written out so every shape stays symbolic in ONNX."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0, "d_model must be a multiple of n_heads"
        self.n_heads = cfg.n_heads
        self.d_head = cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                allowed: torch.Tensor, last_only: bool = False) -> Attended:
        """``x`` (B, T, C); ``allowed`` (B, 1, T, T) says which keys each query may read.

        The output is (B, T, C), or (B, 1, C) for the last position's query
        alone when ``last_only``: every position is still a key.
        """
        B, T, C = x.shape  # noqa: N806 - the conventional shape names
        if last_only:
            # One query, but keys and values for every position: project them apart.
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, -1:], w[:C], b[:C])  # (B, 1, C)
            k, v = F.linear(x, w[C:], b[C:]).split(C, dim=2)  # (B, T, C) each
            allowed, cos_q, sin_q = allowed[:, :, -1:], cos[-1:], sin[-1:]
        else:
            q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
            cos_q, sin_q = cos, sin
        k, v = self._heads(k), self._heads(v)  # (B, H, T, D)
        y = self._attend(self._heads(q), k, v, cos_q, sin_q, cos, sin, allowed)
        return Attended(y, k, v)

    def chunk(self, x: torch.Tensor, past: torch.Tensor, fresh: torch.Tensor,
              allowed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Attended:
        """The span's last N events as queries; keys and values from the cache where known.

        ``x`` (B, N, C); ``past`` (B, 2, H, P + N, D) holds cached keys (not
        yet rotated) and values of the span's last P + N events; ``fresh``
        (B, N) marks the last N that are new, whose own keys and values replace
        the cache's; ``allowed`` (B, 1, N, P + N). Returns (B, N, C) and the
        span's keys and values, (B, H, P + N, D) each.
        """
        C = x.shape[2]  # noqa: N806
        n_past = past.shape[3] - x.shape[1]
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, N, C) each
        new = fresh[:, None, :, None]  # (B, 1, N, 1)
        keys = torch.cat([past[:, 0, :, :n_past],
                          torch.where(new, self._heads(k), past[:, 0, :, n_past:])], dim=2)
        values = torch.cat([past[:, 1, :, :n_past],
                            torch.where(new, self._heads(v), past[:, 1, :, n_past:])], dim=2)
        y = self._attend(self._heads(q), keys, values, cos[n_past:], sin[n_past:], cos, sin,
                         allowed)
        return Attended(y, keys, values)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, H, T, D)."""
        B, T, _ = x.shape  # noqa: N806
        return x.view(B, T, self.n_heads, self.d_head).transpose(1, 2)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                cos_q: torch.Tensor, sin_q: torch.Tensor, cos_k: torch.Tensor,
                sin_k: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Queries (B, H, Q, D) read keys and values (B, H, T, D) -> (B, Q, C)."""
        B, _, Q, _ = q.shape  # noqa: N806
        # Rotated here, not before caching: a cached key is rotated by its distance
        # from the newest event, which changes with every event.
        q, k = rotate(q, cos_q, sin_q), rotate(k, cos_k, sin_k)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))  # (B, H, Q, T)
        att = att.masked_fill(~allowed, torch.finfo(att.dtype).min)
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, Q, self.n_heads * self.d_head)  # (B, Q, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
            nn.Linear(4 * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                allowed: torch.Tensor, last_only: bool = False) -> Attended:
        """(B, T, C) -> (B, T, C), or (B, 1, C) for the last position when ``last_only``."""
        a = self.attn(self.ln_1(x), cos, sin, allowed, last_only)
        x = (x[:, -1:] if last_only else x) + a.out
        return a._replace(out=x + self.mlp(self.ln_2(x)))

    def chunk(self, x: torch.Tensor, past: torch.Tensor, fresh: torch.Tensor,
              allowed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Attended:
        """(B, N, C) for a span's last N events, given the cached keys and values."""
        a = self.attn.chunk(self.ln_1(x), past, fresh, allowed, cos, sin)
        x = x + a.out
        return a._replace(out=x + self.mlp(self.ln_2(x)))


class Encoded(NamedTuple):
    """What the network makes of a batch of windows."""

    hidden: torch.Tensor  # (B, T, C) final hidden states; (B, 1, C) when last_only
    memory: torch.Tensor  # (B, T, C) the pointer's keys (pointer_keys)
    # Per block, the keys and values of every position, (B, H, T, D) each: serving
    # keeps the newest few per user (StepPredictor).
    keys_values: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()


class NextActionModel(nn.Module):
    """The sequence model; :meth:`forward` gives hidden states and the pointer's memory."""

    inv_freq: torch.Tensor  # a buffer: rotary frequencies, (D/2,)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not 0 <= cfg.attention_window <= cfg.max_len:
            raise ValueError(f"attention_window {cfg.attention_window} must be between 0 "
                             f"(every earlier event) and max_len {cfg.max_len}")
        self.cfg = cfg
        d = cfg.d_model
        self.item = nn.Embedding(cfg.n_items, d, padding_idx=0)
        self.category = nn.Embedding(cfg.n_categories, d, padding_idx=0)
        self.action = nn.Embedding(cfg.n_actions + 1, d, padding_idx=0)
        self.gap = nn.Embedding(cfg.gap_buckets, d, padding_idx=0)
        self.query = nn.Embedding(cfg.query_buckets, d, padding_idx=0)  # slot 0 = empty
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.action_head = nn.Linear(d, cfg.n_actions)
        self.purchase_head = nn.Linear(d, 1)
        self.time_head = nn.Linear(d, 1)
        self.item_bias = nn.Parameter(torch.zeros(cfg.n_items))
        self.item_query = nn.Linear(d, cfg.item_slots * d)  # one query per mixture slot
        self.slot_head = nn.Linear(d, cfg.item_slots)  # P(slot | the next event has an item)
        self.copy_query = nn.Linear(d, cfg.item_slots * d)  # pointer into the window, per slot
        # The pointer's keys: an embedding of each event's item and action of their own,
        # blind to the rest of the window, so that serving never recomputes them; how
        # recent the event is comes from a learned score per slot and distance.
        self.copy_item = nn.Embedding(cfg.n_items, d, padding_idx=0)
        self.copy_action = nn.Embedding(cfg.n_actions + 1, d, padding_idx=0)
        self.copy_recency = nn.Parameter(torch.zeros(cfg.item_slots, cfg.max_len))
        self.copy_gate = nn.Linear(d, cfg.item_slots)  # logit of generating rather than copying
        d_head = d // cfg.n_heads
        inv_freq = cfg.rope_base ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (D/2,)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()

    def embed(self, items: torch.Tensor, categories: torch.Tensor, actions: torch.Tensor,
              gaps: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Each event on its own, (B, T) and (B, T, S) -> (B, T, C)."""
        q_emb = self.query(queries)  # (B, T, S, C), empty slots embed to zero
        q_count = (queries > 0).sum(dim=2, keepdim=True).clamp(min=1)  # (B, T, 1)
        x = (self.item(items) + self.category(categories) + self.action(actions)
             + self.gap(gaps) + q_emb.sum(dim=2) / q_count)  # (B, T, C)
        return self.drop(x)

    def rotary(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary cos and sin of positions 0..length-1, (length, D/2) each."""
        pos = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
        angles = pos[:, None] * self.inv_freq[None, :]  # (T, D/2)
        return angles.cos(), angles.sin()

    def forward(self, items: torch.Tensor, categories: torch.Tensor, actions: torch.Tensor,
                gaps: torch.Tensor, queries: torch.Tensor, last_only: bool = False) -> Encoded:
        """Hidden states of every position (only real ones are meaningful) and the memory.

        With ``last_only`` the last block runs for the last position alone, so
        ``hidden`` is (B, 1, C): what serving needs, for about half the work.
        """
        T = actions.shape[1]  # noqa: N806
        valid = actions > 0  # (B, T) left padding has action 0
        x = self.embed(items, categories, actions, gaps, queries)
        cos, sin = self.rotary(T)  # any T works
        # A query reads earlier real events within the attention window and itself: a
        # padding position reads only itself, so no softmax row is ever empty (no NaN)
        # and real rows never see padding.
        idx = torch.arange(T, device=actions.device)
        causal = idx[None, :] <= idx[:, None]  # (T, T)
        if self.cfg.attention_window:
            causal = causal & (idx[:, None] - idx[None, :] < self.cfg.attention_window)
        allowed = (causal[None] & valid[:, None, :]) | (idx[None, :] == idx[:, None])[None]
        allowed = allowed[:, None]  # (B, 1, T, T)
        keys_values = []
        for i, block in enumerate(cast(list[Block], list(self.blocks))):
            last = last_only and i == len(self.blocks) - 1
            a = block(x, cos, sin, allowed, last)
            x = a.out
            keys_values.append((a.keys, a.values))
        return Encoded(self.ln_f(x), self.pointer_keys(items, actions), tuple(keys_values))

    def pointer_keys(self, items: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The copy pointer's key for each event, (B, T) -> (B, T, C)."""
        return self.copy_item(items) + self.copy_action(actions)

    # -- next item: per slot, generate from the catalogue or copy from the window --------

    def item_logits(self, h: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """Catalogue scores of one mixture slot per row, (N, C) and (N,) -> (N, V - 3).

        Column j is item index j + 3: the reserved indices (pad, no item,
        unknown) are left out rather than masked, since they are never a
        prediction and this full-catalogue product is the costliest part of
        training.
        """
        queries = self._item_queries(h)  # (N, S, C)
        d = h.shape[-1]
        q = queries.gather(1, slot[:, None, None].expand(-1, 1, d)).squeeze(1)  # (N, C)
        return q @ self.item.weight[FIRST_TOKEN:].t() + self.item_bias[FIRST_TOKEN:]

    def _item_queries(self, h: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., S, C): each slot's query is the hidden state plus its own offset."""
        offsets = self.item_query(h).unflatten(-1, (self.cfg.item_slots, h.shape[-1]))
        return h.unsqueeze(-2) + offsets  # the residual form starts every slot at h

    def slot_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., S) logits of the kind of the next item event."""
        return self.slot_head(h)

    def copy_attention(self, h: torch.Tensor, memory: torch.Tensor, items: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each position copies from: (B, S, T, T) weights, (B, T) anything to copy.

        The queries come from the hidden states ``h``, the keys from ``memory``,
        plus a learned score for the distance between the two positions.

        Position t may copy the item of any position j <= t that holds a real
        item. A row with nothing to copy gets harmless uniform weights and is
        switched to generation by :meth:`_gate`.
        """
        B, T, C = h.shape  # noqa: N806
        S = self.cfg.item_slots  # noqa: N806
        q = self.copy_query(h).view(B, T, S, C).transpose(1, 2)  # (B, S, T, C)
        k = memory  # (B, T, C)
        idx = torch.arange(T, device=h.device)
        distance = (idx[:, None] - idx[None, :]).clamp(0, self.cfg.max_len - 1)  # (T, T)
        scores = ((q @ k.transpose(1, 2).unsqueeze(1)) / math.sqrt(C)
                  + self.copy_recency[:, distance])  # (B, S, T, T)
        allowed = ((idx[None, :] <= idx[:, None])[None]
                   & (items >= FIRST_TOKEN)[:, None, :])  # (B, T, T)
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
        return F.softmax(scores, dim=-1), allowed.any(dim=-1)

    def item_nll(self, h: torch.Tensor, memory: torch.Tensor, items: torch.Tensor,
                 where: torch.Tensor, target: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """-log P(next item | its slot) at the positions ``where`` (B, T), as (N,).

        P = g * P_generate + (1 - g) * P_copy, computed in log space. Training
        needs only the target's probability, so the copy part is a gather, not
        a scatter over the catalogue.
        """
        T = h.shape[1]  # noqa: N806
        att, has_copy = self.copy_attention(h, memory, items)  # (B, S, T, T), (B, T)
        att_n = att.permute(0, 2, 1, 3)[where]  # (N, S, T)
        sources = items[:, None, :].expand(-1, T, -1)[where]  # (N, T) copyable items
        return self.mixture_nll(h[where], att_n, sources, has_copy[where], target, slot)

    def mixture_nll(self, h_n: torch.Tensor, att_n: torch.Tensor, sources: torch.Tensor,
                    can: torch.Tensor, target: torch.Tensor, slot: torch.Tensor
                    ) -> torch.Tensor:
        """-log P(target | slot) for N chosen positions, as (N,).

        ``h_n`` (N, C) their hidden states, ``att_n`` (N, S, T) their copy attention,
        ``sources`` (N, T) the items they may copy and ``can`` (N,) whether there is any.
        """
        T = att_n.shape[-1]  # noqa: N806
        log_gen = -F.cross_entropy(self.item_logits(h_n, slot), target - FIRST_TOKEN,
                                   reduction="none")  # (N,)
        att_n = att_n.gather(1, slot[:, None, None].expand(-1, 1, T)).squeeze(1)  # (N, T)
        p_copy = (att_n * (sources == target[:, None])).sum(dim=-1)  # (N,)
        z = self.copy_gate(h_n).gather(1, slot[:, None]).squeeze(1)  # (N,)
        log_g = torch.where(can, F.logsigmoid(z), torch.zeros_like(z))
        # clamp: log(0) would give a NaN gradient even where the branch has no weight
        log_c = torch.where(can, F.logsigmoid(-z) + torch.log(p_copy.clamp_min(1e-12)),
                            torch.full_like(z, -1e4))
        return -torch.logaddexp(log_g + log_gen, log_c)

    def item_probs(self, encoded: Encoded, items: torch.Tensor) -> torch.Tensor:
        """P(next item) at the last position over the catalogue, as (B, V - 3)."""
        T = items.shape[1]  # noqa: N806
        distance = (T - 1 - torch.arange(T, device=items.device))[None]  # (1, T)
        return self.catalogue_probs(encoded.hidden[:, -1], encoded.memory, items, distance,
                                    items >= FIRST_TOKEN)

    def catalogue_probs(self, last: torch.Tensor, memory: torch.Tensor, items: torch.Tensor,
                        distance: torch.Tensor, copyable: torch.Tensor) -> torch.Tensor:
        """P(next item) over the catalogue for N final hidden states ``last`` (N, C).

        Each reads its own window: pointer keys ``memory`` (N, T, C) of the
        ``items`` (N, T), ``distance`` (N or 1, T) of each from the event
        predicted for, and which of them it may copy (N, T). Returns (N, V - 3).
        """
        N, T, C = memory.shape  # noqa: N806
        S = self.cfg.item_slots  # noqa: N806
        logits = (self._item_queries(last) @ self.item.weight[FIRST_TOKEN:].t()
                  + self.item_bias[FIRST_TOKEN:])  # (N, S, V - 3)
        generate = F.softmax(logits, dim=-1)
        q = self.copy_query(last).view(N, S, C)  # (N, S, C)
        recency = self.copy_recency[:, distance.clamp(0, self.cfg.max_len - 1)]  # (S, N|1, T)
        scores = (q @ memory.transpose(1, 2)) / math.sqrt(C) + recency.transpose(0, 1)
        scores = scores.masked_fill(~copyable[:, None], torch.finfo(scores.dtype).min)
        att = F.softmax(scores, dim=-1)  # (N, S, T)
        g = torch.sigmoid(self.copy_gate(last))  # (N, S)
        g = torch.where(copyable.any(dim=1, keepdim=True), g, torch.ones_like(g))
        weights = F.softmax(self.slot_head(last), dim=-1)  # (N, S)
        # sum over slots of weight * (g * generate + (1 - g) * copy), with the slots'
        # copy weights summed per window position first: one scatter of T values per
        # row instead of S catalogue-sized copy distributions.
        generated = ((weights * g)[..., None] * generate).sum(dim=1)  # (N, V - 3)
        copied = ((weights * (1.0 - g))[..., None] * att).sum(dim=1)  # (N, T)
        copy = copied.new_zeros((N, self.cfg.n_items)).scatter_add(1, items, copied)
        return generated + copy[:, FIRST_TOKEN:]  # (N, V - 3)

    def action_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., 5) next-action logits."""
        return self.action_head(h)

    def purchase_logit(self, h: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (...) logit of a purchase within the horizon."""
        return self.purchase_head(h).squeeze(-1)

    def log_seconds(self, h: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (...) predicted median of log(1 + seconds to the next event)."""
        return self.time_head(h).squeeze(-1)


class Predictor(nn.Module):
    """The bundle's ONNX interface: the last position's predictions, top-k inside the graph.

    With windowed attention, also returns ``state``: every block's keys and
    values of the newest ``attention_window - 1`` positions, (B, L, 2, H, W - 1, D), what
    :class:`StepPredictor` needs for the user's next event. The window must
    hold at least that many positions (left padding counts).
    """

    def __init__(self, model: NextActionModel, top_k: int) -> None:
        super().__init__()
        self.model = model
        # Never ask for more items than the catalogue has (reserved indices excluded).
        self.top_k = min(top_k, model.cfg.n_items - FIRST_TOKEN)

    def forward(self, items: torch.Tensor, categories: torch.Tensor, actions: torch.Tensor,
                gaps: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inputs (B, T) and (B, T, S) -> the five outputs of the interface, and state."""
        encoded = self.model(items, categories, actions, gaps, queries, last_only=True)
        if not self.model.cfg.attention_window:  # no step graph, so no state to hand on
            return predictions(self.model, encoded, items, self.top_k)
        past = self.model.cfg.attention_window - 1
        state = torch.stack([torch.stack([k[:, :, -past:], v[:, :, -past:]], dim=1)
                             for k, v in encoded.keys_values], dim=1)
        return *predictions(self.model, encoded, items, self.top_k), state


class StepPredictor(nn.Module):
    """The bundle's second graph: a user's newest events, given what came before them.

    Each row is one user: ``past``, the ``state`` returned with the user's
    last scored event, and the user's next N or fewer events ("fresh"), which
    alone run through the blocks, reading the cached keys and values. The
    same predictions as :class:`Predictor` on each event's whole window, since
    with an attention window no event's keys and values depend on events the
    state does not cover; the pointer's keys are the events' own, so it needs
    no cache. One call scores every fresh event of a batch, however many a
    user has in it.

    Inputs, with P = attention_window - 1:

    - the span (B, T) and (B, T, S): each row's events, left-padded, ending
      with its fresh events and reaching back over the window of its first;
    - ``past`` (B, L, 2, H, P + N, D): row b's state in positions
      N - n_b ... N - n_b + P - 1, where n_b is its number of fresh events;
    - ``fresh`` (B, N): for the span's last N positions, the length of the
      window each fresh event is predicted on, 0 where the event is not fresh
      (row b's fresh events are its last n_b);
    - ``take`` (F,): which fresh events to predict, as indices b * N + i.

    Returns the predictions of the ``take`` events (F, ...) and each row's
    state after its last event (B, L, 2, H, P, D).
    """

    def __init__(self, model: NextActionModel, top_k: int) -> None:
        super().__init__()
        if not model.cfg.attention_window:
            raise ValueError("a model without an attention window has no step graph: every "
                             "event's keys and values depend on the whole window")
        self.model = model
        self.top_k = min(top_k, model.cfg.n_items - FIRST_TOKEN)

    def forward(self, items: torch.Tensor, categories: torch.Tensor, actions: torch.Tensor,
                gaps: torch.Tensor, queries: torch.Tensor, past: torch.Tensor,
                fresh: torch.Tensor, take: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Span (B, T), (B, T, S), past, fresh (B, N), take (F,) -> outputs (F, ...), state."""
        m = self.model
        B, T = actions.shape  # noqa: N806
        N = fresh.shape[1]  # noqa: N806
        span = past.shape[4]  # P + N: the span's last positions, as the keys see them
        n_past = span - N
        x = m.embed(items[:, -N:], categories[:, -N:], actions[:, -N:], gaps[:, -N:],
                    queries[:, -N:])  # (B, N, C)
        is_fresh = fresh > 0  # (B, N)
        # Query i (at span position P + i) reads the real events among the W before it.
        key = torch.arange(span, device=actions.device)
        query = key[n_past:, None]  # (N, 1)
        band = (key[None, :] <= query) & (query - key[None, :] < m.cfg.attention_window)
        itself = (key[None, :] == query)[None]  # a padding query reads itself: no NaN
        allowed = (band[None] & (actions[:, -span:] > 0)[:, None, :]) | itself
        cos, sin = m.rotary(span)
        states = []
        for i, block in enumerate(cast(list[Block], list(m.blocks))):
            a = block.chunk(x, past[:, i], is_fresh, allowed[:, None], cos, sin)
            x = a.out
            states.append(torch.stack([a.keys[:, :, -n_past:], a.values[:, :, -n_past:]], dim=1))
        hidden = m.ln_f(x).reshape(B * N, -1)[take]  # (F, C)
        # Row and column of each taken event, by lookup (the exporter has no integer
        # division by a symbolic size).
        row = torch.arange(B, device=take.device)[:, None].expand(B, N).reshape(-1)[take]
        column = torch.arange(N, device=take.device)[None, :].expand(B, N).reshape(-1)[take]
        position = T - N + column  # (F,) each fresh event's place in its row's span
        lengths = fresh.reshape(-1)[take]  # (F,)
        j = torch.arange(T, device=actions.device)[None]  # (1, T)
        distance = position[:, None] - j  # (F, T)
        span_items = items[row]  # (F, T)
        copyable = (span_items >= FIRST_TOKEN) & (distance >= 0) & (distance < lengths[:, None])
        memory = m.pointer_keys(items, actions)[row]  # (F, T, C)
        probs = m.catalogue_probs(hidden, memory, span_items, distance, copyable)
        return (*heads(m, hidden, probs, self.top_k), torch.stack(states, dim=1))


def predictions(model: NextActionModel, encoded: Encoded, items: torch.Tensor, top_k: int
                ) -> tuple[torch.Tensor, ...]:
    """next_action, top_items, top_scores, purchase, seconds of the last position."""
    h = encoded.hidden[:, -1]  # (B, C)
    return heads(model, h, model.item_probs(encoded, items), top_k)


def heads(model: NextActionModel, h: torch.Tensor, probs: torch.Tensor, top_k: int
          ) -> tuple[torch.Tensor, ...]:
    """The graph's outputs from final hidden states (B, C) and item probabilities (B, V - 3)."""
    next_action = F.softmax(model.action_logits(h), dim=-1)  # (B, 5)
    top_scores, top = torch.topk(probs, top_k, dim=-1)  # (B, K) each
    top_items = top + FIRST_TOKEN  # back to vocabulary indices
    purchase = torch.sigmoid(model.purchase_logit(h))  # (B,)
    seconds = torch.expm1(model.log_seconds(h)).clamp(min=0.0)  # (B,)
    return next_action, top_items, top_scores, purchase, seconds
