"""Which events of a batch the step graph can score, and its inputs for them.

A *run* is one user's consecutive events in a batch whose state before the
first one is held (:mod:`streams.user_states`), or whose first one is the
user's first event (a window of that event alone: nothing came before it, so
an empty state is exact): the step graph scores all of them in one row (see
``model_export.model.StepPredictor``). A run ends where
the next window does not continue the previous one exactly (a redelivered
event, an event dropped by the TTL, windows shorter than the model's reach
that slide): that event waits for the next round, scored from its whole
window or from the state the run leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streams.encoding import EncodingSpec, batch_inputs
from streams.grouping import by_size
from streams.user_states import UserStates

# A call pads every run to the most fresh events of any run in it, and the blocks run on
# every padded position; grouping runs by their number of fresh events (rounded up to a
# power of two) keeps the padding under 2x. A call costs about as much as five events
# (0.55 ms against ~90 us per event, default bundle), so a group of fewer than this many
# events joins the next one up.
MIN_STEP_EVENTS = 32


@dataclass
class Run:
    """A user's events that one row of the step graph scores."""

    user: str
    past: np.ndarray  # the state before the first event, (L, 2, H, P, D)
    span: bytes  # the first event's window and each later event's record
    rows: list[int] = field(default_factory=list)  # the events' rows in the batch
    lengths: list[int] = field(default_factory=list)  # each event's window, in records
    last: bytes = b""  # the last event's window


def plan_runs(pending: Sequence[int], users: Sequence[str], windows: Sequence[bytes],
              states: UserStates, record_size: int, empty: np.ndarray
              ) -> tuple[list[Run], list[int]]:
    """Runs for the pending rows, and the rows to score from their whole window first.

    A user whose first pending event has no held state (and a window of more
    than that event: ``empty`` is the state before a user's first event) gets
    a miss: that event is scored whole, its state kept, and the user's other
    events wait for the next round.
    """
    by_user: dict[str, list[int]] = {}
    for row in pending:
        by_user.setdefault(users[row], []).append(row)
    runs: list[Run] = []
    misses: list[int] = []
    for user, rows in by_user.items():
        first = windows[rows[0]]
        past = states.before(user, first)
        if past is None and len(first) == record_size:
            # A new user (or one back after the TTL): in the step graph's input the
            # positions before this event are padding, which attention never reads. So
            # these users join the other runs instead of taking a whole-window call of
            # their own -- under live load a chunk of a few events nearly always has one.
            past = empty
        if past is None:
            misses.append(rows[0])
            continue
        run = Run(user, past, first, [rows[0]], [len(first) // record_size], first)
        for row in rows[1:]:
            window = windows[row]
            before = window[:-record_size]
            # The state chain holds (the same rule as for a held state), and the span
            # ends with this event's window, so its pointer reads what the window holds.
            if not (states.follows(run.last, window) and run.span.endswith(before)):
                break
            run.span += window[-record_size:]
            run.rows.append(row)
            run.lengths.append(len(window) // record_size)
            run.last = window
        runs.append(run)
    return runs, misses


def fresh_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs in groups of similar numbers of fresh events, one step-graph call each.

    In a single call, one user with 30 events in a batch where the others have
    3 makes the call ten times the work. Scoring the bench log in batches of
    256 events of all users took 113-124 us of CPU per event in one call and
    77-94 in groups; the worker's chunks come a partition at a time, where
    users' numbers of events differ less, and measured the same either way.
    """
    return by_size(runs, lambda run: (len(run.rows) - 1).bit_length(),
                   lambda run: len(run.rows), MIN_STEP_EVENTS)


def step_inputs(runs: Sequence[Run], spec: EncodingSpec) -> dict[str, np.ndarray]:
    """The step graph's inputs for runs; its outputs come in the runs' order, row by row."""
    n = max(len(run.rows) for run in runs)
    layers, two, heads, n_past, d_head = runs[0].past.shape
    inputs = batch_inputs([run.span for run in runs], spec, min_len=n_past + n)
    past = np.zeros((len(runs), layers, two, heads, n_past + n, d_head), np.float32)
    fresh = np.zeros((len(runs), n), np.int64)
    take: list[int] = []
    for b, run in enumerate(runs):
        k = len(run.rows)
        past[b, :, :, :, n - k:n - k + n_past] = run.past
        fresh[b, n - k:] = run.lengths
        take.extend(range(b * n + n - k, b * n + n))
    return {**inputs, "past": past, "fresh": fresh, "take": np.array(take, np.int64)}
