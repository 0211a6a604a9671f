"""/admin/bundles: the model store and the active version (admin)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from appliance import admin_actions
from appliance.api import admin_wire as wire
from appliance.api.actors import actor
from appliance.api.auth import AdminCaller, ServicesDep
from appliance.api.errors import ApiError
from appliance.api.wire import ERRORS
from appliance.errors import ApplianceError

router = APIRouter(prefix="/admin", responses=ERRORS)


@router.get("/bundles")
async def bundles_list(caller: AdminCaller, svc: ServicesDep) -> wire.BundleList:
    return wire.BundleList(data=[wire.Bundle.of(b) for b in await asyncio.to_thread(svc.store.list)])


@router.post("/bundles/activate")
async def bundles_activate(body: wire.Activation, caller: AdminCaller, svc: ServicesDep) -> wire.Activated:
    try:
        await asyncio.to_thread(
            admin_actions.activate_bundle, actor(svc, caller), svc.store, body.name, body.version, svc.bundle_trust()
        )
    except ApplianceError as exc:
        raise ApiError(400, str(exc), code="invalid_bundle") from exc
    return wire.Activated(name=body.name, version=body.version)
