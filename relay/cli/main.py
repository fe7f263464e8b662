"""Command line: serve, check-config, healthcheck, events, status, echo-backend."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from relay import __version__
from relay import config as config_mod
from relay.cli import events as cli_events
from relay.cli import routes as cli_routes
from relay.cli import store as cli_store
from relay.cli.client import CliError, pinned
from relay.config.validate import format_duration
from relay.errors import ConfigError

DEFAULT_CONFIG = os.environ.get("WEBHOOK_RELAY_CONFIG", "config.yaml")


def _load(path: str) -> config_mod.Config | None:
    if not Path(path).is_file():
        print(
            f"{path}: no such file (serve and check-config need one: -c FILE or"
            " WEBHOOK_RELAY_CONFIG; config.example.yaml is a start)",
            file=sys.stderr,
        )
        return None
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.errors)} error(s)", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    from relay.forward import shown_url  # a query's values may be secrets: hidden

    cfg = _load(args.config)
    if cfg is None:
        return 1
    print(
        f"{args.config}: ok, {len(cfg.routes)} route(s); listen {cfg.listen}, admin {cfg.admin.listen}"
    )
    print(
        f"storage: {cfg.storage.url.split('://', 1)[0]}, dedupe window {format_duration(cfg.storage.dedupe_window)}"
    )
    for r in cfg.routes:
        keys = ", ".join(str(k) for k in r.keys)
        verify = r.verify.scheme if r.verify else "off"
        upstreams = ", ".join(shown_url(u) for u in r.upstreams)
        print(f"- {r.name}: {'|'.join(r.methods)} {r.path} -> {upstreams}")
        print(
            f"    mode {r.mode}; key {keys}{' (required)' if r.require_key else ''}; verify {verify}"
        )
        if r.queued:
            print(
                f"    retry {r.retry.max_attempts} attempts within {format_duration(r.retry.max_age)};"
                f" concurrency {r.concurrency}; max pending {r.max_pending}"
            )
        if r.filters:
            rules = ", ".join(f"{f.name} ({f.action})" for f in r.filters)
            print(f"    filters {rules}")
        if r.handshake is not None or r.public_url is not None:
            shake = r.provider or "none"
            print(f"    handshake {shake}; public url {shown_url(r.public_url or '') or 'rebuilt'}")
    for warning in cfg.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 2
    from relay import logging as relay_logging
    from relay.lifecycle import run_loop

    relay_logging.configure(cfg.log.level, cfg.log.format)
    # SQLite's writer thread lives in this process (the owner's, with workers).
    writer_thread = cfg.storage.url.startswith("sqlite:")
    # The role is picked here, at the top: neither role imports the other.
    if cfg.workers:
        from relay.workers.owner import supervise

        return run_loop(supervise(cfg, Path(args.config)), writer_thread=writer_thread)
    from relay.serve import serve

    return run_loop(serve(cfg, Path(args.config)), writer_thread=writer_thread)


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 if the relay's admin listener says it is ready; for container HEALTHCHECK."""
    url, context = args.url, None
    if url is None:
        cfg = _load(args.config)
        if cfg is None:
            return 1
        host = "127.0.0.1" if cfg.admin.listen.host in ("0.0.0.0", "::") else cfg.admin.listen.host
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if cfg.admin.tls else "http"
        url = f"{scheme}://{host}:{cfg.admin.listen.port}/readyz"
        if cfg.admin.tls is not None:
            context = pinned(Path(cfg.admin.tls.cert_file), url)
    try:
        with urllib.request.urlopen(url, timeout=args.timeout, context=context) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1
    print("ready" if ok else "not ready")
    return 0 if ok else 1


def cmd_token(_args: argparse.Namespace) -> int:
    """A new admin token: 32 random bytes, base64url (43 characters, 256 bits)."""
    print(secrets.token_urlsafe(32))
    return 0


def cmd_echo_backend(args: argparse.Namespace) -> int:
    from relay.cli.echo import run_echo

    return run_echo(args.listen)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webhook-relay", description="Forward each webhook to its backend once."
    )
    p.add_argument("--version", action="version", version=f"webhook-relay {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c", "--config", default=DEFAULT_CONFIG, help="YAML config file (default: %(default)s)"
        )

    s = sub.add_parser("serve", help="run the relay")
    with_config(s)
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser("check-config", help="validate a config file and print its routes")
    with_config(c)
    c.set_defaults(func=cmd_check_config)
    h = sub.add_parser("healthcheck", help="exit 0 if the running relay is ready")
    with_config(h)
    h.add_argument("--url", help="readiness URL (default: from the config's admin.listen)")
    h.add_argument("--timeout", type=float, default=3.0)
    h.set_defaults(func=cmd_healthcheck)
    t = sub.add_parser("token", help="print a new random admin token (for admin.tokens)")
    t.set_defaults(func=cmd_token)
    cli_events.add_parsers(sub, DEFAULT_CONFIG)
    cli_routes.add_parsers(sub, DEFAULT_CONFIG)
    cli_store.add_parsers(sub, DEFAULT_CONFIG)
    e = sub.add_parser(
        "echo-backend", help="a tiny backend that prints what it receives (for trying the relay)"
    )
    e.add_argument("--listen", default="127.0.0.1:3000")
    e.set_defaults(func=cmd_echo_backend)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"webhook-relay: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
