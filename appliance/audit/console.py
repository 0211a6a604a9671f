"""Who is at the console: the principal that audit records name for an operator's command."""

from __future__ import annotations

import os
import pwd
import re

from appliance.principal import Principal

_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}\$?")  # what useradd accepts


def console_principal() -> Principal:
    """`cli:<user>` with the admin role, the user being the one this process runs as, read from its uid:
    `$LOGNAME` and `$USER` are whatever the caller exported, so they name nobody. When sudo ran the command,
    the user sudo says invoked it follows in brackets (`cli:root (sudo by alice)`); that name comes from the
    environment too, so it is context beside the uid's name, never instead of it."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (a container's arbitrary uid)
        user = f"uid {uid}"
    sudo = os.environ.get("SUDO_USER")
    if sudo and sudo != user:
        shown = sudo if _USER_NAME.fullmatch(sudo) else ascii(sudo[:32])
        user = f"{user} (sudo by {shown})"
    return Principal(name=f"cli:{user}", role="admin")
