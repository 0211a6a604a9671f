"""Activations handed from the head to a replica on a worker host, which has no audit database to check.

The head (which has the audit log) decides what is active: for each bundle its name, version and the digest
of its signed manifest, passed in the LLM deployment's init args. A replica on a worker (its raylet started
by the worker's unit with `APPLIANCE_NODE_DATA_DIR`) loads from its own host's model store and trust keys,
and only a copy that verifies byte for byte against a trusted signature *and* whose manifest is the one the
head activated: a worker's store edited to serve another version, or a stale copy, fails that replica.
The worker's store is filled from the USB media by `install.sh --role worker` (`import_on_worker`): each bundle
verified byte for byte against the publisher keys the media carry while it is copied in, as on the head, and
marked active, with no audit record (a worker has no audit log; the head's pin is what decides).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from appliance.bundles import BundleStore, VerifiedBundle, trusted_keys
from appliance.bundles.metadata import SIGNATURE_FILE, BundleError
from appliance.config import Settings
from appliance.config_core import default_model_store, default_trust_dir
from appliance.serving.local_backend import LoadedBundle, checked_active, load_versions
from appliance.signing import oms

NODE_DATA_ENV = "APPLIANCE_NODE_DATA_DIR"  # set by the worker's unit: this host's own data folder

Pins = dict[str, dict[str, str]]  # name -> {"version", "digest"}


def manifest_digest(manifest: oms.Manifest) -> str:
    """SHA-256 over every signed piece (path, range, digest): equal exactly when two copies vouch for the
    same bytes, whoever signed them."""
    pieces = sorted((p.path, p.start, p.end, d) for p, d in manifest.digests.items())
    return hashlib.sha256(json.dumps(pieces).encode()).hexdigest()


def head_pins(settings: Settings) -> Pins:
    """On the head: each active bundle as the audit log last activated it, with its manifest's digest (the
    signature is checked; the bytes are checked by every replica that loads them)."""
    store = settings.model_store
    trusted = trusted_keys(settings.trust_dir)
    pins: Pins = {}
    for name, version in checked_active(settings).items():
        manifest, _ = oms.read_signature(
            store / name / version,
            trusted,
            signature_name=SIGNATURE_FILE,
            max_signature_bytes=settings.max_signature_bytes,
        )
        pins[name] = {"version": version, "digest": manifest_digest(manifest)}
    return pins


def node_settings(settings: Settings) -> Settings | None:
    """The head's settings with this worker host's own model store and trust keys, or None on the head."""
    local = os.environ.get(NODE_DATA_ENV)
    if not local:
        return None
    data = Path(local)
    return settings.model_copy(update={"model_store": default_model_store(data), "trust_dir": default_trust_dir(data)})


def load_pinned(settings: Settings, pins: Pins) -> list[LoadedBundle]:
    """An engine per pinned bundle from this host's store, each verified and matched to the head's activation
    before anything of it is loaded."""
    if not pins:
        raise BundleError("the head handed this replica no active bundle")

    def check(bundle: VerifiedBundle) -> None:
        m = bundle.metadata
        here, head = manifest_digest(bundle.manifest), pins[m.name]["digest"]
        if here != head:
            raise BundleError(
                f"{m.name} {m.version} in {settings.model_store} is not the copy the head activated (manifest "
                f"digest {here[:16]}, the head's {head[:16]}): install this worker from the head's media"
            )

    return load_versions(settings, {name: pin["version"] for name, pin in sorted(pins.items())}, check)


def import_on_worker(data_dir: Path, src: Path) -> VerifiedBundle:
    """Verify `src` into `data_dir`'s store and mark it active; refused on a host that is no joined worker
    (on the head every import is recorded in the audit log first: `appliance bundle import`)."""
    if not (data_dir / "cluster" / "join.json").exists():
        raise BundleError(
            f"{data_dir} holds no worker identity (install.sh --role worker --join FILE): on the head use "
            "`appliance bundle import`"
        )
    settings = Settings(data_dir=data_dir)
    store = BundleStore(
        settings.model_store, workers=settings.hash_workers, max_signature_bytes=settings.max_signature_bytes
    )
    verified = store.import_bundle(src, trusted_keys(settings.trust_dir))
    store.mark_active(verified.metadata.name, verified.metadata.version)
    return verified
