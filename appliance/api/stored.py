"""The API's side of stored Responses: whether a request is stored, the chain it continues, its storing,
and finding a stored response for its key (404 otherwise, whatever the reason).

What is stored is what the client received (the response object as sent, after the output policy) and the
input as the input policy passed it (the engine request's redacted messages), never the raw text. The
response's own id and the one it continues are in its request record. Views (GET, input_items) and
deletions are recorded (`response.viewed`, `response.deleted`), each before the answer, fail closed.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from appliance.api.actors import audit_event
from appliance.api.auth import Caller
from appliance.api.errors import ApiError
from appliance.api.items import items_of, messages_of
from appliance.api.services import Services
from appliance.api.wire import ResponseObject
from appliance.engine.types import GenerationRequest
from appliance.responses_store import ChainBroken, StoredResponse, StoreUnavailable

ID = re.compile(r"resp_[0-9a-f]{32}")
T = TypeVar("T")


def stored(svc: Services, store: bool | None) -> bool:
    """Whether a request is stored: `store`, default true; where the site turned storage off, false, and
    asking for it is a 400 naming `store`."""
    if svc.settings.responses_store:
        return store is not False
    if store:
        raise ApiError(
            400,
            "store is not supported: this site keeps no responses (responses_store is off)",
            code="unsupported_parameter",
            param="store",
        )
    return False


async def history(svc: Services, caller: Caller, previous: str) -> list[dict[str, Any]]:
    """The chat-shaped messages of the chain `previous` ends (each response's input, then its output),
    oldest first; 404 when `previous` is not this key's, 400 when storage is off or an earlier link is gone."""
    if not svc.settings.responses_store:
        raise ApiError(
            400,
            "previous_response_id is not supported: this site keeps no responses (responses_store is off)",
            code="unsupported_parameter",
            param="previous_response_id",
        )
    try:
        chain = await _call(svc.responses.chain, previous, _key(caller)) if ID.fullmatch(previous) else []
    except ChainBroken as exc:
        raise ApiError(400, str(exc), code="previous_response_broken", param="previous_response_id") from exc
    if not chain:
        raise ApiError(
            404, f"{_named(previous)} not found", code="previous_response_not_found", param="previous_response_id"
        )
    return [m for r in chain for m in (*messages_of(r.input), *messages_of(r.response["output"], "output"))]


async def keep(
    svc: Services, caller: Caller, previous: str | None, request: GenerationRequest, own: int, sent: ResponseObject
) -> None:
    """Store `sent` (the response as the client gets it) with the last `own` messages of the engine
    request (this request's input, as the input policy passed it); 503 when it cannot be stored."""
    kept = items_of(request.messages[len(request.messages) - own :])
    record = StoredResponse(sent.id, _key(caller), previous, time.time(), kept, sent.model_dump())
    await _call(svc.responses.put, record)


async def owned(svc: Services, caller: Caller, response_id: str) -> StoredResponse:
    """The caller's stored response `response_id`; 404 for a malformed, unknown, expired, deleted or
    another key's id alike."""
    found = await _call(svc.responses.get, response_id, _key(caller)) if ID.fullmatch(response_id) else None
    if found is None:
        raise ApiError(404, f"{_named(response_id)} not found", code="response_not_found")
    return found


async def delete(svc: Services, caller: Caller, response_id: str) -> None:
    """Delete the caller's stored response, recorded first: a deletion the log cannot hold does not happen."""
    await owned(svc, caller, response_id)
    await record(svc, caller, "response.deleted", response_id)
    await _call(svc.responses.delete, response_id, _key(caller))


async def record(svc: Services, caller: Caller, event: str, response_id: str, **detail: str) -> None:
    """A view or deletion of a stored response, durably before it is answered or done."""
    await svc.record(audit_event(caller, event, response_id=response_id, **detail))


async def _call(fn: Callable[..., T], *args: Any) -> T:
    """`fn` in a worker thread (database work stays off the event loop); a database failure is a 503."""
    try:
        return await asyncio.to_thread(fn, *args)
    except StoreUnavailable as exc:
        raise ApiError(503, f"{exc}; retry shortly", code="response_store_unavailable", retry_after=2) from exc


def _key(caller: Caller) -> str:
    return caller.principal.key_id or ""


def _named(response_id: str) -> str:
    """How an error names an id: a well-formed one is echoed, anything else (huge, odd) is not."""
    return f"response {response_id!r}" if ID.fullmatch(response_id) else "a response with that id"
