"""The audit list's filters as they travel in the page's query string, and back into links."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import QueryParams

from appliance.api import admin_wire
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
        return urlencode(
            {**{k: v for k, v in self.values.items() if v}, **{k: v for k, v in extra.items() if v is not None}}
        )


def parse(params: QueryParams) -> Form:
    """The form's values checked by the API's own rules for the same filters (`admin_wire.Moment`, `admin_wire.Term`:
    four-digit UTC years, printable text of at most 256 characters), so no value the API would refuse
    reaches a query from the page either."""
    values = {name: params.get(name, "").strip() for name in FIELDS}
    errors: list[str] = []
    checked = {
        name: _checked(_MOMENT if name in ("since", "until") else _TERM, name, values[name], errors)
        for name in FIELDS
        if name != "status"
    }
    status = None
    if values["status"]:
        if values["status"].isdigit() and len(values["status"]) == 3:
            status = int(values["status"])
        else:
            errors.append(f"status {_shown(values['status'])} is not an HTTP status (e.g. 403)")
    if values["action"] and values["action"] not in ACTIONS:
        errors.append(f"action must be one of {', '.join(ACTIONS)}")
    if errors:
        return Form(values, AuditFilter(), errors)
    return Form(values, AuditFilter(status=status, **checked), errors)


_MOMENT, _TERM = TypeAdapter(admin_wire.Moment), TypeAdapter(admin_wire.Term)


def _checked(rule: TypeAdapter, name: str, value: str, errors: list[str]) -> Any:
    """`value` as `rule` reads it (None when empty); a refusal is added to `errors`."""
    if not value:
        return None
    try:
        return rule.validate_python(value)
    except ValidationError as exc:
        errors.append(f"{name} {_shown(value)} is not accepted: {exc.errors()[0]['msg']}")
        return None


def _shown(value: str) -> str:
    """A refused value as the error repeats it: escaped, and not all of a long one."""
    return repr(value if len(value) <= 40 else value[:40] + "...")
