"""What the console's modules share: its prefix, its app and request keys, the
per-app state, and the error page."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web

from relay.admin.console.history import History
from relay.admin.console.session import COOKIE, Session, Signer, signing_key
from relay.runtime import RELAY

PREFIX: Final = "/ui"
SESSION: Final = web.RequestKey("console_session", Session)


@dataclass
class ConsoleState:
    history: History = field(default_factory=History)
    _signer: tuple[str | None, Signer] | None = None

    def signer(self, token: str | None) -> Signer:
        """Signed with the current token: a reload that changes it ends every session."""
        if self._signer is None or not _same(self._signer[0], token):
            self._signer = (token, Signer(signing_key(token)))
        return self._signer[1]


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a.encode(), b.encode())


STATE: Final = web.AppKey("console_state", ConsoleState)


def render(
    request: web.Request, template: str, context: Mapping[str, Any], status: int = 200
) -> web.Response:
    """A page, with what every page's frame needs: the CSRF token of the session
    (for its forms) and whether a token is asked for (the sign-out button)."""
    session = request.get(SESSION)
    state = request.app[STATE]
    token = request.config_dict[RELAY].config.admin.token
    base = {
        "csrf": state.signer(token).csrf(session) if session is not None else "",
        "signed_in": session is not None and session.authed,
        "token_required": token is not None,
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
