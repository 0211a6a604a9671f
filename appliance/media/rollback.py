"""`install.sh --rollback`: the previous version again, with its database as it was before the upgrade.

The audit records written since the upgrade are kept: `appliance.audit.carry` copies them into the restored
database, where they continue its chain. Standard library only (the installer runs before any venv exists).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from appliance.audit.carry import carry_over
from appliance.media.manifest import MediaError
from appliance.media.target import Target, say, symlink
from appliance.sqlitecopy import sqlite_backup


def rollback(target: Target) -> str:
    """Stop the running version, restore the data and switch `current` back; returns the version now current
    (recording it in the state file and starting it are the installer's)."""
    previous = target.prefix / "previous"
    if not previous.is_symlink():
        raise MediaError(f"there is no previous version under {target.prefix} to roll back to")
    version, current = os.readlink(previous).rsplit("/", 1)[-1], target.installed_version()
    snapshot = target.data / "snapshots" / f"{version}.db"
    if not snapshot.exists():
        raise MediaError(f"no database snapshot of {version} in {snapshot.parent}")
    say(f"rolling back {current} -> {version}")
    target.stop_running()
    target.as_account(lambda: restore_data(target.data, snapshot))
    symlink(target.prefix / "current", Path("releases") / version)
    previous.unlink()
    return version


def restore_data(data: Path, snapshot: Path) -> None:
    db = data / "appliance.db"
    tmp = db.with_name("appliance.db.rollback")
    sqlite_backup(snapshot, tmp)
    carried = carry_over(db, tmp)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, db)
    if (data / "policies.previous").exists():
        shutil.rmtree(data / "policies", ignore_errors=True)
        os.rename(data / "policies.previous", data / "policies")
    say(f"database restored to its state before the upgrade; {carried} audit records since carried over")
