"""The signed-pack version floor: the highest signed pack version this appliance has put in force.

Kept in a small file under the data folder so that rollback protection survives restarts: with signed
packs required, a pack older than the floor is refused even by a freshly started gateway. Only putting a
pack in force raises the floor; `appliance policy check` reads it and never writes it.
"""

from __future__ import annotations

from pathlib import Path

from appliance.files import atomic_write
from appliance.policy.errors import PolicyError


def read_floor(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError) as exc:
        raise PolicyError(f"{path}: unreadable policy version floor; restore it or remove it deliberately") from exc


def raise_floor(path: Path | None, version: int) -> None:
    if path is not None and version > read_floor(path):
        with atomic_write(path, mode=0o644) as f:
            f.write(f"{version}\n")
