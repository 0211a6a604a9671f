"""`appliance audit`: read, verify, export and prune the audit log."""

from __future__ import annotations

import getpass
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from appliance.audit import AuditError, AuditFilter, AuditLog, Principal
from appliance.audit.export import FORMATS, verify_file
from appliance.audit.signer import public_key_path
from appliance.cli.progress import count_progress
from appliance.config import get_settings
from appliance.signing import keys

app = typer.Typer(no_args_is_help=True)


def _log() -> AuditLog:
    return AuditLog.from_settings(get_settings())


def _when(value: str | None, option: str) -> datetime | None:
    """An ISO date or time from the command line; without a zone it is UTC."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise AuditError(f"{option} {value!r} is not an ISO date or time (e.g. 2026-11-28 or "
                         f"2026-11-28T14:00:00Z)") from exc


@app.command("list")
def list_records(
    since: str | None = typer.Option(None, help="From this time (ISO, UTC unless a zone is given)."),
    until: str | None = typer.Option(None, help="Before this time."),
    principal: str | None = typer.Option(None, help="API key id or principal name."),
    event: str | None = typer.Option(None, help="Event type, e.g. request, denial, admin.key_created."),
    action: str | None = typer.Option(None, help="Policy action, e.g. allow, redact, deny."),
    model: str | None = typer.Option(None, help="Model name."),
    limit: int = typer.Option(50, help="Records per page."),
    cursor: int | None = typer.Option(None, help="Show records before this sequence number."),
) -> None:
    """Records newest first, as a table."""
    filters = AuditFilter(_when(since, "--since"), _when(until, "--until"), principal, event, action, model)
    with _log() as log:
        page = log.query(filters, cursor, limit)
    table = Table("seq", "time (UTC)", "event", "request", "principal", "route", "model", "action", "status",
                  "ms")
    for r in page.records:
        who = r.principal.name or r.principal.key_id or "-"
        table.add_row(str(r.seq), r.ts[:19].replace("T", " "), r.event, r.request_id or "-", who,
                      r.route or "-", r.model or "-",
                      r.decision.action or "-", str(r.status or "-"), str(r.latency_ms or "-"))
    console = Console()
    (console if console.is_terminal else Console(width=200)).print(table)
    if page.next_cursor is not None:
        typer.echo(f"more: --cursor {page.next_cursor}")


@app.command()
def show(seq: int = typer.Argument(..., help="Sequence number.")) -> None:
    """One record in full, as JSON."""
    with _log() as log:
        record = log.get(seq)
    if record is None:
        raise AuditError(f"no audit record with seq {seq}")
    typer.echo(record.model_dump_json(indent=2))


def _expected_head(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise AuditError(f"--expect-head {value!r} must be SEQ:HASH (hash: 64 lower-case hex digits)")
    return int(seq), digest


@app.command()
def verify(
    trust: list[Path] = typer.Option(None, "--trust", help="Public key to trust for checkpoints "
                                     "(repeatable); default: this appliance's audit.pub."),
    expect_head: str | None = typer.Option(None, "--expect-head", help="SEQ:HASH recorded earlier."),
    file: Path | None = typer.Option(None, "--file", help="Verify a JSONL export instead of the database."),
) -> None:
    """Recompute the hash chain, check checkpoint signatures; names the first bad sequence number."""
    head = _expected_head(expect_head)
    settings = get_settings()
    trusted = [keys.load_public_key(p) for p in trust] if trust else None
    if file is not None:
        own = public_key_path(settings.audit_key_path)
        if trusted is None and not own.exists():
            raise AuditError(f"no trusted key: pass --trust PUBKEY (no {own} here)")
        report = verify_file(file, trusted or [keys.load_public_key(own)], head)
    else:
        with _log() as log, count_progress("verifying", log.count()) as advance:
            report = log.verify(trusted, head, advance)
    report.raise_if_bad()
    span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "empty"
    typer.echo(f"ok: {report.records} records ({span}), {report.checkpoints} checkpoints and "
               f"{report.witnessed} witness entries verified")
    if report.records:
        typer.echo(f"head {report.last_seq}:{report.head_hash}")
    since = f" (since {report.uncovered_since})" if report.uncovered_since else ""
    typer.echo(f"not yet covered by a signature: {report.uncovered} records{since}")


@app.command()
def export(
    fmt: str = typer.Option(..., "--format", help=f"One of: {', '.join(FORMATS)}."),
    out: Path = typer.Option(..., "--out", help="File to write (replaced atomically)."),
) -> None:
    """Stream the whole log to a file; JSONL carries the chain and verifies with `verify --file`."""
    with _log() as log, count_progress("exporting", log.count()) as advance:
        count = log.export(fmt, out, advance)
    typer.echo(f"exported {count} records to {out}")


@app.command()
def prune(
    before: str = typer.Option(..., "--before", help="Delete records older than this date/time."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Delete old records, leaving a signed anchor so the rest still verifies."""
    cutoff = _when(before, "--before")
    if not yes:
        typer.confirm(f"Delete audit records older than {before}?", abort=True)
    with _log() as log:
        result = log.prune(cutoff, Principal(name=f"cli:{getpass.getuser()}", role="admin"))
    where = f"; anchor checkpoint at seq {result.anchor_seq}" if result.anchor_seq else ""
    typer.echo(f"removed {result.removed} records{where}")
