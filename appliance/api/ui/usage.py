"""The admin page's usage view: requests and tokens per key, group or model, per day of the site's time zone,
with a chart. The totals are those of `appliance usage report` and GET /admin/usage: the audit log's outcome
records, summed (appliance/usage/report.py)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from markupsafe import Markup

from appliance.api.ui import chart, sessions
from appliance.api.ui.views import PageError, _page, _svc, signed_in
from appliance.errors import ApplianceError
from appliance.usage.periods import site_zone
from appliance.usage.report import MAX_DAYS, bounds, daily

router = APIRouter()
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SERIES = (("input tokens", "#5b7fa6"), ("output tokens", "#e67e22"))


@router.get("/usage")
async def usage_page(request: Request, who: sessions.SignedIn = Depends(signed_in)) -> Response:
    svc = _svc(request)
    zone = site_zone(svc.settings.site_timezone)
    today = datetime.now(zone).date()
    q = request.query_params
    start, end = q.get("from") or (today - timedelta(days=6)).isoformat(), q.get("to") or today.isoformat()
    by = q.get("by") or "key"
    if by not in ("key", "group", "model") or not (DATE.match(start) and DATE.match(end)):
        raise PageError(400, "from and to are dates (YYYY-MM-DD) and by is key, group or model")
    try:
        since, until = bounds(start, end, zone)
    except ApplianceError as exc:
        raise PageError(400, str(exc)) from exc
    if until - since > timedelta(days=MAX_DAYS):
        raise PageError(400, f"the page shows at most {MAX_DAYS} days; use `appliance usage report` for more")
    days = await asyncio.to_thread(daily, svc.audit, svc.policy.current, by, since, until)  # type: ignore[arg-type]
    totals = [(day, sum(r.input_tokens for r in rows), sum(r.output_tokens for r in rows)) for day, rows in days]
    svg = chart.svg([d for d, _ in days], totals, SERIES, "input and output tokens")
    return await _page(
        request,
        "usage.html",
        who,
        days=days,
        by=by,
        start=start,
        end=end,
        zone=svc.settings.site_timezone,
        chart=Markup(svg),
    )  # noqa: S704 - built from escaped text
