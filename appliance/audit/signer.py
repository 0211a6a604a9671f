"""The appliance's audit key: made on first use (mode 0600) with its public half beside it (`audit.pub`)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from appliance.audit.chain import Checkpoint, checkpoint_message
from appliance.signing import keys


def public_key_path(key_path: Path) -> Path:
    """Where the public half lives: `audit.key` -> `audit.pub`, the file `verify --trust` names."""
    return key_path.with_suffix(".pub")


def load_or_create(key_path: Path) -> keys.PrivateKey:
    """The audit private key, generated under a file lock so concurrent first starts agree on one key."""
    key_path.parent.mkdir(parents=True, exist_ok=True)
    with open(key_path.with_name(f".{key_path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not key_path.exists():
            keys.write_private_key(keys.generate_private_key("ed25519"), key_path)
        key = keys.load_private_key(key_path)
        if not public_key_path(key_path).exists():
            keys.write_public_key(key.public_key(), public_key_path(key_path))
    return key


def trust_map(public_keys: list[keys.PublicKey]) -> dict[str, keys.PublicKey]:
    return {keys.key_hint(key): key for key in public_keys}


def sign_checkpoint(key: keys.PrivateKey, kind: str, seq: int, head_hash: str, ts: str, prev: str) -> Checkpoint:
    """A checkpoint chained to `prev` (the previous checkpoint's digest, or GENESIS for the first)."""
    signature = keys.sign(key, checkpoint_message(kind, seq, head_hash, ts, prev))
    return Checkpoint(kind, seq, head_hash, ts, keys.key_hint(key.public_key()), signature, prev)
