"""TLS on the listeners, with real certificates (trustme) and the daemon as a real
process: HTTPS on both listeners, a Secure console cookie, mutual TLS with routes
that take only certain client certificates, the expiry gauge, and a certificate
swapped by SIGHUP while a client keeps sending (nothing fails)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from cryptography import x509

from .support import HOST, Backend, deliveries_by_state, post, queue_route, run_cli, wait_for


class PKI:
    """A private CA and the PEM files an operator would have from it."""

    def __init__(self, where: Path) -> None:
        self.ca = trustme.CA()
        self.dir = where
        where.mkdir(exist_ok=True)
        self.ca_file = where / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server(self, name: str = "server") -> dict[str, str]:
        """A certificate for 127.0.0.1 and its key, as a listener's ``tls:``."""
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert_file, key_file = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        return {"cert_file": str(cert_file), "key_file": str(key_file)}

    def client(self, identity: str, common_name: str | None = None) -> ssl.SSLContext:
        """A client that trusts this CA and shows a certificate it issued."""
        context = self.trust()
        cert = self.ca.issue_cert(identity, common_name=common_name)
        path = self.dir / f"client-{identity}.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(path))
        context.load_cert_chain(str(path))
        return context

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def session(context: ssl.SSLContext | bool, **kwargs: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, **kwargs))


async def served_serial(context: ssl.SSLContext, port: int) -> str:
    """The serial number of the certificate a new connection to the listener is shown."""
    _, writer = await asyncio.open_connection(HOST, port, ssl=context)
    peer = writer.get_extra_info("peercert")
    writer.close()
    return str(peer["serialNumber"])


def not_after(cert_file: str) -> float:
    pem = Path(cert_file).read_bytes()
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def expiry_of(metrics: str, listener: str, file: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("relay_listener_certificate_expiry_timestamp_seconds{") and (
            f'listener="{listener}"' in line and f'file="{file}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no expiry gauge for {listener}/{file}")


async def _status_with_max(pki: PKI, url: str, version: ssl.TLSVersion) -> int:
    """A client that speaks at most ``version`` (ciphers of any strength, so that only
    the listener can refuse it)."""
    context = pki.trust()
    context.set_ciphers("DEFAULT@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1, on purpose
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = version
    async with session(context, force_close=True) as s:
        return (await post(s, url, f"tls-{version.name}-{time.time_ns()}"))[0]


@pytest.mark.parametrize("workers", [0, 2])
async def test_both_listeners_speak_tls_and_the_console_cookie_is_secure(
    relays: Any, start_backend: Any, tmp_path: Path, workers: int
) -> None:
    pki = PKI(tmp_path)
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)], tls=pki.server("webhook"), workers=workers)
    doc = relay.config()
    doc["admin"]["tls"] = pki.server("admin")
    relay.rewrite(doc)
    relay.admin_scheme = "https"
    relay.client_ssl = pki.trust()
    await relay.start()

    key = f"tls-{time.time_ns()}"
    async with session(pki.trust()) as s:
        status, _, _ = await post(s, relay.url("/q"), key)
        assert status == 202
        async with s.get(relay.admin_url("/ui/")) as resp:
            assert resp.status == 200
            cookie = resp.headers["Set-Cookie"]
        async with s.get(relay.admin_url("/metrics")) as resp:
            metrics = await resp.text()
    assert "; Secure" in cookie or "; secure" in cookie.lower()
    await wait_for(lambda: deliveries_by_state(relay.db).get("delivered") == 1, 10, "delivery")
    assert list(backend.received) == [key]

    # The gauge says when each listener's certificate runs out.
    for listener, section in (("webhook", doc), ("admin", doc["admin"])):
        assert expiry_of(metrics, listener, "cert") == not_after(section["tls"]["cert_file"])

    # A client that does not trust the CA, plain HTTP, and TLS 1.1 are all turned away.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        async with session(True) as s:
            await post(s, relay.url("/q"), f"untrusted-{time.time_ns()}")
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as s:
            await post(s, relay.url("/q").replace("https:", "http:"), f"plain-{time.time_ns()}")
    assert await _status_with_max(pki, relay.url("/q"), ssl.TLSVersion.TLSv1_2) == 202
    with pytest.raises(aiohttp.ClientError):
        await _status_with_max(pki, relay.url("/q"), ssl.TLSVersion.TLSv1_1)
    await wait_for(lambda: deliveries_by_state(relay.db).get("delivered") == 2, 10, "delivery")
    assert await relay.stop() == 0


async def test_mutual_tls_routes_take_only_the_client_certificates_they_name(
    relays: Any, start_backend: Any, tmp_path: Path
) -> None:
    pki, stranger = PKI(tmp_path), PKI(tmp_path / "other")
    backend = await start_backend(Backend())
    tls = {**pki.server(), "client_ca_file": str(pki.ca_file), "client_auth": "optional"}
    routes = [
        queue_route(backend, "pinned", client_subjects=["sender-a", "Billing Sender"]),
        queue_route(backend, "open"),
    ]
    relay = relays(routes, tls=tls)
    relay.client_ssl = pki.trust()
    await relay.start()

    async def status(context: ssl.SSLContext, path: str, key: str) -> tuple[int, bytes]:
        async with session(context, force_close=True) as s:
            got, _, body = await post(s, relay.url(path), f"{key}-{time.time_ns()}")
        return got, body

    got, body = await status(pki.trust(), "/pinned", "none")
    assert (got, b"client_certificate_required" in body) == (403, True)
    got, body = await status(pki.client("sender-b"), "/pinned", "b")
    assert (got, b"client_certificate_not_allowed" in body) == (403, True)
    assert (await status(pki.client("sender-a"), "/pinned", "a"))[0] == 202
    # Matched on the subject's common name as well as its alternative names.
    billing = pki.client("billing.example", "Billing Sender")
    assert (await status(billing, "/pinned", "cn"))[0] == 202
    assert (await status(pki.trust(), "/open", "anyone"))[0] == 202
    # A certificate from a CA the listener does not trust fails the handshake.
    stranger_client = stranger.client("sender-a")
    stranger_client.load_verify_locations(str(pki.ca_file))
    with pytest.raises(aiohttp.ClientError):
        await status(stranger_client, "/open", "stranger")
    await wait_for(lambda: deliveries_by_state(relay.db).get("delivered") == 3, 10, "deliveries")

    # client_auth: require, by SIGHUP: a connection without a certificate fails now.
    doc = relay.config()
    doc["tls"]["client_auth"] = "require"
    relay.rewrite(doc)
    relay.signal(signal.SIGHUP)
    await wait_for(lambda: bool(relay.logged("config_reloaded")), 10, "the reload")
    with pytest.raises(aiohttp.ClientError):
        await status(pki.trust(), "/open", "no-cert")
    assert (await status(pki.client("sender-a"), "/open", "with-cert"))[0] == 202
    await wait_for(lambda: deliveries_by_state(relay.db).get("delivered") == 4, 10, "deliveries")
    assert await relay.stop() == 0


@pytest.mark.parametrize("workers", [0, 2])
async def test_a_certificate_swapped_by_sighup_while_a_client_sends_fails_nothing(
    relays: Any, start_backend: Any, tmp_path: Path, workers: int
) -> None:
    pki = PKI(tmp_path)
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)], tls=pki.server(), workers=workers)
    relay.client_ssl = pki.trust()
    await relay.start()
    before = await served_serial(pki.trust(), relay.port)
    statuses: list[int] = []
    stop = asyncio.Event()
    run = time.time_ns()

    async def send(reuse: bool) -> None:
        # One client keeps its connections, the other opens one per request.
        async with session(pki.trust(), force_close=not reuse) as s:
            n = 0
            while not stop.is_set():
                n += 1
                statuses.append((await post(s, relay.url("/q"), f"{run}-{reuse}-{n}"))[0])

    senders = [asyncio.create_task(send(reuse)) for reuse in (True, False)]
    await wait_for(lambda: len(statuses) >= 20, 10, "traffic before the swap")
    # The operator renews the certificate in place (a new file, then a rename).
    fresh = pki.server("renewed")
    for name in ("cert_file", "key_file"):
        os.replace(fresh[name], relay.config()["tls"][name])
    relay.signal(signal.SIGHUP)
    expected = 1 + workers  # the owner and each worker reload

    await wait_for(
        lambda: len(relay.logged("config_reloaded")) >= expected, 10, "every process's reload"
    )
    after = await served_serial(pki.trust(), relay.port)
    sent_after = len(statuses)
    await wait_for(lambda: len(statuses) >= sent_after + 20, 10, "traffic after the swap")
    stop.set()
    await asyncio.gather(*senders)

    assert after != before
    assert set(statuses) == {202}, f"failed requests during the swap: {statuses}"
    await wait_for(
        lambda: deliveries_by_state(relay.db).get("delivered") == len(statuses),
        20,
        "every acked webhook delivered",
    )
    assert await relay.stop() == 0


async def test_the_cli_reaches_an_https_admin_listener_by_its_own_certificate(
    relays: Any, start_backend: Any, tmp_path: Path
) -> None:
    pki = PKI(tmp_path)
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)])
    doc = relay.config()
    doc["admin"]["tls"] = pki.server("admin")
    relay.rewrite(doc)
    relay.admin_scheme = "https"
    relay.client_ssl = pki.trust()
    await relay.start()

    async def cli(*args: str) -> tuple[int, str]:
        return await run_cli(*args, "-c", str(relay.config_path), timeout=20)

    code, out = await cli("status", "--json")
    assert code == 0, out
    assert json.loads(out)["routes"][0]["name"] == "q"
    assert await cli("healthcheck") == (0, "ready\n")
    # Another CA's certificate in its place is not trusted (the pin is the file's).
    stranger = PKI(tmp_path / "stranger")
    code, out = await cli("status", "--cacert", str(stranger.ca_file))
    assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in out
    assert await relay.stop() == 0
