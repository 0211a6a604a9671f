"""The admin page's session is bound to what it was signed in with: the client certificate (issue 22,
defect 6) and its own CSRF token (defect 9). Over HTTP in-process; the browser tests are tests/ui."""

from __future__ import annotations

import pytest

from appliance import apikeys
from appliance.api.ui.security import CSRF_COOKIE, SESSION_COOKIE
from appliance.audit import AuditFilter
from tests.api.helpers import PAGE, browser, peer, sign_in, token_of
from tests.appliance import make_appliance

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def appliance(module_dir, signed_tiny_bundle, publisher):
    a = make_appliance(module_dir / "var", signed_tiny_bundle, publisher[1], tls_roles_require_client_cert=["admin"])
    yield a
    a.services.backend.close()
    a.services.close()


async def test_a_session_is_refused_and_ended_without_its_sign_in_certificate(appliance):
    async with browser(appliance) as c:
        await sign_in(appliance, c, "admin", "CN=admin1,O=Site")
        assert (await c.get(f"{PAGE}/audit", headers=peer(appliance, "CN=admin1,O=Site"))).status_code == 200
        stolen = await c.get(f"{PAGE}/audit")  # the cookie alone, from a connection without the certificate
        assert stolen.status_code == 403 and "another client certificate" in stolen.text
        again = await c.get(f"{PAGE}/audit", headers=peer(appliance, "CN=admin1,O=Site"))
        assert again.status_code == 303 and again.headers["location"].endswith("/signin")  # ended
    record = appliance.services.audit.query(AuditFilter(event="denial"), limit=1).records[0]
    assert record.error_code == "session_certificate_mismatch" and record.principal.role == "admin"


async def test_a_session_is_refused_and_ended_with_another_certificate(appliance):
    async with browser(appliance) as c:
        await sign_in(appliance, c, "admin", "CN=admin1,O=Site")
        assert (await c.get(f"{PAGE}/keys", headers=peer(appliance, "CN=mallory,O=Site"))).status_code == 403
        assert (await c.get(f"{PAGE}/keys", headers=peer(appliance, "CN=admin1,O=Site"))).status_code == 303


async def test_a_session_signed_in_without_a_certificate_keeps_working_without_one(appliance):
    async with browser(appliance) as c:
        await sign_in(appliance, c, "auditor")  # not a role that must present one
        assert (await c.get(f"{PAGE}/audit")).status_code == 200
        assert (await c.get(f"{PAGE}/audit", headers=peer(appliance, "CN=other"))).status_code == 403


def keys_named(appliance, name: str) -> list:
    with appliance.services.sessions() as session:
        return [k for k in apikeys.list_keys(session) if k.name == name]


async def test_an_anonymous_csrf_pair_with_an_admin_session_creates_nothing(appliance):
    admin = peer(appliance, "CN=admin1,O=Site")
    async with browser(appliance) as c, browser(appliance) as anonymous:
        await sign_in(appliance, c, "admin", "CN=admin1,O=Site")
        anon_token = await token_of(anonymous, "/signin")  # what anyone gets from the sign-in page
        anon_cookie = anonymous.cookies[CSRF_COOKIE]
        forged = {"cookie": f"{SESSION_COOKIE}={c.cookies[SESSION_COOKIE]}; {CSRF_COOKIE}={anon_cookie}", **admin}
        async with browser(appliance) as attacker:
            response = await attacker.post(
                f"{PAGE}/keys", headers=forged, data={"csrf_token": anon_token, "name": "planted", "role": "admin"}
            )
        assert response.status_code == 403 and "CSRF" in response.text
        assert keys_named(appliance, "planted") == []
        own = await token_of(c, "/keys", admin)  # the session's own token still works
        response = await c.post(f"{PAGE}/keys", headers=admin, data={"csrf_token": own, "name": "made", "role": "user"})
        assert response.status_code == 201 and len(keys_named(appliance, "made")) == 1


async def test_sign_out_clears_both_cookies(appliance):
    async with browser(appliance) as c:
        await sign_in(appliance, c, "auditor")
        token = await token_of(c, "/audit")
        response = await c.post(f"{PAGE}/signout", data={"csrf_token": token})
        assert response.status_code == 303
        cleared = [h for h in response.headers.get_list("set-cookie") if "Max-Age=0" in h or "expires=" in h.lower()]
        assert {h.split("=", 1)[0] for h in cleared} >= {SESSION_COOKIE, CSRF_COOKIE}
        assert all(f"Path={PAGE}" in h for h in cleared)
