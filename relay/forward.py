"""One upstream attempt: build the request, send it, classify what came back."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from relay.config import Network, Timeouts

# RFC 9110 §7.6.1 hop-by-hop headers, plus what aiohttp must compute itself
# (Host for the upstream, Content-Length for the bytes we send).
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "host",
        "content-length",
    }
)
# Without this aiohttp would add its own User-Agent, Accept and Accept-Encoding:
# the upstream must see the sender's headers, not ours.
SKIP_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# A sync response is held in memory to answer the sender; a runaway one is an error.
MAX_RESPONSE_BODY: Final = 16 * 1024 * 1024


# Control characters (but HTAB) have no place in a header value: CR/LF would split
# the upstream request (header injection), NUL truncates in some backends.
_BAD_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def clean_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The headers safe to store and forward; a value that is not valid text is dropped.

    aiohttp decodes header bytes that are not UTF-8 with surrogateescape; such a
    value cannot be stored as text nor sent on without changing its bytes.
    """
    pairs = tuple(headers)
    joined = "".join(value for _, value in pairs)
    if joined.isascii() and not _BAD_VALUE.search(joined):
        return pairs  # the usual case, checked in one pass
    out: list[tuple[str, str]] = []
    for name, value in pairs:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                continue
        if _BAD_VALUE.search(value):
            continue
        out.append((name, value))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Via:
    """What the relay knows about the hop it received the webhook on. ``trusted``:
    the peer is one of ``trusted_proxies``, so its forwarding headers are believed."""

    client_ip: str | None
    proto: str
    host: str | None
    trusted: bool = False


# What a sender can claim about earlier hops; a backend may act on any of them.
FORWARDING: Final = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"}
)


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer's address, parsed once: senders come back from the same few hosts, and
    parsing one cost more than the rest of the check."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(remote: str | None, networks: Iterable[Network]) -> bool:
    """Whether the peer's address is in one of ``networks``."""
    if not remote or networks == ():
        return False
    address = _address(remote)
    return address is not None and any(address in network for network in networks)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forwarded_element(via: Via) -> str:
    """This hop as one RFC 7239 ``Forwarded`` element."""
    parts = []
    if via.client_ip:
        ip = via.client_ip
        parts.append(f"for={_quoted(f'[{ip}]')}" if ":" in ip else f"for={ip}")
    parts.append(f"proto={via.proto}")
    if via.host:
        parts.append(f"host={_quoted(via.host)}")
    return ";".join(parts)


def _extend(pairs: list[tuple[str, str]], name: str, element: str) -> None:
    """Several lines of one list header form one list (RFC 9110 §5.3): joined in the
    place of the first, with this hop's element appended."""
    at = [i for i, (k, _) in enumerate(pairs) if k.lower() == name.lower()]
    joined = ", ".join([*(pairs[i][1] for i in at), element])
    if at:
        pairs[at[0]] = (name, joined)
        for i in reversed(at[1:]):
            del pairs[i]
    else:
        pairs.append((name, joined))


def with_forwarded(headers: Iterable[tuple[str, str]], via: Via) -> tuple[tuple[str, str], ...]:
    """The headers plus X-Forwarded-For/-Proto/-Host for the hop we received them on.

    From a trusted proxy the chain is kept and extended (its X-Forwarded-Proto and
    -Host name the sender's side); from anyone else every forwarding header is
    replaced by what the relay saw. Queue mode stores this at ingest, so a
    delivery days later still names the sender.
    """
    pairs = list(headers)
    sent = {k.lower() for k, _ in pairs}
    if not via.trusted:
        if not sent.isdisjoint(FORWARDING):
            pairs = [(k, v) for k, v in pairs if k.lower() not in FORWARDING]
        if via.client_ip:
            pairs.append(("X-Forwarded-For", via.client_ip))
            if "x-real-ip" in sent:
                pairs.append(("X-Real-IP", via.client_ip))
        if "forwarded" in sent:
            pairs.append(("Forwarded", forwarded_element(via)))
        # Every forwarding header the sender wrote is gone: this hop's go in.
        pairs.append(("X-Forwarded-Proto", via.proto))
        if via.host:
            pairs.append(("X-Forwarded-Host", via.host))
        return tuple(pairs)
    if via.client_ip:
        _extend(pairs, "X-Forwarded-For", via.client_ip)
    if "forwarded" in sent:
        _extend(pairs, "Forwarded", forwarded_element(via))
    # A load balancer in front of us already knows the sender's scheme and host.
    if "x-forwarded-proto" not in sent:
        pairs.append(("X-Forwarded-Proto", via.proto))
    if via.host and "x-forwarded-host" not in sent:
        pairs.append(("X-Forwarded-Host", via.host))
    return tuple(pairs)


HIDDEN: Final = "[redacted]"


def shown_url(url: str) -> str:
    """An upstream as logs, metrics, the API and the console show it: the query's
    values and any user:password hidden (``?api_key=...`` is a secret in the URL),
    the names kept so two upstreams still tell apart."""
    if "?" not in url and "@" not in url and "#" not in url:
        return url
    hidden_user = f"://{HIDDEN}@"
    try:
        # Shown once already: brackets are no valid user name, so parse without it.
        u = URL(url.replace(hidden_user, "://", 1))
    except ValueError:
        return HIDDEN
    text = str(u.with_user(None).with_query(None).with_fragment(None))
    if u.raw_user is not None or hidden_user in url:
        text = text.replace("://", f"://{HIDDEN}@", 1)
    if raw := u.raw_query_string:
        names = [part.partition("=") for part in raw.split("&")]
        text += "?" + "&".join(f"{n}={HIDDEN}" if eq else n for n, eq, _ in names)
    return text


_URL_IN_TEXT: Final = re.compile(r"https?://[^\s'\"()<>]+")


def hide_urls(text: str) -> str:
    """``text`` (an error message) with every URL in it as ``shown_url`` shows it."""
    return _URL_IN_TEXT.sub(lambda m: shown_url(m.group(0)), text)


def upstream_headers(
    headers: Iterable[tuple[str, str]], *, key: str, key_header: str, via: Via | None = None
) -> CIMultiDict[str]:
    """The headers minus hop-by-hop ones, plus the key (and X-Forwarded-* given ``via``)."""
    pairs = list(headers) if via is None else list(with_forwarded(headers, via))
    # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    named = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for token in value.split(",")
    }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in pairs:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named or lower.startswith("proxy-"):
            continue
        out.add(name, value)
    out[key_header] = key
    return out


def upstream_url(base: str, query: str) -> str:
    if not query:
        return base
    return f"{base}{'&' if '?' in base else '?'}{query}"


@dataclass(frozen=True, slots=True)
class Result:
    """What one attempt got: an HTTP answer (``status``) or an ``error``."""

    started_at: float
    duration_ms: float
    status: int | None = None
    content_type: str | None = None
    body: bytes = b""
    retry_after: str | None = None
    error: str | None = None  # "timeout", "connect", "response_too_large", ...

    @property
    def timed_out(self) -> bool:
        return self.error == "timeout"


@dataclass(frozen=True, slots=True)
class Target:
    """What an upstream adds to every request to it: headers (secrets, set by
    ``RouteRuntime.upstream_headers``) and the TLS context that verifies it."""

    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    context: ssl.SSLContext | None = None
    server_name: str | None = None
    # When its CA file's and client certificate's certificates expire (unix time).
    expires: tuple[tuple[str, float], ...] = ()


PLAIN: Final = Target()
TLS_VERIFY_FAILED: Final = "tls_verify_failed"
TLS_CLIENT_CERT_REFUSED: Final = "tls_client_cert_refused"
TLS_ERRORS: Final = (TLS_VERIFY_FAILED, TLS_CLIENT_CERT_REFUSED)
# How long a diagnosis waits for the backend's verdict on our certificate.
PROBE_WAIT: Final = 2.0


def _about_certificates(why: object) -> bool:
    """An alert or error text that names a certificate (ours refused, or its CA unknown)."""
    text = str(why).upper()
    return "CERTIFICATE" in text or "UNKNOWN_CA" in text


def tls_reason(error: str | None) -> str | None:
    """``tls_verify_failed`` or ``tls_client_cert_refused`` if that is why an attempt failed."""
    if error is None:
        return None
    code = error.partition(":")[0]
    return code if code in TLS_ERRORS else None


async def refuses_us(url: URL, target: Target) -> bool:
    """Whether the backend turns our client certificate away (or wants one we lack).

    Under TLS 1.3 a server judges the client's certificate after the handshake and
    drops the connection, so a request sees only a reset. Here a bare handshake is
    made and nothing sent: a backend that accepted us waits for a request; one that
    refused us closes at once or sends a certificate alert.
    """
    context = target.context or ssl.create_default_context()
    host = url.host or ""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, url.port, ssl=context, server_hostname=target.server_name or host
            ),
            PROBE_WAIT,
        )
    except (OSError, TimeoutError):
        return False
    try:
        first = await asyncio.wait_for(reader.read(1), PROBE_WAIT)
    except TimeoutError:
        return False  # waiting for our request: the certificate was fine
    except OSError as exc:  # ssl.SSLError among them: an alert
        return _about_certificates(exc)
    finally:
        writer.close()
    return first == b""


def _cert_error(exc: aiohttp.ClientConnectorCertificateError) -> str:
    cert = exc.certificate_error
    why = getattr(cert, "verify_message", None) or getattr(cert, "reason", None) or cert
    return f"{TLS_VERIFY_FAILED}: {why}"


@functools.lru_cache(maxsize=1024)
def _url(url: str) -> URL:
    """Parsed once per upstream (and query): yarl's parse was a tenth of an attempt."""
    return URL(url, encoded=True)


def new_session() -> aiohttp.ClientSession:
    """The process's one client session: connection reuse to the backend is most of a
    proxy's speed; no cookies carried between senders; aiohttp's own headers off."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=SKIP_AUTO_HEADERS,
    )


def client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect)


async def send(
    session: aiohttp.ClientSession,
    *,
    method: str,
    url: str,
    headers: CIMultiDict[str],
    body: bytes,
    timeout: aiohttp.ClientTimeout,
    keep_body: bool,
    preview: int = 0,
    target: Target = PLAIN,
) -> Result:
    """Send once; never raises for network trouble, it is part of the Result.

    ``keep_body``: the whole answer (sync mode answers the sender with it);
    otherwise only its first ``preview`` bytes, for the attempt log.
    """
    started = time.time()
    t0 = time.perf_counter()

    def done(**kw: object) -> Result:
        return Result(started, (time.perf_counter() - t0) * 1000.0, **kw)  # type: ignore[arg-type]

    try:
        # The session skips aiohttp's own headers (SKIP_AUTO_HEADERS, set once on it).
        async with session.request(
            method,
            # encoded=True: the query goes out as the sender wrote it, not re-normalised.
            _url(url),
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=timeout,
            ssl=target.context or True,
            server_hostname=target.server_name,
        ) as resp:
            if keep_body:
                data = await resp.content.read(MAX_RESPONSE_BODY + 1)
                if len(data) > MAX_RESPONSE_BODY:
                    return done(error="response_too_large")
            else:
                # Drained whole, so the connection can be reused; only the start is kept.
                data = (await resp.read())[:preview]
            return done(
                status=resp.status,
                content_type=resp.headers.get("Content-Type"),
                body=data,
                retry_after=resp.headers.get("Retry-After"),
            )
    except TimeoutError:
        return done(error="timeout")
    except aiohttp.ClientConnectorCertificateError as exc:
        return done(error=_cert_error(exc))
    except aiohttp.ClientConnectorSSLError as exc:
        code = TLS_CLIENT_CERT_REFUSED if _about_certificates(exc.os_error) else "tls"
        return done(error=f"{code}: {exc.os_error}"[:200])
    except aiohttp.ClientConnectorError as exc:
        return done(error=f"connect: {exc.os_error.strerror or exc.os_error}")
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        if _url(url).scheme == "https" and await refuses_us(_url(url), target):
            return done(
                error=f"{TLS_CLIENT_CERT_REFUSED}: the backend closed the connection after"
                " the TLS handshake (client certificate missing or not accepted)"
            )
        return done(error=hide_urls(f"{type(exc).__name__}: {exc}")[:200])
    except (aiohttp.ClientError, asyncio.IncompleteReadError, ValueError) as exc:
        # ValueError: aiohttp refuses some malformed upstream answers outright.
        return done(error=hide_urls(f"{type(exc).__name__}: {exc}")[:200])
