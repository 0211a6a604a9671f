"""Usage per key, group or model over a period, summed from the audit log's outcome records.

The audit log is the record of what each request used (its outcome record holds the engine's usage), so
the report is computed from it and nothing else: it reconciles with the log by construction, and the quota
counters settle exactly those figures. Groups are the policy pack's in force (a key's records count for the
group it is in now); keys in no group are reported as "-".
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal

from appliance.audit import AuditLog
from appliance.errors import ApplianceError
from appliance.policy.grants import group_of
from appliance.policy.pack import PolicySet

By = Literal["key", "group", "model"]
OUTCOMES = ("completion", "cancelled", "error")  # one per admitted request; each holds its usage


@dataclass(frozen=True)
class UsageRow:
    name: str  # key id, group or model
    requests: int
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int


def usage_report(log: AuditLog, policy: PolicySet, by: By, since: datetime, until: datetime) -> list[UsageRow]:
    """Totals per `by` over [since, until), sorted by name."""
    totals: dict[str, list[int]] = {}
    for name, *sums in log.usage(since, until, "model" if by == "model" else "key", OUTCOMES):
        label = (group_of(policy, name) if by == "group" else name) or "-"
        row = totals.setdefault(label, [0, 0, 0, 0])
        for i, value in enumerate(sums):
            row[i] += value
    return [UsageRow(name, *sums) for name, sums in sorted(totals.items())]


MAX_DAYS = 62  # the page's span: one grouped query per day


def daily(
    log: AuditLog, policy: PolicySet, by: By, since: datetime, until: datetime
) -> list[tuple[str, list[UsageRow]]]:
    """`usage_report` for each calendar day of [since, until) in since's time zone (DST-safe: wall-clock days),
    at most MAX_DAYS of them, each labelled YYYY-MM-DD."""
    days: list[tuple[str, list[UsageRow]]] = []
    start = since
    while start < until and len(days) < MAX_DAYS:
        end = min(datetime.combine(start.date() + timedelta(days=1), time(0), tzinfo=start.tzinfo), until)
        days.append((start.date().isoformat(), usage_report(log, policy, by, start, end)))
        start = end
    return days


def bounds(start: str, end: str, zone: tzinfo) -> tuple[datetime, datetime]:
    """`--from`/`--to`: dates are whole days in the site's zone (`to` included), times are ISO 8601 (in the
    site's zone unless they name one)."""
    since, until = _moment(start, zone, "from", 0), _moment(end, zone, "to", 1)
    try:
        years = {since.astimezone(UTC).year, until.astimezone(UTC).year}
    except OverflowError:
        years = {0}
    if not all(1000 <= year <= 9999 for year in years):
        raise ApplianceError("from and to must lie within the years 1000 to 9999 (UTC)")
    if until <= since:
        raise ApplianceError(f"the period is empty: to ({end}) is not after from ({start})")
    return since, until


def _moment(value: str, zone: tzinfo, name: str, days_after: int) -> datetime:
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value) + timedelta(days=days_after), time(0), tzinfo=zone)
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise ApplianceError(
            f"{name} {value!r} is not an ISO date or time (e.g. 2026-12-01 or 2026-12-01T08:00:00+01:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def render(rows: list[UsageRow], fmt: Literal["csv", "json"], by: By, since: datetime, until: datetime) -> str:
    if fmt == "json":
        return (
            json.dumps(
                {"by": by, "from": since.isoformat(), "to": until.isoformat(), "data": [asdict(r) for r in rows]},
                indent=2,
            )
            + "\n"
        )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([by, "requests", "input_tokens", "output_tokens", "reasoning_tokens"])
    writer.writerows([r.name, r.requests, r.input_tokens, r.output_tokens, r.reasoning_tokens] for r in rows)
    return out.getvalue()
