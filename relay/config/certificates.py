"""A listener's ``tls:`` section (the webhook listener's, and ``admin.tls``): a
certificate chain and key, and for mutual TLS the CA clients must chain to."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from relay import tls
from relay.config.secrets import secret_path
from relay.config.types import CLIENT_AUTH, ListenerTLS
from relay.config.validate import Section

FIELDS = "cert_file, key_file, client_ca_file (or *_credential), client_auth"


def parse_listener_tls(sec: Section, env: Mapping[str, str], base: Path) -> ListenerTLS | None:
    cert = secret_path(sec, env, base, "cert")
    key = secret_path(sec, env, base, "key")
    client_ca = secret_path(sec, env, base, "client_ca")
    auth = sec.choice("client_auth", "require" if client_ca else "none", CLIENT_AUTH)
    sec.finish()
    if cert is None:
        if not (sec.has("cert_file") or sec.has("cert_credential")):
            sec.error("cert_file", f"required (a listener's tls: has {FIELDS})")
        return None
    if auth != "none" and client_ca is None:
        sec.error(
            "client_auth", f"{auth} needs client_ca_file: the CA client certificates chain to"
        )
        return None
    try:
        tls.server_context(cert, key, client_ca, auth)
    except tls.TLSFilesError as exc:
        sec.error(None, str(exc))
        return None
    return ListenerTLS(cert, key, client_ca, auth, digest=tls.digest((cert, key, client_ca)))
