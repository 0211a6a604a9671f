"""`appliance backup` and `appliance restore`: thin layers over appliance/backup, with progress bars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def backup(
    out: Annotated[Path, typer.Option("--out", help="Archive to write (replaced only once complete).")],
    include_private_keys: Annotated[
        bool,
        typer.Option(
            "--include-private-keys",
            help="Also archive the private keys, sealed with the passphrase of --passphrase-file.",
        ),
    ] = False,
    passphrase_file: Annotated[
        Path | None, typer.Option("--passphrase-file", help="File whose first line is the passphrase.")
    ] = None,
) -> None:
    """Archive this appliance's state in one signed file; safe while serving.

    The database (a consistent snapshot), model-store state, trust keys, policy pack and floor, audit witness
    and settings, with a manifest of hashes signed by the audit key."""
    from appliance.backup import create, sealed
    from appliance.backup.errors import BackupError
    from appliance.cli.actions import console_actor
    from appliance.cli.progress import byte_progress
    from appliance.config import get_settings

    if include_private_keys != (passphrase_file is not None):
        raise BackupError(
            "--include-private-keys and --passphrase-file go together (private keys are never archived in clear)"
        )
    passphrase = sealed.read_passphrase(passphrase_file) if passphrase_file else None
    settings = get_settings()
    console_actor().record("admin.backup", out=str(out), private_keys="included" if passphrase else "no")
    with create.staging_beside(out) as staging:
        job = create.Backup(settings, staging)
        total = job.stage(passphrase)
        with byte_progress("writing backup", total) as advance:
            manifest = job.write(out, advance)
    head = manifest.audit_head
    typer.echo(
        f"backup written to {out}: {len(manifest.members)} members, {total >> 20} MiB, audit head "
        f"{head.seq}:{head.hash}, {len(manifest.bundles)} bundles referenced by digest"
        f"{', private keys sealed' if passphrase else ''}"
    )


def restore(
    archive: Annotated[Path, typer.Argument(help="Archive made by `appliance backup`.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Restore even an archive older than the data it "
            "replaces (the newer records are removed, and kept aside).",
        ),
    ] = False,
    passphrase_file: Annotated[
        Path | None,
        typer.Option("--passphrase-file", help="Restore the archive's sealed private keys with this passphrase."),
    ] = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust", help="Audit public key that signed the archive (repeatable); default: this appliance's."
        ),
    ] = None,
) -> None:
    """Verify an archive completely, then replace this appliance's data with it, atomically.

    Stop the appliance first. Records written after the backup are removed, reported and kept provable."""
    from appliance.backup import restore as restoring
    from appliance.backup import sealed
    from appliance.cli.progress import phase_progress
    from appliance.config import get_settings
    from appliance.signing import keys

    passphrase = sealed.read_passphrase(passphrase_file) if passphrase_file else None
    trusted = [keys.load_public_key(p) for p in trust or []]
    settings = get_settings()
    with phase_progress() as progress:
        outcome = restoring.restore(
            settings, archive, force=force, passphrase=passphrase, trust=trusted, progress=progress
        )
    head = outcome.manifest.audit_head
    typer.echo(f"restored {archive} (made {outcome.manifest.created}): audit head {head.seq}:{head.hash}")
    if outcome.removed is not None:
        first, last = outcome.removed
        typer.echo(
            f"removed from the audit log: records {first}..{last} ({last - first + 1}), written after "
            f"the backup; kept in {outcome.removed_file} and provable by the witness"
        )
    for path in outcome.kept:
        typer.echo(f"replaced data kept in {path} (remove it when satisfied)")
    for bundle in outcome.missing_bundles:
        typer.echo(
            f"warning: bundle {bundle} was active at the backup but is not in the model store: "
            f"import it from its media",
            err=True,
        )
    for note in outcome.notes:
        typer.echo(f"note: {note}", err=True)


def finish_pending() -> None:
    """Complete a restore that a kill interrupted after its commit point (run before any command)."""
    from appliance.backup import replay
    from appliance.config import get_settings

    plan = replay.finish(get_settings())
    if plan is not None:
        typer.echo(f"note: completed the interrupted restore {plan['id']}", err=True)
