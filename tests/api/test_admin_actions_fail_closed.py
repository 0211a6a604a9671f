"""Every audited admin action through the API and the admin page changes nothing when its record cannot be
written (appliance.admin_actions holds the rule once; the CLI's side: tests/bundles/test_record_first.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from appliance import apikeys
from tests.api.helpers import PAGE, browser, sign_in, token_of


@contextmanager
def audit_table_gone(appliance) -> Iterator[None]:
    """The audit store is down as far as appends go: its table is renamed away, then back."""
    engine = create_engine(appliance.settings.database_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_records RENAME TO audit_records_away"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_records_away RENAME TO audit_records"))
        engine.dispose()


def keys_of(appliance) -> dict[str, str]:
    with appliance.services.sessions() as session:
        return {k.key_id: k.status for k in apikeys.list_keys(session)}


@contextmanager
def spy(obj, name: str) -> Iterator[list]:
    """Counts calls to `obj.name` (a change the action must not reach), calling through."""
    calls: list = []
    real = getattr(obj, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    setattr(obj, name, counted)
    try:
        yield calls
    finally:
        setattr(obj, name, real)


async def test_the_api_changes_nothing_without_the_record(appliance):
    svc = appliance.services
    victim = next(k for k, s in keys_of(appliance).items() if s == "active")
    before = keys_of(appliance)
    async with appliance.client("admin") as c:
        with (
            audit_table_gone(appliance),
            spy(svc.policy, "install") as installs,
            spy(svc.store, "mark_active") as switches,
        ):
            created = await c.post("/admin/keys", json={"name": "ghost", "role": "admin"})
            revoked = await c.delete(f"/admin/keys/{victim}")
            reloaded = await c.post("/admin/policy/reload")
            activated = await c.post("/admin/bundles/activate", json={"name": "tiny", "version": "1.0.0"})
        for response in (created, revoked, reloaded, activated):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "audit_unavailable"
        assert keys_of(appliance) == before and installs == [] and switches == []
        assert (await c.post("/admin/keys", json={"name": "after", "role": "user"})).status_code == 201


async def test_the_admin_page_changes_nothing_without_the_record(appliance):
    victim = next(k for k, s in keys_of(appliance).items() if s == "active")
    async with browser(appliance) as c:
        await sign_in(appliance, c, "admin")
        token = await token_of(c, "/keys")
        before = keys_of(appliance)
        with audit_table_gone(appliance):
            created = await c.post(f"{PAGE}/keys", data={"csrf_token": token, "name": "ghost", "role": "admin"})
            revoked = await c.post(f"{PAGE}/keys/{victim}/revoke", data={"csrf_token": token})
        assert created.status_code == 503 and revoked.status_code == 503
        assert keys_of(appliance) == before
