"""The `appliance` command: a thin Typer layer over the packages.

Each noun has its own module (bundle, keys, audit, policy, db, serve). `main` turns every
`ApplianceError` into one line on stderr and a non-zero exit; an unexpected exception is logged with its
traceback as JSON and reported as one line too, so an operator never faces a raw traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from appliance.config import get_settings
from appliance.errors import ApplianceError
from appliance.logs import configure_logging

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="gpt-oss air-gapped appliance.")

_SUBCOMMANDS = {
    "bundle": "Signed weight bundles: keys, signing, verification, the model store.",
    "policy": "Policy packs: check, test, sign, reload.",
    "audit": "The tamper-evident audit log: list, show, verify, export, prune.",
    "db": "Database schema migrations.",
    "keys": "API keys and roles.",
}


def _register() -> None:
    """Import each noun's module only now, so `--help` and errors in settings stay fast."""
    for name, help_text in _SUBCOMMANDS.items():
        app.add_typer(importlib.import_module(f"appliance.cli.{name}").app, name=name, help=help_text)
    app.command("serve")(importlib.import_module("appliance.cli.serve").serve)
    app.command("demo")(importlib.import_module("appliance.cli.quickstart").demo)


def main() -> None:
    """Console entry point."""
    settings = get_settings_or_exit()
    configure_logging(settings.log_level if settings.log_level != "INFO" else "WARNING", settings.log_format)
    _register()
    try:
        code = app(standalone_mode=False)  # a typer.Exit comes back as its code in this mode
    except ApplianceError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        import structlog

        structlog.get_logger().exception("internal error")
        typer.echo(f"error: internal error ({type(exc).__name__}: {exc})".splitlines()[0], err=True)
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)


def get_settings_or_exit():
    """Settings, or one line naming the bad value."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        typer.echo(f"error: setting APPLIANCE_{str(err['loc'][0]).upper()}: {err['msg']}", err=True)
        sys.exit(2)
    except ApplianceError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
