"""An appliance in a temporary folder for backup and restore, on SQLite or the test PostgreSQL server.

Everything runs through the real `appliance` command (in `unshare -n`): the data folder, the policy pack
(outside the repository's own) and the database all live under the test's folder.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from appliance.config import Settings
from appliance.db import make_engine
from tests.audit.conftest import pg_database
from tests.conftest import REPO, run_cli


@dataclass
class Site:
    """One appliance's folders and settings; `cli` runs a command against it."""

    root: Path
    database_url: str | None = None

    @property
    def data(self) -> Path:
        return self.root / "var"

    @property
    def policies(self) -> Path:
        return self.root / "policies"

    def env(self, **extra: str) -> dict[str, str]:
        env = {"APPLIANCE_POLICY_DIR": str(self.policies), **extra}
        if self.database_url:
            env["APPLIANCE_DATABASE_URL"] = self.database_url
        return env

    def cli(self, *args: str, check: bool = False, **extra: str):
        return run_cli(*args, data_dir=self.data, env=self.env(**extra), check=check)

    def killed_at(self, point: str, *args: str):
        """`cli(*args)`, SIGKILLed when a restore reaches `point` (tests/backup/crashing.py)."""
        return run_cli(
            *args, data_dir=self.data, env=self.env(), program=(sys.executable, "-m", "tests.backup.crashing", point)
        )

    def head(self) -> tuple[int, str]:
        """The newest record other than a read of the log, once `appliance audit verify` passes. Verifying
        is itself recorded (`audit.verified`, after the head it verified), so the reads are left out: two
        heads compare equal when nothing but reading happened in between."""
        out = self.cli("audit", "verify", check=True).stdout
        line = next(line for line in out.splitlines() if line.startswith("head "))
        seq, digest = line.split()[1].split(":")
        row = self._one(
            "SELECT seq, hash FROM audit_records WHERE seq <= :seq AND event NOT LIKE 'audit.%' "
            "ORDER BY seq DESC LIMIT 1",
            seq=int(seq),
        )
        return int(row[0]), row[1]

    def last_seq(self) -> int:
        """The newest record's seq, whatever it records (reads included)."""
        return int(self._one("SELECT max(seq) FROM audit_records")[0])

    def _one(self, sql: str, **params: object) -> tuple:
        engine = make_engine(self.database_url or Settings(data_dir=self.data).database_url)
        try:
            with engine.connect() as conn:
                return tuple(conn.execute(text(sql), params).one())
        finally:
            engine.dispose()

    def policy_digest(self) -> str:
        h = hashlib.sha256()
        for p in sorted(self.policies.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(self.policies).as_posix().encode() + p.read_bytes())
        return h.hexdigest()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str) -> Iterator[str | None]:
    """None for SQLite (the data folder's own file), else a fresh database on the test server."""
    if backend == "sqlite":
        yield None
        return
    with pg_database("backup") as url:
        yield _over_socket(url)


def _over_socket(url: str) -> str:
    """The URL through the server's Unix socket: the CLI runs in `unshare -n`, where the host's loopback
    is out of reach but a socket file is not (scripts/postgres.sh puts it beside the data folder)."""
    parsed = make_url(url)
    folder = str(Path(os.environ["APPLIANCE_TEST_PG_DATA"]).parent)
    return parsed.set(host=None, port=None, query={"host": folder, "port": str(parsed.port)}).render_as_string(
        hide_password=False
    )


def make_site(root: Path, database_url: str | None = None) -> Site:
    """A migrated appliance with the default policy pack and a few admin records."""
    import shutil

    site = Site(root, database_url)
    shutil.copytree(REPO / "policies", site.policies)
    site.cli("db", "upgrade", check=True)
    site.cli("keys", "create", "--name", "ops", "--role", "admin", check=True)
    return site


@pytest.fixture
def site(tmp_path: Path, database_url: str | None) -> Site:
    return make_site(tmp_path / "site", database_url)
