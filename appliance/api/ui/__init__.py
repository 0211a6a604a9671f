"""The admin web page at /admin/ui: a sub-application of the API with its own HTML errors and headers.

Server-rendered Jinja2 with one stylesheet and one small script, all served from this package; nothing
is fetched from elsewhere, and every view works with JavaScript off.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from appliance.api.services import Services
from appliance.api.ui import usage, views
from appliance.api.ui.integrity import Integrity
from appliance.api.ui.security import Csrf, SecurityHeaders

HERE = Path(__file__).parent


def create_ui(svc: Services) -> FastAPI:
    ui = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    ui.state.services = svc
    ui.state.csrf = Csrf(svc.settings.keys_dir / "ui-csrf.secret")
    ui.state.integrity = Integrity(svc.audit, svc.sessions)
    ui.include_router(views.router)
    ui.include_router(usage.router)
    ui.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    views.install_error_pages(ui)
    ui.add_middleware(SecurityHeaders)
    return ui
