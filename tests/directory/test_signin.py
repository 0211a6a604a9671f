"""The admin page signs in with the site's directory (a real slapd): group -> role, the directory identity on
the session and its records, and every way a sign-in should fail."""

from __future__ import annotations

import pytest

from appliance.audit import AuditFilter
from tests.api.helpers import PAGE, browser, token_of
from tests.appliance import make_appliance
from tests.directory.conftest import group_dn, password, user_dn


def _appliance(folder, bundle, publisher, **settings):
    return make_appliance(folder / "var", bundle, publisher[1], **settings)


@pytest.fixture(scope="module", params=["ldaps", "starttls"])
def appliance(request, slapd, module_dir, signed_tiny_bundle, publisher):
    url = slapd.ldaps if request.param == "ldaps" else slapd.ldap
    a = _appliance(module_dir / request.param, signed_tiny_bundle, publisher, **slapd.settings(url))
    yield a
    a.services.backend.close()
    a.services.close()


async def _sign_in(appliance, c, username: str, secret: str):
    token = await token_of(c, "/signin")
    return await c.post(f"{PAGE}/signin", data={"username": username, "password": secret, "csrf_token": token})


def _last(appliance, event: str):
    return appliance.services.audit.query(AuditFilter(event=event), limit=1).records[0]


@pytest.mark.parametrize(
    ("user", "role", "group"),
    [("alice", "auditor", "auditors"), ("bob", "admin", "admins"), ("o'brien", "auditor", "auditors")],
)
async def test_a_group_grants_the_role_and_records_carry_the_directory_identity(appliance, user, role, group):
    async with browser(appliance) as c:
        response = await _sign_in(appliance, c, user, password(user))
        assert response.status_code == 303, response.text
        signin = _last(appliance, "session.signin")
        assert signin.principal.name == user_dn(user) and signin.principal.role == role
        assert signin.detail == {"directory_dn": user_dn(user), "group": group_dn(group)}
        assert (await c.get(f"{PAGE}/audit")).status_code == 200
        keys = await c.get(f"{PAGE}/keys")
        assert keys.status_code == (200 if role == "admin" else 403)
        token = await token_of(c, "/audit")
        assert (await c.post(f"{PAGE}/signout", data={"csrf_token": token})).status_code == 303
        assert _last(appliance, "session.signout").principal.key_id == signin.principal.key_id


@pytest.mark.parametrize(
    ("user", "secret"),
    [
        ("alice", "wrong"),
        ("locked", password("locked")),
        ("carol", password("carol")),
        ("alice", ""),
        ("nobody", "x"),
        ("*", "x"),
        ("alice,ou=people", password("alice")),
        ("alice)(uid=*", "x"),
        ("\u0430lice", password("alice")),  # a Cyrillic а: another name
    ],
)
async def test_wrong_locked_unmapped_empty_or_injected_credentials_are_refused(appliance, user, secret):
    async with browser(appliance) as c:
        response = await _sign_in(appliance, c, user, secret)
        assert response.status_code == 401, response.text
        assert "session" not in " ".join(c.cookies.keys())
        failure = _last(appliance, "auth_failure")
        assert failure.error_code == "invalid_directory_credentials" and failure.detail == {"user": user.strip()}


async def test_an_unreachable_or_untrusted_directory_is_a_clear_503(slapd, signed_tiny_bundle, publisher, tmp_path):
    from tests.tls.conftest import make_ca

    other_ca = make_ca(tmp_path / "other").pem_path  # the directory's certificate is not signed by it
    for i, overrides in enumerate(({"ldap_url": "ldaps://127.0.0.1:9"}, {"ldap_ca_file": other_ca})):
        a = _appliance(tmp_path / str(i), signed_tiny_bundle, publisher, **{**slapd.settings(), **overrides})
        try:
            async with browser(a) as c:
                response = await _sign_in(a, c, "alice", password("alice"))
            assert response.status_code == 503 and "directory cannot be reached" in response.text
            assert _last(a, "auth_failure").error_code == "directory_unavailable"
        finally:
            a.services.backend.close()
            a.services.close()


async def test_key_sign_in_can_be_turned_off(slapd, signed_tiny_bundle, publisher, tmp_path):
    a = _appliance(tmp_path, signed_tiny_bundle, publisher, **slapd.settings(ui_key_signin=False))
    try:
        async with browser(a) as c:
            page = await c.get(f"{PAGE}/signin")
            assert 'name="username"' in page.text and 'name="key"' not in page.text
            token = await token_of(c, "/signin")
            refused = await c.post(f"{PAGE}/signin", data={"key": a.tokens["admin"], "csrf_token": token})
            assert refused.status_code == 403 and "turned off" in refused.text
            assert (await _sign_in(a, c, "bob", password("bob"))).status_code == 303
    finally:
        a.services.backend.close()
        a.services.close()


def test_plain_ldap_and_half_settings_are_refused_by_name(slapd):
    from pydantic import ValidationError

    from appliance.config import Settings

    for bad, word in (
        ({"ldap_url": "http://x"}, "ldaps://"),
        ({"ldap_user_dn": "uid=x"}, "{user}"),
        ({"ldap_group_roles": {}}, "ldap_group_roles"),
    ):
        with pytest.raises(ValidationError, match=word.replace("{", r"\{").replace("}", r"\}")):
            Settings(**{**slapd.settings(), **bad})
