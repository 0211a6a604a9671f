"""The `appliance` command: a thin Typer layer over the packages.

Each noun has its own module (bundle, keys, audit, policy, db, serve). `main` turns every
`ApplianceError` into one line on stderr and a non-zero exit; an unexpected exception is logged with its
traceback as JSON and reported as one line too, so an operator never faces a raw traceback.

Start-up stays short: this module and the command modules import only Typer at the top, and each command
imports what it needs when it runs; help and `--version` read no settings and load no logging. The two
commands that only hash (`_HASHING`) read only the settings they use (`appliance.config_core`) and
configure no logging, since nothing they run logs: their start-up would otherwise be a tenth of their time.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from appliance.config import Settings
    from appliance.config_core import CoreSettings

_S = TypeVar("_S")
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"appliance {version('appliance')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """gpt-oss air-gapped appliance."""  # a callback keeps Typer in group mode with one command registered


# command -> (module under appliance.cli, help of its group; None for a single command named like it)
_COMMANDS: dict[str, tuple[str, str | None]] = {
    "serve": ("serve", None),
    "demo": ("demo", None),
    "bundle": ("bundle", "Signed weight bundles: keys, signing, verification, the model store."),
    "policy": ("policy", "Policy packs: check, test, sign, reload."),
    "audit": ("audit", "The tamper-evident audit log: list, show, verify, export, prune."),
    "db": ("db", "Database schema migrations."),
    "keys": ("keys", "API keys and roles."),
    "usage": ("usage", "Tokens and requests per key, group or model, from the audit log."),
    "responses": ("responses", "Stored Responses: prune those past the retention."),
    "media": ("media", "Offline installation media: build on a connected machine, verify anywhere."),
    "tls": ("tls", "The API's TLS certificate: self-signed or a site CA's, what is in use, the TLS front."),
    "cluster": ("cluster", "A Ray cluster across hosts: the cluster CA, invites, members, revocation."),
    "backup": ("backup", None),
    "restore": ("backup", None),
}
# commands that read only the model store's and hashing's settings and log nothing (see the docstring)
_HASHING = {("bundle", "verify"), ("media", "verify")}


def _register(argv: list[str]) -> None:
    """Import only the module of the command being run (all of them for help): start-up stays short."""
    wanted = argv[0] if argv and argv[0] in _COMMANDS else None
    for name, (module, help_text) in _COMMANDS.items():
        if wanted not in (None, name):
            continue
        target = importlib.import_module(f"appliance.cli.{module}")
        if help_text is None:
            app.command(name)(getattr(target, name))
        else:
            app.add_typer(target.app, name=name, help=help_text)


def _only_help(argv: list[str]) -> bool:
    """Help or the version: nothing below reads the settings, so a bad one does not hide them."""
    return not argv or bool({"--help", "-h", "--version"} & set(argv))


def main() -> None:
    """Console entry point."""
    argv = sys.argv[1:]
    settings = None if _only_help(argv) else _prepare(argv)
    _register(argv)
    try:
        if settings is not None and (settings.data_dir / "restore-pending.json").exists():  # a restore killed
            importlib.import_module("appliance.cli.backup").finish_pending()
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
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click usage errors (typer vendors click)
            known = sys.argv[1:2] if sys.argv[1:2] and sys.argv[1] in _COMMANDS else []
            hint = f" (see: appliance {' '.join(known + ['--help'])})"
            typer.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
            sys.exit(exc.exit_code)
        typer.echo(
            f"error: internal error ({type(exc).__name__}: {exc}".splitlines()[0][:300]
            + f"); details in {_log_traceback()}",
            err=True,
        )
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)


def _prepare(argv: list[str]) -> Settings | CoreSettings:
    """What every command but help needs first: the settings, logging, and root's refusal."""
    settings: Settings | CoreSettings
    if tuple(argv[:2]) in _HASHING:
        from appliance.config_core import core_settings

        settings = get_settings_or_exit(core_settings)
    else:
        from appliance.config import get_settings
        from appliance.logs import configure_logging

        full = get_settings_or_exit(get_settings)
        configure_logging(full.log_level if full.log_level != "INFO" else "WARNING", full.log_format)
        settings = full
    _refuse_root_in_foreign_folders(settings, argv)
    return settings


def _log_traceback() -> str:
    """Append the traceback to the data folder's cli.log (stderr keeps its one line); returns where it went."""
    import traceback

    from appliance.config_core import core_settings

    try:
        path = core_settings().data_dir / "logs" / "cli.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(traceback.format_exc() + "\n")
    except OSError:
        return "(the log folder is not writable)"
    except Exception:  # noqa: BLE001 - help reads no settings; bad ones must not turn this line into a traceback
        return "(no log: the settings do not load)"
    return str(path)


def _refuse_root_in_foreign_folders(settings, argv: list[str]) -> None:
    """Root does not work in a data folder or model store another account owns: a symlink that account
    planted there would take root's writes and deletions anywhere on the host (and files root made there
    would lock the service out). One line and exit 1; `media` and help never touch them."""
    if os.geteuid() != 0 or argv[:1] == ["media"]:
        return
    import pwd

    for folder in (settings.data_dir, settings.model_store):
        try:
            owner = os.stat(folder).st_uid
        except OSError:
            continue
        if owner != 0:
            try:
                name = pwd.getpwuid(owner).pw_name
            except KeyError:
                name = str(owner)
            typer.echo(
                f"error: refusing to run as root in {folder}, which belongs to {name}: run this as "
                f"that account (e.g. sudo -u {name} ...)",
                err=True,
            )
            sys.exit(1)


def get_settings_or_exit(read: Callable[[], _S]) -> _S:
    """Settings from `read`, or one line naming the bad value."""
    from pydantic import ValidationError

    try:
        return read()
    except ValidationError as exc:
        err = exc.errors()[0]
        inner = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"][1:])  # a list's item
        typer.echo(f"error: setting APPLIANCE_{str(err['loc'][0]).upper()}{inner}: {err['msg']}", err=True)
        sys.exit(2)
    except ApplianceError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
