"""The account the appliance runs as, and how the root installer acts as it.

The appliance's user owns the data folder (database, model store, keys, staging, snapshots), so it can
plant symlinks there. Root following one would delete or write wherever it points: the installer, when it
is root, does everything that touches the data folder as that account instead (the `appliance` commands
as a child process with its uid, in-process steps in a forked child that dropped to it), and starts a
detached server as it too. Standard library only (the installer runs before any venv exists).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.media.manifest import MediaError

USER = "appliance"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int

    def popen_args(self) -> dict:
        """subprocess arguments that start a child as this account, without root's groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def account_name(option: str | None, euid: int, invoker: str) -> str | None:
    """Whom to drop to: None when there is nobody to drop to (not root: everything runs as the invoker)
    or when root was asked for by name; `option` (default `appliance`) when root. A non-root installer
    cannot become another user, so asking it to is refused."""
    if euid != 0:
        if option not in (None, invoker):
            raise MediaError(f"--user {option} needs root (this installer runs as {invoker})")
        return None
    name = option or USER
    return None if name == "root" else name


def lookup(name: str) -> Account | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(name, entry.pw_uid, entry.pw_gid)


def ensure(name: str, data: Path) -> Account:
    """The account (a system user made when missing) owning `data` (made when missing). `chown -R` changes
    symlinks themselves, never what they point at."""
    found = lookup(name)
    if found is None:
        run(["useradd", "--system", "--home-dir", str(data), "--shell", "/usr/sbin/nologin", name])
        found = lookup(name)
        if found is None:
            raise MediaError(f"useradd did not make the account {name}")
    data.mkdir(parents=True, exist_ok=True)
    run(["chown", "-R", "--no-dereference", f"{found.uid}:{found.gid}", str(data)])
    return found


def as_account(account: Account | None, action: Callable[[], None]) -> None:
    """`action` in a forked child that dropped to `account` (at once, in this process, without one): what it
    does in the account's folders, it does with the account's rights only. Its ApplianceError comes back
    as a MediaError with the same message; anything else as a MediaError naming it."""
    if account is None:
        action()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(read)
        code, message = 0, ""
        try:
            os.setgroups([])
            os.setgid(account.gid)
            os.setuid(account.uid)
            action()
        except ApplianceError as exc:
            code, message = 1, str(exc)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
            code, message = 1, f"{type(exc).__name__}: {exc}"
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(write, message.encode()[:4096])
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise MediaError(message or f"a step run as {account.name} ended with status {status}")


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MediaError(f"{' '.join(argv[:2])} failed: {(proc.stderr or proc.stdout).strip()[:200]}")
