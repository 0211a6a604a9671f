"""`install.sh --no-systemd` as root runs the appliance as its own account, and `--stop` signals only the
server it started: real processes (a stand-in `appliance` script that sleeps), real signals."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.media import host
from appliance.media.account import Account, account_name, as_account
from appliance.media.manifest import MediaError

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another account needs root")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder any account may enter (pytest's own are 0700), holding a stand-in `appliance` script."""
    d = Path(tempfile.mkdtemp(prefix="detached-"))
    d.chmod(0o755)
    script = d / "appliance"
    script.write_text("#!/bin/sh\nsleep 120\n")
    script.chmod(0o755)
    yield d
    shutil.rmtree(d)


def gone(proc: subprocess.Popen | int) -> bool:
    """True once the process has exited (reaped here when it is our child)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is not None:
                return True
        elif not Path(f"/proc/{proc}").exists() or Path(f"/proc/{proc}/stat").read_text().split(") ")[1][0] == "Z":
            return True
        time.sleep(0.05)
    return False


def test_only_root_drops_and_only_to_the_account():
    assert account_name(None, 0, "root") == "appliance"  # root: the appliance's account by default
    assert account_name("svc", 0, "root") == "svc"
    assert account_name("root", 0, "root") is None  # root on purpose (install.sh warns)
    assert account_name(None, 1000, "alice") is None and account_name("alice", 1000, "alice") is None
    with pytest.raises(MediaError, match="--user bob needs root"):
        account_name("bob", 1000, "alice")


def test_a_pid_file_naming_another_process_is_not_signalled(tmp_path, shared):
    pid_file = tmp_path / "serve.pid"
    foreign = subprocess.Popen(["sleep", "120"], start_new_session=True)
    ours = host.start_detached(
        shared / "appliance", {"HOME": str(shared), "PATH": "/usr/bin:/bin"}, pid_file, tmp_path / "serve.log"
    )
    started = pid_file.read_text().split()[1]
    try:
        for forged in (f"{foreign.pid}\n", f"{foreign.pid} {started}\n", f"{ours} 1\n"):
            pid_file.write_text(forged)  # another process; its pid with our start time; ours, but reused
            assert host.stop_detached(pid_file, os.getuid()) is False
            assert not pid_file.exists()
        pid_file.write_text(f"{ours} {started}\n")
        assert host.stop_detached(pid_file, os.getuid() + 1) is False  # not the account's process
        assert foreign.poll() is None and Path(f"/proc/{ours}").exists()  # nothing was signalled

        pid_file.write_text(f"{ours} {started}\n")
        assert host.stop_detached(pid_file, os.getuid()) is True and gone(ours)
    finally:
        foreign.kill()
        foreign.wait()
        if Path(f"/proc/{ours}").exists():
            os.killpg(ours, 9)


@root_only
def test_root_starts_the_server_as_the_account(tmp_path, shared):
    nobody = pwd.getpwnam("nobody")
    account = Account("nobody", nobody.pw_uid, nobody.pw_gid)
    pid_file = tmp_path / "serve.pid"
    pid = host.start_detached(
        shared / "appliance", {"HOME": str(shared), "PATH": "/usr/bin:/bin"}, pid_file, tmp_path / "serve.log", account
    )
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        groups = next(line for line in status.splitlines() if line.startswith("Groups:")).split()[1:]
        assert set(uids) == {str(nobody.pw_uid)} and groups == []
        assert host.stop_detached(pid_file, 0) is False  # a root process is not what the file names
        pid_file.write_text(f"{pid} {host._started(pid)}\n")
        assert host.stop_detached(pid_file, nobody.pw_uid) is True and gone(pid)
    finally:
        if Path(f"/proc/{pid}").exists():
            os.killpg(pid, 9)


@root_only
def test_a_step_run_as_the_account_has_only_its_rights(tmp_path):
    nobody = pwd.getpwnam("nobody")
    victim = tmp_path / "root-only"
    victim.mkdir(mode=0o700)
    with pytest.raises(MediaError, match="Permission denied"):
        as_account(Account("nobody", nobody.pw_uid, nobody.pw_gid), lambda: (victim / "planted").write_text("x"))
    assert not (victim / "planted").exists()
    as_account(None, lambda: (victim / "planted").write_text("x"))  # no account: this process itself
    assert (victim / "planted").read_text() == "x"
