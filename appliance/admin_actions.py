"""Every audited admin action, written once for every front door (CLI, API, admin page).

The rule: a change is recorded in the audit log before it takes effect, so a record that cannot be written
leaves nothing changed; where the change must be made to learn what to record (a new key's id), it is
recorded right after and undone when the record fails. The front doors say who acts and how a record is
written (`Actor`) and call these functions: none of them holds audit logic of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy.orm import Session

from appliance import apikeys
from appliance.audit import AuditEvent
from appliance.bundles import BundleStore, VerifiedBundle
from appliance.bundles.metadata import BundleError, semver_key
from appliance.cluster.ca import Cluster, Member
from appliance.cluster.ray_tls import rotate_token
from appliance.errors import ApplianceError
from appliance.principal import Principal
from appliance.signing import keys
from appliance.signing.hashing import Progress

T = TypeVar("T")


class UnknownKey(ApplianceError):
    """No API key has that id (the API answers 404)."""


@dataclass(frozen=True)
class Actor:
    """Who acts, from where, and how a record is written: `append` stores one event durably or raises (the
    action then does not happen); `recorded_versions(event, name)` reads the log for the import floor."""

    principal: Principal
    append: Callable[[AuditEvent], object]
    recorded_versions: Callable[[str, str], Iterable[str]]
    route: str = "cli"
    request_id: str | None = None
    source: str | None = None
    status: int | None = None

    def record(self, event: str, **detail: str) -> None:
        self.append(
            AuditEvent(
                event=event,
                request_id=self.request_id,
                principal=self.principal,
                source=self.source,
                route=self.route,
                status=self.status,
                detail=detail,
            )
        )


def record_first(actor: Actor, event: str, change: Callable[[], T], **detail: str) -> T:
    """Record, then change: a change nobody can see never happens."""
    actor.record(event, **detail)
    return change()


def record_or_undo(actor: Actor, event: str, undo: Callable[[], object], **detail: str) -> None:
    """Record a change just made; when the record cannot be written, undo the change and fail."""
    try:
        actor.record(event, **detail)
    except BaseException:
        undo()
        raise


# -- keys -----------------------------------------------------------------------------------------------
def create_key(
    actor: Actor,
    sessions: Callable[[], Session],
    name: str,
    role: str,
    expires_at: datetime | None = None,
    **detail: str,
) -> tuple[str, apikeys.KeyInfo]:
    """A new key (its secret returned once); no record, no key: an unaudited key is discarded."""
    with sessions() as session:
        token, info = apikeys.create_key(session, name, role, expires_at)

    def undo() -> None:
        with sessions() as session:
            apikeys.discard_key(session, info.key_id)

    record_or_undo(actor, "admin.key_created", undo, key_id=info.key_id, role=info.role, name=info.name, **detail)
    return token, info


def revoke_key(actor: Actor, sessions: Callable[[], Session], key_id: str) -> apikeys.KeyInfo:
    with sessions() as session:
        if not any(k.key_id == key_id for k in apikeys.list_keys(session)):
            raise UnknownKey(f"no key with id {key_id}")

    def revoke() -> apikeys.KeyInfo:
        with sessions() as session:
            return apikeys.revoke_key(session, key_id)

    return record_first(actor, "admin.key_revoked", revoke, key_id=key_id)


# -- bundles and their publishers -----------------------------------------------------------------------
def trust_publisher(actor: Actor, trust_dir: Path, key: keys.PublicKey, file_name: str | None = None) -> Path:
    """Install a publisher's public key in the trust folder."""
    dest = trust_dir / (file_name or f"{keys.key_hint(key)[:16]}.pub")
    record_first(
        actor,
        "admin.trust_added",
        lambda: keys.write_public_key(key, dest),
        key_hint=keys.key_hint(key),
        file=str(dest),
    )
    return dest


def import_bundle(
    actor: Actor,
    store: BundleStore,
    folder: Path,
    trusted: list[keys.PublicKey],
    *,
    allow_downgrade: bool = False,
    progress: Progress | None = None,
) -> VerifiedBundle:
    """Verify while copying into the store; recorded once every byte is verified and before the bundle
    appears. The rollback floor is also checked against the log: the store's own mark is a file anyone with
    write access to the store could lower."""

    def before_place(vb: VerifiedBundle) -> None:
        name, version = vb.metadata.name, vb.metadata.version
        if not allow_downgrade:
            newest = list(actor.recorded_versions("admin.bundle_imported", name))
            if newest and semver_key(version) <= max(semver_key(v) for v in newest):
                floor = max(newest, key=semver_key)
                raise BundleError(
                    f"{name} {version} is not newer than {floor}, recorded as imported in the audit "
                    "log (rollback protection; --allow-downgrade to override)"
                )
        actor.record("admin.bundle_imported", name=name, version=version, signer=vb.signer_hint)

    return store.import_bundle(
        folder, trusted, allow_downgrade=allow_downgrade, progress=progress, before_place=before_place
    )


def activate_bundle(
    actor: Actor, store: BundleStore, name: str, version: str, trusted: list[keys.PublicKey] | None
) -> None:
    """Serve `name` at `version`: verified again first (unless `trusted` is None: just verified while
    imported), then recorded, then switched."""
    if trusted is not None:
        store.open(name, version, trusted)
    record_first(actor, "admin.bundle_activated", lambda: store.mark_active(name, version), name=name, version=version)


def remove_bundle(actor: Actor, store: BundleStore, name: str, version: str) -> None:
    store.check_removable(name, version)
    record_first(actor, "admin.bundle_removed", lambda: store.remove(name, version), name=name, version=version)


# -- policy -----------------------------------------------------------------------------------------------
def reload_policy(actor: Actor, revision: str, install: Callable[[], T]) -> T:
    """Put a validated pack in force: its revision recorded first, so no unaudited policy is ever in force."""
    return record_first(actor, "admin.policy_reloaded", install, revision=revision)


# -- the cluster ------------------------------------------------------------------------------------------
def init_cluster(actor: Actor, cluster: Cluster, name: str, addresses: tuple[str, ...], port: int) -> Member:
    """The cluster CA and the head's node certificate: from then on the head's Ray speaks mutual TLS."""
    cluster.check_new()  # a refusal records nothing
    return record_first(
        actor,
        "admin.cluster_initialised",
        lambda: cluster.init(name, addresses, port),
        name=name,
        addresses=" ".join(addresses),
        port=str(port),
    )


def invite_node(
    actor: Actor,
    cluster: Cluster,
    name: str,
    addresses: tuple[str, ...],
    version: str,
    deliver: Callable[[Member, bytes, bytes], T],
) -> tuple[Member, T]:
    """A member-to-be: its certificate signed (nothing kept yet), recorded with the serial and fingerprint, then
    `deliver`ed (the join file) and only then admitted: a failed record or delivery leaves no member."""
    member, cert_pem, key_pem = cluster.sign(name, addresses, version)
    actor.record(
        "admin.cluster_invited",
        name=name,
        addresses=" ".join(addresses),
        serial=member.serial,
        fingerprint=member.fingerprint,
        version=version,
    )
    delivered = deliver(member, cert_pem, key_pem)
    cluster.admit(member)
    return member, delivered


def rejoin_node(
    actor: Actor, cluster: Cluster, name: str, version: str, deliver: Callable[[Member, bytes, bytes], T]
) -> tuple[Member, T]:
    """A member's rejoin file (a new certificate, the current token and version): recorded with the new serial,
    delivered, then the member's record replaced, so its old certificate belongs to no member."""
    member, cert_pem, key_pem = cluster.reissue(name, version)
    actor.record(
        "admin.cluster_rejoin_issued", name=name, serial=member.serial, fingerprint=member.fingerprint, version=version
    )
    delivered = deliver(member, cert_pem, key_pem)
    cluster.replace(member)
    return member, delivered


def drain_node(actor: Actor, cluster: Cluster, name: str, drain: Callable[[Member], T]) -> T:
    """Ask Ray to move a member's work off it: recorded first (it changes what runs where)."""
    member = cluster.member(name)
    return record_first(actor, "admin.cluster_drained", lambda: drain(member), name=name)


def remove_node(
    actor: Actor, cluster: Cluster, name: str, token: Path, drain: Callable[[Member], T]
) -> tuple[Member, T]:
    """Drain, revoke and rotate the Ray token, recorded first: the revocation list is the head's, the new token
    is what makes Ray itself refuse the removed node (its certificate stays valid: Ray's TLS has no CRL)."""
    member = cluster.removable(name)  # a refusal records nothing

    def change() -> tuple[Member, T]:
        drained = drain(member)
        cluster.revoke(name)
        rotate_token(token)
        return member, drained

    return record_first(actor, "admin.cluster_removed", change, name=name, serial=member.serial, token="rotated")
