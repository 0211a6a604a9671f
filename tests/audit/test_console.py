"""The console's audit actor is the OS user the process runs as, whatever the environment says."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from appliance.audit.console import console_principal
from tests.conftest import run_cli

ME = pwd.getpwuid(os.getuid()).pw_name
FORGED = {name: "mallory" for name in ("LOGNAME", "USER", "LNAME", "USERNAME")}


def test_the_name_comes_from_the_uid_not_the_environment(monkeypatch: pytest.MonkeyPatch):
    for name, value in FORGED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert console_principal().name == f"cli:{ME}" and console_principal().role == "admin"


@pytest.mark.parametrize(("sudo_user", "shown"), [("alice", "alice"), ("a\nb)", "'a\\nb)'"), (ME, None)])
def test_sudo_user_is_recorded_beside_the_uid(monkeypatch: pytest.MonkeyPatch, sudo_user: str, shown: str | None):
    monkeypatch.setenv("SUDO_USER", sudo_user)
    expected = f"cli:{ME} (sudo by {shown})" if shown else f"cli:{ME}"
    assert console_principal().name == expected


def test_a_console_command_records_the_real_user(tmp_path: Path):
    data = tmp_path / "var"
    run_cli("db", "upgrade", data_dir=data, check=True)
    run_cli(
        "keys",
        "create",
        "--name",
        "ops",
        "--role",
        "admin",
        data_dir=data,
        check=True,
        env={**FORGED, "SUDO_USER": "alice"},
    )
    record = json.loads(run_cli("audit", "show", "1", data_dir=data, check=True).stdout)
    assert record["event"] == "admin.key_created"
    assert record["principal"]["name"] == (f"cli:{ME} (sudo by alice)" if ME != "alice" else f"cli:{ME}")
