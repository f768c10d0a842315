"""streams.finishing.Finishing: a scored chunk finishes in the background, in order, and its
failure is not lost."""

from __future__ import annotations

import asyncio

import pytest

from streams.finishing import Finishing


def test_chunks_finish_one_after_another_in_the_order_they_were_started():
    async def run() -> list[str]:
        done: list[str] = []
        finishing = Finishing()

        async def finish(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            done.append(name)

        for name, delay in (("first", 0.05), ("second", 0.0), ("third", 0.01)):
            await finishing.settle()
            finishing.start(finish(name, delay))
        await finishing.settle()
        return done

    assert asyncio.run(run()) == ["first", "second", "third"]


def test_a_failed_chunk_is_raised_by_the_next_settle_and_logged_at_once(caplog):
    async def run() -> None:
        finishing = Finishing()

        async def fail() -> None:
            raise ConnectionError("broker gone")

        finishing.start(fail())
        for _ in range(3):  # it fails (and its done callback runs) before anyone waits
            await asyncio.sleep(0)
        assert "sending a scored chunk failed" in caplog.text
        with pytest.raises(ConnectionError, match="broker gone"):
            await finishing.settle()
        await finishing.settle()  # the failure is reported once

    asyncio.run(run())


def test_cancelling_a_waiter_does_not_cancel_the_chunk():
    # A stopping worker cancels the fetcher while it waits; the chunk's records must still
    # be acknowledged, or the stop waits for acknowledgements that never come.
    async def run() -> bool:
        finishing = Finishing()
        acked = asyncio.Event()

        async def finish() -> None:
            await asyncio.sleep(0.05)
            acked.set()

        finishing.start(finish())
        waiter = asyncio.ensure_future(finishing.settle())
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.wait_for(acked.wait(), 1.0)
        return acked.is_set()

    assert asyncio.run(run())


def test_a_second_start_without_settle_is_a_programming_error():
    async def run() -> None:
        finishing = Finishing()
        finishing.start(asyncio.sleep(0.01))
        coroutine = asyncio.sleep(0)
        with pytest.raises(AssertionError):
            finishing.start(coroutine)
        coroutine.close()
        await finishing.settle()

    asyncio.run(run())
