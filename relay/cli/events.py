"""``webhook-relay events …`` and ``webhook-relay status``: the admin API from a shell.

Tables for people (``cli_render``), ``--json`` for scripts. HTTP with urllib (no dependency).
The admin URL comes from ``--admin-url``, else the config's ``admin.listen``;
the bearer token from ``--token-env NAME``, else the config's
``admin.token_env``, else ``RELAY_ADMIN_TOKEN``, else the config's
``admin.token_file``, else the first of ``admin.tokens`` (operate ones first)
whose secret this user can read. Exit status: 0 done, 1 the API refused or could not be
reached, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml

from relay import __version__
from relay.cli.render import render_event, render_list, render_status
from relay.store.records import DELIVERY_STATES

DEFAULT_ADMIN: Final = "127.0.0.1:9090"
# The config file looked for when neither -c nor WEBHOOK_RELAY_CONFIG names one.
IMPLICIT_CONFIG: Final = "config.yaml"
TOKEN_ENV: Final = "RELAY_ADMIN_TOKEN"
# Exactly the delivery states the API filters on.
STATES: Final = DELIVERY_STATES
MAX_PAGES: Final = 1000  # --all-pages stops here, whatever the API says


class CliError(Exception):
    """An error to print on stderr; exit 1."""


# --- where the admin API is and how to authenticate ------------------------------


def _raw_admin_section(config_path: str) -> dict[str, Any]:
    """The config's admin section, read leniently: the CLI needs no route secrets.

    One rule for a missing file, as for ``serve`` and ``check-config``: a file named
    with ``-c`` or ``WEBHOOK_RELAY_CONFIG`` must exist; without either, a missing
    ``config.yaml`` is said on stderr and the defaults are used."""
    if not Path(config_path).is_file():
        if config_path != IMPLICIT_CONFIG or os.environ.get("WEBHOOK_RELAY_CONFIG"):
            raise CliError(f"{config_path}: no such file (given with -c or WEBHOOK_RELAY_CONFIG)")
        print(
            f"webhook-relay: no {config_path} here; using the defaults: the admin listener"
            f" {DEFAULT_ADMIN} (or --admin-url) and the token in ${TOKEN_ENV} (or -c FILE)",
            file=sys.stderr,
        )
        return {}
    try:
        doc = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    admin = doc.get("admin") if isinstance(doc, dict) else None
    return admin if isinstance(admin, dict) else {}


def admin_base_url(listen: str) -> str:
    host, _, port = listen.strip().rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    # A wildcard listener is reached on loopback from the same machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def resolve(args: argparse.Namespace) -> tuple[str, str | None]:
    """(base URL, token or None) from the flags, the environment and the config."""
    admin = _raw_admin_section(args.config)
    if args.admin_url:
        base = args.admin_url.rstrip("/")
        if "://" not in base:
            base = "http://" + base
    else:
        listen = admin.get("listen")
        base = admin_base_url(listen if isinstance(listen, str) else DEFAULT_ADMIN)
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise CliError(f"--token-env {args.token_env}: that environment variable is not set")
        return base, token
    names = [admin.get("token_env"), TOKEN_ENV]
    for name in names:
        if isinstance(name, str) and os.environ.get(name):
            return base, os.environ[name]
    # Then admin.token_file, then each of admin.tokens (operate ones first) that
    # this user can read: its variable set, its file or credential readable.
    scoped = [t for t in admin.get("tokens") or () if isinstance(t, dict)]
    scoped.sort(key=lambda t: t.get("role") != "operate")
    for entry in [{"token_file": admin.get("token_file")}, *scoped]:
        if (token := _token_of(entry, Path(args.config).resolve().parent)) is not None:
            return base, token
    return base, None


def _token_of(entry: dict[str, object], base: Path) -> str | None:
    env, file, credential = (entry.get(k) for k in ("token_env", "token_file", "token_credential"))
    if isinstance(env, str) and os.environ.get(env):
        return os.environ[env]
    path = None
    if isinstance(file, str):
        path = Path(file) if Path(file).is_absolute() else base / file
    elif isinstance(credential, str) and os.environ.get("CREDENTIALS_DIRECTORY"):
        path = Path(os.environ["CREDENTIALS_DIRECTORY"]) / credential
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


class AdminClient:
    def __init__(self, base: str, token: str | None, timeout: float) -> None:
        self.base = base
        self.token = token
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        # Every change is sent as JSON, an empty object where there is nothing to say:
        # the admin refuses other content types from anyone (a web page could send them).
        if body is None and method != "GET":
            body = {}
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        # The audit log names the client: this one is the CLI.
        req.add_header("User-Agent", f"webhook-relay/{__version__} (cli)")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                doc = json.loads(raw)
                text = f"{doc['error']}: {doc['message']}"
            except (ValueError, KeyError, TypeError):
                text = raw.decode("utf-8", "replace").strip() or exc.reason
            hint = ""
            if exc.code == 401:
                hint = f" (set {TOKEN_ENV} or pass --token-env NAME)"
            raise CliError(f"{method} {path}: HTTP {exc.code}: {text}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the admin API at {self.base}: {reason}") from None
        except ValueError as exc:
            raise CliError(f"{method} {path}: the answer is not JSON: {exc}") from None

    def follow(self, next_link: str) -> Any:
        """GET a ``next`` link as the API gave it (a path with its query)."""
        path, _, qs = next_link.partition("?")
        return self.call("GET", path, dict(urllib.parse.parse_qsl(qs)))


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
    base, token = resolve(args)
    return AdminClient(base, token, args.timeout)


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
