"""A route's edge, decided before anything is read or stored: who may post
(``client_subjects``, ``allow_from``) and how fast (``ingress_rate``). Refusals lose nothing: a source
that may not post was never going to be served, and a sender told 429 with
``Retry-After`` sends again."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from aiohttp import web

from relay import tls
from relay.config.types import Network
from relay.forward import is_trusted
from relay.intake.replies import Reply, reject
from relay.runtime import Relay, RouteRuntime


def client_address(
    remote: str | None, forwarded_for: str | None, trusted: Iterable[Network]
) -> str:
    """Where a webhook came from: the peer; or, when the peer is a trusted proxy, the
    nearest address in ``X-Forwarded-For`` that is not itself a trusted proxy (what
    the proxies in between could not have made up). "" when nothing is known."""
    proxies = tuple(trusted)
    address = remote or ""
    if not forwarded_for or not is_trusted(address, proxies):
        return address
    hops = [h.strip().strip("[]") for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        address = hop
        if not is_trusted(hop, proxies):
            break
    return address


def _certificate(request: web.Request, allowed: tuple[str, ...]) -> Reply | None:
    """403 unless the connection showed a client certificate (verified by the
    listener against its client CA) whose subject CN or a SAN is ``allowed``."""
    transport = request.transport
    names = tls.subject_names(None if transport is None else transport.get_extra_info("peercert"))
    if not names:
        return reject(403, "client_certificate_required", "this route needs a client certificate")
    if not any(name in allowed for name in names):
        return reject(
            403, "client_certificate_not_allowed", "this client certificate may not post here"
        )
    return None


def check(request: web.Request, relay: Relay, rt: RouteRuntime) -> Reply | None:
    """403 for a client certificate or a source the route does not allow, 429 (with ``Retry-After``) past its
    ingress rate; None to go on."""
    cfg = rt.cfg
    if cfg.client_subjects and (refused := _certificate(request, cfg.client_subjects)):
        return refused
    if not cfg.allow_from and rt.ingress is None:
        return None
    source = client_address(
        request.remote, request.headers.get("X-Forwarded-For"), relay.config.trusted_proxies
    )
    if cfg.allow_from and not is_trusted(source, cfg.allow_from):
        return reject(403, "source_not_allowed", "this route does not take webhooks from here")
    if rt.ingress is not None and cfg.ingress_rate is not None:
        name = source if cfg.ingress_rate.per == "source" else ""
        if (wait := rt.ingress.take(name, time.monotonic())) is not None:
            return reject(
                429,
                "rate_limited",
                "too many webhooks on this route; send again later",
                retry_after=max(1, math.ceil(wait)),
            )
    return None
