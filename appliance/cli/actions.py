"""Audit records for what an operator does at the console (key, bundle and policy changes).

The actor is `cli:<unix user>` with the admin role. Before the first `appliance db upgrade` there is no
audit log yet: the action then proceeds with a warning, so a fresh install can be bootstrapped. Once the
log exists, a record that cannot be written is an error (the command exits non-zero and says so).
"""

from __future__ import annotations

import getpass

import typer

from appliance.config import get_settings


def record(event: str, **detail: str) -> None:
    from appliance.audit import AuditEvent, AuditLog, Principal  # SQLAlchemy only for commands that change things
    from appliance.db import current_revision

    settings = get_settings()
    if current_revision(settings.database_url) is None:
        typer.echo(f"warning: the audit log is not initialised (appliance db upgrade): {event} not recorded",
                   err=True)
        return
    with AuditLog.from_settings(settings) as log:
        log.append(AuditEvent(event=event, principal=Principal(name=f"cli:{getpass.getuser()}", role="admin"),
                              route="cli", detail=detail))
