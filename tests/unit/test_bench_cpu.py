"""CPU readings for ``bench pipeline``: a process's own CPU, and the machine's busy cores."""

import os
import time

import pytest

from streams.bench.cpu import CpuSpan, machine_seconds, process_seconds

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc (Linux)")


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_span_counts_the_cpu_its_process_spent():
    span = CpuSpan(os.getpid())
    span.start()
    burn(0.3)
    span.stop()
    assert span.process is not None and span.process >= 0.2  # ticks of 10 ms
    # The machine was at least as busy as this process was.
    assert span.machine is not None and span.machine >= span.process - 0.05
    assert span.wall >= span.process - 0.05
    assert span.per_event_us(1000) == pytest.approx(1e3 * span.process)
    assert 0 < span.machine_cores() <= os.cpu_count() + 0.5


def test_readings_of_a_process_that_is_gone_are_none():
    assert process_seconds(2**22 + 12345) is None  # above any pid_max
    span = CpuSpan(2**22 + 12345)
    span.start()
    span.stop()
    assert span.process is None and span.per_event_us(10) is None
    assert machine_seconds() is not None and span.machine is not None
