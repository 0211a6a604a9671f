"""Usage fixtures: every counter test runs on SQLite and on the PostgreSQL server scripts/test.sh starts."""

from __future__ import annotations

from tests.audit.conftest import database_url

__all__ = ["database_url"]
