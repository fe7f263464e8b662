"""``webhook-relay routes pause|resume NAME``, ``webhook-relay audit`` and ``webhook-relay replicas``."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from relay.cli.events import client_for, common_flags, emit, positive
from relay.cli.render import render_audit, render_replicas


def cmd_pause(args: argparse.Namespace) -> int:
    return _pause_or_resume(args, "pause")


def cmd_resume(args: argparse.Namespace) -> int:
    return _pause_or_resume(args, "resume")


def _pause_or_resume(args: argparse.Namespace, verb: str) -> int:
    path = f"/api/v1/routes/{urllib.parse.quote(args.name, safe='')}/{verb}"
    body = {"reason": args.reason} if args.reason else None
    doc = client_for(args).call("POST", path, {"upstream": args.upstream}, body=body)
    emit(args, doc, lambda d: _said(d, verb))
    return 0


def _said(doc: dict[str, Any], verb: str) -> str:
    what = doc["route"] + (f" -> {doc['upstream']}" if doc.get("upstream") else "")
    if verb == "pause":
        if not doc["changed"]:
            return f"{what}: already paused"
        return f"{what}: paused (senders are still acked; nothing is delivered until resumed)"
    if not doc["changed"]:
        return f"{what}: was not paused"
    return f"{what}: resumed ({doc['changed']} pause(s) ended)"


def cmd_audit(args: argparse.Namespace) -> int:
    query = {"limit": args.limit, "before_id": args.before_id}
    emit(args, client_for(args).call("GET", "/api/v1/audit", query), render_audit)
    return 0


def cmd_replicas(args: argparse.Namespace) -> int:
    emit(args, client_for(args).call("GET", "/api/v1/replicas"), render_replicas)
    return 0


def add_parsers(sub: Any, default_config: str) -> None:
    ro = sub.add_parser("routes", help="pause or resume delivery of a route")
    rosub = ro.add_subparsers(dest="routes_command", required=True)
    for verb, func, text in (
        ("pause", cmd_pause, "hold delivery (ingest goes on); kept in the store"),
        ("resume", cmd_resume, "deliver again (the route and every upstream of it)"),
    ):
        sp = rosub.add_parser(verb, help=text)
        common_flags(sp, default_config)
        sp.add_argument("name", help="the route's name")
        sp.add_argument("--upstream", metavar="URL", help="only this upstream of the route")
        sp.add_argument("--reason", help="why (written to the audit log)")
        sp.set_defaults(func=func)

    au = sub.add_parser("audit", help="changes operators made: replays, purges, pauses")
    common_flags(au, default_config)
    au.add_argument("--limit", type=positive, default=50)
    au.add_argument("--before-id", type=positive, help="page on: entries older than this id")
    au.set_defaults(func=cmd_audit)

    rs = sub.add_parser("replicas", help="relay processes sharing the store, and their leases")
    common_flags(rs, default_config)
    rs.set_defaults(func=cmd_replicas)
