"""The API over TLS through the front, against the real Serve app: the openai SDK trusting the site CA and
pinning a self-signed certificate, plain HTTP refused, mTLS required, the client certificate's subject in
the audit record, a role that needs a certificate, the peer header unforgeable, hang-ups and rotation.

One Serve app for the module (the session's Ray); the gateway runs with `tls_client_auth: required`, so
only requests that came through a front are served. Each front runs in this process on its own port.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from pathlib import Path

import httpx
import openai
import pytest

from appliance.tls import certs
from tests.conftest import run_cli
from tests.integration.conftest import deployed
from tests.tls.conftest import make_ca, running_front

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def front(served, cert: Path, key: Path, *, client_auth: str = "off", ca: Path | None = None):
    return running_front(served.settings.keys_dir, served.serve_port, cert, key, client_auth=client_auth, ca=ca)


@pytest.fixture(scope="module")
def served(ray_session, module_dir, signed_tiny_bundle, publisher, site_ca):
    data = module_dir / "var"
    with deployed(
        data,
        signed_tiny_bundle,
        publisher[1],
        ray_session,
        tls_client_auth="required",
        tls_roles_require_client_cert=["admin"],
    ) as a:
        a.serve_port = ray_session
        # the site CA's server certificate, installed where the gateway looks (the expiry gauge reads it)
        cert, key = site_ca.issue(data.parent / "server", "localhost", server=True, days=10)
        certs.install(data / "keys" / "tls", cert.read_bytes(), key.read_bytes(), site_ca.pem_path.read_bytes())
        a.server_cert = (data / "keys" / "tls" / certs.CERT_NAME, data / "keys" / "tls" / certs.KEY_NAME)
        a.client_cert = site_ca.issue(data.parent / "clients", "app1.site.test", server=False)
        yield a


@pytest.fixture(scope="module")
def mtls_url(served, site_ca):
    with front(served, *served.server_cert, client_auth="required", ca=site_ca.pem_path) as url:
        yield url


def _records(served, headers):
    """The audit records of the response with these headers (Serve's proxy repeats the x-request-id)."""
    return served.services.audit.request_records(headers["x-request-id"].split(",")[0].strip())


def test_openai_sdk_over_https_with_the_site_ca_records_the_client_subject(served, site_ca, mtls_url):
    http = httpx.Client(verify=site_ca.client_context(served.client_cert), timeout=60)
    client = openai.OpenAI(base_url=mtls_url + "/v1", api_key=served.tokens["user"], http_client=http, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(**CHAT)
    assert raw.parse().usage.completion_tokens == 3
    events = {r.event: r for r in _records(served, raw.headers)}
    assert set(events) == {"request", "completion"}
    for record in events.values():
        assert record.principal.cert_subject == "O=Test Site,CN=app1.site.test"
        assert record.principal.key_id and record.source == "127.0.0.1"
    chunks = list(client.chat.completions.create(**CHAT, stream=True))  # SSE through the front
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content is not None) >= 1
    assert served.services.audit.verify().ok


def test_mtls_required_refuses_clients_without_a_site_certificate(served, site_ca, tmp_path, mtls_url):
    with pytest.raises((httpx.TransportError, ssl.SSLError)):
        httpx.get(
            mtls_url + "/v1/models",
            verify=site_ca.client_context(),
            timeout=10,
            headers={"Authorization": f"Bearer {served.tokens['user']}"},
        )
    other = make_ca(tmp_path / "other", "Another CA")  # a certificate the site CA did not issue
    stranger = other.issue(tmp_path / "stranger", "stranger", server=False)
    ctx = site_ca.client_context()
    ctx.load_cert_chain(*map(str, stranger))
    with pytest.raises((httpx.TransportError, ssl.SSLError)):
        httpx.get(mtls_url + "/v1/models", verify=ctx, timeout=10)


def test_plain_http_is_refused_on_the_tls_port(mtls_url):
    with pytest.raises(httpx.TransportError):
        httpx.get(mtls_url.replace("https:", "http:") + "/healthz", timeout=10)


def test_the_peer_header_cannot_be_forged_on_the_loopback_port(served, site_ca, mtls_url):
    """A local process talking to Serve directly is refused (mTLS required), whatever header it sends; a
    client of the front cannot smuggle its own copy through either."""
    forged = {
        "x-appliance-peer": "v1;10.9.9.9;CN%3Dadmin;" + "0" * 64,
        "Authorization": f"Bearer {served.tokens['admin']}",
    }
    r = httpx.get(f"http://127.0.0.1:{served.serve_port}/admin/keys", headers=forged, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "client_certificate_required"
    with httpx.Client(verify=site_ca.client_context(served.client_cert), timeout=30) as c:
        r = c.get(mtls_url + "/v1/models", headers={**forged, "Authorization": f"Bearer {served.tokens['user']}"})
    assert r.status_code == 200
    subjects = {rec.principal.cert_subject for rec in _records(served, r.headers)}
    assert subjects <= {"O=Test Site,CN=app1.site.test"}


def test_a_role_may_require_a_client_certificate(served, tmp_path, mtls_url, site_ca):
    """Admins must present one (tls_roles_require_client_cert): through a front without mTLS they are
    refused and audited, with one they pass; the expiry gauge shows the 10-day server certificate."""
    admin = {"Authorization": f"Bearer {served.tokens['admin']}"}
    with front(served, *served.server_cert) as plain_tls:
        r = httpx.get(plain_tls + "/admin/keys", headers=admin, verify=site_ca.client_context(), timeout=30)
        assert r.status_code == 403 and r.json()["error"]["code"] == "client_certificate_required"
        assert [rec.event for rec in _records(served, r.headers)] == ["denial"]
        assert (
            httpx.get(
                plain_tls + "/v1/models",
                headers={"Authorization": f"Bearer {served.tokens['user']}"},
                verify=site_ca.client_context(),
                timeout=30,
            ).status_code
            == 200
        )
    with httpx.Client(verify=site_ca.client_context(served.client_cert), timeout=30, headers=admin) as c:
        assert c.get(mtls_url + "/admin/keys").status_code == 200
        metrics = c.get(mtls_url + "/metrics").text
    gauge = next(line for line in metrics.splitlines() if line.startswith("appliance_tls_certificate_days_left"))
    assert 8 <= float(gauge.split()[-1]) <= 10


def test_a_pinned_self_signed_certificate_and_its_rotation(served, tmp_path):
    """`appliance tls self-signed` prints the fingerprint a client pins; the openai SDK trusts exactly that
    certificate. A new pair installed under a running front is served to new connections."""
    home = tmp_path / "var"
    out = run_cli(
        "tls", "self-signed", "--name", "localhost", "--address", "127.0.0.1", data_dir=home, check=True, offline=False
    ).stdout
    printed = out.strip().rsplit(" ", 1)[-1]
    cert, key = home / "keys" / "tls" / certs.CERT_NAME, home / "keys" / "tls" / certs.KEY_NAME
    assert key.stat().st_mode & 0o777 == 0o600
    with front(served, cert, key) as url:
        pinned = ssl.create_default_context(cadata=cert.read_text())
        assert _served_fingerprint(url, pinned) == printed
        client = openai.OpenAI(
            base_url=url + "/v1",
            api_key=served.tokens["user"],
            max_retries=0,
            http_client=httpx.Client(verify=pinned, timeout=60),
        )
        assert client.chat.completions.create(**CHAT).usage.completion_tokens == 3
        with pytest.raises(openai.APIConnectionError):  # the system trust store does not know it
            openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).models.list()

        new = (
            run_cli("tls", "self-signed", "--name", "localhost", "--force", data_dir=home, check=True, offline=False)
            .stdout.strip()
            .rsplit(" ", 1)[-1]
        )
        assert new != printed
        deadline = time.monotonic() + 30
        while _served_fingerprint(url, _trust_any()) != new and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _served_fingerprint(url, _trust_any()) == new


def _trust_any() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def _served_fingerprint(url: str, ctx: ssl.SSLContext) -> str:
    import socket

    host, port = url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
