"""/admin/keys: API keys (admin). Changes go through appliance.admin_actions (recorded first, or undone)."""

from __future__ import annotations

from fastapi import APIRouter

from appliance import apikeys
from appliance.api import admin_wire as wire
from appliance.api.actors import create_key, revoke_key
from appliance.api.auth import AdminCaller, ServicesDep
from appliance.api.wire import ERRORS

router = APIRouter(prefix="/admin", responses=ERRORS)


@router.get("/keys")
async def keys_list(caller: AdminCaller, svc: ServicesDep) -> wire.KeyList:
    with svc.sessions() as session:
        return wire.KeyList(data=[wire.Key.of(k) for k in apikeys.list_keys(session)])


@router.post("/keys", status_code=201)
async def keys_create(body: wire.NewKey, caller: AdminCaller, svc: ServicesDep) -> wire.NewKeyCreated:
    token, info = await create_key(svc, caller, body)
    return wire.NewKeyCreated(**wire.Key.of(info).model_dump(), key=token)


@router.delete("/keys/{key_id}")
async def keys_revoke(key_id: str, caller: AdminCaller, svc: ServicesDep) -> wire.Key:
    return wire.Key.of(await revoke_key(svc, caller, key_id))
