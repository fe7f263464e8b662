"""``webhook-relay events …`` and ``webhook-relay status``: the admin API from a shell.

Tables for people (``cli_render``), ``--json`` for scripts; where the API is and how
the CLI authenticates: ``relay.cli.client``. Exit status: 0 done, 1 the API refused
or could not be reached, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, Final

from relay.cli.client import TOKEN_ENV, AdminClient, CliError, resolve
from relay.cli.render import render_event, render_list, render_status
from relay.store.records import DELIVERY_STATES

# Exactly the delivery states the API filters on.
STATES: Final = DELIVERY_STATES
MAX_PAGES: Final = 1000  # --all-pages stops here, whatever the API says


def emit(args: argparse.Namespace, doc: Any, human: Callable[[Any], str]) -> None:
    print(json.dumps(doc, indent=2) if args.json else human(doc))


# --- commands --------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k: getattr(args, k)
        for k in ("route", "state", "key", "since", "until")
        if getattr(args, k, None) is not None
    }


def client_for(args: argparse.Namespace) -> AdminClient:
    base, token, context = resolve(args)
    return AdminClient(base, token, args.timeout, context)


def cmd_list(args: argparse.Namespace) -> int:
    client = client_for(args)
    query: dict[str, Any] = {**_filters(args), "limit": args.limit, "before_id": args.before_id}
    doc = client.call("GET", "/api/v1/events", query)
    if args.all_pages:
        events = list(doc["events"])
        pages = 1
        while doc.get("next") and pages < MAX_PAGES:
            doc = client.follow(doc["next"])
            events += doc["events"]
            pages += 1
        doc = {
            "events": events,
            "next": doc.get("next"),
            "next_before_id": doc.get("next_before_id"),
        }
    emit(args, doc, render_list)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    doc = client_for(args).call("GET", f"/api/v1/events/{args.id}")
    emit(args, doc, render_event)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    client = client_for(args)
    flt = _filters(args)
    if args.ids and (flt or args.all):
        raise CliError("give event ids or filters, not both")
    if args.ids:
        if args.dry_run:
            raise CliError("--dry-run previews a filter; give filters, not ids")
        query = {"force": "1" if args.force else None}
        reason = {"reason": args.reason} if args.reason else None
        docs = [
            client.call("POST", f"/api/v1/events/{i}/replay", query, body=reason) for i in args.ids
        ]
        if args.json:
            print(json.dumps(docs if len(docs) > 1 else docs[0], indent=2))
        else:
            for d in docs:
                line = f"event {d['event_id']}: {d['requeued']} delivery(ies) requeued"
                print(line + (f" ({d['message']})" if d.get("message") else ""))
        return 0
    if not flt and not args.all:
        raise CliError("name events to replay: ids, or filters (--route, --state, …), or --all")
    body: dict[str, Any] = {**flt, "force": args.force, **_intent(args)}
    if args.all:
        body["all"] = True
    doc = client.call("POST", "/api/v1/replay", body=body)
    if args.dry_run:
        emit(
            args,
            doc,
            lambda d: _would(
                f"requeue {d['would_requeue']} delivery(ies) of {d['events']} event(s)", d
            ),
        )
    else:
        emit(args, doc, lambda d: f"{d['requeued']} delivery(ies) requeued")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    flt = _filters(args)
    if args.ids:
        flt["ids"] = args.ids
    if not flt and not args.all:
        raise CliError(
            "name events to purge: --route, --state, --key, --since, --until, --id, or --all"
        )
    body: dict[str, Any] = {**flt, **_intent(args)}
    if args.all:
        body["all"] = True
    doc = client_for(args).call("POST", "/api/v1/purge", body=body)
    if args.dry_run:
        emit(args, doc, lambda d: _would(f"purge {d['would_purge']} event(s)", d))
    else:
        emit(args, doc, lambda d: f"{d['purged']} event(s) purged (pending work is never purged)")
    return 0


def _intent(args: argparse.Namespace) -> dict[str, Any]:
    """A bulk change is previewed (--dry-run) or done with a reason (the audit log's)."""
    if args.dry_run:
        return {"preview": True}
    if not args.reason:
        raise CliError(
            "say why with --reason TEXT (it goes to the audit log), or look first with --dry-run"
        )
    return {"reason": args.reason}


def _would(what: str, doc: dict[str, Any]) -> str:
    routes = ", ".join(f"{r}: {c}" for r, c in sorted(doc["routes"].items())) or "none"
    return f"would {what} (by route: {routes}); nothing changed"


def cmd_status(args: argparse.Namespace) -> int:
    doc = client_for(args).call("GET", "/api/v1/status")
    emit(args, doc, render_status)
    return 0


# --- argument parsing --------------------------------------------------------------


def common_flags(sp: argparse.ArgumentParser, default_config: str) -> None:
    sp.add_argument(
        "-c",
        "--config",
        default=default_config,
        help="config file, for admin.listen (default: %(default)s)",
    )
    sp.add_argument(
        "--admin-url", help="admin API base URL (default: from the config's admin.listen)"
    )
    sp.add_argument(
        "--token-env",
        metavar="NAME",
        help=f"environment variable holding the admin token (default: the config's admin.token_env, then {TOKEN_ENV})",
    )
    sp.add_argument(
        "--cacert",
        metavar="FILE",
        help="CA file to verify an HTTPS admin listener with (default: its own"
        " certificate, from the config's admin.tls)",
    )
    sp.add_argument("--json", action="store_true", help="print the API's JSON")
    sp.add_argument("--timeout", type=float, default=10.0, help="seconds (default: %(default)s)")


def _filter_flags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--route")
    sp.add_argument("--state", choices=STATES, help="events with a delivery in this state")
    sp.add_argument("--key", help="the idempotency key")
    sp.add_argument("--since", help="UNIX seconds, RFC 3339, or a duration ago (30m, 2d)")
    sp.add_argument("--until", help="UNIX seconds, RFC 3339, or a duration ago")


def bulk_flags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--dry-run", action="store_true", help="only count what would change")
    sp.add_argument("--reason", help="why (written to the audit log; required for a bulk change)")


def positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def add_parsers(sub: Any, default_config: str) -> None:
    ev = sub.add_parser("events", help="list, show, replay and purge stored events")
    evsub = ev.add_subparsers(dest="events_command", required=True)

    ls = evsub.add_parser("list", help="events, newest first")
    common_flags(ls, default_config)
    _filter_flags(ls)
    ls.add_argument("--limit", type=positive, default=50)
    ls.add_argument("--before-id", type=positive, help="page on: events older than this id")
    ls.add_argument("--all-pages", action="store_true", help="follow the next links to the end")
    ls.set_defaults(func=cmd_list)

    sh = evsub.add_parser("show", help="one event: deliveries, attempts, headers (redacted), body")
    common_flags(sh, default_config)
    sh.add_argument("id", type=positive)
    sh.set_defaults(func=cmd_show)

    rp = evsub.add_parser(
        "replay", help="requeue dead or stale deliveries (--force: delivered ones too)"
    )
    common_flags(rp, default_config)
    rp.add_argument("ids", nargs="*", type=positive, metavar="ID")
    _filter_flags(rp)
    rp.add_argument("--force", action="store_true", help="replay delivered deliveries too")
    rp.add_argument("--all", action="store_true", help="no filter: every dead or stale event")
    bulk_flags(rp)
    rp.set_defaults(func=cmd_replay)

    pg = evsub.add_parser("purge", help="delete finished events by filter (never pending work)")
    common_flags(pg, default_config)
    _filter_flags(pg)
    pg.add_argument("--id", dest="ids", type=positive, action="append", metavar="ID")
    pg.add_argument("--all", action="store_true", help="no filter: every finished event")
    bulk_flags(pg)
    pg.set_defaults(func=cmd_purge)

    st = sub.add_parser("status", help="routes, backlog, orphaned work, last reload")
    common_flags(st, default_config)
    st.set_defaults(func=cmd_status)
