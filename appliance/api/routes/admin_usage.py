"""/admin/usage: requests and tokens per key, group or model over a period (auditors and admins)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from appliance.api import admin_wire as wire
from appliance.api.auth import AuditorCaller, ServicesDep
from appliance.api.wire import ERRORS
from appliance.usage.periods import site_zone
from appliance.usage.report import bounds, usage_report

router = APIRouter(prefix="/admin", responses=ERRORS)
ISO_DATE = r"^[0-9T:.+\-Z ]+$"


@router.get("/usage")
async def usage(
    caller: AuditorCaller,
    svc: ServicesDep,
    start: Annotated[str, Query(alias="from", max_length=40, pattern=ISO_DATE)],
    end: Annotated[str, Query(alias="to", max_length=40, pattern=ISO_DATE)],
    by: Literal["key", "group", "model"] = "key",
) -> wire.UsageReport:
    """Dates are whole days in the site's time zone (`to` included); the totals are the audit log's outcome
    records, summed."""
    since, until = bounds(start, end, site_zone(svc.settings.site_timezone))
    rows = await asyncio.to_thread(usage_report, svc.audit, svc.policy.current, by, since, until)
    return wire.UsageReport(by=by, since=since.isoformat(), until=until.isoformat(), data=rows)
