"""`appliance tls` and the start-up refusals, through the real console script (no Ray is started)."""

from __future__ import annotations

import ssl

import pytest

from tests.conftest import one_line_error, run_cli


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_serve_refuses_a_non_loopback_address_without_a_certificate(tmp_path, host):
    line = one_line_error(run_cli("serve", data_dir=tmp_path / "var", env={"APPLIANCE_HOST": host}))
    assert f"refusing plain HTTP on the non-loopback address {host}" in line


def test_install_checks_the_pair_and_the_key_mode_and_show_reports_it(tmp_path, site_ca):
    data = tmp_path / "var"
    cert, key = site_ca.issue(tmp_path / "site", "api.site.test", server=True, days=20)
    _, other_key = site_ca.issue(tmp_path / "site", "other", server=True)
    line = one_line_error(run_cli("tls", "install", "--cert", str(cert), "--key", str(other_key), data_dir=data))
    assert "does not belong to the certificate" in line
    key.chmod(0o644)
    assert "must be 0600" in one_line_error(
        run_cli("tls", "install", "--cert", str(cert), "--key", str(key), data_dir=data)
    )
    key.chmod(0o600)
    for endless in (
        ["--cert", "/dev/zero", "--key", str(key)],
        ["--cert", str(cert), "--key", str(key), "--ca", "/dev/zero"],
    ):  # bounded reads, nothing installed
        assert "/dev/zero: larger than" in one_line_error(run_cli("tls", "install", *endless, data_dir=data))
    assert not (data / "keys" / "tls").exists()
    done = run_cli(
        "tls",
        "install",
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--ca",
        str(site_ca.pem_path),
        data_dir=data,
        check=True,
    )
    fingerprint = done.stdout.strip().rsplit(" ", 1)[-1]
    show = run_cli("tls", "show", data_dir=data, check=True)
    assert "CN=api.site.test" in show.stdout and fingerprint in show.stdout and "days left: 19" in show.stdout
    assert "expires in 19 days" in show.stderr  # within the 30-day warning
    line = one_line_error(
        run_cli(
            "serve",
            data_dir=data,
            env={"APPLIANCE_TLS_CLIENT_AUTH": "required", "APPLIANCE_TLS_CLIENT_CA": str(tmp_path / "no.pem")},
        )
    )
    assert "client CA bundle" in line


def test_the_key_password_may_not_sit_in_the_settings_file(tmp_path):
    config = tmp_path / "appliance.yaml"
    config.write_text("tls_key_password: hunter2\n")
    line = one_line_error(run_cli("tls", "show", data_dir=tmp_path / "var", env={"APPLIANCE_CONFIG": str(config)}))
    assert "tls_key_password may not be written there" in line


def test_the_installer_pins_the_certificate_it_installed(tmp_path, site_ca):
    """The installer's own check trusts exactly the installed leaf (a site CA's here, whose names need not
    include the address it checks), and its TLS options go together."""
    import socket

    from appliance.media.host import pinned_context
    from appliance.media.install_args import parse
    from tests.integration.conftest import free_port
    from tests.tls.conftest import running_front

    cert, key = site_ca.issue(tmp_path, "api.site.test", server=True)
    with running_front(tmp_path / "keys", free_port(), cert, key) as url:
        port = int(url.rsplit(":", 1)[1])
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
            pinned_context(cert).wrap_socket(sock) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        other, _ = site_ca.issue(tmp_path / "other", "other", server=True)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, pytest.raises(ssl.SSLError):
            pinned_context(other).wrap_socket(sock)
    with pytest.raises(SystemExit):
        parse(["--tls-cert", str(cert)])
