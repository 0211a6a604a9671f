"""What makes a Ray process a cluster member: mutual TLS on every gRPC channel and the token.

Ray reads these variables once, when it starts (`ray start`, `ray.init`), and every process it starts
inherits them. TLS alone lets in any holder of a certificate from the CA; the token alone travels in clear
(Ray's docs say to add TLS): together a peer needs both a certificate from this cluster's CA and the token.

A member that goes silent (power, cable) is declared dead by the head's GCS after its health checks fail:
with Ray's defaults (every 3 s, a 10 s timeout, 5 failures) that took 64.6 s in tests/media/
test_cluster_serving.py, and the streams that member served hung that long before their retryable error.
`DEAD_AFTER` checks every 2 s with a 3 s timeout, 4 failures: about 20 s. A member that is merely busy still
answers (the check is a gRPC health call its raylet serves, not its model).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from appliance.files import atomic_write

DEAD_AFTER = {
    "RAY_health_check_period_ms": "2000",
    "RAY_health_check_timeout_ms": "3000",
    "RAY_health_check_failure_threshold": "4",
}


def node_environment(folder: Path, token: Path) -> dict[str, str]:
    """Ray's environment for the node whose identity is in `folder` (node.crt, node.key, ca.crt)."""
    folder = folder.resolve()
    return {
        **DEAD_AFTER,
        "RAY_USE_TLS": "1",
        "RAY_TLS_SERVER_CERT": str(folder / "node.crt"),
        "RAY_TLS_SERVER_KEY": str(folder / "node.key"),
        "RAY_TLS_CA_CERT": str(folder / "ca.crt"),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token.resolve()),
    }


def ensure_token(path: Path) -> Path:
    """The Ray token file (0600), made once: every member's Ray presents it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def rotate_token(path: Path) -> None:
    """A new Ray token in place of the old (whole or not at all, 0600). Ray has no revocation list for its TLS
    certificates: a removed member still holds a valid one, so the token it also holds must stop opening the
    cluster. Ray reads the token once, at its start: the head takes it when its Ray restarts."""
    with atomic_write(path, mode=0o600) as f:
        f.write(secrets.token_hex(32))
