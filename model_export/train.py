"""Training: full-catalogue cross-entropy for the next item, plus the other heads.

What the field learned from SASRec and its successors: a softmax over the
whole catalogue trains these models far better than one sampled negative with
a binary loss, and a 2,000-item catalogue makes it cheap. The other heads add
a cross-entropy (next action), a binary cross-entropy (purchase within the
horizon, on positions whose horizon is fully observed) and an L1 loss on
log(1 + seconds) (whose minimiser is the median).

Early stopping watches NDCG@10 on the validation split and keeps the best
weights. On CPU with a fixed seed and thread count, two runs give the same
weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from model_export import metrics, privacy_training
from model_export.checkpoint import Checkpoint
from model_export.data import (
    DEFAULT_HORIZON_SECONDS,
    DEFAULT_TTL_SECONDS,
    Case,
    EventLog,
    Prepared,
    case_inputs,
    held_out_cases,
    prepare,
    training_chunks,
)
from model_export.model import ITEM_SLOT, ModelConfig, NextActionModel
from streams.encoding import FIRST_TOKEN, MODEL_INPUTS, UNKNOWN, EncodingSpec

PARITY_SAMPLES = 24


@dataclass
class TrainOptions:
    """Everything that shapes a training run (recorded in the checkpoint)."""

    epochs: int = 12  # the cosine schedule is planned over this many epochs
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    max_len: int = 50
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    # Events each attention layer reads (0: every earlier one); None: the longest whose
    # reach fits in the window (ModelConfig.for_encoding), which serving can step.
    attention_window: int | None = None
    dropout: float = 0.1
    patience: int = 3  # epochs without a better validation NDCG@10 before stopping
    seed: int = 0
    threads: int = 2
    horizon_seconds: int = DEFAULT_HORIZON_SECONDS
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    # Share of known input items replaced by UNKNOWN, so the embedding that serving
    # uses for items added after training is trained too.
    unknown_item_rate: float = 0.02
    purchase_weight: float = 0.5
    time_weight: float = 0.2
    quiet: bool = False  # no progress bar
    log_epochs: bool = True  # one line per epoch, even when quiet
    # Differential privacy (DP-SGD, see model_export.privacy_training): batch_size is
    # then the expected number of users per step, each user's gradient clipped.
    dp: bool = False
    dp_noise_multiplier: float = 1.0
    dp_max_grad_norm: float = 1.0
    dp_delta: float | None = None  # default min(1e-5, 1 / (10 training users))


def set_determinism(seed: int, threads: int) -> None:
    """Same seed, same thread count, same CPU: same weights."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also fills every new tensor with NaN, a debugging aid that
    # cost 14% of a training step; the kernels stay deterministic without it.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    torch.set_num_threads(threads)


def losses(model: NextActionModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The four head losses of a batch of training sequences."""
    h, memory, _ = model(*(batch[k] for k in MODEL_INPUTS))  # (B, T, C) each
    out = {}
    has_action = batch["next_action"] >= 0  # (B, T)
    out["action"] = F.cross_entropy(model.action_logits(h[has_action]),
                                    batch["next_action"][has_action])
    has_item = batch["next_item"] >= 0  # (B, T) positions whose next event has an item
    # The mixture is trained by its parts: which slot (kind of item event) comes next,
    # and the item given that slot, so one catalogue product per position.
    slot = _slot_of(batch["next_action"][has_item], model.cfg.item_slots)  # (N,)
    out["item"] = (model.item_nll(h, memory, batch["items"], has_item,
                                  batch["next_item"][has_item], slot).mean()
                   + F.cross_entropy(model.slot_logits(h[has_item]), slot))
    has_purchase = batch["purchase"] >= 0
    out["purchase"] = (F.binary_cross_entropy_with_logits(
        model.purchase_logit(h[has_purchase]), batch["purchase"][has_purchase].float())
        if has_purchase.any() else h.sum() * 0.0)
    has_time = ~torch.isnan(batch["log_seconds"])
    out["time"] = F.l1_loss(model.log_seconds(h[has_time]), batch["log_seconds"][has_time])
    return out


def _slot_of(actions: torch.Tensor, slots: int) -> torch.Tensor:
    if slots == 1:
        return torch.zeros_like(actions)
    table = torch.tensor(ITEM_SLOT, dtype=torch.long)
    # An item on a search (possible in imported logs) counts as viewing it.
    return table[actions].clamp(min=0)


@torch.no_grad()
def validate(model: NextActionModel, data: Prepared, cases: list[Case],
             batch_size: int = 256) -> dict[str, float]:
    """Full-ranking NDCG@10 and the other heads' metrics on validation, with PyTorch."""
    model.eval()
    ranks: list[int | None] = []
    y_true: list[int] = []
    y_pred: list[int] = []
    purchase: list[float] = []
    seconds: list[float] = []
    for start in range(0, len(cases), batch_size):
        chunk = cases[start: start + batch_size]
        inputs = {k: torch.from_numpy(v) for k, v in case_inputs(chunk, data.spec).items()}
        encoded = model(*(inputs[k] for k in MODEL_INPUTS), last_only=True)
        h = encoded.hidden[:, -1]  # (B, C)
        probs = model.item_probs(encoded, inputs["items"])  # (B, V - 3)
        y_pred += model.action_logits(h).argmax(-1).tolist()
        y_true += [c.next_action for c in chunk]
        purchase += torch.sigmoid(model.purchase_logit(h)).tolist()
        seconds += torch.expm1(model.log_seconds(h)).clamp(min=0).tolist()
        for row, case in enumerate(chunk):
            if case.next_item_id is None:
                continue
            if case.next_item < FIRST_TOKEN:  # an item unseen in training: nobody ranks it
                ranks.append(None)
                continue
            target = case.next_item - FIRST_TOKEN  # item_probs leaves reserved ids out
            rank = int((probs[row] > probs[row, target]).sum())
            ranks.append(rank)
    return {"ndcg@10": metrics.ndcg(ranks), "hr@10": metrics.hit_rate(ranks),
            "action_accuracy": metrics.accuracy(y_true, y_pred),
            "purchase_auc": metrics.roc_auc([c.purchase for c in cases], purchase),
            "time_mae_s": metrics.median_absolute_error([c.seconds for c in cases], seconds),
            "n": len(cases)}


def train(log: EventLog, options: TrainOptions, *, log_path: str | None = None
          ) -> tuple[Checkpoint, Prepared]:
    """Train on a log's training split; returns the best checkpoint and the prepared data."""
    started = time.monotonic()
    set_determinism(options.seed, options.threads)
    spec = EncodingSpec(max_len=options.max_len)
    data = prepare(log, spec, ttl_seconds=options.ttl_seconds,
                   horizon_seconds=options.horizon_seconds)
    chunks = training_chunks(data)
    if len(chunks) == 0:
        raise ValueError("the log has no user with at least two training events; nothing "
                         "to learn from")
    tensors = {k: torch.from_numpy(v) for k, v in chunks.inputs.items()}
    tensors.update(next_action=torch.from_numpy(chunks.next_action),
                   next_item=torch.from_numpy(chunks.next_item),
                   purchase=torch.from_numpy(chunks.purchase),
                   log_seconds=torch.from_numpy(chunks.log_seconds))
    val_cases = held_out_cases(data, "validation")
    config = ModelConfig.for_encoding(spec, len(data.items), len(data.categories),
                                      d_model=options.d_model, n_layers=options.n_layers,
                                      n_heads=options.n_heads, dropout=options.dropout,
                                      attention_window=options.attention_window)
    model = NextActionModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr,
                                  weight_decay=options.weight_decay)
    private = _private_step(model, data, chunks, options) if options.dp else None
    steps_per_epoch = (math.ceil(1 / private.settings.sample_rate) if private
                       else math.ceil(len(chunks) / options.batch_size))
    total_steps = options.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, total_steps))
    generator = torch.Generator().manual_seed(options.seed)
    best: dict[str, Any] = {"score": -1.0, "epoch": 0, "state": None, "validation": {}}
    history = []
    lengths = (tensors["actions"] > 0).sum(dim=1)  # (N,) real events per sequence
    for epoch in range(1, options.epochs + 1):
        if private:
            loss = _private_epoch(private, optimizer, schedule, tensors, lengths, options,
                                  generator, epoch, steps_per_epoch)
        else:
            loss = _train_epoch(model, optimizer, schedule, tensors, lengths, options,
                                generator, epoch)
        val = validate(model, data, val_cases) if val_cases else {"ndcg@10": 0.0}
        history.append({"epoch": epoch, "loss": round(loss, 5),
                        **{k: _round(v) for k, v in val.items()}})
        if not options.quiet or options.log_epochs:
            tqdm.write(f"epoch {epoch}: loss {loss:.4f}  validation "
                       f"ndcg@10 {val['ndcg@10']:.4f}  action accuracy "
                       f"{val.get('action_accuracy', float('nan')):.4f}  "
                       f"({time.monotonic() - started:.0f} s)")
        # A private run keeps its last epoch: choosing by validation would be a use of
        # private data the accountant does not count.
        if private or val["ndcg@10"] > best["score"]:
            best = {"score": val["ndcg@10"], "epoch": epoch, "validation": val,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        elif epoch - best["epoch"] >= options.patience:
            break
    checkpoint = Checkpoint(
        config=config, state_dict=best["state"], spec=spec, items=data.items,
        categories=data.categories, horizon_seconds=options.horizon_seconds,
        ttl_seconds=options.ttl_seconds,
        training={
            "path": log_path, "sha256": log.sha256, "events": len(log.events),
            "users": len(data.users), "rejected": log.rejected,
            "train_sequences": len(chunks), "epochs_run": len(history), "best_epoch": best["epoch"],
            "validation": {k: _round(v) for k, v in best["validation"].items()},
            "history": history, "seed": options.seed, "options": asdict(options),
            "seconds": round(time.monotonic() - started, 1),
            **({"differential_privacy": privacy_training.report(
                private.settings, len(history) * steps_per_epoch, len(history))}
               if private else {}),
        },
        samples=_parity_samples(data, val_cases, tensors))
    return checkpoint, data


def _private_step(model: NextActionModel, data: Prepared, chunks: Any,
                  options: TrainOptions) -> privacy_training.PrivateStep:
    settings = privacy_training.PrivacySettings.for_users(
        len(data.users), options.batch_size, options.dp_noise_multiplier,
        options.dp_max_grad_norm, options.dp_delta)
    return privacy_training.PrivateStep(model, settings, options.purchase_weight,
                                        options.time_weight, torch.from_numpy(chunks.user))


def _private_epoch(private: privacy_training.PrivateStep, optimizer: torch.optim.Optimizer,
                   schedule: torch.optim.lr_scheduler.LRScheduler,
                   tensors: dict[str, torch.Tensor], lengths: torch.Tensor,
                   options: TrainOptions, generator: torch.Generator, epoch: int,
                   steps: int) -> float:
    """One epoch of DP-SGD: ``steps`` Poisson-sampled batches of users; the mean loss."""
    private.model.train()
    bar = tqdm(range(steps), desc=f"epoch {epoch}/{options.epochs} (DP)", unit="batch",
               disable=options.quiet, leave=False, mininterval=1.0)
    total = 0.0
    for step in bar:
        users = private.sample_users(generator)
        items = _unknown_items(tensors["items"], options.unknown_item_rate, generator)
        total += private.gradients(users, {**tensors, "items": items}, lengths, generator)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 5 == 0:
            bar.set_postfix(loss=f"{total / (step + 1):.3f}")
    return total / max(1, steps)


def _train_epoch(model: NextActionModel, optimizer: torch.optim.Optimizer,
                 schedule: torch.optim.lr_scheduler.LRScheduler,
                 tensors: dict[str, torch.Tensor], lengths: torch.Tensor,
                 options: TrainOptions, generator: torch.Generator, epoch: int) -> float:
    """One pass over the training sequences; returns the mean loss."""
    model.train()
    batches = length_batches(lengths, options.batch_size, generator)
    bar = tqdm(batches, desc=f"epoch {epoch}/{options.epochs}", unit="batch",
               disable=options.quiet, leave=False, mininterval=1.0)
    total = 0.0
    for step, idx in enumerate(bar):
        width = int(lengths[idx].max())  # drop columns that are padding in every row
        batch = {k: v[idx, -width:] for k, v in tensors.items()}
        batch["items"] = _unknown_items(batch["items"], options.unknown_item_rate, generator)
        parts = losses(model, batch)
        loss = (parts["item"] + parts["action"] + options.purchase_weight * parts["purchase"]
                + options.time_weight * parts["time"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        total += loss.item()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{total / (step + 1):.3f}")
    return total / max(1, len(batches))


WARMUP_STEPS = 100
FINAL_LR_FACTOR = 0.05


def learning_rate_factor(step: int, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak at the last planned epoch.

    The decay is what lets the last epochs settle; early stopping on
    validation still ends a run that stops improving sooner.
    """
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    progress = min(1.0, (step - WARMUP_STEPS) / max(1, total_steps - WARMUP_STEPS))
    return FINAL_LR_FACTOR + (1 - FINAL_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * progress))


def length_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator
                   ) -> list[torch.Tensor]:
    """A shuffled epoch of batches whose sequences have similar lengths.

    Sequences are shuffled, sorted by length within pools of 32 batches and
    cut into batches, and the batches shuffled again: each batch then needs
    few padding columns (the model is blind to left padding, so trimming them
    changes no result) while the epoch stays random.
    """
    order = torch.randperm(len(lengths), generator=generator)
    pool = batch_size * 32
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start: start + pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _unknown_items(items: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    if rate <= 0:
        return items
    drop = (torch.rand(items.shape, generator=generator) < rate) & (items >= FIRST_TOKEN)
    return items.masked_fill(drop, UNKNOWN)


def _parity_samples(data: Prepared, cases: list[Case], training: dict[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
    # Real windows: the longest validation windows (full length) and some shorter,
    # left-padded ones; training sequences when there is no validation split.
    if not cases:
        return {k: training[k][:PARITY_SAMPLES].clone() for k in MODEL_INPUTS}
    longest = sorted(cases, key=lambda c: -c.history_length)[:PARITY_SAMPLES // 2]
    picked = longest + cases[:PARITY_SAMPLES - len(longest)]
    return {k: torch.from_numpy(v) for k, v in case_inputs(picked, data.spec).items()}


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value
