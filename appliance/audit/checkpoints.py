"""Making a checkpoint: sign the head only after the stretch since the last checkpoint verifies.

A signature is worth only what was checked before it was made. Someone with write access to the database
could rewrite records and delete the checkpoints that contradict them; a writer that then signs the head
would sign the forgery. So every checkpoint (the writer's periodic ones, the closing one, prune's anchor)
first checks, inside the transaction that holds the chain's write lock: the last checkpoint's signature,
that the record it names still has its hash, that every record after it links on from it, and that the
newest checkpoint the witness holds is still in the database. Any failure refuses the signature
(`AuditTampered`), and the records stay uncovered, which `verify` reports.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from appliance.audit import signer, store
from appliance.audit.chain import GENESIS, Checkpoint, canonical, link
from appliance.audit.errors import AuditTampered
from appliance.audit.models import AuditCheckpointRow, AuditRecordRow
from appliance.audit.witness import Witness
from appliance.signing import keys


def sign_head(
    conn: Connection, key: keys.PrivateKey, witness: Witness | None, kind: str, seq: int, head: str, ts: str
) -> Checkpoint:
    """Verify the stretch since the last checkpoint, then sign record `seq` (hash `head`) chained to it."""
    last = store.last_checkpoint(conn)
    problem = stretch_problem(conn, last, key.public_key(), witness)
    if problem is not None:
        raise AuditTampered(f"checkpoint refused: {problem}")
    cp = signer.sign_checkpoint(key, kind, seq, head, ts, last.digest() if last else GENESIS)
    store.insert_checkpoint(conn, cp)
    return cp


def stretch_problem(
    conn: Connection, last: Checkpoint | None, public: keys.PublicKey, witness: Witness | None
) -> str | None:
    """Why the records since `last` must not be signed, or None when they verify."""
    newest = witness.newest() if witness is not None else None
    if newest is not None and (last is None or newest.seq > last.seq or not _stored(conn, newest)):
        return f"the database lacks the witnessed checkpoint at seq {newest.seq}"
    start, prev = (0, GENESIS) if last is None else (last.seq, last.head_hash)
    if last is not None:
        if not keys.verify(public, last.signature, last.message()):
            return f"the last checkpoint (seq {last.seq}) is not signed by this appliance's key"
        named = conn.execute(select(AuditRecordRow.hash).where(AuditRecordRow.seq == last.seq)).scalar()
        if named is not None and named != last.head_hash:
            return f"record {last.seq} no longer matches its checkpoint"
    expected = start + 1
    for row in store.rows_after(conn, start):
        if row[0] != expected or row[-2] != prev or link(prev, canonical(row[:-2])) != row[-1]:
            return f"the chain breaks at seq {expected}"
        expected, prev = expected + 1, row[-1]
    return None


def _stored(conn: Connection, cp: Checkpoint) -> bool:
    found = conn.execute(
        select(AuditCheckpointRow.head_hash).where(AuditCheckpointRow.kind == cp.kind, AuditCheckpointRow.seq == cp.seq)
    ).scalar()
    return found == cp.head_hash
