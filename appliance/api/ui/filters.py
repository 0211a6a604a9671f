"""The audit list's filters as they travel in the page's query string, and back into links."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from appliance.audit import AuditFilter

FIELDS = ("since", "until", "principal", "event", "action", "model", "policy_revision", "status", "text")
ACTIONS = ("allow", "redact", "deny")


@dataclass(frozen=True)
class Form:
    """The filter form's values as typed (kept for redisplay), what they mean, and what was wrong."""

    values: dict[str, str]
    filters: AuditFilter
    errors: list[str]

    @property
    def active(self) -> bool:
        return any(self.values.values())

    def query(self, **extra: object) -> str:
        """The query string of these filters (plus `extra`), for links that keep them."""
        return urlencode({**{k: v for k, v in self.values.items() if v}, **{k: v for k, v in extra.items()
                                                                              if v is not None}})


def parse(params: QueryParams) -> Form:
    values = {name: params.get(name, "").strip() for name in FIELDS}
    errors: list[str] = []
    when = {name: _when(values[name], name, errors) for name in ("since", "until")}
    status = None
    if values["status"]:
        if values["status"].isdigit() and len(values["status"]) == 3:
            status = int(values["status"])
        else:
            errors.append(f"status {values['status']!r} is not an HTTP status (e.g. 403)")
    if values["action"] and values["action"] not in ACTIONS:
        errors.append(f"action must be one of {', '.join(ACTIONS)}")
    if errors:
        return Form(values, AuditFilter(), errors)
    text = {k: values[k] or None for k in ("principal", "event", "action", "model", "policy_revision", "text")}
    return Form(values, AuditFilter(since=when["since"], until=when["until"], status=status,
                                    **text), errors)  # type: ignore[arg-type]  # all six are str | None


def _when(value: str, name: str, errors: list[str]) -> datetime | None:
    """An ISO date or time (the page's datetime-local fields send `2026-12-01T10:00`); UTC unless zoned."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        errors.append(f"{name} {value!r} is not a date or time (e.g. 2026-12-01T10:00)")
        return None

