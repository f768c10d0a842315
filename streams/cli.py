"""The ``shopcast`` command line: one entry point, one module per subcommand.

Each subcommand lives in the module named in :data:`COMMANDS`, which exposes
``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen module is
imported, so ``shopcast --help`` is instant and serving commands never pull in
torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from streams.settings import SettingsError

COMMANDS: dict[str, tuple[str, str]] = {
    # serving
    "worker": ("streams.commands.worker", "run the streaming predictor (a Faust worker)"),
    "demo": ("streams.commands.demo", "run everything on this machine and watch predictions"),
    "broker": ("streams.commands.broker", "run the embedded Kafka-compatible broker (tansu)"),
    "topics": ("streams.commands.topics", "create shopcast's topics on the configured broker"),
    "replay": ("streams.commands.replay", "produce an event log to Kafka"),
    "capture": ("streams.commands.capture", "write a topic to a JSON Lines file"),
    "forget": ("streams.commands.forget", "erase a user's window (a right-to-erasure request)"),
    "bench": ("streams.commands.bench", "measure pipeline throughput/latency or inference cost"),
    "analyze": ("streams.commands.analyze", "a behaviour report of an event log (HTML + JSON)"),
    # model
    "generate": ("model_export.commands.generate", "simulate a shop and write its event log"),
    "import": ("model_export.commands.importer", "turn a CSV/TSV/Parquet table into an event log"),
    "train": ("model_export.commands.train", "train the attention model and write a bundle"),
    "evaluate": ("model_export.commands.evaluate", "evaluate a bundle against baselines"),
    "export": ("model_export.commands.export", "export a checkpoint to an ONNX bundle"),
}


def _overview() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    return "commands:\n" + "\n".join(lines) + "\n\nRun 'shopcast COMMAND --help' for its options."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shopcast`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: shopcast COMMAND [options]\n\n" + _overview())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"shopcast: unknown command {name!r}\n\n{_overview()}", file=sys.stderr)
        return 2
    module_name, text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(f"shopcast {name}: needs the package {exc.name!r}, which is not installed. "
              "Install the training extra: pip install 'shopcast[train]'", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"shopcast {name}", description=text)
    module.add_arguments(parser)
    parsed = parser.parse_args(rest)
    try:
        return int(module.run(parsed) or 0)
    except SettingsError as exc:
        print(f"shopcast {name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
