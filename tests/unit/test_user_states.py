"""The per-user state cache: a state is used only for the window it was computed for."""

import numpy as np

from streams.user_states import UserStates

RECORD = 4  # bytes per record in these tests


def records(*ids):
    return b"".join(i.to_bytes(RECORD, "little") for i in ids)


def test_a_state_is_found_for_the_window_that_extends_its_own_by_one_event():
    states = UserStates(10, depends_on=3, record_size=RECORD)
    states.keep("u", records(1, 2), np.ones(2))
    assert states.before("u", records(1, 2, 3)) is not None
    assert states.before("u", records(1, 2)) is None  # the same window again (a redelivery)
    assert states.before("u", records(2, 3)) is None  # the oldest event is gone
    assert states.before("u", records(9, 1, 2, 3)) is None  # an event nobody had seen before
    assert states.before("v", records(1, 2, 3)) is None


def test_only_the_records_a_state_depends_on_must_match_once_the_window_is_long():
    states = UserStates(10, depends_on=3, record_size=RECORD)
    states.keep("u", records(1, 2, 3, 4, 5), np.ones(2))
    assert states.before("u", records(3, 4, 5, 6)) is not None  # slid: 3, 4, 5 still there
    assert states.before("u", records(4, 5, 6)) is None
    assert states.before("u", records(1, 2, 3, 4, 9, 6)) is None


def test_a_kept_state_is_a_copy_and_the_least_recent_user_goes_first():
    states = UserStates(2, depends_on=3, record_size=RECORD)
    batch = np.zeros((3, 2))
    for row, user in enumerate("abc"):
        states.keep(user, records(row), batch[row])
    batch[:] = 7  # the next call's outputs may reuse the batch's memory
    assert len(states) == 2 and states.before("a", records(0, 1)) is None
    assert np.array_equal(states.before("c", records(2, 5)), [0, 0])
    states.forget("c")
    assert states.before("c", records(2, 5)) is None
