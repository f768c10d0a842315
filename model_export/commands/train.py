"""``shopcast train EVENTS --out BUNDLE``: train the model and write a verified bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_export.commands.export import add_bundle_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast train``."""
    from model_export.train import TrainOptions

    d = TrainOptions()
    parser.add_argument("events", type=Path, help="event log: JSON Lines (.jsonl, .gz) or Parquet")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="where to save the PyTorch checkpoint (default: BUNDLE.pt)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="at most this many epochs")
    parser.add_argument("--patience", type=int, default=d.patience,
                        help="stop after this many epochs without a better validation NDCG@10")
    parser.add_argument("--max-len", type=int, default=d.max_len, help="window length (events)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--d-model", type=int, default=d.d_model)
    parser.add_argument("--layers", type=int, default=d.n_layers)
    parser.add_argument("--heads", type=int, default=d.n_heads)
    parser.add_argument("--attention-window", type=int, default=None,
                        help="events each attention layer reads, itself included (0: every "
                             "earlier event, which serving cannot step); default: the longest "
                             "whose reach, layers x (window - 1) + 1, fits in --max-len")
    parser.add_argument("--dropout", type=float, default=d.dropout)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--threads", type=int, default=d.threads,
                        help="CPU threads (results are reproducible for a fixed count)")
    parser.add_argument("--horizon-hours", type=float, default=d.horizon_seconds / 3600,
                        help="purchase horizon")
    parser.add_argument("--ttl-days", type=float, default=d.ttl_seconds / 86400,
                        help="window TTL, as SHOPCAST_WINDOW_TTL_SECONDS in serving")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    dp = parser.add_argument_group(
        "differential privacy", "DP-SGD with the user as the privacy unit: --batch-size is then "
        "the expected number of users per step; the run keeps its last epoch")
    dp.add_argument("--dp", action="store_true", help="train with DP-SGD (needs opacus)")
    dp.add_argument("--dp-noise-multiplier", type=float, default=None,
                    help=f"noise std / clipping norm (default {d.dp_noise_multiplier}); "
                    "giving it turns --dp on")
    dp.add_argument("--dp-max-grad-norm", type=float, default=d.dp_max_grad_norm,
                    help="clip each user's gradient to this L2 norm")
    dp.add_argument("--dp-delta", type=float, default=None,
                    help="delta of the reported epsilon (default min(1e-5, 1/(10 users)))")
    add_bundle_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Train, save the checkpoint, export and evaluate the bundle."""
    from model_export.data import read_events
    from model_export.evaluate import format_table
    from model_export.export import ExportError, export_bundle
    from model_export.train import TrainOptions, train

    d = TrainOptions()
    options = TrainOptions(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, max_len=args.max_len, d_model=args.d_model,
        n_layers=args.layers, n_heads=args.heads, attention_window=args.attention_window,
        dropout=args.dropout, patience=args.patience,
        seed=args.seed, threads=args.threads, horizon_seconds=int(args.horizon_hours * 3600),
        ttl_seconds=int(args.ttl_days * 86400), quiet=args.quiet,
        dp=args.dp or args.dp_noise_multiplier is not None,
        dp_noise_multiplier=(args.dp_noise_multiplier if args.dp_noise_multiplier is not None
                             else d.dp_noise_multiplier),
        dp_max_grad_norm=args.dp_max_grad_norm, dp_delta=args.dp_delta)
    try:
        log = read_events(args.events)
    except FileNotFoundError as exc:
        print(f"shopcast train: {exc}", file=sys.stderr)
        return 2
    _say(args, f"read {len(log.events)} events from {args.events}"
         + (f" (skipped invalid: {log.rejected})" if log.rejected else ""))
    checkpoint, data = train(log, options, log_path=str(args.events.resolve()))
    path = checkpoint.save(args.checkpoint or Path(f"{args.out}.pt"))
    t = checkpoint.training
    if "differential_privacy" in t:
        p = t["differential_privacy"]
        _say(args, f"differential privacy (per user): epsilon {p['epsilon']} at delta "
             f"{p['delta']:g} (noise multiplier {p['noise_multiplier']}, clipping norm "
             f"{p['max_grad_norm']}, sample rate {p['sample_rate']}, {p['steps']} steps)")
    _say(args, f"trained {t['epochs_run']} epochs in {t['seconds']} s; best epoch "
         f"{t['best_epoch']} (validation {t['validation']}); checkpoint {path}")
    try:
        bundle = export_bundle(checkpoint, args.out, top_k=args.top_k, int8=args.int8, log=log,
                               oracle=args.oracle, threads=args.threads, data=data)
    except ExportError as exc:
        print(f"shopcast train: {exc}", file=sys.stderr)
        return 1
    import orjson

    from streams.bundle import REPORT_FILE

    report = orjson.loads((bundle / REPORT_FILE).read_bytes())
    if "model" in report:
        _say(args, format_table(report))
    _say(args, f"bundle written to {bundle}")
    return 0


def _say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr)
