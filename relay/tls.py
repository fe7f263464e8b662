"""TLS towards a backend (the client context an upstream's ``tls:`` asks for) and on
the listeners (``tls:`` and ``admin.tls``, reloaded in place), and when their
certificates expire. Verification towards a backend stays Python's default (the
system's trust unless a ``ca_file`` is given, host names checked) with TLS 1.2 at
least; nothing here turns a check off."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509


class TLSFilesError(ValueError):
    """A CA, certificate or key that cannot be read or does not fit."""


def digest(paths: Iterable[str | None]) -> str:
    """The files' bytes hashed: a reload after a rotation sees a changed config."""
    h = hashlib.sha256()
    for path in paths:
        if path:
            try:
                h.update(Path(path).read_bytes())
            except OSError:
                h.update(b"\0unreadable")
    return h.hexdigest()


def client_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    """Verifying the backend with ``ca_file`` (else the system's trust), presenting
    ``cert_file`` (``key_file``: its key, if not in the same file). Raises
    TLSFilesError with the reason."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSFilesError(f"ca_file: {_why(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSFilesError(f"cert_file/key_file: {_why(exc)}") from None
    return context


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return exc.strerror or str(exc)


def expiry(
    ca_file: str | None, cert_file: str | None, ca_label: str = "ca"
) -> tuple[tuple[str, float], ...]:
    """When each file's certificates stop being valid (unix time; the earliest of a
    file's), as ``(ca_label, t)`` and ``("cert", t)``."""
    out = []
    for label, path in ((ca_label, ca_file), ("cert", cert_file)):
        if not path:
            continue
        try:
            certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError):
            continue  # client_context already refused what cannot be read
        out.append((label, min(c.not_valid_after_utc.timestamp() for c in certs)))
    return tuple(out)


# What each client_auth setting asks of a client's certificate.
_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "require": ssl.CERT_REQUIRED}


def server_context(
    cert_file: str, key_file: str | None, client_ca_file: str | None, client_auth: str
) -> ssl.SSLContext:
    """A listener's context: TLS 1.2 and 1.3 with Python's default (forward-secret,
    AEAD) ciphers, no renegotiation; clients verified against ``client_ca_file``
    only (never the system's trust) as ``client_auth`` asks. Raises TLSFilesError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSFilesError(f"cert_file/key_file: {_why(exc)}") from None
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSFilesError(f"client_ca_file: {_why(exc)}") from None
    context.verify_mode = _VERIFY[client_auth]
    return context


class ServerTLS:
    """The context a listener was started with, which hands each new handshake the
    newest certificates: ``swap`` (SIGHUP) changes them without closing the listener
    or any connection. Python lets a server pick another context as a handshake
    begins (the SNI callback, called with or without a server name)."""

    def __init__(self, make: Callable[[], ssl.SSLContext]) -> None:
        self.current = make()
        self.listening = make()
        self.listening.sni_callback = self._pick

    def _pick(self, conn: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        conn.context = self.current

    def swap(self, context: ssl.SSLContext) -> None:
        # A connection's verify mode is copied from the context it was accepted on
        # before the callback runs: the listening context must ask the same.
        self.listening.verify_mode = context.verify_mode
        self.current = context


def subject_names(peer: Mapping[str, Any] | None) -> tuple[str, ...]:
    """A verified client certificate's names (``getpeercert()``): its subject's
    common names and its subject alternative names' values."""
    if not peer:
        return ()
    names = [
        str(value) for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"
    ]
    names += [str(value) for _kind, value in peer.get("subjectAltName", ())]
    return tuple(names)
