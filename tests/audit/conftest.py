"""Audit fixtures: every store test runs on SQLite and on the PostgreSQL server scripts/test.sh starts."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from appliance import db
from appliance.audit import AuditEvent, AuditLog

PG_URL = os.environ.get("APPLIANCE_TEST_PG_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        db.upgrade(url)
        yield url
        return
    with pg_database("audit") as url:
        db.upgrade(url)
        yield url
        pg_start()  # a test that stopped the server must not leave it down


@contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """The URL of a new database on the test server, dropped afterwards (skips without a server)."""
    if not PG_URL:
        pytest.skip("no PostgreSQL server (APPLIANCE_TEST_PG_URL is unset)")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with pg_admin() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    with pg_admin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def pg_admin() -> Connection:
    """An autocommit connection to the test server's maintenance database, for DDL on databases."""
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool).connect()


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "audit.key"


@pytest.fixture
def audit_log(database_url: str, key_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(database_url, key_path, checkpoint_every=10, checkpoint_seconds=3600)
    yield log
    log.close()


def request_event(i: int, **extra) -> AuditEvent:
    """A typical gateway record, varied by `i`."""
    return AuditEvent(
        event="request",
        request_id=f"req-{i}",
        source="10.0.0.7",
        route="/v1/chat/completions",
        principal={"key_id": f"k{i % 3}", "name": f"user{i % 3}", "role": "user"},
        model="gpt-oss-20b",
        bundle_version="1.0.0",
        policy_revision="rev-abc",
        decision={"action": "allow", "rule_ids": ["pii"], "findings": {"pii.email": i % 2}},
        content_mode="hash",
        content=f"sha256:{i:064x}",
        usage={"prompt_tokens": i},
        latency_ms=i,
        status=200,
        **extra,
    )


def _pg_ctl(*args: str) -> subprocess.CompletedProcess:
    prefix = shlex.split(os.environ.get("APPLIANCE_TEST_PG_AS", ""))
    return subprocess.run(
        [*prefix, "pg_ctl", "-D", os.environ["APPLIANCE_TEST_PG_DATA"], *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def pg_stop() -> None:
    _pg_ctl("-m", "fast", "-w", "stop")


def pg_start() -> None:
    """Start the test server again with the options it was first started with (postmaster.opts)."""
    data = Path(os.environ["APPLIANCE_TEST_PG_DATA"])
    if _pg_ctl("status").returncode == 0:
        return
    argv = shlex.split((data / "postmaster.opts").read_text())
    options = [a for i, a in enumerate(argv[1:], 1) if a != "-D" and argv[i - 1] != "-D"]
    proc = _pg_ctl("-w", "-l", str(data.parent / "log"), "-o", shlex.join(options), "start")
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(autouse=True)
def no_writer_left_running() -> Iterator[None]:
    """Every audit test closes the logs it opens: a writer left running outlives its database (and on
    PostgreSQL keeps failing against a dropped one for the rest of the run)."""
    before = {t for t in threading.enumerate() if t.name == "audit-writer"}
    yield
    left = [t for t in threading.enumerate() if t.name == "audit-writer" and t not in before and t.is_alive()]
    for thread in left:
        thread.join(timeout=5)
    assert not [t for t in left if t.is_alive()], "an AuditLog was not closed"
