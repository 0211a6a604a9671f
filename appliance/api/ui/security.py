"""What keeps the admin page safe in a browser: response headers (a strict CSP), the session and CSRF
cookies, CSRF checks (fastapi-csrf-protect's double-submit tokens)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from fastapi_csrf_protect import CsrfProtect
from fastapi_csrf_protect.exceptions import CsrfProtectError

from appliance.api.ui.sessions import ABSOLUTE

PREFIX = "/admin/ui"
SESSION_COOKIE = "appliance_ui_session"
CSRF_COOKIE = "appliance_ui_csrf"
CSRF_FIELD = "csrf_token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


@CsrfProtect.load_config
def _csrf_config() -> list[tuple[str, object]]:
    return [
        ("token_location", "body"),
        ("token_key", CSRF_FIELD),
        ("cookie_key", CSRF_COOKIE),
        ("cookie_samesite", "strict"),
        ("max_age", int(ABSOLUTE.total_seconds())),
    ]


class SecurityHeaders:
    """Adds the headers above to every response of the admin page (pages, static files, errors)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class Csrf:
    """fastapi-csrf-protect with this appliance's secret: the form carries the token, the cookie its
    signed twin; a post is honoured only when they match. A signed-in post must also carry its session's own
    token: a pair fetched anonymously (any sign-in page hands one out) is valid for the library but belongs to
    no session, so with a session's cookie it would otherwise pass."""

    def __init__(self, secret_file: Path) -> None:
        self._secret = _load_or_create_secret(secret_file)
        self._protect = CsrfProtect()

    def issue(self) -> tuple[str, str]:
        """(token for the form, signed token for the cookie)."""
        return self._protect.generate_csrf_tokens(self._secret)

    async def check(self, request: Request, session_token: str | None = None) -> bool:
        """The post's token pair is valid and, with `session_token` (signed in), is that session's."""
        given = (await request.form()).get(CSRF_FIELD)  # parsed once; the library then reads it again
        try:
            await self._protect.validate_csrf(request, secret_key=self._secret)
        except CsrfProtectError:
            return False
        return session_token is None or (
            isinstance(given, str) and secrets.compare_digest(given.encode(), session_token.encode())
        )


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    """HttpOnly, SameSite=Strict, scoped to the page, Secure whenever the page is served over TLS."""
    response.set_cookie(
        name, value, max_age=max_age, path=PREFIX, httponly=True, samesite="strict", secure=_secure(request)
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=PREFIX, httponly=True, samesite="strict", secure=_secure(request))


def _secure(request: Request) -> bool:
    """Over TLS: whenever the appliance has a certificate (then the front terminates TLS and Serve sees
    plain HTTP), whatever any header says; else when the request itself came over https."""
    return request.url.scheme == "https" or request.app.state.services.cert_expiry.path.exists()


def _load_or_create_secret(path: Path) -> str:
    """The CSRF signing secret, shared by every process of this host (mode 0600, made once)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.touch(mode=0o600)
        tmp.write_text(secrets.token_urlsafe(32))
        try:
            os.link(tmp, path)  # the first process to get here wins; the others read its secret
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
