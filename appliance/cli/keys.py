"""`appliance keys ...`: API keys for applications, auditors and admins (each change audited)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

app = typer.Typer(no_args_is_help=True)


def _session() -> Session:
    from sqlalchemy.orm import Session

    from appliance.config import get_settings
    from appliance.db import make_engine, require_tables

    engine = make_engine(get_settings().database_url)
    require_tables(engine, "api_keys")
    return Session(engine, expire_on_commit=False)


@app.command()
def create(
    name: Annotated[str, typer.Option(help="Who or what holds the key.")],
    role: Annotated[str, typer.Option(help="user, auditor or admin")],
    expires: Annotated[datetime | None, typer.Option(help="Expiry date (UTC), e.g. 2027-06-30.")] = None,
) -> None:
    """Create a key and print it once (it is stored only as a hash)."""
    from appliance import admin_actions
    from appliance.cli.actions import console_actor

    expires_at = expires.replace(tzinfo=UTC) if expires and not expires.tzinfo else expires
    token, info = admin_actions.create_key(console_actor(), _session, name, role, expires_at)
    typer.echo(token)
    typer.echo(f"key id {info.key_id}, role {info.role}: shown once, store it now", err=True)


@app.command("list")
def list_cmd() -> None:
    """Every key with its role and status (never the secret)."""
    from rich.table import Table

    from appliance import apikeys
    from appliance.cli.tables import print_table

    table = Table("id", "name", "role", "status", "created", "expires")
    with _session() as session:
        for k in apikeys.list_keys(session):
            table.add_row(
                k.key_id,
                k.name,
                k.role,
                k.status,
                k.created_at.strftime("%Y-%m-%d %H:%M"),
                k.expires_at.strftime("%Y-%m-%d") if k.expires_at else "",
            )
    print_table(table)


@app.command()
def revoke(key_id: str) -> None:
    """Revoke a key at once."""
    from appliance import admin_actions
    from appliance.cli.actions import console_actor

    info = admin_actions.revoke_key(console_actor(), _session, key_id)
    typer.echo(f"revoked {info.key_id} ({info.name})")
