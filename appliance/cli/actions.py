"""The console's `Actor` for appliance.admin_actions: records written by the CLI.

The actor is `cli:<unix user>` with the admin role (`audit.console`). Before the first `appliance db upgrade`
there is no audit log yet: an action then proceeds with a warning, so a fresh install can be bootstrapped.
"""

from __future__ import annotations

import typer

from appliance.admin_actions import Actor
from appliance.audit import AuditEvent
from appliance.audit.console import console_principal
from appliance.config import get_settings


def console_actor() -> Actor:
    return Actor(principal=console_principal(), append=_append, recorded_versions=_recorded_versions)


def _initialised() -> bool:
    from appliance.db import current_revision  # SQLAlchemy's engine only for commands that record

    return current_revision(get_settings().database_url) is not None


def _append(event: AuditEvent) -> None:
    from appliance.audit import AuditLog

    if not _initialised():
        typer.echo(
            f"warning: the audit log is not initialised (appliance db upgrade): {event.event} not recorded", err=True
        )
        return
    with AuditLog.from_settings(get_settings()) as log:
        log.append(event)


def _recorded_versions(event: str, name: str) -> list[str]:
    """The `version` of every `event` record naming `name` (none before the audit log exists)."""
    from appliance.audit import AuditLog

    if not _initialised():
        return []
    with AuditLog.from_settings(get_settings()) as log:
        return [r.detail["version"] for r in log.matching(event, name=name) if "version" in r.detail]
