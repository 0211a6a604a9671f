"""The CLI starts at once: help and `--version` load no heavy package and read no settings, and a command
loads only what it uses (issue 30, part 5). Behaviour, not timings: which modules a real process imported."""

from __future__ import annotations

import sys

import pytest

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
