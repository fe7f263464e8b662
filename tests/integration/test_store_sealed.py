"""Encryption at rest on every backend that owns its database (SQLite, PostgreSQL):
what an operator's own client (``sqlite3``, ``psql``) reads of a sealed store, what
the relay reads, a rotation with ``reseal``, and the refusals when a key is missing."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from relay.store.base import Acquired, Attempt, Completed, Outcome, Store, StoredResponse
from relay.store.sealing import KeyMissing, Sealer, key_id
from tests.conftest import POSTGRES_URL, StoreMaker
from tests.integration.test_store import UP_A, event, lease_one
from tests.tools import required_tool

A, B = os.urandom(32), os.urandom(32)
SECRET_BODY = b'{"card": "4242 4242 4242 4242"}'
SECRET_HEADER = "Bearer sk_live_do_not_store_in_clear"
ANSWER = b'{"charged": "4242"}'


def sealed_event(key: str, **extra: Any) -> Any:
    headers = (("Authorization", SECRET_HEADER), ("Content-Type", "application/json"))
    return event(key, headers=headers, body=SECRET_BODY, **extra)


def raw_dump(store: Store) -> str:
    """Every sealed column as the operator's own client prints it."""
    sql = (
        "SELECT headers, body, response_body FROM events;"
        " SELECT answer FROM attempts WHERE answer IS NOT NULL;"
    )
    if not hasattr(store, "path"):  # bytea as text where printable, as psql users read it
        for column in ("response_body", "body", "answer"):
            sql = sql.replace(f" {column}", f" encode({column}, 'escape')", 1)
    if hasattr(store, "path"):
        tool = required_tool("sqlite3", "apt-get install sqlite3", "RELAY_REQUIRE_SQLITE3")
        out = subprocess.run(
            [tool, "-readonly", str(store.path), sql], capture_output=True, check=True
        )
    else:
        tool = required_tool("psql", "apt-get install postgresql-client", "RELAY_REQUIRE_PSQL")
        schema = store.db.server_settings["search_path"]  # type: ignore[attr-defined]
        env = {**os.environ, "PGOPTIONS": f"-c search_path={schema}"}
        out = subprocess.run(
            [tool, POSTGRES_URL, "-At", "-c", sql], capture_output=True, check=True, env=env
        )
    return out.stdout.decode("utf-8", "replace")


async def fill(store: Store) -> int:
    """A delivered event with a kept answer, and a sync event with its response."""
    (ingested,) = [await store.ingest(sealed_event("evt_1"))]
    lease = await lease_one(store)
    tried = Attempt(started_at=1.0, duration_ms=2.0, status=200, error=None, answer=ANSWER)
    assert await store.finish_attempt(lease, tried, Outcome("delivered"))
    claim = await store.claim_sync(sealed_event("sync_1", route="payments"), lease_ttl=30)
    assert isinstance(claim, Acquired)
    response = StoredResponse(200, "application/json", ANSWER, False)
    assert await store.complete_sync(claim.event_id, claim.token, response)
    return ingested.event_id


async def test_a_sealed_store_shows_its_own_clients_nothing_and_the_relay_everything(
    make_local_store: StoreMaker,
) -> None:
    store = make_local_store(sealer=Sealer(A))
    await store.open()
    try:
        event_id = await fill(store)
        dump = raw_dump(store)
        for secret in ("4242", "sk_live", "Authorization"):
            assert secret not in dump
        assert f"wr-sealed:{key_id(A)}:" in dump  # the key id is readable, nothing else
        info = await store.get_event(event_id)
        assert info is not None
        assert info.body == SECRET_BODY
        assert ("Authorization", SECRET_HEADER) in info.headers
        assert [a.answer for a in info.attempts] == [ANSWER]
        peek = await store.peek_sync("payments", "sync_1")
        assert isinstance(peek, Completed) and peek.response is not None
        assert peek.response.body == ANSWER
        assert await store.key_ids() == [key_id(A)]
    finally:
        await store.close()


async def test_without_a_key_nothing_changes_on_disk(make_local_store: StoreMaker) -> None:
    store = make_local_store()
    await store.open()
    try:
        await fill(store)
        dump = raw_dump(store)
        assert "4242" in dump and "sk_live" in dump
        assert await store.key_ids() == []
    finally:
        await store.close()


async def test_rotation_reseals_everything_then_the_old_key_may_go(
    make_local_store: StoreMaker,
) -> None:
    first = make_local_store(sealer=Sealer(A))
    await first.open()
    try:
        event_id = await fill(first)
        await first.ingest(sealed_event("evt_2"))  # still pending: leased after the rotation
    finally:
        await first.close()

    rotated = make_local_store(sealer=Sealer(B, (A,)))
    await rotated.open()
    try:
        assert await rotated.key_ids() == sorted([key_id(A), key_id(B)])
        await rotated.ingest(sealed_event("evt_3"))  # sealed with B from the start
        changed = 0
        for table in ("events", "attempts"):
            after: int | None = 0
            while after is not None:
                after, n = await rotated.reseal(table, after, 2)
                changed += n
        assert changed == 4  # evt_1, sync_1, evt_2 and evt_1's attempt; evt_3 was B's
        assert await rotated.forget_keys() == [key_id(A)]
        assert f"wr-sealed:{key_id(A)}:" not in raw_dump(rotated)
    finally:
        await rotated.close()

    only_b = make_local_store(sealer=Sealer(B))
    await only_b.open()
    try:
        info = await only_b.get_event(event_id)
        assert info is not None and info.body == SECRET_BODY
        assert [a.answer for a in info.attempts] == [ANSWER]
        leases = await only_b.lease_due("orders", UP_A, 10, lease_ttl=30)
        assert sorted(lease.key for lease in leases) == ["evt_2", "evt_3"]
        for lease in leases:
            assert lease.body == SECRET_BODY
            assert ("Authorization", SECRET_HEADER) in lease.headers
    finally:
        await only_b.close()


@pytest.mark.parametrize("sealer", [Sealer(), Sealer(B)], ids=["no key", "another key"])
async def test_a_store_that_needs_a_missing_key_refuses_to_open_and_names_it(
    make_local_store: StoreMaker, sealer: Sealer
) -> None:
    store = make_local_store(sealer=Sealer(A))
    await store.open()
    await store.ingest(sealed_event("evt_1"))
    await store.close()
    refused = make_local_store(sealer=sealer)
    with pytest.raises(KeyMissing) as info:
        await refused.open()
    assert key_id(A) in str(info.value)
    assert "old_key_files" in str(info.value)
    # Nothing was held open by the refusal: the right key opens it at once.
    again = make_local_store(sealer=Sealer(A))
    await again.open()
    await again.close()


async def test_turning_encryption_off_reseals_in_clear(make_local_store: StoreMaker) -> None:
    store = make_local_store(sealer=Sealer(A))
    await store.open()
    await fill(store)
    await store.close()
    clearing = make_local_store(sealer=Sealer(None, (A,)))
    await clearing.open()
    try:
        for table in ("events", "attempts"):
            after: int | None = 0
            while after is not None:
                after, _ = await clearing.reseal(table, after, 100)
        assert await clearing.forget_keys() == [key_id(A)]
        assert "4242" in raw_dump(clearing)
    finally:
        await clearing.close()
    plain = make_local_store()
    await plain.open()
    await plain.close()
