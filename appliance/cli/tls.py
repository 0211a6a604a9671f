"""`appliance tls ...`: the API's server certificate (a site CA's, or self-signed for pinning), what is in
use and when it expires, and the TLS front on its own (a Kubernetes sidecar in front of Serve's port)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.errors import ApplianceError

app = typer.Typer(no_args_is_help=True)


@app.command("self-signed")
def self_signed(
    name: Annotated[list[str] | None, typer.Option("--name", help="DNS name (repeat); default: this host's.")] = None,
    address: Annotated[
        list[str] | None, typer.Option("--address", help="IP address (repeat); default: this host's.")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=825)] = 825,
    force: Annotated[bool, typer.Option(help="Replace an installed certificate.")] = False,
) -> None:
    """Make and install a self-signed certificate for this host; prints the SHA-256 fingerprint to pin."""
    from appliance.tls import certs

    names, addresses = certs.host_names()
    cert, key = certs.self_signed(name or names, address or addresses, days)
    _install(cert, key, None, force, "self-signed")


@app.command()
def install(
    cert: Annotated[Path, typer.Option(help="PEM certificate (chain: leaf first) from the site's CA.")],
    key: Annotated[Path, typer.Option(help="Its PEM private key (mode 0600; may be encrypted).")],
    ca: Annotated[Path | None, typer.Option(help="CA bundle that client certificates must chain to.")] = None,
) -> None:
    """Install a site CA's certificate and key (checked to match) and optionally the client CA bundle.
    A running appliance picks the new pair up within tls_reload_seconds (rotation without restart)."""
    from appliance.config import get_settings
    from appliance.tls import certs
    from appliance.tls.listen import key_password

    cert_pem, key_pem, _ = certs.read_pair(cert, key, key_password(get_settings()))
    ca_pem = None
    if ca is not None:
        ca_pem = certs.read_pem(ca, "CA bundle")
        certs.parse_certs(ca_pem, str(ca))  # a bundle without a certificate would make every client fail
    _install(cert_pem, key_pem, ca_pem, True, "site")


def _install(cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None, force: bool, kind: str) -> None:
    from appliance.admin_actions import record_first
    from appliance.cli.actions import console_actor
    from appliance.config import get_settings
    from appliance.tls import certs
    from appliance.tls.listen import tls_dir

    settings = get_settings()
    if settings.tls_cert is not None:
        raise ApplianceError(
            f"tls_cert is set ({settings.tls_cert}): replace that file, or unset it to use the installed certificate"
        )
    target = tls_dir(settings)
    if (target / certs.CERT_NAME).exists() and not force:
        raise ApplianceError(f"a certificate is installed in {target}; pass --force to replace it")
    info = certs.describe(certs.parse_certs(cert_pem, "the certificate")[0])  # the very bytes installed
    record_first(
        console_actor(),
        "admin.tls_installed",
        lambda: certs.install(target, cert_pem, key_pem, ca_pem),
        kind=kind,
        subject=info.subject,
        fingerprint=info.fingerprint,
        not_after=info.not_after.isoformat(),
    )
    typer.echo(f"installed in {target}: {info.subject}, names {', '.join(info.names) or '-'}", err=True)
    typer.echo(f"SHA-256 fingerprint (clients pin this): {info.fingerprint}")


@app.command()
def show() -> None:
    """The certificate in use: subject, names, fingerprint, expiry and days left."""
    from appliance.config import get_settings
    from appliance.tls import certs
    from appliance.tls.listen import tls_files

    settings = get_settings()
    files = tls_files(settings)
    if files is None:
        typer.echo("no certificate: the API serves plain HTTP (on loopback only unless allow_plain_http)")
        return
    info = certs.describe(certs.load_certs(files.cert)[0])
    left = info.days_left()
    for label, value in (
        ("certificate", str(files.cert)),
        ("subject", info.subject),
        ("issuer", info.issuer),
        ("names", ", ".join(info.names) or "-"),
        ("sha256", info.fingerprint),
        ("not after", f"{info.not_after:%Y-%m-%d %H:%M:%S} UTC"),
        ("days left", str(left)),
        (
            "client certificates",
            f"{settings.tls_client_auth}" + (f" (CA {files.client_ca})" if files.client_ca else ""),
        ),
    ):
        typer.echo(f"{label:>20}: {value}")
    if left < settings.tls_expiry_warning_days:
        typer.echo(f"warning: the certificate expires in {left} days; install a new one", err=True)


@app.command()
def front(upstream: Annotated[int, typer.Option(help="Serve's HTTP port on 127.0.0.1.")] = 8000) -> None:
    """Run only the TLS front on host:port, relaying to Serve on 127.0.0.1:UPSTREAM (a sidecar)."""
    import dataclasses
    import threading

    from appliance.config import get_settings
    from appliance.tls.front import Front, FrontLimits
    from appliance.tls.listen import plan

    settings = get_settings()
    listen = dataclasses.replace(plan(settings), serve_host="127.0.0.1", serve_port=upstream)
    if listen.tls is None:
        raise ApplianceError("no certificate installed: the TLS front needs one (appliance tls install)")
    Front(
        listen,
        settings.tls_client_auth,
        settings.keys_dir,
        settings.tls_reload_seconds,
        limits=FrontLimits.from_settings(settings),
    ).start_in_thread()
    typer.echo(f"TLS front on {listen.url} -> http://127.0.0.1:{upstream} (Ctrl-C to stop)", err=True)
    threading.Event().wait()
