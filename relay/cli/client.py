"""How the CLI reaches the admin API: its URL (``--admin-url``, else the config's
``admin.listen``; HTTPS when the config gives ``admin.tls``), the TLS it trusts
(``--cacert``, else the admin listener's own certificate from the config), and
the bearer token (``--token-env NAME``, else the config's ``admin.token_env``,
else ``RELAY_ADMIN_TOKEN``, else the config's ``admin.token_file``, else the
first of ``admin.tokens``, operate ones first, whose secret this user can read).
HTTP with urllib (no dependency)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO, Final

import yaml

from relay import __version__

DEFAULT_ADMIN: Final = "127.0.0.1:9090"
# The config file looked for when neither -c nor WEBHOOK_RELAY_CONFIG names one.
IMPLICIT_CONFIG: Final = "config.yaml"
TOKEN_ENV: Final = "RELAY_ADMIN_TOKEN"


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


def admin_base_url(listen: str, scheme: str = "http") -> str:
    host, _, port = listen.strip().rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    # A wildcard listener is reached on loopback from the same machine.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def admin_context(
    admin: dict[str, Any], config_dir: Path, base: str, cacert: str | None = None
) -> ssl.SSLContext | None:
    """How to verify an HTTPS admin listener (None for HTTP): ``cacert``; else the
    listener's own certificate from the config, pinned (each certificate in that
    file is a trust anchor), its name unchecked when it is reached on loopback, where
    the one process presenting exactly that certificate is the relay."""
    if not base.startswith("https://"):
        return None
    if cacert:
        return ssl.create_default_context(cafile=cacert)
    tls = admin.get("tls") if isinstance(admin.get("tls"), dict) else {}
    own = _file_of(tls, "cert", config_dir) if tls else None
    if own is None:
        return ssl.create_default_context()
    return pinned(own, base)


def pinned(own: Path, base: str) -> ssl.SSLContext:
    """Trust exactly the certificates in ``own`` (the listener's own file) for ``base``."""
    try:
        context = ssl.create_default_context(cafile=str(own))
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot read the admin listener's certificate {own}: {exc}") from None
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    host = urllib.parse.urlsplit(base).hostname or ""
    if host == "localhost" or _loopback(host):
        context.check_hostname = False
    return context


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve(args: argparse.Namespace) -> tuple[str, str | None, ssl.SSLContext | None]:
    """(base URL, token or None, TLS context) from the flags, the environment and the
    config."""
    admin = _raw_admin_section(args.config)
    scheme = "https" if isinstance(admin.get("tls"), dict) else "http"
    if args.admin_url:
        base = args.admin_url.rstrip("/")
        if "://" not in base:
            base = f"{scheme}://{base}"
    else:
        listen = admin.get("listen")
        base = admin_base_url(listen if isinstance(listen, str) else DEFAULT_ADMIN, scheme)
    config_dir = Path(args.config).resolve().parent
    context = admin_context(admin, config_dir, base, getattr(args, "cacert", None))
    return base, _token(args, admin, config_dir), context


def _token(args: argparse.Namespace, admin: dict[str, Any], config_dir: Path) -> str | None:
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise CliError(f"--token-env {args.token_env}: that environment variable is not set")
        return token
    names = [admin.get("token_env"), TOKEN_ENV]
    for name in names:
        if isinstance(name, str) and os.environ.get(name):
            return os.environ[name]
    # Then admin.token_file, then each of admin.tokens (operate ones first) that
    # this user can read: its variable set, its file or credential readable.
    scoped = [t for t in admin.get("tokens") or () if isinstance(t, dict)]
    scoped.sort(key=lambda t: t.get("role") != "operate")
    for entry in [{"token_file": admin.get("token_file")}, *scoped]:
        if (token := _token_of(entry, config_dir)) is not None:
            return token
    return None


def _file_of(entry: dict[str, Any], prefix: str, base: Path) -> Path | None:
    """The file ``<prefix>_file`` (relative to the config) or ``<prefix>_credential``
    names, if it does."""
    file, credential = entry.get(f"{prefix}_file"), entry.get(f"{prefix}_credential")
    if isinstance(file, str):
        return Path(file) if Path(file).is_absolute() else base / file
    if isinstance(credential, str) and os.environ.get("CREDENTIALS_DIRECTORY"):
        return Path(os.environ["CREDENTIALS_DIRECTORY"]) / credential
    return None


def _token_of(entry: dict[str, object], base: Path) -> str | None:
    env = entry.get("token_env")
    if isinstance(env, str) and os.environ.get(env):
        return os.environ[env]
    path = _file_of(entry, "token", base)
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


class AdminClient:
    def __init__(
        self,
        base: str,
        token: str | None,
        timeout: float,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.base = base
        self.token = token
        self.timeout = timeout
        self.context = context

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
        return self._send(req, method, path, lambda resp: json.loads(resp.read() or b"null"))

    def download(self, path: str, query: dict[str, Any], out: BinaryIO) -> int:
        """GET ``path`` and copy its body to ``out`` as it arrives; the bytes copied."""
        url = (
            self.base
            + path
            + "?"
            + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        )
        req = urllib.request.Request(url, method="GET")
        req.add_header("User-Agent", f"webhook-relay/{__version__} (cli)")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        copied: int = self._send(req, "GET", path, lambda resp: _copy(resp, out))
        return copied

    def _send(self, req: urllib.request.Request, method: str, path: str, read: Any) -> Any:
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                return read(resp)
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


def _copy(resp: Any, out: BinaryIO) -> int:
    total = 0
    while chunk := resp.read(64 * 1024):
        out.write(chunk)
        total += len(chunk)
    return total
