"""`appliance audit`: read, verify, export and prune the audit log."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from appliance.audit.errors import AuditError
from appliance.audit.formats import FORMATS
from appliance.cli import forward as forward_cli

if TYPE_CHECKING:
    from appliance.audit import AuditLog

app = typer.Typer(no_args_is_help=True)
app.add_typer(
    forward_cli.app, name="forward", help="Forward every record and checkpoint to the site's syslog collectors (SIEM)."
)


def _log() -> AuditLog:
    from appliance.audit import AuditLog
    from appliance.config import get_settings

    return AuditLog.from_settings(get_settings())


def _read(log: AuditLog, event: str, **detail: str) -> int:
    """Record a read of the log by the operator at the console (audit/readers.py); returns its seq. A command
    reads once, so nothing is aggregated here."""
    from appliance.audit import AuditEvent
    from appliance.audit.console import console_principal

    return log.append(AuditEvent(event=event, principal=console_principal(), route="cli", detail=detail)).seq


def _when(value: str | None, option: str) -> datetime | None:
    """An ISO date or time from the command line; without a zone it is UTC."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise AuditError(
            f"{option} {value!r} is not an ISO date or time (e.g. 2026-11-28 or 2026-11-28T14:00:00Z)"
        ) from exc


@app.command("list")
def list_records(
    since: Annotated[str | None, typer.Option(help="From this time (ISO, UTC unless a zone is given).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time.")] = None,
    principal: Annotated[str | None, typer.Option(help="API key id or principal name.")] = None,
    event: Annotated[str | None, typer.Option(help="Event type, e.g. request, denial, admin.key_created.")] = None,
    action: Annotated[str | None, typer.Option(help="Policy action, e.g. allow, redact, deny.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name.")] = None,
    limit: Annotated[int, typer.Option(help="Records per page.")] = 50,
    cursor: Annotated[int | None, typer.Option(help="Show records before this sequence number.")] = None,
) -> None:
    """Records newest first, as a table."""
    from rich.table import Table

    from appliance.audit import AuditFilter
    from appliance.audit.readers import filter_text
    from appliance.cli.tables import print_table

    filters = AuditFilter(_when(since, "--since"), _when(until, "--until"), principal, event, action, model)
    with _log() as log:
        page = log.query(filters, cursor, limit)
        _read(log, "audit.searched", filter=filter_text(filters), count=str(len(page.records)))
    table = Table("seq", "time (UTC)", "event", "request", "principal", "route", "model", "action", "status", "ms")
    for r in page.records:
        who = r.principal.name or r.principal.key_id or "-"
        table.add_row(
            str(r.seq),
            r.ts[:19].replace("T", " "),
            r.event,
            r.request_id or "-",
            who,
            r.route or "-",
            r.model or "-",
            r.decision.action or "-",
            str(r.status or "-"),
            str(r.latency_ms or "-"),
        )
    print_table(table)
    if page.next_cursor is not None:
        typer.echo(f"more: --cursor {page.next_cursor}")


@app.command()
def show(seq: Annotated[int, typer.Argument(help="Sequence number.")]) -> None:
    """One record in full, as JSON."""
    with _log() as log:
        record = log.get(seq)
        _read(log, "audit.viewed", filter="{}", seq=str(seq), count=str(int(record is not None)))
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
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust", help="Public key to trust for checkpoints (repeatable); default: this appliance's audit.pub."
        ),
    ] = None,
    expect_head: Annotated[str | None, typer.Option("--expect-head", help="SEQ:HASH recorded earlier.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Verify a JSONL export instead of the database.")] = None,
) -> None:
    """Recompute the hash chain, check checkpoint signatures; names the first bad sequence number."""
    from appliance.audit.export import verify_file
    from appliance.audit.readers import verified_detail
    from appliance.audit.signer import public_key_path
    from appliance.cli.progress import count_progress
    from appliance.config import get_settings
    from appliance.signing import keys

    head = _expected_head(expect_head)
    settings = get_settings()
    trusted = [keys.load_public_key(p) for p in trust] if trust else None
    removed = []
    if file is not None:
        own = public_key_path(settings.audit_key_path)
        if trusted is None and not own.exists():
            raise AuditError(f"no trusted key: pass --trust PUBKEY (no {own} here)")
        report = verify_file(file, trusted or [keys.load_public_key(own)], head)
    else:
        with _log() as log, count_progress("verifying", log.count()) as advance:
            report = log.verify(trusted, head, advance, workers=settings.hash_workers)
            removed = log.witness.read().superseded
            if report.ok:  # a failing log is not written to from here: its one line of error is the record
                _read(log, "audit.verified", **verified_detail(report))
    report.raise_if_bad()
    span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "empty"
    typer.echo(
        f"ok: {report.records} records ({span}), {report.checkpoints} checkpoints and "
        f"{report.witnessed} witness entries verified"
    )
    if report.records:
        typer.echo(f"head {report.last_seq}:{report.head_hash}")
    since = f" (since {report.uncovered_since})" if report.uncovered_since else ""
    typer.echo(f"not yet covered by a signature: {report.uncovered} records{since}")
    if file is None and removed:
        typer.echo(
            f"{len(removed)} witness entries name records a restore removed (seq "
            f"{min(cp.seq for cp in removed)}..{max(cp.seq for cp in removed)}): kept in the witness, not "
            f"held against the database"
        )


@app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")],
    out: Annotated[Path, typer.Option("--out", help="File to write (replaced atomically).")],
) -> None:
    """Stream the whole log to a file; JSONL carries the chain and verifies with `verify --file`. The export
    is recorded first (`audit.exported`), so the file holds its own record."""
    from appliance.cli.progress import count_progress

    with _log() as log:
        if fmt not in FORMATS:  # refused before it is recorded
            raise AuditError(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})")
        own = _read(log, "audit.exported", filter="{}", count=str(log.count()), format=fmt, file=str(out))
        with count_progress("exporting", log.count()) as advance:
            count = log.export(fmt, out, advance, also=own)
    typer.echo(f"exported {count} records to {out}")


@app.command()
def prune(
    before: Annotated[
        str,
        typer.Option(
            "--before", help="Delete records older than this date/time (at least audit_min_retention_days ago)."
        ),
    ],
    no_export: Annotated[bool, typer.Option("--no-export", help="Do not export the records first.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete old records, leaving a signed anchor so the rest still verifies; they are first exported to a
    JSONL file under the data folder (audit-exports/) that `verify --file` checks."""
    from appliance.audit.console import console_principal
    from appliance.config import get_settings

    cutoff = _when(before, "--before")
    assert cutoff is not None  # --before is required
    settings = get_settings()
    if not yes:
        typer.confirm(f"Delete audit records older than {before}?", abort=True)
    with _log() as log:
        result = log.prune(
            cutoff,
            console_principal(),
            min_retention_days=settings.audit_min_retention_days,
            forwarded_to=[c.name for c in settings.audit_forward],
            export_dir=None if no_export else settings.data_dir / "audit-exports",
        )
    if result.export is not None:
        typer.echo(f"exported them first to {result.export}")
    where = f"; anchor checkpoint at seq {result.anchor_seq}" if result.anchor_seq else ""
    typer.echo(f"removed {result.removed} records{where}")
