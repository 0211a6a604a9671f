"""DSSE envelopes inside a Sigstore bundle: the container OMS uses for `model.sig`.

Only the key-based shape is produced or accepted: `verificationMaterial.publicKey.hint` (SHA-256 of the
signer's PEM public key) and no transparency-log entries, because nothing here may need a network.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from appliance.errors import ApplianceError

if TYPE_CHECKING:  # loaded where a key is used (see signing/hashing.py, `Ahead`)
    from appliance.signing import keys

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


class SignatureError(ApplianceError):
    """A signature that is malformed, made by an untrusted key, or does not match what it covers."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the key actually signs."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def seal(payload: bytes, key: keys.PrivateKey) -> dict[str, Any]:
    """A Sigstore bundle (as a JSON-ready dict) holding a DSSE envelope over `payload`."""
    from appliance.signing import keys

    signature = keys.sign(key, pae(IN_TOTO_PAYLOAD_TYPE, payload))
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": keys.key_hint(key.public_key())}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }


def open_sealed(raw: bytes, trusted: list[keys.PublicKey]) -> tuple[bytes, keys.PublicKey]:
    """The payload of a bundle whose signature verifies with one of `trusted`, and that key."""
    from appliance.signing import keys

    try:
        bundle = json.loads(raw)
        if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
            raise SignatureError(f"signature is not a Sigstore bundle v0.3 (mediaType {bundle.get('mediaType')!r})")
        envelope = bundle["dsseEnvelope"]
        if envelope.get("payloadType") != IN_TOTO_PAYLOAD_TYPE:
            raise SignatureError("signature envelope does not carry an in-toto statement")
        payload = base64.b64decode(envelope["payload"], validate=True)
        sigs = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
        hint = (bundle.get("verificationMaterial") or {}).get("publicKey", {}).get("hint")
    except SignatureError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise SignatureError("signature file is corrupt (not a valid Sigstore bundle)") from exc
    if not trusted:
        raise SignatureError("no trusted public keys configured (add one to the trust folder or pass --trust)")
    candidates = [k for k in trusted if keys.key_hint(k) == hint] if hint else trusted
    if not candidates:
        raise SignatureError(f"signed by an untrusted key (key hint {str(hint)[:16]}...)")
    message = pae(IN_TOTO_PAYLOAD_TYPE, payload)
    for key in candidates:
        if any(keys.verify(key, sig, message) for sig in sigs):
            return payload, key
    raise SignatureError("signature does not verify with the trusted key (tampered signature file)")
