"""An nftables ruleset that closes a Ray unit's ports to everyone but the cluster's members.

Ray listens on every interface (GCS, raylets, workers, and its agents' Prometheus metrics ports, which answer
without the token). systemd's `IPAddressAllow=` closes them only where systemd's cgroup-BPF firewall works;
this ruleset does it in netfilter, scoped by the socket's cgroup (`socket cgroupv2`): a packet to a socket
made by a process of the unit, from an address that is no member's, is dropped; the host's other listeners
(SSH, the API front of `appliance-serve`) are left alone. `nft -f FILE` replaces the whole table at once, so
reloading after a cluster change is idempotent.

nft looks a cgroup path up below /sys/fs/cgroup *when the ruleset loads* and keeps its id: the cgroup must
exist then, and a restarted unit gets a new one. So the units load it at each start (`ExecStartPre=+`, which
runs in the unit's cgroup after systemd made it).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from appliance.errors import ApplianceError

TABLE = "appliance_cluster"
NFT_ROOT = Path("/sys/fs/cgroup")  # where nft resolves a `socket cgroupv2` path
_PART = re.compile(r"[A-Za-z0-9_.@:-]+")


class FirewallError(ApplianceError):
    """The ruleset cannot be rendered here (no cgroup2 mount nft can use, an odd address or cgroup)."""


def unit_cgroup(unit: str) -> str:
    """A system unit's cgroup, relative to the cgroup2 root (systemd's default slice)."""
    return f"system.slice/{unit}"


def cgroup_prefix(mountinfo: str | None = None) -> str:
    """Where the cgroup2 hierarchy is mounted, relative to /sys/fs/cgroup, as nft wants the path: "" on a
    unified host, "unified/" on a hybrid one. Refused when there is none below /sys/fs/cgroup."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        fstype = fields[fields.index("-") + 1]
        mount = Path(fields[4].replace("\\040", " "))
        if fstype == "cgroup2" and (mount == NFT_ROOT or NFT_ROOT in mount.parents):
            relative = mount.relative_to(NFT_ROOT).as_posix()
            return "" if relative == "." else f"{relative}/"
    raise FirewallError(
        f"no cgroup2 hierarchy mounted at or below {NFT_ROOT} (/proc/self/mountinfo): the cluster's nftables "
        "firewall matches Ray's sockets by their cgroup and cannot be rendered on this host"
    )


def _addresses(members: list[str]) -> tuple[list[str], list[str]]:
    v4: set[ipaddress.IPv4Address] = set()
    v6: set[ipaddress.IPv6Address] = set()
    for raw in members:
        try:
            ip = ipaddress.ip_address(raw)
        except ValueError:
            raise FirewallError(f"member address {raw!r} is not an IP address") from None
        (v4 if isinstance(ip, ipaddress.IPv4Address) else v6).add(ip)  # type: ignore[arg-type]
    return [str(a) for a in sorted(v4)], [str(a) for a in sorted(v6)]


def _cgroup(path: str) -> tuple[int, str]:
    parts = path.strip("/").split("/")
    if not all(_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        raise FirewallError(f"cgroup {path!r}: letters, digits and _.@:- between slashes only")
    return len(parts), "/".join(parts)


def _set(name: str, kind: str, elements: list[str]) -> str:
    body = f" elements = {{ {', '.join(elements)} }}" if elements else ""
    return f"\tset {name} {{\n\t\ttype {kind};{body}\n\t}}\n"


def ruleset(members: list[str], cgroups: list[str], prefix: str) -> str:
    """`nft -f` input: the table replaced whole, the members' IPv4 and IPv6 sets (either may be empty: then
    that family reaches the cgroups' sockets from loopback only), and per cgroup (relative to the cgroup2
    root; `prefix` is `cgroup_prefix()`) a drop of packets to its sockets from every other address.
    Loopback and ICMP errors about the unit's own connections (`related`) pass; `established` does not: a
    removed member's open connections are cut at the reload, not only its new ones."""
    v4, v6 = _addresses(members)
    rules = []
    for path in cgroups:
        level, clean = _cgroup(path)
        match = f'socket cgroupv2 level {level} "{_cgroup(prefix + clean)[1]}"'
        rules += [f"{match} ip saddr != @members4 drop", f"{match} ip6 saddr != @members6 drop"]
    return (
        "# the cluster's members only, to the sockets of Ray's unit (appliance/cluster/nft.py); load: nft -f\n"
        f"table inet {TABLE}\n"
        f"delete table inet {TABLE}\n"
        f"table inet {TABLE} {{\n"
        + _set("members4", "ipv4_addr", v4)
        + _set("members6", "ipv6_addr", v6)
        + "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n"
        '\t\tiifname "lo" accept\n\t\tct state related accept\n' + "".join(f"\t\t{r}\n" for r in rules) + "\t}\n}\n"
    )
