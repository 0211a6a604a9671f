"""Events cross process boundaries in chunks: the first alone (time to first token), then grouped."""

from __future__ import annotations

import asyncio

from appliance.api.backend import coalesce
from appliance.engine import FinishEvent, TextEvent, ToolCallEvent, Usage


async def events(n: int, delay: float = 0.0):
    for i in range(n):
        if delay:
            await asyncio.sleep(delay)
        yield TextEvent("final", f"t{i} ")
    yield ToolCallEvent("c1", "f", "{}")
    yield FinishEvent("stop", Usage(1, n, 0))


async def test_fast_events_are_grouped_and_merged():
    chunks = [c async for c in coalesce(events(200), max_events=16, max_delay=0.05)]
    assert chunks[0] == [TextEvent("final", "t0 ")]
    assert len(chunks) <= 1 + 202 // 16 + 2
    text = "".join(e.text for c in chunks for e in c if isinstance(e, TextEvent))
    assert text == "".join(f"t{i} " for i in range(200))
    assert isinstance(chunks[-1][-1], FinishEvent)


async def test_slow_events_are_not_held_back():
    chunks = [c async for c in coalesce(events(5, delay=0.05), max_events=16, max_delay=0.01)]
    assert len(chunks) >= 5


async def test_closing_the_consumer_closes_the_source():
    closed = []

    async def source():
        try:
            for i in range(1000):
                await asyncio.sleep(0.001)
                yield TextEvent("final", str(i))
        finally:
            closed.append(True)

    stream = coalesce(source())
    await stream.__anext__()
    await stream.aclose()
    assert closed == [True]
