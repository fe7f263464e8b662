"""The store from a shell: ``backup`` (a consistent copy of a running SQLite store),
``keygen`` and ``rekey`` (the keys of encryption at rest)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from relay.cli.client import CliError
from relay.cli.events import client_for, common_flags, emit
from relay.disk import sqlite_path
from relay.errors import RelayError
from relay.store.records import DELIVERY_STATES
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


def _sqlite_path(config_path: str) -> Path:
    """The SQLite file the config's ``storage.url`` names, read leniently: a backup
    needs no route secret, so none has to be readable to take one."""
    try:
        doc = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CliError(f"{config_path}: cannot read the config: {exc}") from None
    storage = (doc or {}).get("storage") or {} if isinstance(doc, dict) else {}
    url = storage.get("url", "sqlite:///data/relay.db") if isinstance(storage, dict) else ""
    path = sqlite_path(url) if isinstance(url, str) else None
    if path is None:
        raise CliError(
            "backup copies a SQLite store; on PostgreSQL use pg_dump of the relay's"
            " schema (README: Backup and restore)"
        )
    # A relative path is the relay's, which runs from the config's directory or cwd.
    return path if path.is_absolute() else Path.cwd() / path


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent copy of the store, taken while the relay runs (SQLite's online
    backup API, in one step: one read snapshot, whatever commits meanwhile)."""
    source = _sqlite_path(args.config)
    if not source.is_file():
        raise CliError(f"{source}: no such store")
    target = Path(args.path)
    try:
        # Created here, 0600, and never over an existing file: it holds every body.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CliError(f"{target}: {exc.strerror}") from None
    os.close(fd)
    started = time.monotonic()
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            ok = dst.execute("PRAGMA quick_check").fetchone()[0]
            events = dst.execute("SELECT count(*) FROM events").fetchone()[0]
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise CliError(f"backup of {source} failed: {exc}") from None
    if ok != "ok":
        target.unlink(missing_ok=True)
        raise CliError(f"the copy of {source} does not check: {ok}")
    size = target.stat().st_size
    print(
        f"{target}: {events:,} events, {size / 2**20:.1f} MiB, from {source}"
        f" in {time.monotonic() - started:.1f}s",
        file=sys.stdout,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Events as JSON lines into a new file (0600: it holds bodies), streamed."""
    client = client_for(args)
    query = {
        "route": args.route,
        "state": args.state,
        "since": args.since,
        "until": args.until,
        "include_secrets": "true" if args.include_secrets else None,
    }
    target = Path(args.output)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CliError(f"{target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            size = client.download("/api/v1/export", query, out)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    with target.open("rb") as written:
        lines = sum(1 for _ in written)
    print(f"{target}: {lines:,} events, {size / 2**20:.1f} MiB")
    return 0


def cmd_migrate_store(args: argparse.Namespace) -> int:
    """Copy a stopped relay's SQLite store into an empty PostgreSQL schema."""
    target_url = os.environ.get(args.to_env, "") if args.to_env else args.to
    if not target_url.startswith(("postgresql://", "postgres://")):
        raise CliError("--to (or --to-env) must name a postgresql:// database")
    if not args.source.startswith("sqlite:///"):
        raise CliError("--from must name a sqlite:/// store")
    try:
        from relay.store.copy import migrate
        from relay.store.postgres import PostgresStore
        from relay.store.sqlite import SQLiteStore

        source = SQLiteStore.from_url(args.source)
        if not source.path.is_file():
            raise CliError(f"{source.path}: no such store")
        started = time.monotonic()
        copied = asyncio.run(migrate(source, PostgresStore.from_url(target_url)))
    except ImportError:
        raise CliError("PostgreSQL needs the postgres extra: pip install '.[postgres]'") from None
    except (RelayError, ValueError) as exc:
        raise CliError(f"migrate-store: {exc}") from None
    counts = ", ".join(f"{n:,} {table}" for table, n in copied.counts.items())
    print(f"copied {counts} in {time.monotonic() - started:.1f}s; counts checked")
    if copied.recovered:
        print(f"{copied.recovered} deliveries the stopped relay held went back to pending first")
    print("now point storage.url at the database and start the relays there")
    return 0


def add_parsers(sub: Any, default_config: str) -> None:
    mg = sub.add_parser(
        "migrate-store",
        help="copy a stopped relay's SQLite store (dedupe state and all) into empty PostgreSQL",
    )
    mg.add_argument("--from", dest="source", required=True, metavar="sqlite:///PATH")
    where = mg.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="postgresql://…", help="the target (empty) database")
    where.add_argument("--to-env", metavar="NAME", help="an environment variable holding it")
    mg.set_defaults(func=cmd_migrate_store)
    ex = sub.add_parser("export", help="write events as JSON lines to a new file (mode 0600)")
    common_flags(ex, default_config)
    ex.add_argument("-o", "--output", required=True, help="the new file (never overwritten)")
    ex.add_argument("--route")
    ex.add_argument("--state", choices=DELIVERY_STATES, help="events with a delivery in this state")
    ex.add_argument("--since", help="UNIX seconds, RFC 3339, or a duration ago (30m, 7d)")
    ex.add_argument("--until", help="UNIX seconds, RFC 3339, or a duration ago")
    ex.add_argument(
        "--include-secrets",
        action="store_true",
        help="keep Authorization, cookies and signatures (operate token; audited)",
    )
    ex.set_defaults(func=cmd_export)
    bk = sub.add_parser(
        "backup", help="copy a running relay's SQLite store, consistently, to PATH (mode 0600)"
    )
    bk.add_argument("path", help="the new file (never overwritten)")
    bk.add_argument(
        "-c", "--config", default=default_config, help="config file (default: %(default)s)"
    )
    bk.set_defaults(func=cmd_backup)
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
