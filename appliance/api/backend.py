"""The one narrow seam between the API and the model: `ModelBackend`.

The API never touches an engine directly. A backend lists the models it serves and streams a
generation as lists of engine events; two implementations exist, each in its own file:
`serving/local_backend.py` (the engine in this process) and `serving/handle_backend.py` (a Ray Serve
deployment handle). Events travel in coalesced chunks, because every hop between processes costs about a
millisecond of CPU per message here: per-token messages would burn cores just moving tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from appliance.engine.types import Event, GenerationRequest, TextEvent

CHUNK_MAX_EVENTS = 16
CHUNK_MAX_DELAY_S = 0.02


@dataclass(frozen=True)
class ModelInfo:
    """A served model: the bundle's name is the model id clients send."""

    name: str
    version: str
    profile: str
    created: int


class ModelBackend(Protocol):
    async def models(self) -> list[ModelInfo]: ...

    def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[list[Event]]: ...

    async def ready(self) -> bool:
        """Whether the model answers, from state the backend keeps (never by generating per call)."""
        ...

    def stats(self) -> dict[str, int]: ...


async def coalesce(
    events: AsyncIterator[Event], max_events: int = CHUNK_MAX_EVENTS, max_delay: float = CHUNK_MAX_DELAY_S
) -> AsyncIterator[list[Event]]:
    """Group a stream of events into chunks of at most `max_events`, sent at least every `max_delay` s.

    The first event goes out alone so time to first token is not delayed; adjacent text of one channel is
    merged into one event. Closing this generator closes `events` (cancelling the generation).
    """
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            await queue.put(exc)
            return
        await queue.put(done)

    task = asyncio.create_task(pump())
    first = True
    try:
        while True:
            item = await queue.get()
            batch: list[Event] = []
            deadline = time.monotonic() + (0 if first else max_delay)
            first = False
            while True:
                if item is done:
                    if batch:
                        yield _merge(batch)
                    return
                if isinstance(item, BaseException):
                    if batch:
                        yield _merge(batch)
                    raise item
                batch.append(item)
                remaining = deadline - time.monotonic()
                if len(batch) >= max_events or remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            yield _merge(batch)
    finally:
        task.cancel()
        try:
            await task
        except BaseException:  # noqa: BLE001 - the generation is being torn down
            pass
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def _merge(batch: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in batch:
        prev = out[-1] if out else None
        if (
            isinstance(event, TextEvent)
            and isinstance(prev, TextEvent)
            and prev.channel == event.channel
            and prev.recipient == event.recipient
        ):
            both = (prev.logprobs, event.logprobs)
            entries = None if both == (None, None) else (prev.logprobs or ()) + (event.logprobs or ())
            out[-1] = TextEvent(prev.channel, prev.text + event.text, prev.recipient, entries)
        else:
            out.append(event)
    return out
