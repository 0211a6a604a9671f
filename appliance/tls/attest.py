"""What the TLS front tells the gateway about a connection: the client's address and verified certificate
subject, in one header that no other process can forge.

Serve's proxy sees every request come from the front on 127.0.0.1, so the front passes the real peer in
`x-appliance-peer: v1;<address>;<subject>;<mac>` (address and subject percent-encoded), where mac is
HMAC-SHA256 under a 256-bit secret in `keys_dir/tls-front.secret` (0600, made once). The front removes any
copy a client sent; the gateway believes the header only when the MAC verifies. A local process that talks
to Serve's loopback port directly cannot make a valid header without reading the secret, and the secret
is readable only by the appliance's user, who can read the TLS key anyway. The MAC covers only what the
header states: a replay could only restate the same peer, and only a process on the host could replay.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

HEADER = b"x-appliance-peer"
SECRET_NAME = "tls-front.secret"


@dataclass(frozen=True)
class Peer:
    address: str
    subject: str | None  # RFC 4514 subject of a verified client certificate


def load_secret(keys_dir: Path, create: bool = False) -> bytes | None:
    """The shared secret; made when `create` (0600, written whole then linked into place, so two starters
    agree on one and neither reads it half-written). None when it is absent or cannot be made."""
    path = keys_dir / SECRET_NAME
    if create and not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{SECRET_NAME}.")
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        except OSError:
            return None
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _mac(secret: bytes, address: str, subject: str) -> str:
    return hmac.new(secret, f"v1\n{address}\n{subject}".encode(), hashlib.sha256).hexdigest()


def header_value(secret: bytes, peer: Peer) -> bytes:
    subject = peer.subject or ""
    return (
        f"v1;{quote(peer.address, safe='')};{quote(subject, safe='')};{_mac(secret, peer.address, subject)}"
    ).encode("ascii")


def verify(secret: bytes, value: bytes) -> Peer | None:
    """The peer a header states, or None when it is malformed or its MAC is wrong (constant-time compare)."""
    try:
        version, address, subject, mac = value.decode("ascii").split(";")
    except (UnicodeDecodeError, ValueError):
        return None
    address, subject = unquote(address), unquote(subject)
    if version != "v1" or not hmac.compare_digest(mac, _mac(secret, address, subject)):
        return None
    return Peer(address, subject or None)
