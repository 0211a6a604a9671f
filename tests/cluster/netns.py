"""Hosts on one machine for the cluster tests: network namespaces on a bridge, each with its own address.

Made and removed by the test (root only); every process started in a namespace is killed with it, by the
pids the kernel lists for that namespace (`ip netns pids`), so nothing outlives the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

SUBNET = "10.77.{tag}"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Net:
    """A bridge and the namespaces on it: `add(name)` returns the host's address."""

    tag: int = field(default_factory=lambda: os.getpid() % 200 + 20)
    hosts: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # host -> its cable's end on the bridge

    @property
    def bridge(self) -> str:
        return f"ctbr{self.tag}"

    def up(self) -> Net:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("link", "set", self.bridge, "up")
        return self

    def ns(self, name: str) -> str:
        return f"ct{self.tag}-{name}"

    def add(self, name: str) -> str:
        ns, n = self.ns(name), len(self.hosts) + 1
        address = f"10.{self.tag}.0.{n}"
        self.hosts[name] = address  # before it is made: `down` removes it even when a step below fails
        ip("netns", "add", ns)
        veth = f"ct{self.tag}v{n}"
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", veth, "master", self.bridge, "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        self.links[name] = veth
        return address

    def link(self, name: str, up: bool) -> None:
        """Plug or pull the host's cable: pulled, its packets vanish (as a power cut looks to the others)."""
        ip("link", "set", self.links[name], "up" if up else "down")

    def argv(self, name: str, argv: list[str]) -> list[str]:
        """Entered with nsenter, not `ip netns exec`, which remounts /sys: the cgroup tree that nft and the
        cluster commands read (cluster/nft.py) would vanish, as it does on no host."""
        return ["nsenter", f"--net=/run/netns/{self.ns(name)}", *argv]

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float = 120):
        return subprocess.run(self.argv(name, argv), env=env, capture_output=True, text=True, timeout=timeout)

    def kill_all(self, name: str, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGKILL)) -> None:
        """Every process in the namespace (only ours live there), TERM then KILL (or only KILL: a host lost)."""
        for sig in signals:
            pids = [int(p) for p in ip("netns", "pids", self.ns(name), check=False).stdout.split()]
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
                time.sleep(0.2)

    def down(self) -> None:
        for name in self.hosts:
            self.kill_all(name)
            ip("netns", "del", self.ns(name), check=False)
        ip("link", "del", self.bridge, check=False)
        # the veths' host ends go with their namespaces in the kernel's own time; the next test of the session
        # (the same tag) makes them again
        deadline = time.monotonic() + 30
        while f"ct{self.tag}v" in ip("-br", "link", check=False).stdout and time.monotonic() < deadline:
            time.sleep(0.5)
