"""benchmarks/spaced_calls.py measures what it says, on a few calls (no timing asserted)."""

from __future__ import annotations

from benchmarks.spaced_calls import PAUSES_S, measure


def test_every_pause_is_measured_on_the_same_number_of_calls():
    result = measure(events=3, calls=4, rounds=2)
    assert result["events_per_call"] == 3
    assert result["calls_per_pause"] == 8
    cpu, ratios = result["cpu_ms_per_call"], result["vs_back_to_back"]
    assert len(cpu) == len(ratios) == len(PAUSES_S)
    assert all(ms > 0 for ms in cpu.values())
    assert ratios["back to back"] == 1.0
