"""Calendar days and months in the site's time zone: the label a counter is kept under, and when it resets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo

Period = Literal["day", "month"]


def site_zone(name: str) -> tzinfo:
    """The zone named by the `site_timezone` setting (already checked by Settings)."""
    return UTC if name == "UTC" else ZoneInfo(name)


@dataclass(frozen=True)
class Window:
    label: str  # 2026-12-04 or 2026-12
    resets_at: datetime  # the next period's first instant, in the site's zone


def window(moment: datetime, period: Period, zone: tzinfo) -> Window:
    """The day or month holding `moment` (aware) in `zone`. Midnight is taken in the zone itself, so a day
    with a daylight-saving change is 23 or 25 hours long, as the site's clocks say."""
    local = moment.astimezone(zone).date()
    if period == "day":
        return Window(local.isoformat(), _midnight(local + timedelta(days=1), zone))
    following = date(local.year + local.month // 12, local.month % 12 + 1, 1)
    return Window(f"{local.year:04d}-{local.month:02d}", _midnight(following, zone))


def _midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)
