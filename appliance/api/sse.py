"""Server-sent events that never end silently: a failure after the 200 becomes an error event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from appliance.api.errors import ApiError, error_body


def event(data: dict | str, name: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {name}\n" if name else "") + f"data: {payload}\n\n"


def stream_response(events: AsyncIterator[str], headers: dict[str, str] | None = None) -> StreamingResponse:
    async def guarded() -> AsyncIterator[str]:
        try:
            async for item in events:
                yield item
        except ApiError as exc:
            yield event(exc.body(), "error")
        except Exception:  # noqa: BLE001 - the client must see an error, never a cut body
            yield event(
                error_body(500, "internal error; the appliance log has the details", code="internal_error"), "error"
            )

    return StreamingResponse(
        guarded(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )


async def primed(items: AsyncIterator) -> AsyncIterator:
    """Start `items` now, so an error before the first item becomes a real HTTP status, not an event."""
    try:
        first = await items.__anext__()
    except StopAsyncIteration:
        first = _EMPTY

    async def rest() -> AsyncIterator:
        if first is not _EMPTY:
            yield first
        async for item in items:
            yield item

    return rest()


_EMPTY = object()
