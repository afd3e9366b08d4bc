"""A crashed service is restarted, not left dead, and stop still stops it."""

from __future__ import annotations

import asyncio

from safer._runtime import _supervise


async def test_a_failing_service_is_restarted_until_it_runs() -> None:
    calls = 0

    async def flaky(stop: asyncio.Event, ready: asyncio.Event) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("transient")
        ready.set()
        await stop.wait()

    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_supervise("flaky", flaky, stop, ready, max_backoff=0.05))
    await asyncio.wait_for(ready.wait(), 5)
    assert calls == 3
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_stop_interrupts_the_backoff_wait() -> None:
    async def always_fails(stop: asyncio.Event, ready: asyncio.Event) -> None:
        raise RuntimeError("permanent")

    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_supervise("broken", always_fails, stop, ready, max_backoff=60))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 2)  # does not sit out a 60 s backoff
    assert not ready.is_set()
