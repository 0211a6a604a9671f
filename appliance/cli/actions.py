"""Audit records for what an operator does at the console (key, bundle, trust and policy changes).

Record first: every command writes its record before the change takes effect, so a record that cannot be
written leaves nothing changed (the command exits non-zero and says so). Where the change must happen to
learn what to record (a new key's id), `record_or_undo` records right after and undoes the change if the
record fails. The actor is `cli:<unix user>` with the admin role (`audit.console`). Before the first
`appliance db upgrade` there is no audit log yet: the action then proceeds with a warning, so a fresh
install can be bootstrapped.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from appliance.config import get_settings


def record(event: str, **detail: str) -> None:
    from appliance.audit import AuditEvent, AuditLog  # SQLAlchemy only for commands that change things
    from appliance.audit.console import console_principal
    from appliance.db import current_revision

    settings = get_settings()
    if current_revision(settings.database_url) is None:
        typer.echo(f"warning: the audit log is not initialised (appliance db upgrade): {event} not recorded",
                   err=True)
        return
    with AuditLog.from_settings(settings) as log:
        log.append(AuditEvent(event=event, principal=console_principal(),
                              route="cli", detail=detail))


def record_or_undo(event: str, undo: Callable[[], object], **detail: str) -> None:
    """Record a change that has just been made; if the record cannot be written, undo it and fail."""
    try:
        record(event, **detail)
    except BaseException:
        undo()
        raise


def recorded_versions(event: str, **detail: str) -> list[str]:
    """The `version` of every `event` record matching `detail` (none before the audit log exists)."""
    from appliance.audit import AuditLog
    from appliance.db import current_revision

    settings = get_settings()
    if current_revision(settings.database_url) is None:
        return []
    with AuditLog.from_settings(settings) as log:
        return [r.detail["version"] for r in log.matching(event, **detail) if "version" in r.detail]
