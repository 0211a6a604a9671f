"""Database engines and schema migrations shared by every table of the appliance.

SQLite is the single-host default, PostgreSQL the choice when several gateway replicas write. SQLite runs in
WAL mode with `synchronous=FULL`: under WAL, NORMAL may lose the last commits on power loss, and the audit
log promises that a returned append is on disk. FULL costs one fsync per commit, which group commit in the
audit writer amortises (see docs/architecture.md). Transactions are begun explicitly so a writer can take
SQLite's write lock up front (`BEGIN IMMEDIATE`) instead of failing to upgrade a read lock later.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase

from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from alembic.config import Config

BUSY_TIMEOUT_MS = 10_000
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"  # inside the package: wheels carry it


class DatabaseError(ApplianceError):
    """A database URL that cannot be used or a migration that failed."""


class Base(DeclarativeBase):
    """The one declarative base: every table of the appliance shares its metadata and migrations."""


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, synchronous=FULL, a busy timeout and explicit BEGINs.

    Use `conn.execution_options(immediate=True)` for a transaction that will write: on SQLite it begins
    with `BEGIN IMMEDIATE` (the cross-process write lock); elsewhere the option is ignored.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"invalid database URL {url!r}") from exc
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: object) -> None:
        dbapi_conn.isolation_level = None  # the driver must not begin transactions behind our back
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")

    return engine


def require_tables(engine: Engine, *tables: str) -> None:
    """One clear line instead of an SQL error when the schema has not been created yet."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    try:
        missing = [t for t in tables if not inspect(engine).has_table(t)]
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot reach the database: {str(getattr(exc, 'orig', exc)).splitlines()[0]}") from exc
    if missing:
        raise DatabaseError(f"table {missing[0]} does not exist; run `appliance db upgrade` first")


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` up to `revision`."""
    _migrate(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> None:
    """Take the schema at `url` down to `revision` (`base` drops every table)."""
    _migrate(url, "downgrade", revision)


def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _migrate(url: str, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    if not MIGRATIONS_DIR.is_dir():
        raise DatabaseError(f"migrations folder {MIGRATIONS_DIR} is missing")
    engine = make_engine(url)
    try:
        getattr(command, direction)(_alembic_config(engine), revision)
    except CommandError as exc:
        raise DatabaseError(f"{direction} to {revision}: {exc}".splitlines()[0]) from exc
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise DatabaseError(f"{direction} to {revision} failed: {cause}".splitlines()[0]) from exc
    finally:
        engine.dispose()
