"""SIGHUP: re-read the config file and apply its routes, or refuse it whole."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from relay import config as config_mod
from relay.errors import ConfigError
from relay.logging import get_logger
from relay.runtime import Relay
from relay.sdnotify import Notifier

log = get_logger()


def reload(relay: Relay, path: Path, notifier: Notifier, applied: Callable[[], None]) -> bool:
    """SIGHUP: re-read the file; a bad file is refused and the old config stays.

    Runs between two event-loop steps, so no request sees half a reload: one
    that started keeps the route it matched, the next one matches the new set.
    Events of a removed route stay pending in the store (the role that holds
    the store reports them). ``applied`` runs once the new routes are in (the
    dispatcher follows them); True if they are.
    """
    notifier.reloading()
    before = relay.routes
    try:
        new = config_mod.load(path)
        # Read every certificate and build every route before touching anything: a
        # failure leaves the old config whole.
        swap_certificates = relay.swap_certificates(new)
        relay.set_routes(new.routes)
    except ConfigError as exc:
        _refuse(relay, notifier, exc.errors)
        return False
    except Exception as exc:  # e.g. a secret the signature scheme cannot decode
        relay.routes = before
        _refuse(relay, notifier, [f"{type(exc).__name__}: {exc}"])
        return False
    # Listeners, storage, limits (aiohttp's body cap, the connection guard), log
    # set-up and the runner's grace are fixed at start: routes reload, and so do
    # the admin listener's tokens and names while its address stays (a rotated
    # token works at once; console sessions opened before end with the old ones).
    admin = new.admin if new.admin.listen == relay.config.admin.listen else relay.config.admin
    # A listener's certificates reload; turning TLS on or off needs a restart.
    tls = new.tls if (new.tls is None) == (relay.config.tls is None) else relay.config.tls
    if (admin.tls is None) != (relay.config.admin.tls is None):
        log.warning("reload_needs_restart", settings=["admin.tls"])
        admin = dataclasses.replace(admin, tls=relay.config.admin.tls)
    ignored = [
        f.name
        for f in dataclasses.fields(new)
        if f.name != "routes"
        and not (f.name == "admin" and admin is new.admin)
        and not (f.name == "tls" and tls is new.tls)
        and f.name != "notify"
        and getattr(new, f.name) != getattr(relay.config, f.name)
    ]
    if ignored:
        log.warning("reload_needs_restart", settings=ignored)
    relay.config = dataclasses.replace(
        relay.config, routes=new.routes, admin=admin, tls=tls, notify=new.notify
    )
    swap_certificates()
    applied()
    relay.metrics.record_reload(True)
    log.info("config_reloaded", routes=[r.name for r in new.routes])
    notifier.ready(f"serving {len(new.routes)} routes")
    return True


def _refuse(relay: Relay, notifier: Notifier, errors: list[str]) -> None:
    relay.metrics.record_reload(False, errors)
    log.error("reload_refused", errors=errors)
    notifier.ready("reload refused: config invalid; the previous config stays")
