"""`appliance audit forward run|status`: feed the site's syslog collectors (SIEM), and how far behind they are."""

from __future__ import annotations

import fcntl
import signal
import threading

import typer

from appliance.errors import ApplianceError

app = typer.Typer(no_args_is_help=True)


@app.command()
def run() -> None:
    """Send every audit record and checkpoint to the collectors in `audit_forward`, until stopped (the
    appliance-audit-forward systemd unit runs this: one per appliance, whatever the gateway's replicas)."""
    from appliance.audit import forward
    from appliance.config import get_settings
    from appliance.db import make_engine, require_tables

    settings = get_settings()
    if not settings.audit_forward:
        typer.echo("no collectors in audit_forward: nothing to forward")
        return
    engine = make_engine(settings.database_url)
    require_tables(engine, "audit_forward_cursors")
    lock_path = settings.data_dir / "audit-forward.lock"
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ApplianceError(f"another `appliance audit forward run` holds {lock_path}") from None
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo(f"forwarding to {', '.join(c.name for c in settings.audit_forward)}")
        forward.run(
            engine,
            settings.audit_forward,
            stop,
            batch=settings.audit_forward_batch,
            confirm_s=settings.audit_forward_confirm_s,
            hostname=settings.audit_forward_hostname,
        )
    engine.dispose()


@app.command()
def status() -> None:
    """Each collector's delivered seq, lag (records not yet delivered) and last error; exits 1 when one has
    an error or is more than `audit_forward_lag_warning` records behind."""
    from rich.table import Table

    from appliance.audit import forward
    from appliance.cli.tables import print_table
    from appliance.config import get_settings
    from appliance.db import make_engine, require_tables

    settings = get_settings()
    if not settings.audit_forward:
        typer.echo("no collectors in audit_forward")
        return
    engine = make_engine(settings.database_url)
    require_tables(engine, "audit_forward_cursors")
    try:
        found = forward.states(engine, [c.name for c in settings.audit_forward])
    finally:
        engine.dispose()
    table = Table("collector", "delivered seq", "head", "lag", "delivered at (UTC)", "error")
    for s in found:
        table.add_row(
            s.name,
            str(s.delivered_seq),
            str(s.head_seq),
            str(s.lag),
            (s.delivered_at or "never")[:19].replace("T", " "),
            f"{s.error} (at {s.attempted_at[:19].replace('T', ' ')})" if s.error and s.attempted_at else "-",
        )
    print_table(table)
    bad = [s for s in found if s.error or s.lag > settings.audit_forward_lag_warning]
    for s in bad:
        why = s.error or f"more than {settings.audit_forward_lag_warning} records behind (audit_forward_lag_warning)"
        typer.echo(f"warning: {s.name}: lag {s.lag} records: {why}", err=True)
    if bad:
        raise typer.Exit(1)
