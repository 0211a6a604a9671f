"""Stored Responses: what the Responses API answered, kept for `previous_response_id`, GET and DELETE.

One row per response: the key that made it, the response it continues, when it was made, its input items
as they passed the input policy, and the response object exactly as the client received it (what the
output policy redacted or withheld is stored so; the engine's raw text never is). Every read and delete
names the key: another key's row is as absent as one that never was, and so is a row older than the
retention. Expired rows are deleted by `prune`: each gateway prunes at most once an hour as it stores,
and `appliance responses prune` prunes on demand. A chain is read with one recursive query, oldest first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Column, Engine, Float, String, Table, Text, delete, insert, literal, select
from sqlalchemy.exc import SQLAlchemyError

from appliance.db import Base
from appliance.errors import ApplianceError

log = structlog.get_logger()
DAY_S = 86_400.0
PRUNE_EVERY_S = 3600.0  # a gateway deletes expired rows at most this often
MAX_CHAIN = 1000  # responses one chain may hold: longer ones are refused, never read without bound

table = Table(
    "stored_responses",
    Base.metadata,
    Column("id", String(64), primary_key=True),  # resp_<32 hex>
    Column("key_id", String(64), nullable=False),  # the API key that made it: the only one that sees it
    Column("previous_id", String(64)),  # the response it continues (not a foreign key: it may be deleted)
    Column("created_at", Float, nullable=False, index=True),  # unix time
    Column("input", Text, nullable=False),  # JSON: this request's input items, as the input policy passed them
    Column("response", Text, nullable=False),  # JSON: the response object as the client received it
)


class StoreUnavailable(ApplianceError):
    """The database could not be read or written (the API answers 503)."""


class ChainBroken(ApplianceError):
    """An earlier response of a chain was deleted or expired, or the chain is longer than MAX_CHAIN."""


@dataclass(frozen=True)
class StoredResponse:
    id: str
    key_id: str
    previous_id: str | None
    created_at: float
    input: list[dict[str, Any]]
    response: dict[str, Any]


class ResponseStore:
    """Stored responses in `engine`'s database, visible for `retention_days` after they were made."""

    def __init__(self, engine: Engine, retention_days: int) -> None:
        self.engine, self.retention_s = engine, retention_days * DAY_S
        self._next_prune = 0.0

    def put(self, r: StoredResponse) -> None:
        """Store `r` durably (then, at most once an hour, delete the expired rows)."""
        row = {
            "id": r.id,
            "key_id": r.key_id,
            "previous_id": r.previous_id,
            "created_at": r.created_at,
            "input": json.dumps(r.input, ensure_ascii=False),
            "response": json.dumps(r.response, ensure_ascii=False),
        }
        with _failing("store"), self.engine.connect() as conn:
            with conn.execution_options(immediate=True).begin():
                conn.execute(insert(table).values(row))
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            try:
                removed = self.prune()
            except StoreUnavailable as exc:  # the next store tries again in an hour; reads skip them anyway
                log.warning("stored responses not pruned", error=str(exc))
            else:
                log.info("stored responses pruned", removed=removed)

    def get(self, response_id: str, key_id: str) -> StoredResponse | None:
        """`key_id`'s response `response_id`, or None (absent, another key's, or expired)."""
        query = select(table).where(
            table.c.id == response_id, table.c.key_id == key_id, table.c.created_at >= self._cutoff()
        )
        with _failing("read"), self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _stored(row)

    def chain(self, response_id: str, key_id: str) -> list[StoredResponse]:
        """`response_id` and every response it continues, oldest first; [] when `response_id` itself is
        absent (as `get`). ChainBroken when an earlier one is gone or the chain is over MAX_CHAIN long."""
        cutoff = self._cutoff()
        mine = (table.c.key_id == key_id) & (table.c.created_at >= cutoff)
        links = (
            select(table.c.id, table.c.previous_id, literal(0).label("depth"))
            .where(table.c.id == response_id, mine)
            .cte("chain", recursive=True)
        )
        links = links.union_all(
            select(table.c.id, table.c.previous_id, links.c.depth + 1)
            .join(links, table.c.id == links.c.previous_id)
            .where(mine, links.c.depth < MAX_CHAIN)
        )
        query = select(table).join(links, table.c.id == links.c.id).order_by(links.c.depth.desc())
        with _failing("read"), self.engine.connect() as conn:
            rows = [_stored(r) for r in conn.execute(query).mappings()]
        if rows and len(rows) > MAX_CHAIN:
            raise ChainBroken(f"the chain of {response_id} holds more than {MAX_CHAIN} responses")
        if rows and rows[0].previous_id is not None:
            raise ChainBroken(f"{rows[0].previous_id}, an earlier response of this chain, was deleted or has expired")
        return rows

    def delete(self, response_id: str, key_id: str) -> bool:
        """Delete `key_id`'s response `response_id`; False when it is not there (as `get`)."""
        with _failing("delete"), self.engine.connect() as conn:
            with conn.execution_options(immediate=True).begin():
                done = conn.execute(
                    delete(table).where(
                        table.c.id == response_id, table.c.key_id == key_id, table.c.created_at >= self._cutoff()
                    )
                )
        return bool(done.rowcount)

    def prune(self, before: float | None = None) -> int:
        """Delete every response made before `before` (default: the retention's cut-off); returns how many."""
        cut = self._cutoff() if before is None else before
        with _failing("prune"), self.engine.connect() as conn:
            with conn.execution_options(immediate=True).begin():
                return int(conn.execute(delete(table).where(table.c.created_at < cut)).rowcount)

    def _cutoff(self) -> float:
        return time.time() - self.retention_s


@contextmanager
def _failing(what: str) -> Iterator[None]:
    """A database error as StoreUnavailable: one line naming what failed."""
    try:
        yield
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StoreUnavailable(f"stored responses: {what} failed: {cause}") from exc


def _stored(row: Any) -> StoredResponse:
    return StoredResponse(
        row["id"],
        row["key_id"],
        row["previous_id"],
        row["created_at"],
        json.loads(row["input"]),
        json.loads(row["response"]),
    )
