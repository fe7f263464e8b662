"""The console over a real socket, without a browser: pages, escaping, headers,
sessions, CSRF, replays and the tail feed (tests/e2e/test_console_browser.py
drives the same pages in Chromium)."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.base import EventFilter
from tests.integration.conftest import AdminFactory, Backend, RelayFactory, eventually, route

Client = TestClient[web.Request, web.Application]
TOKEN = "console-token-0123456789abcdef"
XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


async def gone(_request: web.Request, _n: int) -> web.StreamResponse:
    return web.Response(status=410)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def send(
    client: Client, key: str, body: bytes = b"{}", name: str = "orders", **h: str
) -> int:
    resp = await client.post(f"/hooks/{name}", data=body, headers={"Idempotency-Key": key, **h})
    assert resp.status == 202, await resp.text()
    return int((await resp.json())["event_id"])


async def page(admin: Client, path: str, status: int = 200) -> str:
    resp = await admin.get(path, allow_redirects=False)
    text = await resp.text()
    assert resp.status == status, text
    return text


async def dead_event(public: Client, admin: Client, key: str, **kw: Any) -> int:
    event_id = await send(public, key, **kw)

    async def is_dead() -> bool:
        doc = await (await admin.get(f"/api/v1/events/{event_id}")).json()
        return bool(doc["state"] == "dead")

    await eventually(is_dead, f"event {event_id} to be dead")
    return event_id


async def test_overview_lists_routes_with_security_headers(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(route(upstream), route(upstream, "github"))
    admin = await make_admin(public)
    await send(public, "k1")
    resp = await admin.get("/ui/")
    html = await resp.text()
    assert resp.status == 200
    assert 'data-route="orders"' in html and 'data-route="github"' in html
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "<polyline" in html  # the sparklines are drawn by the server
    assert 'aria-label="accepted per minute, last hour: 1 in all' in html
    cookie = resp.cookies["relay_console"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert (await admin.get("/ui", allow_redirects=False)).status == 308


async def test_everything_a_stranger_sent_is_escaped(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(route(upstream))
    admin = await make_admin(public)
    body = json.dumps({"note": XSS}).encode()
    event_id = await send(public, XSS, body=body, **{"X-Evil": XSS})
    for path in (f"/ui/events/{event_id}", "/ui/events", f"/ui/events?key={XSS}"):
        html = await page(admin, path)
        assert "<script>window" not in html and "<img src=x" not in html
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html
    assert "<script" not in (await page(admin, f"/ui/events/{event_id}")).replace(
        '<script src="/ui/static/', ""
    )


async def test_event_page_explains_dedupe_and_shows_attempts(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    async def busy_then_ok(_request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=503, text="<b>try later</b>")
        return web.json_response({"ok": True})

    upstream.behaviour = busy_then_ok
    public = await make_relay(
        route(upstream, retry={"initial": "10ms", "max": "10ms"}),
        storage={"answer_bytes": 8},
    )
    admin = await make_admin(public)
    event_id = await send(public, "k1", body=b'{"a": {"b": 1}}', Authorization="Bearer sk_live")
    await send(public, "k1", body=b'{"a": {"b": 1}}')
    await send(public, "k1", body=b'{"a": {"b": 2}}')

    async def delivered() -> bool:
        return "delivered" in await page(admin, f"/ui/events/{event_id}")

    await eventually(delivered, "the event to be delivered")
    html = await page(admin, f"/ui/events/{event_id}")
    assert "2 later request(s) carried key" in html and "1 of them had a different body" in html
    assert "First duplicate" in html and "Last duplicate" in html
    assert "HTTP 503" in html and "HTTP 200" in html
    assert "&lt;b&gt;try l</pre>" in html  # 8 bytes of the answer kept, escaped
    assert "sk_live" not in html and "[redacted]" in html
    assert "&#34;b&#34;: 1" in html  # the body, JSON indented (quotes escaped)


async def test_posts_need_the_session_csrf_token_even_on_loopback(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    upstream.behaviour = gone
    public = await make_relay(route(upstream))
    admin = await make_admin(public)
    event_id = await dead_event(public, admin, "k1")
    html = await page(admin, f"/ui/events/{event_id}/replay")
    assert "<strong>1</strong> dead, stale or filtered deliveries" in html
    token = csrf_of(html)
    target = f"/ui/events/{event_id}/replay"
    for form in ({}, {"csrf": "0" * 32}):
        resp = await admin.post(target, data=form, allow_redirects=False)
        assert resp.status == 403, await resp.text()
    store = public.app[OWN_STORE]
    info = await store.get_event(event_id)
    assert info is not None and info.deliveries[0].state == "dead"  # nothing was replayed
    resp = await admin.post(
        target, data={"csrf": token, "reason": "backend fixed"}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"].endswith("?replayed=1")
    (entry,) = await store.audit_log(10)
    assert (entry.action, entry.reason, entry.credential) == ("replay", "backend fixed", "loopback")
    metrics = await (await admin.get("/metrics")).text()
    assert 'relay_console_refused_total{reason="csrf"} 2.0' in metrics


async def test_token_asks_for_a_login_once(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(
        route(upstream), admin={"token_env": "ADMIN_T"}, env={"ADMIN_T": TOKEN}
    )
    admin = await make_admin(public)
    resp = await admin.get("/ui/events?route=orders", allow_redirects=False)
    assert resp.status == 303
    location = URL(resp.headers["Location"])
    assert (location.path, location.query["next"]) == ("/ui/login", "/ui/events?route=orders")
    login = await page(admin, "/ui/login?next=/ui/events")
    token = csrf_of(login)
    resp = await admin.post("/ui/login", data={"csrf": token, "token": "wrong", "next": "/ui/"})
    assert resp.status == 401 and "not the admin token" in await resp.text()
    resp = await admin.post(
        "/ui/login",
        data={"csrf": token, "token": TOKEN, "next": "//evil.example/"},
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"  # no open redirect
    assert "Sign out" in await page(admin, "/ui/")
    # The API still wants its bearer token: the cookie is the console's only.
    assert (await admin.get("/api/v1/status")).status == 401
    # A forged cookie is no session.
    admin.session.cookie_jar.clear()
    admin.session.cookie_jar.update_cookies({"relay_console": "a.9999999999.a.beef"})
    assert (await admin.get("/ui/", allow_redirects=False)).status == 303
    metrics = await (
        await admin.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    ).text()
    assert 'relay_console_refused_total{reason="login"} 1.0' in metrics


async def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(
        route(upstream), admin={"token_env": "ADMIN_T"}, env={"ADMIN_T": TOKEN}
    )
    admin = await make_admin(public)
    csrf = csrf_of(await page(admin, "/ui/login"))
    resp = await admin.post("/ui/login", data={"csrf": csrf, "token": TOKEN}, allow_redirects=False)
    assert resp.status == 303
    copied = {c.key: c.value for c in admin.session.cookie_jar}["relay_console"]
    html = await page(admin, "/ui/")
    resp = await admin.post("/ui/logout", data={"csrf": csrf_of(html)}, allow_redirects=False)
    assert resp.status == 303
    # Someone who copied the cookie before the sign-out (a shared screen, a proxy's log).
    admin.session.cookie_jar.clear()
    admin.session.cookie_jar.update_cookies({"relay_console": copied})
    resp = await admin.get("/ui/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/ui/login")


async def test_event_list_filters_search_and_pages(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(route(upstream), route(upstream, "github"))
    admin = await make_admin(public)
    for i in range(5):
        await send(public, f"o{i}", body=b'{"data": {"object": {"id": "cus_%d"}}}' % i)
    await send(public, "g1", name="github")
    html = await page(admin, "/ui/events?route=orders&limit=2")
    assert html.count('<tr data-id="') == 2 and 'id="next"' in html
    assert "as JSON" in html and "/api/v1/events?route=orders&amp;limit=2" in html
    html = await page(admin, "/ui/events?field=data.object.id&value=cus_3")
    assert html.count('<tr data-id="') == 1 and ">o3<" in html
    html = await page(admin, "/ui/events?route=nope")
    assert "No events match." in html
    html = await page(admin, "/ui/events?state=sideways", status=400)
    assert "state: expected one of" in html
    html = await page(admin, "/ui/events?field=a.b", status=400)
    assert "field and value go together" in html


async def test_bulk_replay_of_dead_letters_counts_first_and_wants_a_reason(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    upstream.behaviour = gone
    public = await make_relay(route(upstream), route(upstream, "github"))
    admin = await make_admin(public)
    for key in ("k1", "k2"):
        await dead_event(public, admin, key)
    await dead_event(public, admin, "g1", name="github")
    html = await page(admin, "/ui/dead?route=orders")
    assert html.count('<tr data-id="') == 2
    html = await page(admin, "/ui/dead/replay?route=orders")
    assert '<strong id="count">2</strong>' in html
    token = csrf_of(html)
    resp = await admin.post("/ui/dead/replay", data={"csrf": token, "route": "orders"})
    assert resp.status == 400 and "say why" in await resp.text()
    resp = await admin.post(
        "/ui/dead/replay",
        data={"csrf": token, "route": "orders", "reason": "410 was a bug"},
        allow_redirects=False,
    )
    assert resp.status == 303 and "replayed=2" in resp.headers["Location"]
    (entry,) = await public.app[OWN_STORE].audit_log(10)
    assert (entry.action, entry.affected, entry.reason) == ("replay_bulk", 2, "410 was a bug")


async def test_tail_feed_sends_what_is_new(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(route(upstream))
    admin = await make_admin(public)
    await page(admin, "/ui/tail")  # a session, as the page's script has
    first = await send(public, "k1")

    async def attempted() -> bool:
        doc = await (await admin.get("/ui/tail.json")).json()
        return bool(doc["attempts"])

    await eventually(attempted, "an attempt in the tail")
    doc = await (await admin.get("/ui/tail.json")).json()
    assert [e["id"] for e in doc["events"]] == [first]
    seen = doc["attempts"][0]["id"]
    second = await send(public, "k2")
    doc = await (await admin.get(f"/ui/tail.json?event={first}&attempt={seen}")).json()
    assert [e["id"] for e in doc["events"]] == [second]
    assert all(a["id"] > seen for a in doc["attempts"])
    assert public.app[RELAY] is not None


async def test_overview_shows_pauses_breakers_last_errors_and_sync_events(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    async def down(request: web.Request, _n: int) -> web.StreamResponse:
        if request.path == "/pay":
            return web.json_response({"paid": True})
        return web.Response(status=503, text="down")

    upstream.behaviour = down
    breaker = {"failures": 1, "probe_interval": "1h", "ramp": "1s"}
    public = await make_relay(
        route(upstream, breaker=breaker),
        route(upstream, "billing"),
        route(upstream, "pay", mode="sync"),
    )
    admin = await make_admin(public)
    resp = await admin.post("/api/v1/routes/billing/pause", json={"reason": "<b>deploy</b>"})
    assert resp.status == 200
    event_id = await send(public, "k1")

    async def broken() -> bool:
        html = await page(admin, "/ui/")
        return "breaker open" in html and "HTTP 503" in html

    await eventually(broken, "the overview to show the open breaker and the last error")
    html = await page(admin, "/ui/")
    assert 'badge paused" title="&lt;b&gt;deploy&lt;/b&gt;"' in html
    assert f'href="/ui/events/{event_id}">HTTP 503' in html
    resp = await public.post("/hooks/pay", data=b"{}", headers={"Idempotency-Key": "s1"})
    assert resp.status == 200
    (sync_event,) = await public.app[OWN_STORE].list_events(EventFilter(route="pay"), 10)
    html = await page(admin, f"/ui/events/{sync_event.id}")
    assert "Sync mode: forwarded while the sender waited (completed)" in html
    assert "Replay" not in html
    await page(admin, f"/ui/events/{sync_event.id}/replay", status=409)
    await page(admin, "/ui/events/999999", status=404)
    await page(admin, "/ui/events/abc", status=400)


async def test_an_event_whose_body_is_gone_says_so_and_is_not_replayed(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(route(upstream))
    admin = await make_admin(public)
    event_id = await send(public, "k-old")
    store = public.app[OWN_STORE]

    async def delivered() -> bool:
        info = await store.get_event(event_id)
        return info is not None and info.deliveries[0].state == "delivered"

    await eventually(delivered, "the delivery")
    # An old tab: the replay page as it was before the body went.
    token = csrf_of(await page(admin, f"/ui/events/{event_id}/replay"))
    assert await store.drop_payloads(store.clock() + 1, 10) == 1
    html = await page(admin, f"/ui/events/{event_id}/replay")
    assert "This event cannot be replayed: its body is gone" in html
    assert 'id="confirm"' not in html
    # Its form, posted now, is answered 410, and nothing is sent.
    resp = await admin.post(
        f"/ui/events/{event_id}/replay", data={"csrf": token, "force": "1"}, allow_redirects=False
    )
    assert resp.status == 410
    assert "its body is gone" in await resp.text()
    assert len(upstream.seen) == 1
