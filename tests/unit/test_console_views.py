"""The console's pure parts: sessions and CSRF tokens, the per-minute history and
its sparklines, the field search, and how bytes and overview rows are shown."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.admin.console.history import History, sparkline
from relay.admin.console.session import Signer, signing_key
from relay.admin.console.views import (
    age,
    field_matches,
    json_path,
    last_errors,
    route_row,
    show_bytes,
)
from relay.store.base import Pause, RecentAttempt, RouteBacklog, UpstreamCounts

NOW = 1_800_000_000.0


# --- sessions ------------------------------------------------------------------------


def test_a_session_round_trips_and_expires() -> None:
    signer = Signer(signing_key(), lifetime=60)
    session, cookie = signer.issue(NOW, authed=True, label="ops", role="operate")
    assert signer.read(cookie, NOW + 59) == session
    assert (session.label, session.role) == ("ops", "operate")
    assert signer.read(cookie, NOW + 61) is None
    assert signer.read(None, NOW) is None and signer.read("", NOW) is None


def test_a_cookie_cannot_be_edited_or_carried_to_another_token() -> None:
    signer = Signer(signing_key())
    _, cookie = signer.issue(NOW, authed=False)
    nonce, expires, kind, label, sig = cookie.split(".")
    assert signer.read(f"{nonce}.{expires}.o.{label}.{sig}", NOW) is None  # not signed in
    assert signer.read(f"{nonce}.{int(expires) + 999}.{kind}.{label}.{sig}", NOW) is None
    _, reader = signer.issue(NOW, authed=True, label="viewer", role="read")
    n, e, k, lab, sg = reader.split(".")
    assert k == "r" and signer.read(f"{n}.{e}.o.{lab}.{sg}", NOW) is None  # no promotion
    assert signer.read(f"{n}.{e}.{k}.ops.{sg}", NOW) is None  # nor another label
    assert Signer(signing_key()).read(cookie, NOW) is None
    assert signer.read(f"{cookie}.x", NOW) is None
    assert signing_key() != signing_key()  # a key per process and token: restarts end sessions


def test_a_signed_out_session_stays_out_and_others_stay_in() -> None:
    signer = Signer(signing_key(), lifetime=60)
    mine, cookie = signer.issue(NOW, authed=True)
    _, theirs = signer.issue(NOW, authed=True)
    signer.revoke(mine, NOW + 1)
    assert signer.read(cookie, NOW + 2) is None
    assert signer.read(theirs, NOW + 2) is not None
    # Revocations are forgotten once the cookie would have expired anyway.
    other, _ = signer.issue(NOW + 100, authed=True)
    signer.revoke(other, NOW + 100)
    assert mine.nonce not in signer._revoked


def test_csrf_tokens_belong_to_their_session() -> None:
    signer = Signer(signing_key())
    mine, _ = signer.issue(NOW, authed=True)
    theirs, _ = signer.issue(NOW, authed=True)
    token = signer.csrf(mine)
    assert signer.csrf_ok(mine, token)
    assert not signer.csrf_ok(theirs, token)
    assert not signer.csrf_ok(mine, None) and not signer.csrf_ok(None, token)
    assert not signer.csrf_ok(mine, token[:-1] + ("0" if token[-1] != "0" else "1"))


@given(st.text(max_size=80))
def test_no_string_is_a_session_unless_signed(cookie: str) -> None:
    assert Signer(signing_key()).read(cookie, NOW) is None


# --- history and sparklines ------------------------------------------------------------


def test_per_minute_counts_are_differences_of_sampled_totals() -> None:
    h = History(minutes=4)
    s = ("orders", "accepted")
    base = 60 * 1000.0
    h.observe(base + 10, {s: 5})
    h.observe(base + 50, {s: 7})  # the last sample of a minute counts
    h.observe(base + 70, {s: 10})
    h.observe(base + 190, {s: 16})  # a minute without a sample in between
    assert h.per_minute(s, base + 190) == [None, 3, None, 6]
    assert h.per_minute(("orders", "rejected"), base + 190) == [None, 0, None, 0]
    h.observe(base + 250, {s: 2})  # a reset counter (a worker restarted) counts from zero
    assert h.per_minute(s, base + 250)[-1] == 2
    assert len(h._seen) <= 5  # old minutes are forgotten


def test_the_first_minute_counts_from_the_start() -> None:
    s = ("orders", "accepted")
    h = History(minutes=3, start=60 * 1000.0 + 5)
    h.observe(60 * 1000.0 + 20, {s: 4})
    assert h.per_minute(s, 60 * 1000.0 + 20) == [None, None, 4]


def test_sparkline_points_fit_the_box() -> None:
    line = sparkline([0, 5, None, 10], width=30, height=10)
    assert (line.peak, line.total) == (10, 15)
    xs_ys = [tuple(map(float, p.split(","))) for p in line.points.split()]
    assert [x for x, _ in xs_ys] == [0.0, 10.0, 20.0, 30.0]
    assert all(0 <= y <= 10 for _, y in xs_ys)
    assert xs_ys[3][1] < xs_ys[1][1] < xs_ys[0][1]  # higher counts are drawn higher
    assert sparkline([None, None]).peak == 0


# --- field search and showing bytes ----------------------------------------------------


def test_json_paths_and_field_matches() -> None:
    doc = {"data": {"object": {"id": "cus_1", "n": 42, "ok": True}}, "items": [{"sku": "a"}]}
    assert json_path(doc, "data.object.id") == "cus_1"
    assert json_path(doc, "items.0.sku") == "a"
    body = b'{"data": {"object": {"id": "cus_1", "n": 42, "ok": true, "none": null}}}'
    assert field_matches(body, "data.object.id", "cus_1")
    assert field_matches(body, "data.object.n", "42")
    assert field_matches(body, "data.object.ok", "true")
    assert field_matches(body, "data.object.none", "null")
    assert not field_matches(body, "data.object.id", "cus_2")
    assert not field_matches(body, "data.missing", "x")
    assert not field_matches(b"not json", "a", "x") and not field_matches(None, "a", "x")


def test_bytes_are_shown_as_text_json_indented() -> None:
    shown = show_bytes(b'{"a":[1,2]}')
    assert shown is not None and shown.json and shown.text.startswith("{\n")
    plain = show_bytes(b"<b>hi</b>")
    assert plain is not None and (plain.text, plain.json, plain.binary) == (
        "<b>hi</b>",
        False,
        False,
    )
    binary = show_bytes(b"\xff\xfe ok")
    assert binary is not None and binary.binary and "ok" in binary.text
    cut = show_bytes(b"x" * 100, limit=10)
    assert cut is not None and cut.cut and len(cut.text) == 10
    assert show_bytes(None) is None


def test_overview_rows_and_last_errors() -> None:
    def tried(i: int, upstream: str, status: int | None, error: str | None) -> RecentAttempt:
        return RecentAttempt(i, i, "orders", upstream, NOW - i, 1.0, status, error)

    newest_first = [
        tried(5, "A", 200, None),
        tried(4, "A", 503, None),
        tried(3, "A", None, "timeout"),
    ]
    newest_first.append(tried(2, "B", None, "connect: refused"))
    errors = last_errors(newest_first)
    assert errors[("orders", "A")].id == 4 and errors[("orders", "B")].id == 2
    row = route_row(
        name="orders",
        path="/hooks/orders",
        mode="queue",
        queued=True,
        upstreams=["A", "B"],
        backlog=RouteBacklog("orders", pending=3, dead=1, oldest_open_at=NOW - 90),
        counts={("orders", "A"): UpstreamCounts("orders", "A", pending=3, stale=2)},
        pauses=[Pause("orders", "B", NOW)],
        breakers={("orders", "A"): {"state": "open", "reason": "tls_verify_failed"}},
        errors=errors,
        now=NOW,
        sparks={},
    )
    a, b = row.upstreams
    assert (row.pending, row.dead, age(row.oldest_open_age), row.paused) == (3, 1, "1m", None)
    assert (a.pending, a.stale, a.breaker, a.tls, a.paused) == (
        3,
        2,
        "open",
        "tls_verify_failed",
        None,
    )
    assert b.tls is None
    assert (b.pending, b.breaker, b.paused is not None) == (0, "closed", True)
    assert [age(s) for s in (None, 5, 61, 7200, 90000)] == ["—", "5s", "1m", "2h", "1d"]
