"""`appliance responses prune`: delete stored Responses older than the retention now (each gateway also
prunes as it stores, at most once an hour). Recorded first, as `admin.responses_pruned`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("prune")
def prune(
    older_than_days: Annotated[
        int | None, typer.Option(min=0, help="Age in days past which to delete (default: responses_retention_days).")
    ] = None,
) -> None:
    """Delete every stored response made more than the retention (or --older-than-days) ago."""
    from appliance.admin_actions import record_first
    from appliance.cli.actions import console_actor
    from appliance.config import get_settings
    from appliance.db import make_engine, require_tables
    from appliance.responses_store import DAY_S, ResponseStore

    settings = get_settings()
    days = settings.responses_retention_days if older_than_days is None else older_than_days
    before = time.time() - days * DAY_S
    engine = make_engine(settings.database_url)
    try:
        require_tables(engine, "stored_responses")
        store = ResponseStore(engine, settings.responses_retention_days)
        removed = record_first(
            console_actor(), "admin.responses_pruned", lambda: store.prune(before), older_than_days=str(days)
        )
    finally:
        engine.dispose()
    cut = datetime.fromtimestamp(before, UTC).isoformat(timespec="seconds")
    typer.echo(f"removed {removed} stored responses made before {cut}")
