"""`Principal`: who acts. One definition for the key store, the policy engine and the audit record."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Principal(BaseModel):
    """An API key's id, its owner's name and role; all None for an unauthenticated caller (who is granted
    nothing by any policy, since no role matches). `cert_subject` is the RFC 4514 subject of the client
    certificate the TLS front verified for the connection (mTLS), recorded beside the key id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str | None = None
    name: str | None = None
    role: str | None = None
    cert_subject: str | None = None
