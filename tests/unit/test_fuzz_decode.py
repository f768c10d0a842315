"""A bounded atheris run of the decode path (tests/fuzz/fuzz_decode.py) in CI.

Ten seconds of coverage-guided fuzzing, seeded with the hostile corpus: any exception,
an invalid dead letter or a window that does not read back fails the test, and libFuzzer
prints the input that caused it. For a longer run by hand::

    .venv/bin/python tests/fuzz/fuzz_decode.py -max_total_time=600 /tmp/fuzz-corpus
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZER = Path(__file__).parents[1] / "fuzz" / "fuzz_decode.py"
SECONDS = 10


def test_the_decode_path_survives_a_bounded_fuzzing_run(tmp_path):
    pytest.importorskip("atheris", reason="atheris (dev extra) is not installed")
    # No RSS limit: libFuzzer reads the peak RSS from getrusage, which a child inherits from
    # the process that spawned it -- a pytest that has grown past 1 GB over the suite made
    # the first input "out of memory" in CI. One allocation above 512 MB still fails.
    result = subprocess.run(
        [sys.executable, str(FUZZER), f"-max_total_time={SECONDS}", "-rss_limit_mb=0",
         "-malloc_limit_mb=512", "-timeout=10", "-print_final_stats=1",
         f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus")],
        capture_output=True, text=True, timeout=SECONDS + 120, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    runs = [line for line in output.splitlines() if line.startswith("Done ")]
    assert runs, output[-2000:]
    print(runs[-1])  # e.g. "Done 90789 runs in 21 second(s)"
