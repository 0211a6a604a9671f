"""The stored-Responses table on SQLite and PostgreSQL: scoped by key, chains, retention, pruning, and
`appliance responses prune` as the real console script."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import db
from appliance.audit import AuditFilter, AuditLog
from appliance.config import Settings
from appliance.responses_store import DAY_S, MAX_CHAIN, ChainBroken, ResponseStore, StoredResponse, StoreUnavailable
from tests.audit.conftest import pg_database
from tests.conftest import one_line_error, run_cli


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path: Path) -> Iterator[ResponseStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'appliance.db'}"
        db.upgrade(url)
        engine = db.make_engine(url)
        yield ResponseStore(engine, retention_days=30)
        engine.dispose()
        return
    with pg_database("responses") as url:
        db.upgrade(url)
        engine = db.make_engine(url)
        yield ResponseStore(engine, retention_days=30)
        engine.dispose()


def made(key: str = "k1", previous: str | None = None, age_days: float = 0.0, text: str = "hi") -> StoredResponse:
    item = {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    return StoredResponse(
        f"resp_{uuid.uuid4().hex}", key, previous, time.time() - age_days * DAY_S, [item], {"output": [], "text": text}
    )


def test_a_response_is_its_keys_alone(store):
    r = made(text="naïve \x00 text 💡")  # what PostgreSQL refuses raw (NUL) is kept as JSON escapes
    store.put(r)
    assert store.get(r.id, "k1") == r
    assert store.get(r.id, "k2") is None and store.chain(r.id, "k2") == []
    assert not store.delete(r.id, "k2") and store.get(r.id, "k1") == r
    assert store.delete(r.id, "k1") and store.get(r.id, "k1") is None and not store.delete(r.id, "k1")


def test_a_chain_is_read_oldest_first_and_refused_when_a_link_is_gone(store):
    one = made()
    two = made(previous=one.id)
    three = made(previous=two.id)
    for r in (one, two, three):
        store.put(r)
    assert [r.id for r in store.chain(three.id, "k1")] == [one.id, two.id, three.id]
    assert [r.id for r in store.chain(one.id, "k1")] == [one.id]
    store.delete(two.id, "k1")
    with pytest.raises(ChainBroken, match=two.id):
        store.chain(three.id, "k1")


def test_a_chain_longer_than_the_bound_is_refused(store):
    previous = None
    with store.engine.begin() as conn:  # MAX_CHAIN + 1 links in one transaction, as put would store them
        from sqlalchemy import insert

        from appliance.responses_store import table

        for _ in range(MAX_CHAIN + 1):
            r = made(previous=previous)
            conn.execute(
                insert(table).values(
                    id=r.id, key_id="k1", previous_id=previous, created_at=r.created_at, input="[]", response="{}"
                )
            )
            previous = r.id
    with pytest.raises(ChainBroken, match=f"more than {MAX_CHAIN}"):
        store.chain(previous, "k1")


def test_retention_hides_then_prune_deletes(store):
    old, fresh = made(age_days=31), made(age_days=29)
    store.put(fresh)  # a store's first put prunes (then at most hourly): the old one comes after it
    store.put(old)
    assert store.get(old.id, "k1") is None and store.get(fresh.id, "k1") == fresh
    assert store.chain(made(previous=old.id).id, "k1") == []
    assert store.prune() == 1
    assert store.prune(before=time.time() + 1) == 1 and store.get(fresh.id, "k1") is None


def test_a_database_failure_is_one_line(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"  # never migrated: no table
    engine = db.make_engine(url)
    with pytest.raises(StoreUnavailable, match=r"^stored responses: read failed: no such table"):
        ResponseStore(engine, 30).get("resp_x", "k1")
    engine.dispose()


def test_the_prune_command_is_recorded_first(tmp_path: Path):
    data = tmp_path / "var"
    run_cli("db", "upgrade", data_dir=data, check=True)
    settings = Settings(data_dir=data)
    engine = db.make_engine(settings.database_url)
    store = ResponseStore(engine, 30)
    old, fresh = made(age_days=40), made(age_days=5)
    store.put(fresh)
    store.put(old)
    out = run_cli("responses", "prune", data_dir=data, check=True).stdout
    assert out.startswith("removed 1 stored responses made before ")
    assert store.get(fresh.id, "k1") == fresh
    assert run_cli("responses", "prune", "--older-than-days", "0", data_dir=data, check=True).stdout.startswith(
        "removed 1 "
    )
    engine.dispose()
    with AuditLog.from_settings(settings) as log:
        pruned = [r for r in log.query(AuditFilter(event="admin.responses_pruned"), limit=10).records]
    assert sorted(r.detail["older_than_days"] for r in pruned) == ["0", "30"]
    assert "older-than-days" in one_line_error(run_cli("responses", "prune", "--older-than-days", "-1", data_dir=data))


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migration_0009_goes_up_and_down(kind, tmp_path: Path):
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'm.db'}" if kind == "sqlite" else stack.enter_context(pg_database("migrate"))
        db.upgrade(url)
        assert db.current_revision(url) == "0009"
        db.downgrade(url, "0008")
        engine = db.make_engine(url)
        with pytest.raises(db.DatabaseError, match="table stored_responses does not exist"):
            db.require_tables(engine, "stored_responses")
        engine.dispose()
        db.upgrade(url)
        assert db.current_revision(url) == "0009"
