"""Who may talk to the admin listener at all, before any token is looked at.

A browser on the operator's machine is a loopback client too, so a tokenless
loopback listener must itself refuse what a web page can send:

- **a foreign Host** (DNS rebinding: ``evil.example`` resolving to 127.0.0.1
  makes the attacker's page same-origin with us, so a browser would let it read
  our answers). Only IP literals, ``localhost`` and the configured
  ``admin.allowed_hosts`` are answered: a rebinding attack needs a name, and an
  IP literal that reached us is ours.
- **a mutating API call that is not ``application/json``**: a page can send a
  cross-origin POST without asking (a form, ``fetch`` in ``no-cors`` mode) only
  with a "simple" content type; ``application/json`` forces a CORS preflight,
  which this listener never grants. This holds in every browser, old ones
  included.
- **a request a browser marks as cross-site** (``Sec-Fetch-Site``) or whose
  ``Origin`` is not this listener's: defence in depth on top of the above.

``/healthz`` and ``/readyz`` answer any Host: they reveal nothing, and probes
(kubelets, load balancers) use whatever name they were given.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a browser sends for a request its own user typed or bookmarked ("none"),
# or that a page of this very origin made.
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, lowercased, without its port or brackets."""
    text = host_header.strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    if text.count(":") > 1:  # a bare IPv6 address, no port
        return text
    return text.partition(":")[0].rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_names(listen_host: str, extra: Iterable[str]) -> frozenset[str]:
    """The names this listener answers to besides IP literals."""
    names = {"localhost", *(h.lower().rstrip(".") for h in extra)}
    if listen_host and not _is_ip(listen_host):
        names.add(listen_host.lower())
    return frozenset(names)


def host_refusal(host_header: str | None, names: frozenset[str]) -> str | None:
    """Why a request with this ``Host`` gets no answer; None if it may have one."""
    if not host_header:
        return "the request has no Host header"
    name = host_name(host_header)
    if _is_ip(name) or name in names:
        return None
    return f"Host {name!r} is not one of this listener's names (add it to admin.allowed_hosts)"


def cross_site_refusal(
    method: str, headers: Mapping[str, str], *, api: bool
) -> tuple[str, str] | None:
    """``(reason, message)`` if a web page may have sent this; None otherwise.

    ``api``: the JSON API, whose mutating calls must say ``application/json``.
    The console's forms are same-origin posts with a CSRF token instead.
    """
    if method in SAFE_METHODS:
        return None
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in SAME_SITE_FETCHES:
        return "cross_site", f"a {site} request may not change anything here"
    origin = headers.get("Origin")
    if origin is not None and not _same_origin(origin, headers.get("Host", "")):
        return "cross_origin", "a request from another origin may not change anything here"
    if api:
        ctype = headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if ctype != "application/json":
            return "content_type", "a change through the API must be sent as application/json"
    return None


def _same_origin(origin: str, host_header: str) -> bool:
    if origin == "null":
        # Opaque: the console's own forms send it too (its no-referrer policy), and so
        # do sandboxed frames. Sec-Fetch-Site above, the JSON type and the console's
        # CSRF token decide for these.
        return True
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == host_header.strip().lower()
