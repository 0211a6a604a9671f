"""The admin page's cookies are `Secure` over TLS, whatever forwarding headers the client sends: the real
gateway app served by uvicorn (proxy headers believed from loopback, as Serve's proxy does) behind the real
TLS front, which states the scheme itself. No Ray: the front and the app are what is tested."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from appliance.tls import certs
from tests.appliance import make_appliance
from tests.tls.conftest import running_front
from tests.ui.server import LiveServer

SPOOFED = {"x-forwarded-proto": "http", "forwarded": "proto=http", "x-forwarded-for": "10.9.9.9"}


@pytest.mark.parametrize("cert_in_keys_dir", [False, True], ids=["front-states-https", "app-has-a-cert"])
def test_cookies_over_tls_are_secure(tmp_path, signed_tiny_bundle, publisher, cert_in_keys_dir):
    """Either defence alone holds: the front's own `x-forwarded-proto: https` (a certificate the app does
    not see, as with the Kubernetes sidecar), and the app's rule that a certificate means TLS."""
    a = make_appliance(tmp_path / "var", signed_tiny_bundle, publisher[1])
    cert, key = certs.self_signed(["localhost"], ["127.0.0.1"])
    where = a.settings.keys_dir / "tls" if cert_in_keys_dir else tmp_path / "tls"
    certs.install(where, cert, key)
    pem: Path = where / certs.CERT_NAME
    try:
        with (
            LiveServer(a.app) as server,
            running_front(a.settings.keys_dir, server.port, pem, where / certs.KEY_NAME) as url,
        ):
            with httpx.Client(verify=str(pem), timeout=60) as c:
                r = c.get(url + "/admin/ui/signin", headers=SPOOFED)
        assert r.status_code == 200
        cookies = r.headers.get_list("set-cookie")
        assert cookies and all("; secure" in c.lower() for c in cookies), cookies
    finally:
        a.services.backend.close()
        a.services.close()
