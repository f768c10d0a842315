"""Fuzz the decode path with atheris: any bytes through validation and the pipeline.

Run by tests/unit/test_fuzz_decode.py for a bounded time in CI, or by hand for longer::

    .venv/bin/python tests/fuzz/fuzz_decode.py -max_total_time=600 [corpus_dir]

Each input is used as a record value, with a key derived from it, through
``decode_event``, ``DeadLetter.to_json`` and ``Pipeline.admit`` (validation, re-keying, the
user's window and redelivery detection). Anything but an event, a dead letter or a re-keying
-- an exception, a dead letter that is not valid JSON, a window that does not read back --
is a crash that atheris reports with the input that caused it. The seed corpus is
tests/hostile_corpus.py, written to the corpus directory when it is empty.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import orjson

    from streams.contracts import REASONS, DeadLetter, decode_event
    from streams.encoding import Encoder, EncodingSpec, Vocabulary
    from streams.pipeline import Incoming, Pipeline, Ready, Rekey
    from streams.window import UserWindow

NOW = 1_764_400_000_000
DAY_MS = 86_400_000
ENCODER = Encoder(EncodingSpec(max_len=8), Vocabulary(["sku-1", "sku-2"]), Vocabulary(["c"]))
PIPELINE = Pipeline(ENCODER, window_length=None, ttl_ms=DAY_MS, max_future_ms=DAY_MS,
                    rekey_topic="events.rekeyed")
TABLE: dict[bytes, bytes] = {}


def test_one_input(data: bytes) -> None:
    """One fuzz input: must come out as an event, a dead letter or a re-keying."""
    result = decode_event(data, now_ms=NOW)
    if not hasattr(result, "event_id"):
        assert result.reason in REASONS, result
        letter = orjson.loads(DeadLetter(data, result.reason, result.message, "events", 0, 1,
                                         NOW, key=data[:8]).to_json())
        assert letter["reason"] == result.reason
    key = data[:4] if data[:1] != b"u" else None
    topic = "events.rekeyed" if len(data) % 3 == 0 else "events"
    outcome = PIPELINE.admit(Incoming(key, data, topic, 0, 1), TABLE, now_ms=NOW)
    if isinstance(outcome, Ready):
        stored = TABLE[PIPELINE.window_key(outcome.event.user_id)]
        assert UserWindow.from_bytes(stored, ENCODER).to_bytes() == stored
    else:
        assert isinstance(outcome, Rekey) or outcome.reason in REASONS
    if len(TABLE) > 1000:  # bounded memory over a long run
        TABLE.clear()


def seed(corpus: Path) -> None:
    """Write the hostile corpus (and a few good events) as seeds into an empty directory."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.hostile_corpus import all_cases

    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    for n, case in enumerate(all_cases()):
        if case.value is not None:
            (corpus / f"seed-{n:03d}").write_bytes(case.value)


def main() -> None:
    """atheris entry point; the first non-option argument is the corpus directory."""
    dirs = [a for a in sys.argv[1:] if not a.startswith("-")]
    if dirs:
        seed(Path(dirs[0]))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
