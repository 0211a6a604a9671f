"""Every route but /healthz and /readyz needs a key; each role reaches exactly its routes."""

from __future__ import annotations

import re

import pytest

OPEN = {"/healthz", "/readyz"}


def allowed(path: str, method: str, role: str) -> bool:
    if role == "admin" or path == "/openapi.json":
        return True
    if path.startswith("/v1/"):
        return role == "user"
    if path in ("/metrics", "/admin/usage") or (path.startswith("/admin/audit") and method == "GET"):
        return role == "auditor"
    return False


def routes(app):
    """Every route in the OpenAPI document, plus the two probes kept out of it."""
    for path, ops in app.openapi()["paths"].items():
        for method in ops:
            yield method.upper(), path
    yield from (("GET", p) for p in OPEN)
    yield "GET", "/openapi.json"  # kept out of its own document


async def test_every_route_needs_the_right_role(appliance, scripted):
    app = appliance.app
    seen = 0
    for method, path in routes(app):
        url = re.sub(r"\{[^}]+\}", "1", path)
        for role in (None, "user", "auditor", "admin"):
            async with appliance.client(role) as c:
                r = await c.request(method, url, json={})
            if path in OPEN:
                assert r.status_code in (200, 503), (method, path, role)
                continue
            seen += 1
            if role is None:
                assert r.status_code == 401, (method, path)
                assert r.json()["error"]["code"] == "invalid_api_key"
            elif allowed(path, method, role):
                assert r.status_code not in (401, 403), (method, path, role, r.text)
            else:
                assert r.status_code == 403, (method, path, role, r.text)
                assert r.json()["error"]["code"] == "role_forbidden"
    assert seen > 40  # 4 roles x every protected route


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer ak-0123456789abcdef.xxx", "Basic abc", ""])
async def test_bad_keys_are_401(appliance, header):
    async with appliance.client(None) as c:
        r = await c.get("/v1/models", headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


async def test_revoked_key_stops_working(appliance):
    async with appliance.client("admin") as admin:
        created = (await admin.post("/admin/keys", json={"name": "temp", "role": "user"})).json()
        async with appliance.client(token=created["key"]) as c:
            assert (await c.get("/v1/models")).status_code == 200
            assert (await admin.delete(f"/admin/keys/{created['id']}")).status_code == 200
            assert (await c.get("/v1/models")).status_code == 401
        listing = (await admin.get("/admin/keys")).json()["data"]
        assert {"temp": "revoked"}.items() <= {k["name"]: k["status"] for k in listing}.items()
        assert all("key" not in k and "secret" not in str(k) for k in listing)


async def test_audit_export_streams_a_verifiable_file(appliance, tmp_path):
    from appliance.audit.export import verify_file
    from appliance.signing import keys

    async with appliance.client("auditor") as c:
        r = await c.get("/admin/audit/export", params={"format": "jsonl"})
    assert r.status_code == 200 and r.content.count(b"\n") >= 1
    (tmp_path / "audit.jsonl").write_bytes(r.content)
    report = verify_file(tmp_path / "audit.jsonl", [keys.load_public_key(appliance.settings.keys_dir / "audit.pub")])
    assert report.ok
