"""Every gateway replica serves the policy revision the audit log last recorded as reloaded.

`POST /admin/policy/reload` reaches one replica: it loads the folder, records the revision, and puts in
force exactly the pack it loaded (the bytes whose revision it recorded, not a second read). The other
replicas follow the record: every `policy_follow_seconds` each reads the newest `admin.policy_reloaded`
record and, when its revision is not the one in force, loads the folder and puts it in force only if the
folder still holds that revision (otherwise it keeps its pack and logs why, once).
"""

from __future__ import annotations

import asyncio

import structlog

from appliance.api.services import Services
from appliance.policy.pack import PolicySet, load_options

log = structlog.get_logger()


def recorded_revision(svc: Services) -> str | None:
    """The revision of the newest recorded policy reload, if any."""
    record = svc.audit.latest("admin.policy_reloaded")
    return record.detail.get("revision") if record else None


def apply_recorded(svc: Services, refused: set[str]) -> None:
    want = recorded_revision(svc)
    if want is None or want == svc.policy.current.revision or want in refused:
        return
    loaded = PolicySet.from_settings(svc.settings)
    if loaded.revision != want:
        refused.add(want)
        log.error("recorded policy revision not applied: the folder holds another", recorded=want,
                  folder=loaded.revision)
        return
    options = load_options(svc.settings)
    svc.policy.install(loaded, require_signed=options["require_signed"], min_version=options["min_version"])
    log.info("policy revision applied from the audit record", revision=want)


async def follow(svc: Services) -> None:
    """Run for the replica's life (started by the app's lifespan)."""
    refused: set[str] = set()
    while True:
        await asyncio.sleep(svc.settings.policy_follow_seconds)
        try:
            await asyncio.to_thread(apply_recorded, svc, refused)
        except Exception as exc:  # noqa: BLE001 - keep the pack in force and try again next period
            log.warning("policy follow failed", error=str(exc).splitlines()[0] if str(exc) else repr(exc))
