"""Differentially private training (DP-SGD) with the user as the privacy unit.

Each step Poisson-samples users (each one independently with probability
``q``), takes the gradient of each sampled user's loss over all of that
user's training sequences, clips it to ``max_grad_norm``, sums, and adds
Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm``.
Opacus's RDP accountant turns (noise, q, steps) into the epsilon spent for a
delta. Because sampling and clipping are per user, the guarantee is
user-level: the trained weights barely depend on whether any one user's whole
training history was in the log.

Why not Opacus's ``make_private``: its per-sample gradients come from hooks
on standard modules, which miss the item embedding tied into the next-item
head and the bare ``item_bias`` parameter, and it would clip per sequence
(a user with several sequences would be protected several times less).
``torch.func`` (vmap over per-sequence gradients) sees every parameter.

Not covered by the guarantee: the item and category vocabularies (which ids
occur in training) and, when ``held_out_cases`` are used to report metrics,
the validation split; the private run keeps its last epoch rather than the
best one on validation so that no model choice depends on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from model_export.model import ITEM_SLOT, NextActionModel
from streams.encoding import FIRST_TOKEN, MODEL_INPUTS

DEFAULT_DELTA = 1e-5
USERS_PER_GROUP = 16  # users whose per-sequence gradients are held at once (memory bound)


@dataclass(frozen=True)
class PrivacySettings:
    """DP-SGD settings of one run (the delta is fixed when the user count is known)."""

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    sample_rate: float  # probability that a given user is in a step's batch
    users: int

    @classmethod
    def for_users(cls, users: int, batch_users: int, noise_multiplier: float,
                  max_grad_norm: float, delta: float | None) -> PrivacySettings:
        """Settings for ``users`` training users and an expected ``batch_users`` per step.

        The default delta is 1e-5, or 1/(10 users) when that is smaller: delta
        is the chance the guarantee fails outright, so it must stay well below
        one user in the log.
        """
        if noise_multiplier < 0 or max_grad_norm <= 0:
            raise ValueError(f"DP needs noise multiplier >= 0 and max grad norm > 0, got "
                             f"{noise_multiplier} and {max_grad_norm}")
        delta = delta if delta is not None else min(DEFAULT_DELTA, 1.0 / (10 * users))
        return cls(noise_multiplier, max_grad_norm, delta,
                   min(1.0, batch_users / users), users)


class _SequenceLoss(nn.Module):
    """The training loss of one sequence, written without data-dependent shapes for vmap.

    Same four heads and weights as ``model_export.train.losses``; each is
    averaged over the sequence's own positions, so one sequence's loss never
    depends on the others in its batch.
    """

    def __init__(self, model: NextActionModel, purchase_weight: float,
                 time_weight: float) -> None:
        super().__init__()
        self.model = model
        self.purchase_weight = purchase_weight
        self.time_weight = time_weight

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One sequence (no batch dimension) -> scalar loss."""
        b = {k: v.unsqueeze(0) for k, v in batch.items()}  # a batch of one
        m = self.model
        hidden, memory, _ = m(*(b[k] for k in MODEL_INPUTS))
        h = hidden[0]  # (T, C)
        next_action, next_item = b["next_action"][0], b["next_item"][0]  # (T,)
        has_action = next_action >= 0
        action = F.cross_entropy(m.action_logits(h), next_action.clamp(min=0),
                                 reduction="none")
        item = self._item_nll(h, memory, b["items"], next_item, next_action)
        purchase_target = b["purchase"][0]
        has_purchase = purchase_target >= 0
        purchase = F.binary_cross_entropy_with_logits(
            m.purchase_logit(h), purchase_target.clamp(min=0).float(), reduction="none")
        seconds = b["log_seconds"][0]
        has_time = ~torch.isnan(seconds)
        time = (m.log_seconds(h) - torch.nan_to_num(seconds)).abs()
        return (_mean(item, next_item >= 0) + _mean(action, has_action)
                + self.purchase_weight * _mean(purchase, has_purchase)
                + self.time_weight * _mean(time, has_time))

    def _item_nll(self, h: torch.Tensor, memory: torch.Tensor, items: torch.Tensor,
                  next_item: torch.Tensor, next_action: torch.Tensor) -> torch.Tensor:
        """(T,) -log P(next item) - log P(its slot) at every position.

        As ``NextActionModel.item_nll``; positions without a next item give
        finite values that the caller masks out.
        """
        m = self.model
        T = h.shape[0]  # noqa: N806
        target = torch.where(next_item >= 0, next_item, FIRST_TOKEN)  # (T,)
        slot = _slot_of(next_action, m.cfg.item_slots)  # (T,)
        att, has_copy = m.copy_attention(h.unsqueeze(0), memory, items)  # (1, S, T, T), (1, T)
        sources = items[0][None, :].expand(T, -1)  # (T, T) copyable items
        nll = m.mixture_nll(h, att[0].permute(1, 0, 2), sources, has_copy[0], target, slot)
        return nll + F.cross_entropy(m.slot_logits(h), slot, reduction="none")


def _slot_of(actions: torch.Tensor, slots: int) -> torch.Tensor:
    if slots == 1:
        return torch.zeros_like(actions)
    table = torch.tensor(ITEM_SLOT, dtype=torch.long)
    return table[actions.clamp(min=0)].clamp(min=0)


def _mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


class PrivateStep:
    """One DP-SGD step at a time: per-user clipped gradients plus Gaussian noise."""

    def __init__(self, model: NextActionModel, settings: PrivacySettings,
                 purchase_weight: float, time_weight: float, owners: torch.Tensor) -> None:
        self.model = model
        self.settings = settings
        self.by_user = users_sequences(owners, settings.users)  # user -> sequence rows
        self.loss = _SequenceLoss(model, purchase_weight, time_weight)
        # randomness="different": each sequence gets its own dropout mask, as in a batch.
        self._per_sequence = vmap(grad_and_value(self._loss), in_dims=(None, None, 0),
                                  randomness="different")

    def _loss(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
              sequence: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(self.loss, (params, buffers), (sequence,))

    def sample_users(self, generator: torch.Generator) -> torch.Tensor:
        """Poisson sampling: every user independently with the sample rate.

        That is the accountant's assumption; a fixed-size shuffled batch would
        not give the stated epsilon.
        """
        keep = torch.rand(self.settings.users, generator=generator) < self.settings.sample_rate
        return keep.nonzero().squeeze(1)

    def gradients(self, users: torch.Tensor, tensors: dict[str, torch.Tensor],
                  lengths: torch.Tensor, generator: torch.Generator) -> float:
        """Set ``.grad`` of every parameter to the noisy mean of clipped per-user gradients.

        Returns the mean loss of the sampled users' sequences (for the log only).
        """
        params = {k: v.detach() for k, v in self.loss.named_parameters()}
        buffers = {k: v.detach() for k, v in self.loss.named_buffers()}
        total = {k: torch.zeros_like(v) for k, v in params.items()}
        loss, sequences = 0.0, 0
        for start in range(0, len(users), USERS_PER_GROUP):
            group = users[start: start + USERS_PER_GROUP]
            rows = [self.by_user[int(u)] for u in group]
            idx = torch.cat(rows)
            if len(idx) == 0:  # users whose training part is a single event
                continue
            owner = torch.repeat_interleave(torch.arange(len(group)),
                                            torch.tensor([len(r) for r in rows]))
            width = int(lengths[idx].max())  # left padding: the model is blind to it
            batch = {k: v[idx, -width:] for k, v in tensors.items()}
            per_seq, seq_loss = self._per_sequence(params, buffers, batch)  # name -> (N, ...)
            loss += float(seq_loss.sum())
            sequences += len(idx)
            per_user = {k: torch.zeros((len(group), *g.shape[1:])).index_add_(0, owner, g)
                        for k, g in per_seq.items()}  # name -> (U, *shape)
            norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per_user.values()))
            scale = (self.settings.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # (U,)
            for k, g in per_user.items():
                total[k] += torch.einsum("u,u...->...", scale, g)
        expected = self.settings.sample_rate * self.settings.users
        std = self.settings.noise_multiplier * self.settings.max_grad_norm
        for k, p in self.loss.named_parameters():
            noise = torch.normal(0.0, std, p.shape, generator=generator) if std > 0 else 0.0
            # Divide by the expected batch size, not the drawn one: the drawn size
            # depends on who was sampled and would leak it.
            p.grad = (total[k] + noise) / expected
        return loss / max(1, sequences)


def users_sequences(owners: torch.Tensor, users: int) -> list[torch.Tensor]:
    """Each user's training sequence rows, ``owners`` being the user index of each row."""
    order = torch.argsort(owners, stable=True)
    counts = torch.bincount(owners, minlength=users).tolist()
    return list(order.split(counts))


def report(settings: PrivacySettings, steps: int, epochs: int) -> dict[str, object]:
    """What the checkpoint and the bundle manifest record about a private run."""
    eps = epsilon(settings, steps)
    return {"epsilon": round(eps, 4) if math.isfinite(eps) else None,  # None: no noise
            "delta": settings.delta, "noise_multiplier": settings.noise_multiplier,
            "max_grad_norm": settings.max_grad_norm,
            "sample_rate": round(settings.sample_rate, 6), "steps": steps, "epochs": epochs,
            "users": settings.users, "unit": "user",
            "accountant": "rdp (opacus)", "sampling": "poisson"}


def epsilon(settings: PrivacySettings, steps: int) -> float:
    """Epsilon spent after ``steps`` DP-SGD steps, for the settings' delta (RDP accountant)."""
    if settings.noise_multiplier == 0:
        return math.inf
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(settings.noise_multiplier, settings.sample_rate, steps)]
    return float(accountant.get_epsilon(settings.delta))
