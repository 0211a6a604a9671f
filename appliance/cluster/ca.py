"""The cluster's identity on the head: its CA, the head's own node certificate, the members and the revoked.

Files in `keys_dir/cluster/`: `ca.crt`, `ca.key` (0600; sealed into `backup --include-private-keys` like every
private file of the keys folder), `node.crt`/`node.key` (the head's own), `cluster.json` (head address, Ray
port, members, revoked). Every node certificate names every address Ray may use for that node (Ray's gRPC
clients check the server's name against them: shared/research/round3.md "Ray across hosts"), plus loopback,
which Ray's processes on one node use among themselves. Node certificates serve both ways (server and client
auth): Ray's channels are mutual.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from appliance.errors import ApplianceError
from appliance.files import atomic_write
from appliance.tls import certs

RAY_PORT = 6379
CA_DAYS, NODE_DAYS = 3650, 825
LOOPBACK = ("127.0.0.1",)
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MUTUAL = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


class ClusterError(ApplianceError):
    """A cluster command that cannot be done here (not initialised, a name taken, a bad address)."""


@dataclass(frozen=True)
class Member:
    name: str
    addresses: tuple[str, ...]
    serial: str  # hex: what the revocation list names
    fingerprint: str
    issued: str
    role: str = "worker"
    version: str = ""  # the appliance version its join file demands ("": joined before versions were kept)


@dataclass
class State:
    head: str
    port: int = RAY_PORT
    members: list[Member] = field(default_factory=list)
    revoked: list[Member] = field(default_factory=list)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ClusterError(f"node name {name!r}: lower-case letters, digits and '-', at most 63 characters")
    return name


def check_addresses(addresses: list[str]) -> tuple[str, ...]:
    if not addresses:
        raise ClusterError("a node needs at least one --address (every address Ray may use for it)")
    out = []
    for a in addresses:
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            raise ClusterError(f"--address {a!r} is not an IP address") from None
        if ip.is_unspecified or ip.is_multicast:
            raise ClusterError(f"--address {a} cannot be a node's address")
        out.append(str(ip))
    return tuple(dict.fromkeys(out))


class Cluster:
    """The cluster as the head keeps it in `folder` (keys_dir/cluster)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state_file = folder / "cluster.json"

    @property
    def initialised(self) -> bool:
        return self.state_file.exists()

    def check_new(self) -> None:
        if self.initialised:
            raise ClusterError(f"this appliance is already a cluster head ({self.state_file})")

    def state(self) -> State:
        if not self.initialised:
            raise ClusterError("this appliance is not a cluster head: run `appliance cluster init --address ADDR`")
        raw = json.loads(self.state_file.read_text())
        return State(
            head=raw["head"],
            port=raw["port"],
            members=[_member(m) for m in raw["members"]],
            revoked=[_member(m) for m in raw["revoked"]],
        )

    def ca_pem(self) -> bytes:
        return certs.read_pem(self.folder / "ca.crt", "the cluster CA certificate")

    # -- changes (the CLI records each in the audit log first: admin_actions) ---------------------------
    def init(self, name: str, addresses: tuple[str, ...], port: int = RAY_PORT) -> Member:
        """The CA and the head's own node certificate; refused when a cluster exists (its CA would be lost)."""
        self.check_new()
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        key = certs.new_key()
        subject = certs.name_of("gpt-oss appliance cluster CA")
        ca = certs.issue(subject, key.public_key(), subject, key, CA_DAYS, ca=True)
        with atomic_write(self.folder / "ca.key", binary=True, mode=0o600) as f:
            f.write(certs.pem_key(key))
        with atomic_write(self.folder / "ca.crt", binary=True, mode=0o644) as f:
            f.write(certs.pem(ca))
        head, cert_pem, key_pem = self._sign(name, addresses, "head")
        with atomic_write(self.folder / "node.key", binary=True, mode=0o600) as f:
            f.write(key_pem)
        with atomic_write(self.folder / "node.crt", binary=True, mode=0o644) as f:
            f.write(cert_pem)
        self._save(State(head=addresses[0], port=port, members=[head]))
        return head

    def reissue(self, name: str, version: str) -> tuple[Member, bytes, bytes]:
        """A member's new certificate and key, same name and addresses, for its rejoin file (a rotated token, an
        upgrade); it replaces the old one when `replace`d, so the old serial belongs to no member."""
        member = self.member(name)
        if member.role == "head":
            raise ClusterError("the head holds its own certificate: it needs no join file")
        return self._sign(name, member.addresses, "worker", version)

    def replace(self, member: Member) -> None:
        state = self.state()
        state.members = [member if m.name == member.name else m for m in state.members]
        self._save(state)

    def workers(self) -> list[Member]:
        return [m for m in self.state().members if m.role == "worker"]

    def sign(self, name: str, addresses: tuple[str, ...], version: str = "") -> tuple[Member, bytes, bytes]:
        """A new worker's certificate and key; nothing is kept until `admit` (the key leaves the head only
        sealed in its join file)."""
        state = self.state()
        taken = {a for m in state.members for a in m.addresses}
        if any(m.name == name for m in state.members):
            raise ClusterError(f"a node named {name} is already a member (appliance cluster remove {name} first)")
        if clash := sorted(taken & set(addresses)):
            raise ClusterError(f"address {clash[0]} already belongs to another member")
        return self._sign(name, addresses, "worker", version)

    def admit(self, member: Member) -> None:
        state = self.state()
        state.members.append(member)
        self._save(state)

    def removable(self, name: str) -> Member:
        member = self.member(name)
        if member.role == "head":
            raise ClusterError("the head cannot be removed from its own cluster")
        return member

    def revoke(self, name: str) -> Member:
        member = self.removable(name)
        state = self.state()
        state.members.remove(member)
        state.revoked.append(member)
        self._save(state)
        return member

    # -- reading ----------------------------------------------------------------------------------------
    def member(self, name: str, state: State | None = None) -> Member:
        found = [m for m in (state or self.state()).members if m.name == name]
        if not found:
            raise ClusterError(f"no member named {name} (appliance cluster list)")
        return found[0]

    def allowed_addresses(self) -> list[str]:
        """Every member's address: the only peers the firewall lets reach Ray's ports."""
        return sorted({a for m in self.state().members for a in m.addresses})

    def check_node(self, cert_pem: bytes) -> Member:
        """The member whose certificate this is: issued by this cluster's CA and not revoked (a join file
        or a peer's certificate is checked with it)."""
        cert = certs.parse_certs(cert_pem, "the node certificate")[0]
        ca = certs.parse_certs(self.ca_pem(), "the cluster CA")[0]
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise ClusterError("the node certificate was not issued by this cluster's CA") from None
        serial, state = f"{cert.serial_number:x}", self.state()
        if any(m.serial == serial for m in state.revoked):
            raise ClusterError(f"the node certificate {serial} has been revoked")
        found = [m for m in state.members if m.serial == serial]
        if not found:
            raise ClusterError(f"the node certificate {serial} belongs to no member")
        return found[0]

    def _sign(self, name: str, addresses: tuple[str, ...], role: str, version: str = "") -> tuple[Member, bytes, bytes]:
        ca_key = serialization.load_pem_private_key(certs.read_pem(self.folder / "ca.key", "the cluster CA key"), None)
        ca = certs.parse_certs(self.ca_pem(), "the cluster CA")[0]
        key = certs.new_key()
        all_addresses = list(dict.fromkeys([*addresses, *LOOPBACK]))
        cert = certs.issue(
            certs.name_of(name),
            key.public_key(),
            ca.subject,
            ca_key,  # type: ignore[arg-type]  # the CA key is ours: always EC
            NODE_DAYS,
            names=[name, "localhost"],
            addresses=all_addresses,
            usages=_MUTUAL,
        )
        info = certs.describe(cert)
        member = Member(
            name=name,
            addresses=addresses,
            serial=f"{cert.serial_number:x}",
            fingerprint=info.fingerprint,
            issued=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            role=role,
            version=version,
        )
        return member, certs.pem(cert), certs.pem_key(key)

    def _save(self, state: State) -> None:
        with atomic_write(self.state_file, mode=0o600) as f:
            json.dump(asdict(state), f, indent=1)


def _member(raw: dict) -> Member:
    return Member(**{**raw, "addresses": tuple(raw["addresses"])})
