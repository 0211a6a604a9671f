"""`appliance db`: schema migrations of the appliance database (the URL comes from settings)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Create or migrate the tables up to REVISION."""
    from appliance import db
    from appliance.config import get_settings

    db.upgrade(get_settings().database_url, revision)
    typer.echo(f"database at revision {db.current_revision(get_settings().database_url)}")


@app.command()
def downgrade(revision: Annotated[str, typer.Argument(help="Target revision; `base` drops every table.")]) -> None:
    """Migrate the tables down to REVISION."""
    from appliance import db
    from appliance.config import get_settings

    db.downgrade(get_settings().database_url, revision)
    typer.echo(f"database at revision {db.current_revision(get_settings().database_url) or 'base'}")


@app.command()
def current() -> None:
    """Print the revision the database is at."""
    from appliance import db
    from appliance.config import get_settings

    typer.echo(db.current_revision(get_settings().database_url) or "base")
