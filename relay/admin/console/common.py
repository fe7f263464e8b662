"""What the console's modules share: its prefix, its app and request keys, the
per-app state, and the error page."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web

from relay.admin.console.history import History
from relay.admin.console.session import COOKIE, Session, Signer, signing_key
from relay.config import AdminConfig
from relay.runtime import RELAY

PREFIX: Final = "/ui"
SESSION: Final = web.RequestKey("console_session", Session)


@dataclass
class ConsoleState:
    history: History = field(default_factory=History)
    _signer: tuple[bytes, Signer] | None = None

    def signer(self, admin: AdminConfig) -> Signer:
        """Signed with a key made for the current tokens: a reload that changes any of
        them ends every session."""
        tokens = hashlib.sha256(
            "\0".join(f"{t.label}\0{t.role}\0{t.secret}" for t in admin.tokens).encode()
        ).digest()
        if self._signer is None or self._signer[0] != tokens:
            self._signer = (tokens, Signer(signing_key()))
        return self._signer[1]


STATE: Final = web.AppKey("console_state", ConsoleState)


def render(
    request: web.Request, template: str, context: Mapping[str, Any], status: int = 200
) -> web.Response:
    """A page, with what every page's frame needs: the CSRF token of the session
    (for its forms) and whether a token is asked for (the sign-out button)."""
    session = request.get(SESSION)
    state = request.app[STATE]
    admin = request.config_dict[RELAY].config.admin
    base = {
        "csrf": state.signer(admin).csrf(session) if session is not None else "",
        "signed_in": session is not None and session.authed,
        "can_operate": session is not None and session.role == "operate",
        "token_required": admin.token_required,
        "path": request.path,
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    if request.path.endswith(".json"):
        return web.json_response({"error": f"http_{status}", "message": message}, status=status)
    return render(request, "error.html", {"status": status, "message": message}, status=status)


def set_cookie(resp: web.StreamResponse, value: str, secure: bool) -> None:
    resp.set_cookie(
        COOKIE, value, path=f"{PREFIX}/", httponly=True, samesite="Strict", secure=secure
    )
