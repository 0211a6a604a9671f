"""The admin page's views: sign-in and sign-out, the audit list, one record, integrity, export, keys."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from appliance import apikeys, directory
from appliance.api import admin_wire
from appliance.api.actors import audit_event, create_key, recorded_export, revoke_key
from appliance.api.auth import Caller
from appliance.api.errors import ApiError
from appliance.api.peer import cert_subject, lacks_required_certificate, with_certificate
from appliance.api.services import Services
from appliance.api.ui import chart, filters, sessions
from appliance.api.ui.security import CSRF_COOKIE, CSRF_FIELD, PREFIX, SESSION_COOKIE, clear_cookie, set_cookie
from appliance.audit import EVENTS, AuditEvent, AuditFilter, AuditLog, AuditPage
from appliance.audit.log import MAX_SEQ
from appliance.audit.readers import filter_text
from appliance.principal import Principal

PAGE_SIZE = 50
TEXT_WINDOW = 100_000
router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


class SignInRequired(Exception):
    """No live session: the page answers with the sign-in form."""


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def install_error_pages(ui: FastAPI) -> None:
    """HTML errors for a person at a browser (the API keeps its JSON ones)."""

    @ui.exception_handler(SignInRequired)
    async def _signin(request: Request, _: SignInRequired) -> Response:
        return RedirectResponse(f"{PREFIX}/signin", status_code=303)

    @ui.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return _error(request, exc.status, exc.message)

    @ui.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> Response:
        return _error(request, exc.status, exc.message)

    @ui.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(
            request,
            exc.status_code,
            {404: "no such page", 405: "method not allowed"}.get(exc.status_code, str(exc.detail)),
        )


def _error(request: Request, status: int, message: str) -> Response:
    return templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "message": message, "who": None, "banner": None, "prefix": PREFIX},
        status_code=status,
    )


# -- who is asking ------------------------------------------------------------------------------------
def _svc(request: Request) -> Services:
    return request.app.state.services


def _caller(request: Request, principal: Principal) -> Caller:
    route = f"{request.method} {PREFIX}{request.scope['route'].path}"
    return Caller(
        with_certificate(principal, request.scope),
        f"req_{uuid.uuid4().hex}",
        request.client.host if request.client else None,
        route,
    )


async def signed_in(request: Request) -> sessions.SignedIn:
    """The request's live session, used with the client certificate it was signed in with; a session used
    with another certificate (or without it) is ended and the request refused (403, a `denial` record)."""
    svc = _svc(request)

    def find():
        with svc.sessions() as session:
            return sessions.lookup(session, request.cookies.get(SESSION_COOKIE), cert_subject(request.scope))

    try:
        who = await asyncio.to_thread(find)
    except sessions.WrongCertificate as exc:
        caller = _caller(request, exc.principal)
        await svc.record(
            AuditEvent(
                event="denial",
                request_id=caller.request_id,
                principal=caller.principal,
                source=caller.source,
                route=caller.route,
                status=403,
                error_code="session_certificate_mismatch",
            )
        )
        raise PageError(
            403, "this session was signed in with another client certificate; it has been ended, sign in again"
        ) from exc
    if who is None:
        raise SignInRequired()
    return who


async def admin_only(who: sessions.SignedIn = Depends(signed_in)) -> sessions.SignedIn:
    if who.principal.role != "admin":
        raise PageError(403, "only admin keys may manage keys")
    return who


async def csrf_checked(request: Request) -> None:
    """Sign-in's check: no session yet, so any valid token pair (the sign-in page's own) will do."""
    await _csrf(request, None)


async def session_csrf(request: Request, who: sessions.SignedIn = Depends(signed_in)) -> None:
    """Every signed-in post's check: the token must be the session's own (issued at its sign-in)."""
    await _csrf(request, who.csrf_token)


async def _csrf(request: Request, session_token: str | None) -> None:
    if not await request.app.state.csrf.check(request, session_token):
        raise PageError(403, "the form's CSRF token is missing or wrong; reload the page and try again")


async def _page(
    request: Request, template: str, who: sessions.SignedIn | None, status: int = 200, **context
) -> Response:
    """A page with the integrity banner and the CSRF token for its forms: the session's own, or, before
    sign-in, a fresh one whose signed twin goes into the cookie."""
    banner = await asyncio.to_thread(request.app.state.integrity.banner) if who else None
    cert_warning = _svc(request).cert_expiry.warning() if who else None
    forward_warning = await asyncio.to_thread(_svc(request).forward_warning) if who else None
    token, signed = (who.csrf_token, None) if who else request.app.state.csrf.issue()
    response = templates.TemplateResponse(
        request,
        template,
        {
            "who": who and who.principal,
            "banner": banner,
            "cert_warning": cert_warning,
            "forward_warning": forward_warning,
            "csrf": token,
            "csrf_field": CSRF_FIELD,
            "prefix": PREFIX,
            **context,
        },
        status_code=status,
    )
    if signed:
        set_cookie(response, request, CSRF_COOKIE, signed, int(sessions.ABSOLUTE.total_seconds()))
    return response


def _key_principal(svc: Services, key: str) -> Principal | None:
    with svc.sessions() as session:
        return apikeys.authenticate(session, key)


async def _failed_sign_in(svc: Services, caller: Caller, status: int, code: str, detail: dict[str, str]) -> None:
    await svc.record(
        AuditEvent(
            event="auth_failure",
            request_id=caller.request_id,
            source=caller.source,
            route=caller.route,
            status=status,
            error_code=code,
            detail=detail,
        )
    )


# -- sign-in ------------------------------------------------------------------------------------------
@router.get("/signin")
async def signin_form(request: Request) -> Response:
    return await _page(request, "signin.html", None)


@router.post("/signin", dependencies=[Depends(csrf_checked)])  # no session yet
async def signin(
    request: Request,
    key: str = Form("", max_length=512),
    username: str = Form("", max_length=256),
    password: str = Form("", max_length=1024),
) -> Response:
    """An auditor or admin API key, or a directory user whose group grants one of those roles."""
    svc = _svc(request)
    caller = _caller(request, Principal())
    by_directory = bool(username or password)
    if by_directory and not svc.settings.ldap_url:
        return await _page(request, "signin.html", None, 400, error="directory sign-in is not configured here")
    if not by_directory and not svc.settings.ui_key_signin:
        return await _page(
            request,
            "signin.html",
            None,
            403,
            error="sign-in with an API key is turned off here; use your directory account",
        )
    detail: dict[str, str] = {}
    try:
        if by_directory:
            user = await asyncio.to_thread(directory.authenticate, svc.settings, username.strip(), password)
            principal = None if user is None else Principal(key_id=user.key_id, name=user.dn, role=user.role)
            detail = {"directory_dn": user.dn, "group": user.group} if user else {"user": username.strip()}
        else:
            principal = await asyncio.to_thread(_key_principal, svc, key.strip())
    except directory.DirectoryUnavailable as exc:
        await _failed_sign_in(svc, caller, 503, "directory_unavailable", {"user": username.strip(), "error": str(exc)})
        return await _page(request, "signin.html", None, 503, error="the directory cannot be reached; try again")
    if principal is None:  # the API's own budget of failures per address, shared with it
        wait = svc.auth_throttle.admit(caller.source or "unknown")
        if wait is not None:  # counted, and recorded in the throttle's aggregated record
            response = await _page(
                request,
                "signin.html",
                None,
                429,
                error=f"too many failed sign-ins from this address; try again in {wait:.0f} s",
            )
            response.headers["Retry-After"] = str(max(1, round(wait + 0.499)))
            return response
        code = "invalid_directory_credentials" if by_directory else "invalid_api_key"
        await _failed_sign_in(svc, caller, 401, code, detail)
        return await _page(
            request,
            "signin.html",
            None,
            401,
            error="wrong name or password, or no group of yours grants the auditor or admin role"
            if by_directory
            else "that key is not valid",
        )
    principal = with_certificate(principal, request.scope)
    if principal.role not in ("auditor", "admin") or lacks_required_certificate(svc.settings, principal):
        no_cert = principal.role in ("auditor", "admin")
        await svc.record(
            AuditEvent(
                event="denial",
                request_id=caller.request_id,
                principal=principal,
                source=caller.source,
                route=caller.route,
                status=403,
                error_code="client_certificate_required" if no_cert else "role_forbidden",
            )
        )
        return await _page(
            request,
            "signin.html",
            None,
            403,
            error=f"the {principal.role} role must present a client certificate"
            if no_cert
            else "only auditor and admin keys may sign in to the admin page",
        )
    caller = Caller(principal, caller.request_id, caller.source, caller.route)
    await svc.record(audit_event(caller, "session.signin", **detail))  # recorded first: fail closed

    token, signed = request.app.state.csrf.issue()  # new session id and new CSRF pair at every sign-in

    def start():
        with svc.sessions() as session:
            return sessions.start(session, principal, token, replaces=request.cookies.get(SESSION_COOKIE))

    sid = await asyncio.to_thread(start)
    response = RedirectResponse(f"{PREFIX}/audit", status_code=303)
    set_cookie(response, request, SESSION_COOKIE, sid)  # no max-age: it ends with the browser too
    set_cookie(response, request, CSRF_COOKIE, signed, int(sessions.ABSOLUTE.total_seconds()))
    return response


@router.post("/signout", dependencies=[Depends(session_csrf)])
async def signout(request: Request, who: sessions.SignedIn = Depends(signed_in)) -> Response:
    svc = _svc(request)
    await svc.record(audit_event(_caller(request, who.principal), "session.signout"))

    def end():
        with svc.sessions() as session:
            sessions.end(session, request.cookies[SESSION_COOKIE])

    await asyncio.to_thread(end)
    response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
    clear_cookie(response, request, SESSION_COOKIE)
    clear_cookie(response, request, CSRF_COOKIE)
    return response


# -- the audit log ------------------------------------------------------------------------------------
@router.get("/")
async def home() -> Response:
    return RedirectResponse(f"{PREFIX}/audit", status_code=303)


@router.get("/audit")
async def audit_list(request: Request, who: sessions.SignedIn = Depends(signed_in)) -> Response:
    form = filters.parse(request.query_params)
    cursor = _cursor(request.query_params.get("cursor"))
    page = older = searched = None
    if not form.errors:
        page, older, searched = await asyncio.to_thread(_audit_page, _svc(request).audit, form.filters, cursor)
        count = len(page.records)
        await _svc(request).record_read(
            audit_event(
                _caller(request, who.principal), "audit.searched", filter=filter_text(form.filters), count=str(count)
            ),
            count,
        )
    return await _page(
        request,
        "audit_list.html",
        who,
        400 if form.errors else 200,
        form=form,
        page=page,
        cursor=cursor,
        older=older,
        searched=searched,
        events=sorted(EVENTS),
        actions=filters.ACTIONS,
    )


def _audit_page(
    audit: AuditLog, wanted: AuditFilter, cursor: int | None
) -> tuple[AuditPage, int | None, tuple[int, int] | None]:
    """(page, cursor of the next older page, searched range or None).

    Free text has no index, so without a time range each page scans at most TEXT_WINDOW records back from
    its cursor; when that window holds fewer than a page of matches, the page says which records it
    searched and offers to go on further back, and every page stays fast at any depth."""
    if not wanted.text or wanted.since or wanted.until:
        page = audit.query(wanted, cursor, PAGE_SIZE)
        return page, page.next_cursor, None
    top = cursor if cursor is not None else audit.head()[0] + 1
    floor = max(top - 1 - TEXT_WINDOW, 0)
    page = audit.query(replace(wanted, after_seq=floor), cursor, PAGE_SIZE)
    if page.next_cursor is not None or floor == 0:
        return page, page.next_cursor, None
    return page, floor + 1, (floor + 1, top - 1)


@router.get("/audit/chart.svg")
async def audit_chart(request: Request, who: sessions.SignedIn = Depends(signed_in)) -> Response:
    form = filters.parse(request.query_params)
    start, end, hourly = chart.window(form.filters.since, form.filters.until, datetime.now(UTC))
    rows = await asyncio.to_thread(_svc(request).audit.activity, form.filters, start, end, hourly)
    return Response(chart.svg(chart.periods(start, end, hourly), rows), media_type="image/svg+xml")


@router.get("/audit/export")
async def audit_export(request: Request, who: sessions.SignedIn = Depends(signed_in)) -> Response:
    form = filters.parse(request.query_params)
    fmt = request.query_params.get("format", "jsonl")
    if form.errors or fmt not in ("jsonl", "csv"):
        raise PageError(400, "; ".join(form.errors) or "format must be jsonl or csv")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return await recorded_export(
        _svc(request),
        _caller(request, who.principal),
        fmt,
        form.filters if form.active else None,
        filename=f"audit-{stamp}",
    )


@router.get("/audit/{seq}")
async def audit_record(request: Request, seq: int, who: sessions.SignedIn = Depends(signed_in)) -> Response:
    audit = _svc(request).audit
    if not 0 <= seq <= MAX_SEQ:
        raise PageError(404, f"no audit record {seq}")
    record = await asyncio.to_thread(audit.get, seq)
    await _svc(request).record_read(
        audit_event(_caller(request, who.principal), "audit.viewed", filter="{}", seq=str(seq)),
        int(record is not None),
        seq,
    )
    if record is None:
        raise PageError(404, f"no audit record {seq}")
    rid, key_id = record.request_id, record.principal.key_id  # a keyless record (a bad key) is one request
    siblings = (await asyncio.to_thread(audit.request_records, rid, key_id)) if rid and key_id else [record]
    checkpoint = await asyncio.to_thread(audit.covering_checkpoint, seq)
    return await _page(request, "record.html", who, record=record, siblings=siblings, checkpoint=checkpoint)


def _cursor(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) > MAX_SEQ:
        raise PageError(400, f"cursor {value!r} is not a sequence number")
    return int(value)


# -- integrity ----------------------------------------------------------------------------------------
@router.get("/integrity")
async def integrity(request: Request, who: sessions.SignedIn = Depends(signed_in)) -> Response:
    state = request.app.state.integrity
    progress = state.progress  # before `last`: a run that ends in between must not leave the old result shown
    last = await asyncio.to_thread(state.last)
    checkpoint, uncovered = await asyncio.to_thread(_svc(request).audit.coverage)
    replicas = getattr(_svc(request).backend, "replicas", None)  # a Serve backend: its LLM replicas per node
    return await _page(
        request,
        "integrity.html",
        who,
        last=last,
        checkpoint=checkpoint,
        uncovered=uncovered,
        progress=progress,
        replicas=None if replicas is None else replicas(),
    )


@router.post("/integrity/verify", dependencies=[Depends(session_csrf)])
async def verify(request: Request, who: sessions.SignedIn = Depends(signed_in)) -> Response:
    request.app.state.integrity.start(who.principal)
    return RedirectResponse(f"{PREFIX}/integrity", status_code=303)


# -- keys ---------------------------------------------------------------------------------------------
@router.get("/keys")
async def keys_page(request: Request, who: sessions.SignedIn = Depends(admin_only)) -> Response:
    return await _keys(request, who)


@router.post("/keys", dependencies=[Depends(session_csrf)])
async def keys_create(
    request: Request,
    who: sessions.SignedIn = Depends(admin_only),
    name: str = Form(""),
    role: str = Form(""),
    expires_at: str = Form(""),
) -> Response:
    try:
        body = admin_wire.NewKey.model_validate({"name": name, "role": role, "expires_at": expires_at or None})
    except ValidationError as exc:
        return await _keys(request, who, 400, error=_first_error(exc))
    try:
        token, info = await create_key(_svc(request), _caller(request, who.principal), body)
    except ApiError as exc:
        return await _keys(request, who, exc.status, error=exc.message)
    return await _keys(request, who, 201, created=(token, info))


@router.post("/keys/{key_id}/revoke", dependencies=[Depends(session_csrf)])
async def keys_revoke(request: Request, key_id: str, who: sessions.SignedIn = Depends(admin_only)) -> Response:
    await revoke_key(_svc(request), _caller(request, who.principal), key_id)
    return RedirectResponse(f"{PREFIX}/keys", status_code=303)


async def _keys(request: Request, who: sessions.SignedIn, status: int = 200, **context) -> Response:
    def listed():
        with _svc(request).sessions() as session:
            return apikeys.list_keys(session)

    return await _page(
        request, "keys.html", who, status, keys=await asyncio.to_thread(listed), roles=apikeys.ROLES, **context
    )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
