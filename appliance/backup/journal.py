"""Switching to restored data atomically: a journal written once everything is staged, then replayed.

A restore replaces several things (the database, trust folder, policy pack, model-store state, witness),
and no file system renames several paths in one step. So everything is first staged beside its target
(same file system: each switch is one `rename`), then the plan is written whole (`restore-pending.json` in
the data folder, fsynced): that write is the commit point. Before it, a kill leaves the old data in place
(only `.restore-*` debris beside it). After it, every step is idempotent and the plan is replayed to the
end by the restore itself or, if that was killed, by the next `appliance` command of any kind, before it
touches anything: the data is then the new data, complete. What a step replaces is kept beside it
(`*.before-restore-ID`) until the operator removes it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.backup.errors import BackupError
from appliance.files import atomic_write, fsync_dir

PENDING = "restore-pending.json"
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


# Called at each named point of a restore. Only tests set it (tests/backup/crashing.py kills the process
# there); nothing in the environment can, so no setting or variable can kill a production restore.
crash_hook: Callable[[str], None] | None = None


def crash_point(name: str) -> None:
    if crash_hook is not None:
        crash_hook(name)


def replace_step(staged: Path, target: Path, restore_id: str, *, sqlite: bool = False) -> dict[str, Any]:
    return {
        "op": "replace",
        "staged": str(staged),
        "target": str(target),
        "previous": str(previous_path(target, restore_id)),
        "sqlite": sqlite,
    }


def previous_path(target: Path, restore_id: str) -> Path:
    return target.with_name(f"{target.name}.before-restore-{restore_id}")


def commit(data_dir: Path, plan: dict[str, Any]) -> None:
    """The commit point: from here on the restore completes even if this process dies."""
    with atomic_write(data_dir / PENDING) as f:
        json.dump(plan, f, indent=1)
    fsync_dir(data_dir)


def pending(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((data_dir / PENDING).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise BackupError(f"{data_dir / PENDING} is corrupt: finish or undo that restore by hand") from exc


def done(data_dir: Path, plan: dict[str, Any]) -> None:
    """Forget a finished plan and its staging folder."""
    shutil.rmtree(plan["staging"], ignore_errors=True)
    (data_dir / PENDING).unlink(missing_ok=True)
    fsync_dir(data_dir)


def replace(step: dict[str, Any]) -> None:
    """Move the target aside and the staged copy in; safe to repeat after a kill at any point."""
    staged, target, previous = Path(step["staged"]), Path(step["target"]), Path(step["previous"])
    if not staged.exists() and not staged.is_symlink():
        return  # already switched
    # SQLite: the old database's -wal must never sit beside the new file, so companions go first
    for suffix in _SQLITE_COMPANIONS if step.get("sqlite") else ():
        companion = Path(f"{target}{suffix}")
        if companion.exists():
            os.replace(companion, f"{previous}{suffix}")
    if target.exists() or target.is_symlink():
        os.rename(target, previous)
    os.rename(staged, target)
    fsync_dir(target.parent)
