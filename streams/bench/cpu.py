"""CPU time of a process and of the whole machine, read from /proc (Linux).

``bench pipeline`` reports how much CPU each contender spends per event and
how busy the machine was meanwhile: on a machine that is busy throughout, the
throughput ratio is the inverse ratio of CPU per event, and that says where a
faster worker has to come from. Elsewhere than Linux the readings are None.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def process_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of process ``pid`` and all its threads so far."""
    try:
        # Fields after the command name, which may hold spaces and parentheses.
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_seconds() -> float | None:
    """CPU seconds every core of the machine spent busy (not idle or waiting on I/O) so far."""
    try:
        first = (PROC / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = [int(t) for t in first[1:]]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # user .. steal, less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSpan:
    """CPU spent by a process and by the machine between :meth:`start` and :meth:`stop`."""

    pid: int
    process: float | None = None  # CPU seconds of the process
    machine: float | None = None  # busy CPU seconds of all cores
    wall: float = 0.0  # seconds between the readings
    _started: tuple[float | None, float | None, float] = (None, None, 0.0)

    def start(self) -> None:
        """Take the first reading."""
        self._started = (process_seconds(self.pid), machine_seconds(), time.perf_counter())

    def stop(self) -> None:
        """Take the second reading; the differences are the span's CPU."""
        process, machine = process_seconds(self.pid), machine_seconds()
        p0, m0, w0 = self._started
        self.wall = time.perf_counter() - w0
        self.process = None if process is None or p0 is None else process - p0
        self.machine = None if machine is None or m0 is None else machine - m0

    def per_event_us(self, events: int) -> float | None:
        """The process's CPU microseconds per event."""
        return None if self.process is None or not events else 1e6 * self.process / events

    def machine_cores(self) -> float | None:
        """How many cores the machine kept busy on average over the span."""
        return None if self.machine is None or self.wall <= 0 else self.machine / self.wall
