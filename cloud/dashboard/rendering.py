"""The dashboard's per-app state and page rendering: Jinja2 templates, security headers.

Templates autoescape everything; pages forbid framing and inline scripts (the only script
is ``static/dashboard.js``), and no page is cached, since each shows live figures.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from cloud.core.context import CloudContext
from cloud.dashboard import csrf
from cloud.dashboard.queries import last_seen_age
from cloud.dashboard.service import KeyTokenCache
from cloud.dashboard.session import DashboardSession, SessionSecret

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclass
class DashboardState:
    """Built by ``install_dashboard``; the signing secret is read on first use."""

    key_dir: Path
    templates: jinja2.Environment = field(init=False)
    key_tokens: KeyTokenCache = field(default_factory=KeyTokenCache)
    _secret: SessionSecret | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["percent"] = _percent
        self.templates.filters["size"] = _size

    @property
    def secret(self) -> SessionSecret:
        with self._lock:
            if self._secret is None:
                self._secret = SessionSecret.load_or_create(self.key_dir)
            return self._secret


def state_of(request: Request) -> DashboardState:
    state: DashboardState = request.app.state.dashboard
    return state


def context_of(request: Request) -> CloudContext:
    context: CloudContext = request.app.state.context
    return context


def render(
    request: Request,
    template: str,
    session: DashboardSession | None,
    *,
    status: int = 200,
    csrf_binding: str | None = None,
    **values: Any,
) -> HTMLResponse:
    """A page; its forms carry the CSRF token of ``session`` (or of ``csrf_binding``)."""
    state = state_of(request)
    binding = session.nonce if session is not None else csrf_binding
    body = state.templates.get_template(template).render(
        request=request,
        session=session,
        csrf_token=csrf.token_for(state.secret, binding) if binding else "",
        path=request.url.path,
        age=last_seen_age,
        **values,
    )
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
