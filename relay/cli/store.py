"""``webhook-relay keygen`` and ``webhook-relay rekey``: the keys of encryption at rest."""

from __future__ import annotations

import argparse
import time
from typing import Any

from relay.cli.client import CliError
from relay.cli.events import client_for, common_flags, emit
from relay.store.sealing import new_key

WAIT_POLL = 0.5


def cmd_keygen(_args: argparse.Namespace) -> int:
    """A new key for storage.encryption: 32 random bytes, base64 (a key file's content)."""
    print(new_key())
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    client = client_for(args)
    body = {"reason": args.reason} if args.reason else None
    client.call("POST", "/api/v1/store/rekey", body=body)
    doc = client.call("GET", "/api/v1/store/keys")
    deadline = time.monotonic() + args.wait
    while args.wait and doc["rekey"]["state"] == "running":
        if time.monotonic() >= deadline:
            raise CliError(f"rekey still running after {args.wait:g}s: {_said(doc)}")
        time.sleep(WAIT_POLL)
        doc = client.call("GET", "/api/v1/store/keys")
    emit(args, doc, _said)
    return 1 if doc["rekey"]["state"] == "failed" else 0


def _said(doc: dict[str, Any]) -> str:
    r = doc["rekey"]
    current = doc["current"] or "none (writes in clear)"
    keys = ", ".join(doc["in_store"]) or "none"
    if r["state"] == "running":
        where = f"{r['table']} after id {r['after_id']}" if r["table"] else "finishing"
        return (
            f"rekey running ({where}); {r['resealed']} rows resealed so far; current key {current}"
        )
    if r["state"] == "failed":
        return f"rekey failed: {r['error']}"
    gone = ", ".join(r["forgotten_keys"]) or "none"
    return (
        f"rekey done: {r['resealed']} rows resealed under {current}; keys forgotten: {gone};"
        f" keys the store still needs: {keys}"
    )


def add_parsers(sub: Any, default_config: str) -> None:
    kg = sub.add_parser("keygen", help="print a new key for storage.encryption (32 bytes, base64)")
    kg.set_defaults(func=cmd_keygen)
    rk = sub.add_parser(
        "rekey", help="reseal what older keys sealed with the current key, in the background"
    )
    common_flags(rk, default_config)
    rk.add_argument("--reason", help="why (written to the audit log)")
    rk.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for it to finish (default: start it and return)",
    )
    rk.set_defaults(func=cmd_rekey)
