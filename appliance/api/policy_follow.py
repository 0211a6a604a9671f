"""Every gateway replica serves the policy revision the audit log last recorded as reloaded.

`POST /admin/policy/reload` reaches one replica: it loads the folder, records the revision, and puts in
force exactly the pack it loaded (the bytes whose revision it recorded, not a second read). The other
replicas follow the record: every `policy_follow_seconds` each reads the newest `admin.policy_reloaded`
record and, when its revision is not the one in force, loads the folder and puts it in force only if the
folder still holds that revision (otherwise it keeps its pack and logs why, once). Each replica records a
`policy.in_force` record whenever it starts serving a revision (at start too), so an auditor can tell which
replica enforced which revision when, and GET /admin/policy lists them all.
"""

from __future__ import annotations

import asyncio

import structlog

from appliance.api.services import Services
from appliance.audit import AuditEvent, AuditFilter
from appliance.policy.pack import PolicySet, load_options
from appliance.principal import Principal

log = structlog.get_logger()


def recorded_revision(svc: Services) -> str | None:
    """The revision of the newest recorded policy reload, if any."""
    record = svc.audit.latest("admin.policy_reloaded")
    return record.detail.get("revision") if record else None


def record_in_force(svc: Services) -> None:
    """This replica now enforces the current revision. The reload's own record came first and is the one
    that authorises it; this one says where it took effect, so a failure to write it is logged, not raised
    (the revision is in force either way, and the next change records again)."""
    revision = svc.policy.current.revision
    try:
        svc.audit.append(
            AuditEvent(
                event="policy.in_force",
                principal=Principal(name=f"replica:{svc.replica}", role="system"),
                route="internal",
                status=200,
                policy_revision=revision,
                detail={"replica": svc.replica, "revision": revision},
            )
        )
    except Exception as exc:  # noqa: BLE001 - see above
        log.error("policy.in_force not recorded", replica=svc.replica, revision=revision, error=str(exc))


def replicas_in_force(svc: Services, scan: int = 1000) -> list[dict[str, str]]:
    """The newest `policy.in_force` record of each replica among the newest `scan` (a stopped replica stays
    listed with its last record's time)."""
    seen: dict[str, dict[str, str]] = {}
    for record in svc.audit.query(AuditFilter(event="policy.in_force"), limit=scan).records:
        replica = record.detail.get("replica", "?")
        seen.setdefault(
            replica, {"replica": replica, "revision": record.detail.get("revision", ""), "since": record.ts}
        )
    return sorted(seen.values(), key=lambda r: r["replica"])


def apply_recorded(svc: Services, refused: set[str]) -> None:
    want = recorded_revision(svc)
    if want is None or want == svc.policy.current.revision or want in refused:
        return
    loaded = PolicySet.from_settings(svc.settings)
    if loaded.revision != want:
        refused.add(want)
        log.error(
            "recorded policy revision not applied: the folder holds another", recorded=want, folder=loaded.revision
        )
        return
    options = load_options(svc.settings)
    svc.policy.install(loaded, require_signed=options["require_signed"], min_version=options["min_version"])
    record_in_force(svc)
    log.info("policy revision applied from the audit record", revision=want)


async def follow(svc: Services) -> None:
    """Run for the replica's life (started by the app's lifespan)."""
    refused: set[str] = set()
    await asyncio.to_thread(record_in_force, svc)
    while True:
        await asyncio.sleep(svc.settings.policy_follow_seconds)
        try:
            await asyncio.to_thread(apply_recorded, svc, refused)
        except Exception as exc:  # noqa: BLE001 - keep the pack in force and try again next period
            log.warning("policy follow failed", error=str(exc).splitlines()[0] if str(exc) else repr(exc))
