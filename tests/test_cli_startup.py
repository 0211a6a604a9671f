"""The CLI starts at once: help and `--version` load no heavy package and read no settings, and a command
loads only what it uses (issue 30, part 5). Behaviour, not timings: which modules a real process imported."""

from __future__ import annotations

import json
import os
import sys

import pytest

from appliance.signing import keys
from tests.conftest import run_cli

# The console script's entry point, then the top-level packages it loaded, one line on stdout's end.
PROBE = (
    sys.executable,
    "-c",
    "import atexit, sys\n"
    "atexit.register(lambda: print('\\nloaded:', ' '.join(sorted({m.split('.')[0] for m in sys.modules}))))\n"
    "sys.argv[0] = 'appliance'\n"
    "from appliance.cli import main\n"
    "main()\n",
)
# (Typer itself loads pydantic to convert a command's typed parameters, so pydantic alone is not listed.)
HEAVY = {
    "ray",
    "onnxruntime",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "numpy",
    "torch",
    "pydantic_settings",
    "structlog",
    "cryptography",
    "httpx",
    "yaml",
}


def loaded(*args: str, **kwargs) -> tuple[set[str], str]:
    proc = run_cli(*args, offline=False, program=PROBE, **kwargs)
    assert proc.returncode == 0, proc.stderr
    head, _, tail = proc.stdout.rpartition("\nloaded: ")
    return set(tail.split()), head


@pytest.mark.parametrize(
    "args",
    [("--help",), ("--version",), ("bundle", "--help"), ("audit", "verify", "--help"), ("media", "verify", "--help")],
)
def test_help_and_version_load_no_heavy_package(args, tmp_path):
    modules, _ = loaded(*args, data_dir=tmp_path / "var")
    assert modules & HEAVY == set()


def test_version_prints_the_installed_version(tmp_path):
    from importlib.metadata import version

    _, out = loaded("--version", data_dir=tmp_path / "var")
    assert out.strip() == f"appliance {version('appliance')}"


def test_help_does_not_need_good_settings(tmp_path):
    """A bad setting stops every command with one line naming it, but help still shows how to fix things."""
    env = {"APPLIANCE_PORT": "eighty"}
    assert "Commands" in run_cli("--help", data_dir=tmp_path / "var", offline=False, env=env).stdout
    bad = run_cli("db", "current", data_dir=tmp_path / "var", offline=False, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: setting APPLIANCE_PORT")


@pytest.mark.parametrize("level", ["LOUD", "", "info debug"])
def test_an_unknown_log_level_is_one_line_naming_the_setting(tmp_path, level):
    bad = run_cli("db", "current", data_dir=tmp_path / "var", offline=False, env={"APPLIANCE_LOG_LEVEL": level})
    assert bad.returncode == 2 and bad.stderr.startswith("error: setting APPLIANCE_LOG_LEVEL")
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    fine = run_cli("db", "current", data_dir=tmp_path / "var", offline=False, env={"APPLIANCE_LOG_LEVEL": "debug"})
    assert fine.returncode == 0, fine.stderr


def test_a_command_loads_only_what_it_uses(tmp_path):
    """`bundle verify` hashes files: no database, web or model runtime comes with it."""
    proc = run_cli("bundle", "verify", "--active", offline=False, program=PROBE, data_dir=tmp_path / "var")
    assert proc.returncode == 0, proc.stderr
    modules = set(proc.stdout.rpartition("\nloaded: ")[2].split())
    assert modules & {"ray", "onnxruntime", "fastapi", "starlette", "sqlalchemy", "numpy", "torch", "httpx"} == set()


# What a command that only hashes must not load: all of the settings, logging, rich (a terminal's bars only).
# (pydantic comes with Typer, which converts every parameter with it.)
HASHING_NEED_NOT = {"pydantic_settings", "structlog", "rich", "yaml", "sqlalchemy", "fastapi", "ray", "onnxruntime"}


def test_bundle_verify_loads_neither_all_settings_nor_logging(tmp_path):
    from tests.bundles.conftest import make_bundle

    key = keys.generate_private_key()
    keys.write_public_key(key.public_key(), tmp_path / "k.pub")
    folder = make_bundle(tmp_path / "b", key)
    modules, out = loaded("bundle", "verify", str(folder), "--trust", str(tmp_path / "k.pub"), data_dir=tmp_path / "v")
    assert out.startswith("OK gpt-oss-test")
    assert modules & HASHING_NEED_NOT == set()


def test_media_verify_loads_neither_all_settings_nor_logging(tmp_path):
    from tests.media.conftest import sign_media

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "install.sh").write_text("#!/bin/sh\n")
    key = keys.generate_private_key()
    sign_media(tmp_path / "m", key)
    modules, out = loaded("media", "verify", str(tmp_path / "m"), data_dir=tmp_path / "v")
    assert out.startswith("OK media")
    assert modules & HASHING_NEED_NOT == set()


@pytest.mark.parametrize("command", [("bundle", "verify", "--active"), ("media", "verify", ".")])
@pytest.mark.parametrize("workers", ["0", "two", ""])
def test_the_hashing_commands_refuse_a_bad_setting_they_read(tmp_path, command, workers):
    bad = run_cli(*command, data_dir=tmp_path / "var", offline=False, env={"APPLIANCE_HASH_WORKERS": workers})
    assert bad.returncode == 2 and bad.stderr.startswith("error: setting APPLIANCE_HASH_WORKERS")
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


VALUES = {
    "hash_workers": ["3", " 4 ", "+2", "0", "-1", "x", "", "2.5", "1e3"],
    "max_signature_bytes": ["1024", "-5", "big", ""],
    "data_dir": ["/srv/appliance", "rel/dir", ""],
    "model_store": ["/models"],
    "trust_dir": ["/trust"],
}


@pytest.mark.parametrize("source", ["env", "yaml"])
@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in VALUES.items() for v in vs])
def test_core_settings_agree_with_settings(monkeypatch, tmp_path, source, name, value):
    """The hashing commands' reader gives the values `Settings` gives, and never accepts what it refuses."""
    from pydantic import ValidationError

    from appliance.config import Settings
    from appliance.config_core import SettingError, core_settings

    for var in [v for v in os.environ if v.upper().startswith("APPLIANCE_")]:
        monkeypatch.delenv(var)
    if source == "env":
        monkeypatch.setenv(f"APPLIANCE_{name.upper()}", value)
    else:
        (tmp_path / "c.yaml").write_text(f"{name}: {json.dumps(value)}\n")
        monkeypatch.setenv("APPLIANCE_CONFIG", str(tmp_path / "c.yaml"))
    try:
        full = Settings()
    except ValidationError:
        with pytest.raises(SettingError, match=f"setting APPLIANCE_{name.upper()}"):
            core_settings()
        return
    try:
        core = core_settings()
    except SettingError:
        assert value.strip() not in ("", "0") or name != "hash_workers"  # stricter only where pydantic is lax
        return
    for field in ("data_dir", "model_store", "trust_dir", "hash_workers", "max_signature_bytes"):
        assert getattr(core, field) == getattr(full, field), field
