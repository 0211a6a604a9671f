"""Who is really on the other end: the peer the TLS front attests (tls/attest.py), and the rules on
client certificates that follow from it.

Behind the front every connection comes from 127.0.0.1, so this middleware, outside the key check,
replaces the ASGI client address with the attested one (audit `source`, failure throttling) and keeps
the verified certificate subject for the principal. The header is removed from the request either way, so
no route ever sees it. With `tls_client_auth: required` a request that did not come through the front
(a local process on Serve's loopback port) is refused: otherwise mTLS could be bypassed from the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from appliance.api.errors import ApiError
from appliance.config import Settings
from appliance.principal import Principal
from appliance.tls import attest

PROBES = frozenset({"/healthz", "/readyz"})
log = structlog.get_logger()


class PeerGate:
    """ASGI middleware: believe the front's header only when its MAC verifies."""

    def __init__(self, app, settings: Settings) -> None:
        self.app = app
        self.secret = attest.load_secret(settings.keys_dir, create=True)
        self.require_front = settings.tls_client_auth == "required"
        self._warned = False  # once per replica: a client sending the header on every request floods nothing

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope.get("headers", [])
        stated = [v for k, v in headers if k == attest.HEADER]
        peer = attest.verify(self.secret, stated[0]) if self.secret and len(stated) == 1 else None
        if stated:
            scope["headers"] = [(k, v) for k, v in headers if k != attest.HEADER]
            if peer is None and not self._warned:
                self._warned = True
                log.warning(
                    "a peer header that does not verify was ignored (not sent by the TLS front); "
                    "further ones are ignored silently"
                )
        if peer is not None:
            scope["client"] = (peer.address, 0)
            scope.setdefault("state", {})["cert_subject"] = peer.subject
        elif self.require_front and scope["path"] not in PROBES:
            return await ApiError(
                403,
                "a client certificate is required: connect to the API's TLS address",
                code="client_certificate_required",
            ).response()(scope, receive, send)
        await self.app(scope, receive, send)


def cert_subject(scope: Mapping[str, Any]) -> str | None:
    return scope.get("state", {}).get("cert_subject")


def with_certificate(principal: Principal, scope: Mapping[str, Any]) -> Principal:
    subject = cert_subject(scope)
    return principal if subject is None else principal.model_copy(update={"cert_subject": subject})


def lacks_required_certificate(settings: Settings, principal: Principal) -> bool:
    """A role the settings say must present a client certificate, without one."""
    return principal.role in settings.tls_roles_require_client_cert and principal.cert_subject is None
