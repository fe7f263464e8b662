"""TLS towards a backend: the client context an upstream's ``tls:`` asks for and when
its certificates expire. Verification stays Python's default (the system's trust
unless a ``ca_file`` is given, host names checked) with TLS 1.2 at least; nothing
here turns a check off."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from pathlib import Path

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


def expiry(ca_file: str | None, cert_file: str | None) -> tuple[tuple[str, float], ...]:
    """When each file's certificates stop being valid (unix time; the earliest of a
    file's), as ``("ca", t)`` and ``("cert", t)``."""
    out = []
    for label, path in (("ca", ca_file), ("cert", cert_file)):
        if not path:
            continue
        try:
            certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError):
            continue  # client_context already refused what cannot be read
        out.append((label, min(c.not_valid_after_utc.timestamp() for c in certs)))
    return tuple(out)
