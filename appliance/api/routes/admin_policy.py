"""/admin/policy: the policy pack in force here and on every replica, and its reload (admin)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from appliance import admin_actions
from appliance.api import admin_wire as wire
from appliance.api.actors import actor
from appliance.api.auth import AdminCaller, ServicesDep
from appliance.api.errors import ApiError
from appliance.api.policy_follow import record_in_force, recorded_revision, replicas_in_force
from appliance.api.wire import ERRORS
from appliance.errors import ApplianceError
from appliance.policy.pack import PolicySet, load_options

router = APIRouter(prefix="/admin", responses=ERRORS)


@router.get("/policy")
async def policy_show(caller: AdminCaller, svc: ServicesDep) -> wire.PolicyState:
    current = svc.policy.current
    recorded = await asyncio.to_thread(recorded_revision, svc)
    replicas = await asyncio.to_thread(replicas_in_force, svc)
    return wire.PolicyState(
        revision=current.revision,
        version=current.version,
        directory=str(svc.settings.policy_dir),
        recorded_revision=recorded,
        in_force_here=recorded in (None, current.revision),
        replica=svc.replica,
        replicas=[wire.ReplicaPolicy(**r) for r in replicas],
    )


@router.post("/policy/reload")
async def policy_reload(caller: AdminCaller, svc: ServicesDep) -> wire.PolicyReloaded:
    s = svc.settings
    options = load_options(s)  # exactly the pack whose revision is recorded; other replicas follow it
    try:  # validated first, then recorded, then put in force
        candidate = await asyncio.to_thread(PolicySet.from_settings, s)
        loaded = await asyncio.to_thread(
            admin_actions.reload_policy,
            actor(svc, caller),
            candidate.revision,
            lambda: svc.policy.install(
                candidate, require_signed=options["require_signed"], min_version=options["min_version"]
            ),
        )
        await asyncio.to_thread(record_in_force, svc)
    except ApplianceError as exc:
        raise ApiError(
            400, f"policy not reloaded, the previous one stays in force: {exc}", code="invalid_policy"
        ) from exc
    return wire.PolicyReloaded(revision=loaded.revision, version=loaded.version)
