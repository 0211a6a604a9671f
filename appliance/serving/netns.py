"""A network of Ray's own: the embedded Ray head runs in a private network namespace with only loopback.

Ray 2.60 binds its GCS, raylets, workers and Serve's gRPC ports on every interface whatever node address it
is given (measured: shared/research/ray.md and issue 15), so binding cannot keep them off the site network.
Instead the `appliance serve` process binds the API's listening socket in the host's namespace first, then
moves itself (and so every process Ray starts) into a new namespace. A socket stays in the namespace it was
made in, so the API keeps answering on the host while nothing of Ray exists there. The API reaches Serve's
proxy through the front (appliance/tls/front.py), which accepts on the host socket and connects inside.

As root only a network namespace is needed; otherwise an unprivileged user namespace gives the capability
to bring loopback up in it (and must be made while the process has one thread).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading

from appliance.errors import ApplianceError

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

HOW_TO_OPT_OUT = (
    "run as root or allow unprivileged user namespaces, or set APPLIANCE_RAY_NETWORK=host and "
    "firewall Ray's ports below Ray (the installer's systemd units do)"
)


def bind_listener(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound now so that it belongs to the host's network namespace."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ApplianceError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    listener.listen(512)
    return listener


def enter_private_network() -> None:
    """Move this process into a new network namespace whose only interface is loopback, brought up."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNET
    if uid != 0:
        if threading.active_count() > 1:
            raise ApplianceError("cannot give Ray a private network: the process already runs threads")
        flags |= CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise ApplianceError(f"cannot give Ray a private network ({os.strerror(err)}): {HOW_TO_OPT_OUT}")
    if uid != 0:  # be root inside the user namespace, ourselves outside it
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    _loopback_up()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
