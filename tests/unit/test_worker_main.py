"""The worker process's start-up: objects from start-up are left out of later collections."""

import gc

from streams.worker_main import freeze_startup_objects


def test_start_up_objects_are_left_out_of_later_full_collections():
    alive = len(gc.get_objects())
    try:
        frozen = freeze_startup_objects()
        # A full collection now visits what was made since, not the modules and the app.
        # Frozen objects may still be freed meanwhile (by another thread of the test
        # session too), never added: the count can only shrink.
        assert alive // 2 <= gc.get_freeze_count() <= frozen
        assert len(gc.get_objects()) < frozen // 10
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
