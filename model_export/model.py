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
the last block for that one position (``last_only``): the same numbers as the
full computation's last row for about half the work (the memory the pointer
reads comes from the blocks below, which run over the whole window).
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

    @classmethod
    def for_encoding(cls, spec: EncodingSpec, n_items: int, n_categories: int,
                     **overrides: object) -> ModelConfig:
        """A config whose embedding tables fit an encoding spec and its vocabularies."""
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
                allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``x`` (B, T, C); ``allowed`` (B, 1, T, T) says which keys each query may read.

        Returns (B, T, C), or (B, 1, C) for the last position's query alone
        when ``last_only``: every position is still a key.
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
        Q = q.shape[1]  # noqa: N806 - number of queries: T, or 1
        q = q.view(B, Q, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, Q, D)
        k = k.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_heads, self.d_head).transpose(1, 2)
        q, k = rotate(q, cos_q, sin_q), rotate(k, cos, sin)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))  # (B, H, Q, T)
        att = att.masked_fill(~allowed, torch.finfo(att.dtype).min)
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = att @ v  # (B, H, Q, D)
        y = y.transpose(1, 2).reshape(B, Q, C)  # (B, Q, C)
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
                allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, T, C) -> (B, T, C), or (B, 1, C) for the last position when ``last_only``."""
        y = self.ln_1(x)
        x = (x[:, -1:] if last_only else x) + self.attn(y, cos, sin, allowed, last_only)
        return x + self.mlp(self.ln_2(x))


class Encoded(NamedTuple):
    """What the network makes of a batch of windows."""

    hidden: torch.Tensor  # (B, T, C) final hidden states; (B, 1, C) when last_only
    memory: torch.Tensor  # (B, T, C) each event as the last block sees it: the pointer's keys


class NextActionModel(nn.Module):
    """The sequence model; :meth:`forward` gives hidden states and the pointer's memory."""

    inv_freq: torch.Tensor  # a buffer: rotary frequencies, (D/2,)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
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
        self.copy_key = nn.Linear(d, d)
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

    def forward(self, items: torch.Tensor, categories: torch.Tensor, actions: torch.Tensor,
                gaps: torch.Tensor, queries: torch.Tensor, last_only: bool = False) -> Encoded:
        """Hidden states of every position (only real ones are meaningful) and the memory.

        With ``last_only`` the last block runs for the last position alone, so
        ``hidden`` is (B, 1, C): what serving needs, for about half the work.
        """
        T = actions.shape[1]  # noqa: N806
        valid = actions > 0  # (B, T) left padding has action 0
        q_emb = self.query(queries)  # (B, T, S, C), empty slots embed to zero
        q_count = (queries > 0).sum(dim=2, keepdim=True).clamp(min=1)  # (B, T, 1)
        x = (self.item(items) + self.category(categories) + self.action(actions)
             + self.gap(gaps) + q_emb.sum(dim=2) / q_count)  # (B, T, C)
        x = self.drop(x)
        # Rotary angles depend on the position only; computed here so any T works.
        pos = torch.arange(T, device=actions.device, dtype=torch.float32)  # (T,)
        angles = pos[:, None] * self.inv_freq[None, :]  # (T, D/2)
        cos, sin = angles.cos(), angles.sin()
        # A query reads earlier real events and itself: a padding position reads only
        # itself, so no softmax row is ever empty (no NaN) and real rows never see padding.
        idx = torch.arange(T, device=actions.device)
        causal = idx[None, :] <= idx[:, None]  # (T, T)
        allowed = (causal[None] & valid[:, None, :]) | (idx[None, :] == idx[:, None])[None]
        allowed = allowed[:, None]  # (B, 1, T, T)
        *lower, top = cast(list[Block], list(self.blocks))
        for block in lower:
            x = block(x, cos, sin, allowed)
        memory = top.ln_1(x)  # (B, T, C), computed again inside top: cheap, and keeps it simple
        return Encoded(self.ln_f(top(x, cos, sin, allowed, last_only)), memory)

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

        The queries come from the hidden states ``h``, the keys from ``memory``.

        Position t may copy the item of any position j <= t that holds a real
        item. A row with nothing to copy gets harmless uniform weights and is
        switched to generation by :meth:`_gate`.
        """
        B, T, C = h.shape  # noqa: N806
        S = self.cfg.item_slots  # noqa: N806
        q = self.copy_query(h).view(B, T, S, C).transpose(1, 2)  # (B, S, T, C)
        k = self.copy_key(memory)  # (B, T, C)
        scores = (q @ k.transpose(1, 2).unsqueeze(1)) / math.sqrt(C)  # (B, S, T, T)
        idx = torch.arange(T, device=h.device)
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
        B, T, C = encoded.memory.shape  # noqa: N806
        S = self.cfg.item_slots  # noqa: N806
        last = encoded.hidden[:, -1]  # (B, C)
        logits = (self._item_queries(last) @ self.item.weight[FIRST_TOKEN:].t()
                  + self.item_bias[FIRST_TOKEN:])  # (B, S, V - 3)
        generate = F.softmax(logits, dim=-1)
        q = self.copy_query(last).view(B, S, C)  # (B, S, C)
        scores = (q @ self.copy_key(encoded.memory).transpose(1, 2)) / math.sqrt(C)  # (B, S, T)
        copyable = items >= FIRST_TOKEN  # (B, T)
        scores = scores.masked_fill(~copyable[:, None], torch.finfo(scores.dtype).min)
        att = F.softmax(scores, dim=-1)  # (B, S, T)
        g = torch.sigmoid(self.copy_gate(last))  # (B, S)
        g = torch.where(copyable.any(dim=1, keepdim=True), g, torch.ones_like(g))
        weights = F.softmax(self.slot_head(last), dim=-1)  # (B, S)
        # sum over slots of weight * (g * generate + (1 - g) * copy), with the slots'
        # copy weights summed per window position first: one scatter of T values per
        # row instead of S catalogue-sized copy distributions.
        generated = ((weights * g)[..., None] * generate).sum(dim=1)  # (B, V - 3)
        copied = ((weights * (1.0 - g))[..., None] * att).sum(dim=1)  # (B, T)
        copy = copied.new_zeros((B, self.cfg.n_items)).scatter_add(1, items, copied)
        return generated + copy[:, FIRST_TOKEN:]  # (B, V - 3)

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
    """The bundle's ONNX interface: the last position's predictions, top-k inside the graph."""

    def __init__(self, model: NextActionModel, top_k: int) -> None:
        super().__init__()
        self.model = model
        # Never ask for more items than the catalogue has (reserved indices excluded).
        self.top_k = min(top_k, model.cfg.n_items - FIRST_TOKEN)

    def forward(self, items: torch.Tensor, categories: torch.Tensor, actions: torch.Tensor,
                gaps: torch.Tensor, queries: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs (B, T) and (B, T, S) -> next_action, top_items, top_scores, purchase, seconds."""
        encoded = self.model(items, categories, actions, gaps, queries, last_only=True)
        h = encoded.hidden[:, -1]  # (B, C)
        next_action = F.softmax(self.model.action_logits(h), dim=-1)  # (B, 5)
        probs = self.model.item_probs(encoded, items)  # (B, V - 3)
        top_scores, top = torch.topk(probs, self.top_k, dim=-1)  # (B, K) each
        top_items = top + FIRST_TOKEN  # back to vocabulary indices
        purchase = torch.sigmoid(self.model.purchase_logit(h))  # (B,)
        seconds = torch.expm1(self.model.log_seconds(h)).clamp(min=0.0)  # (B,)
        return next_action, top_items, top_scores, purchase, seconds
