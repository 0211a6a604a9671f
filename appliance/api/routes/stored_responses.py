"""GET /v1/responses/{id}, GET /v1/responses/{id}/input_items and DELETE /v1/responses/{id}: a key's own
stored responses (api/stored.py); any other id, another key's included, is a 404. Each view and deletion
is recorded before it is answered or done."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from appliance.api import stored
from appliance.api.auth import ServicesDep, UserCaller
from appliance.api.errors import ApiError
from appliance.api.wire import ERRORS, DeletedResponse, InputItemList, ResponseObject

router = APIRouter(responses=ERRORS)
Include = Annotated[list[str] | None, Query()]


@router.get("/v1/responses/{response_id}", response_model=ResponseObject)
async def get_response(
    response_id: str, caller: UserCaller, svc: ServicesDep, stream: bool = False, include: Include = None
) -> JSONResponse:
    _nothing_extra(stream, include)
    found = await stored.owned(svc, caller, response_id)
    await stored.record(svc, caller, "response.viewed", response_id, part="response")
    return JSONResponse(found.response)


@router.get("/v1/responses/{response_id}/input_items", response_model=InputItemList)
async def list_input_items(
    response_id: str,
    caller: UserCaller,
    svc: ServicesDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    include: Include = None,
) -> InputItemList:
    """The response's own input items (not those of the responses it continues), newest first by default."""
    _nothing_extra(False, include)
    found = await stored.owned(svc, caller, response_id)
    items = found.input if order == "asc" else found.input[::-1]
    start = 0
    if after is not None:
        start = next((i + 1 for i, item in enumerate(items) if item.get("id") == after), -1)
        if start < 0:
            raise ApiError(400, "after names no input item of this response", code="invalid_request", param="after")
    page = items[start : start + limit]
    await stored.record(svc, caller, "response.viewed", response_id, part="input_items", count=str(len(page)))
    return InputItemList(
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=start + limit < len(items),
    )


@router.delete("/v1/responses/{response_id}", response_model=DeletedResponse)
async def delete_response(response_id: str, caller: UserCaller, svc: ServicesDep) -> DeletedResponse:
    await stored.delete(svc, caller, response_id)
    return DeletedResponse(id=response_id)


def _nothing_extra(stream: bool, include: list[str] | None) -> None:
    """A stored response is returned whole, as JSON: streaming it again or extra fields are refused by name."""
    if stream:
        raise ApiError(
            400,
            "stream is not supported: a stored response is returned as JSON",
            param="stream",
            code="unsupported_parameter",
        )
    if include:
        raise ApiError(
            400, "include is not supported: no extra output fields", param="include", code="unsupported_parameter"
        )
